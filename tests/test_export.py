"""``python -m lit_transfer export``: a checkpoint's net as ONNX, TorchScript or a torch.export program,
with its class names and preprocessing, checked against the checkpoint before it is written."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from lit_transfer.cli.export import random_batches
from lit_transfer.export import FORMATS, Deployable, compare, load_runner, write
from lit_transfer.export.formats import METADATA_KEY
from lit_transfer.models import ImageClassifier
from tests.conftest import (
    SHARED_DATA,
    alexnet_task_args,
    catsdogs_resnet18_args,
    exit_message,
    last_checkpoint,
    quiet_run_args,
    run_folder,
    tiny_demo_args,
)

pytest.importorskip("onnxruntime", reason="the export extra: pip install -e '.[export]'")

HYMENOPTERA_VAL = SHARED_DATA / "hymenoptera_data" / "val"


@pytest.fixture(scope="module")
def demo_run(tmp_path_factory) -> Path:
    """A one-epoch run of the demo config (SimpleCNN, 32 px): its run root."""
    from lit_transfer.cli import main

    root = tmp_path_factory.mktemp("demo")
    main(["fit", *tiny_demo_args(root, "--trainer.max_epochs", "1")])
    return root


def read_metadata(fmt: str, path: Path) -> dict:
    if fmt == "onnx":
        import onnxruntime

        session = onnxruntime.InferenceSession(str(path), providers=["CPUExecutionProvider"])
        return json.loads(session.get_modelmeta().custom_metadata_map[METADATA_KEY])
    if fmt == "torchscript":
        files = {METADATA_KEY: ""}
        torch.jit.load(str(path), _extra_files=files)
        return json.loads(files[METADATA_KEY])
    return json.loads(path.with_name(path.name + ".json").read_text())


@pytest.mark.filterwarnings("ignore::FutureWarning")  # torch.jit.load: TorchScript is deprecated
@pytest.mark.parametrize("fmt", list(FORMATS))
def test_each_format_reloads_with_its_metadata_and_agrees_with_the_checkpoint(fmt, demo_run, run_cli, capsys):
    ckpt = last_checkpoint(demo_run)
    run_cli("export", "--ckpt_path", str(ckpt), "--format", fmt)
    output = ckpt.with_suffix(FORMATS[fmt])
    assert "top-1 agrees on 8 of 8 images (100.0 %)" in capsys.readouterr().out

    meta = read_metadata(fmt, output)
    model = ImageClassifier.load_from_checkpoint(str(ckpt), map_location="cpu", weights_only=True).eval()
    assert meta["class_names"] == model.class_names == ["circle", "square", "triangle"]
    assert (meta["image_size"], meta["resize_size"], meta["mean"], meta["std"]) == (32, 32, [0.5] * 3, [0.5] * 3)

    run = load_runner(fmt, output)
    for batch in (1, 5):  # any batch size
        images = torch.randint(
            0, 256, (batch, 3, 32, 32), dtype=torch.uint8, generator=torch.Generator().manual_seed(batch)
        )
        with torch.no_grad():
            expected = model(images.float().div(255).sub(0.5).div(0.5))
        assert torch.allclose(run(images), expected, atol=1e-4), fmt


def test_a_file_that_computes_something_else_is_refused_and_nothing_is_left(demo_run, run_cli, capsys, monkeypatch):
    ckpt = last_checkpoint(demo_run)
    output = demo_run / "refused" / "model.onnx"

    def off_by_a_little(fmt, path):
        run = load_runner(fmt, path)
        return lambda images: run(images) + 0.01

    monkeypatch.setattr("lit_transfer.cli.export.load_runner", off_by_a_little)
    line = exit_message(run_cli, capsys, "export", "--ckpt_path", str(ckpt), "--output", str(output))
    assert "does not compute what the checkpoint computes on random images" in line and "nothing written" in line
    assert list(output.parent.iterdir()) == []  # no file, no temporary folder


def test_last_finds_the_newest_checkpoint_of_a_run(demo_run, run_cli, capsys, monkeypatch):
    monkeypatch.chdir(demo_run)
    output = demo_run / "by_name.pt2"
    run_cli(
        "export", "--ckpt_path", "last", "--run_name", "demo", "--format", "exported_program", "--output", str(output)
    )
    assert output.is_file() and Path(str(output) + ".json").is_file()
    assert (
        f"--ckpt_path last: using {Path('lightning_logs/demo/version_0/checkpoints/last.ckpt')}"
        in capsys.readouterr().out
    )


@pytest.mark.parametrize(
    ("make", "flags", "message"),
    [
        ("truncated", [], "is not a torch file"),
        ("state_dict", [], "was not written by lit_transfer"),
        (None, ["--output", "{file}/model.onnx"], "cannot create the folder of --output"),
        (None, ["--output", "{folder}"], "is a folder: give a file name"),
        (None, ["--format", "tflite"], "argument --format: invalid choice"),
        ("missing", [], "does not exist"),
    ],
)
def test_bad_exports_are_one_line(make, flags, message, demo_run, tmp_path, run_cli, capsys):
    ckpt = last_checkpoint(demo_run)
    if make == "truncated":
        ckpt = tmp_path / "truncated.ckpt"
        ckpt.write_bytes(last_checkpoint(demo_run).read_bytes()[:5000])
    elif make == "state_dict":
        ckpt = tmp_path / "weights.ckpt"
        torch.save({"weight": torch.zeros(2)}, ckpt)
    elif make == "missing":
        ckpt = tmp_path / "nothing.ckpt"
    (tmp_path / "a_file").write_text("x")
    flags = [f.format(file=tmp_path / "a_file", folder=tmp_path) for f in flags]
    line = exit_message(run_cli, capsys, "export", "--ckpt_path", str(ckpt), *flags)
    assert message in line
    assert not list(tmp_path.glob("*.onnx"))


def test_a_missing_extra_names_what_to_install(demo_run, run_cli, capsys, monkeypatch):
    import importlib.util

    find_spec = importlib.util.find_spec
    monkeypatch.setattr(
        importlib.util, "find_spec", lambda name, *a: None if name == "onnxruntime" else find_spec(name, *a)
    )
    line = exit_message(run_cli, capsys, "export", "--ckpt_path", str(last_checkpoint(demo_run)))
    assert "export to onnx needs onnxruntime: pip install 'lit-transfer[export]'" in line


@pytest.mark.skipif(not HYMENOPTERA_VAL.is_dir(), reason=f"real images not found in {HYMENOPTERA_VAL}")
def test_a_torchvision_net_agrees_on_every_real_validation_image(class_folder, tmp_path, run_cli, capsys):
    """The cats/dogs task's net family (a torchvision ResNet, BatchNorm in eval mode) on the 153 real
    ants/bees validation photos, prepared as the checkpoint says."""
    run_cli(*catsdogs_resnet18_args(class_folder, tmp_path, "--trainer.max_epochs", "1"))
    ckpt = run_folder(tmp_path) / "checkpoints" / "last.ckpt"
    run_cli("export", "--ckpt_path", str(ckpt), "--verify", str(HYMENOPTERA_VAL))
    out = capsys.readouterr().out
    assert f"checked on {HYMENOPTERA_VAL}: top-1 agrees on 153 of 153 images (100.0 %)" in out


def test_random_batches_are_the_same_every_time():
    assert all(torch.equal(a, b) for a, b in zip(random_batches(8), random_batches(8)))


@pytest.mark.filterwarnings("ignore::FutureWarning")  # torch.jit: TorchScript is deprecated
@pytest.mark.skipif(not HYMENOPTERA_VAL.is_dir(), reason=f"real images not found in {HYMENOPTERA_VAL}")
@pytest.mark.parametrize("task", ["cifar10", "hymenoptera", "catsdogs"])
def test_each_tasks_checkpoint_exports_in_each_format_and_agrees_on_real_photos(
    task, class_folder, tmp_path, run_cli, capsys, monkeypatch
):
    """Each task config's net (random weights, one short epoch on generated images: AlexNet32 on fake
    CIFAR-10, AlexNet at 64 px, ResNet18 for ResNet50 at 32 px), exported in every format, agrees with
    its checkpoint on all 153 real ants/bees validation photos."""
    if task == "cifar10":
        import torchvision

        from tests.test_cifar import CONFIG, write_fake_cifar10

        monkeypatch.setattr(
            torchvision.datasets.cifar, "check_integrity", lambda fpath, md5=None: Path(fpath).is_file()
        )
        root = write_fake_cifar10(tmp_path / "cifar")
        args = ["fit", "--config", CONFIG, "--data.root", str(root), "--data.val_size", "5", "--data.num_workers", "0"]
        run_cli(*args, "--trainer.max_epochs", "1", *quiet_run_args(tmp_path))
    elif task == "hymenoptera":
        run_cli(*alexnet_task_args(class_folder, tmp_path, "--model.weights", "null"))
    else:
        run_cli(*catsdogs_resnet18_args(class_folder, tmp_path, "--trainer.max_epochs", "1"))
    ckpt = run_folder(tmp_path) / "checkpoints" / "last.ckpt"
    for fmt in FORMATS:
        run_cli("export", "--ckpt_path", str(ckpt), "--format", fmt, "--verify", str(HYMENOPTERA_VAL))
        out = capsys.readouterr().out
        assert f"checked on {HYMENOPTERA_VAL}: top-1 agrees on 153 of 153 images (100.0 %)" in out, (task, fmt)


@pytest.mark.filterwarnings("ignore::FutureWarning")  # torch.jit: TorchScript is deprecated
@pytest.mark.parametrize("fmt", list(FORMATS))
def test_a_users_own_net_exports_from_channels_last_and_training_mode(fmt, tmp_path):
    """The README's own-backbone example (EfficientNet-Lite0: BatchNorm, dropout, its own padding) left
    in training mode and channels_last, as a run may leave it: the file computes the eval-mode net."""
    lite = pytest.importorskip("benchmarks.efficientnet_lite", reason="the test extra")
    pytest.importorskip("efficientnet_lite_pytorch", reason="the test extra")
    torch.manual_seed(0)
    net = lite.EfficientNetLite0(num_classes=3).train().to(memory_format=torch.channels_last)
    deployable = Deployable(net, (0.5,) * 3, (0.5,) * 3)
    assert not deployable.training and not net.training
    assert all(p.is_contiguous() for p in deployable.parameters())
    batches = random_batches(64)
    files = write(deployable, batches[0], fmt, tmp_path / f"lite{FORMATS[fmt]}", {"class_names": ["a", "b", "c"]})
    parity = compare(deployable, load_runner(fmt, files[0]), batches)
    assert parity.holds, parity.describe()
