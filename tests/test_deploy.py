"""Predicting with an exported ONNX file: ``lit_transfer.deploy`` with only onnxruntime, numpy and
Pillow (torch made unimportable), and ``predict --ckpt_path <file>.onnx``; both give what predict
from the checkpoint gives."""

from __future__ import annotations

import csv
import random
import subprocess
import sys
from pathlib import Path

import pytest

from lit_transfer.data.images import IMG_EXTENSIONS
from lit_transfer.data.shapes import SHAPES, draw_shape
from tests.conftest import REPO, SHARED_DATA, exit_message, last_checkpoint, predict_args, tiny_demo_args, written

pytest.importorskip("onnxruntime", reason="the export extra: pip install -e '.[export]'")

HYMENOPTERA_VAL = SHARED_DATA / "hymenoptera_data" / "val"


@pytest.fixture(scope="module")
def exported(tmp_path_factory) -> tuple[Path, Path]:
    """The demo config trained one epoch and exported to ONNX: (checkpoint, ONNX file)."""
    from lit_transfer.cli import main

    root = tmp_path_factory.mktemp("deploy")
    main(["fit", *tiny_demo_args(root, "--trainer.max_epochs", "1")])
    ckpt = last_checkpoint(root)
    main(["export", "--ckpt_path", str(ckpt)])
    return ckpt, ckpt.with_suffix(".onnx")


@pytest.fixture(scope="module")
def photos(tmp_path_factory) -> Path:
    """Images of other sizes and shapes than the net's 32x32 (so both paths resize and crop), one unreadable."""
    folder = tmp_path_factory.mktemp("photos")
    rng = random.Random(0)
    for i, shape in enumerate(SHAPES * 3):
        image = draw_shape(shape, 64, rng).resize((45 + 7 * i, 61))
        image.save(folder / f"{shape}_{i}.jpg", quality=95)
    (folder / "broken.png").write_text("not an image")
    return folder


def read_rows(path: Path) -> dict[str, tuple[str, float]]:
    with open(path) as f:
        return {Path(r["path"]).name: (r["class_name"], float(r["probability"])) for r in csv.DictReader(f)}


def assert_same_predictions(onnx_csv: Path, torch_csv: Path, tolerance: float) -> None:
    ours, theirs = read_rows(onnx_csv), read_rows(torch_csv)
    assert ours.keys() == theirs.keys() and len(ours) > 0
    for name, (class_name, p) in ours.items():
        assert class_name == theirs[name][0], name
        assert abs(p - theirs[name][1]) <= tolerance, name


def test_the_extensions_match_the_data_modules():
    from lit_transfer.deploy import IMG_EXTENSIONS as deploy_extensions

    assert deploy_extensions == IMG_EXTENSIONS


def torch_free_deploy(onnx: Path, images: Path, out: Path) -> subprocess.CompletedProcess:
    """``lit_transfer.deploy`` in a fresh Python where importing torch or Lightning fails."""
    code = (
        "import sys\n"
        "for name in ('torch', 'torchvision', 'lightning', 'torchmetrics'):\n"
        "    sys.modules[name] = None  # import torch -> ImportError\n"
        "from lit_transfer.deploy import main\n"
        f"main([{str(onnx)!r}, {str(images)!r}, '--csv', {str(out)!r}])\n"
    )
    return subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True)


def test_without_torch_it_predicts_what_the_checkpoint_predicts(exported, photos, tmp_path, run_cli):
    ckpt, onnx = exported
    done = torch_free_deploy(onnx, photos, tmp_path / "onnx.csv")
    assert done.returncode == 0, done.stderr[-2000:]
    assert "left out 1 unreadable image files" in done.stdout
    assert "broken.png" in (tmp_path / "onnx-skipped.txt").read_text()
    run_cli(*predict_args(ckpt, photos, tmp_path / "torch", "--trainer.enable_progress_bar", "false"))
    (torch_csv,) = written(tmp_path / "torch", "predictions-*.csv")
    assert_same_predictions(tmp_path / "onnx.csv", torch_csv, tolerance=0.02)


def test_predict_takes_an_onnx_file_and_writes_the_same_csv(exported, photos, run_cli, capsys):
    ckpt, onnx = exported
    run_cli("predict", "--ckpt_path", str(onnx), "--data.predict_root", str(photos), "--data.batch_size", "4")
    (csv_file,) = [p for p in onnx.parent.glob("predictions-*.csv")]
    assert f"wrote {len(list(photos.iterdir())) - 1} predictions to {csv_file}" in capsys.readouterr().out
    assert next(iter(read_rows(csv_file).values()))[0] in ("circle", "square", "triangle")


@pytest.mark.parametrize(
    ("flags", "message"),
    [
        (["--trainer.accelerator", "gpu"], "takes only --ckpt_path, --data.predict_root, --data.batch_size"),
        ([], "nothing to predict"),
        (["--data.predict_root", "{photos}", "--data.batch_size", "0"], "batch size 0"),
        (["--data.predict_root", "{photos}/none"], "no image file or folder"),
    ],
)
def test_onnx_predict_mistakes_are_one_line(flags, message, exported, photos, run_cli, capsys):
    flags = [f.format(photos=photos) for f in flags]
    line = exit_message(run_cli, capsys, "predict", "--ckpt_path", str(exported[1]), *flags)
    assert message in line


def test_a_file_that_is_not_an_export_is_one_line(tmp_path, photos, run_cli, capsys):
    fake = tmp_path / "model.onnx"
    fake.write_bytes(b"\x08\x07garbage")
    line = exit_message(run_cli, capsys, "predict", "--ckpt_path", str(fake), "--data.predict_root", str(photos))
    assert "is not a readable ONNX file" in line


@pytest.mark.skipif(not HYMENOPTERA_VAL.is_dir(), reason=f"real images not found in {HYMENOPTERA_VAL}")
def test_on_real_photos_the_classes_agree(exported, tmp_path, run_cli):
    """153 photos of about 500 px scaled down to 32: Pillow's and torchvision's antialiased resizes
    differ by a level here and there, never enough to change a class."""
    ckpt, onnx = exported
    done = torch_free_deploy(onnx, HYMENOPTERA_VAL, tmp_path / "onnx.csv")
    assert done.returncode == 0, done.stderr[-2000:]
    run_cli(*predict_args(ckpt, HYMENOPTERA_VAL, tmp_path / "torch", "--trainer.enable_progress_bar", "false"))
    (torch_csv,) = written(tmp_path / "torch", "predictions-*.csv")
    assert_same_predictions(tmp_path / "onnx.csv", torch_csv, tolerance=0.02)
