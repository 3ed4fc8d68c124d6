"""The foundation: CLI subcommands, the demo, checkpoints, resume, predict and clear errors."""

from __future__ import annotations

import csv
import os
import subprocess
import sys
from importlib.metadata import entry_points
from pathlib import Path

import pytest
import torch

from tests.conftest import REPO, predict_args, run_dir_args, run_folders, tiny_demo_args, written


def _scalars(log_dir: Path) -> dict[str, list[float]]:
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    acc = EventAccumulator(str(log_dir))
    acc.Reload()
    return {tag: [e.value for e in acc.Scalars(tag)] for tag in acc.Tags()["scalars"]}


def test_fit_writes_checkpoints_tensorboard_and_class_names(tmp_path, run_cli):
    cli = run_cli("fit", *tiny_demo_args(tmp_path, "--trainer.max_epochs", "2"))
    (version,) = run_folders(tmp_path)
    ckpts = {p.name for p in (version / "checkpoints").iterdir()}
    assert "last.ckpt" in ckpts
    assert any(name.startswith("best-") for name in ckpts), ckpts
    scalars = _scalars(version)
    for tag in ("train/loss", "train/acc", "val/loss", "val/acc"):
        assert tag in scalars, sorted(scalars)
    assert len(scalars["val/acc"]) == 2
    assert any(tag.startswith("lr-") for tag in scalars), sorted(scalars)
    ckpt = torch.load(version / "checkpoints" / "last.ckpt", weights_only=True)
    assert ckpt["hyper_parameters"]["class_names"] == ["circle", "square", "triangle"]
    assert ckpt["hyper_parameters"]["num_classes"] == 3
    assert cli.model.class_names == ["circle", "square", "triangle"]


def test_every_run_writes_a_new_version_folder(tmp_path, run_cli):
    for _ in range(2):
        run_cli("fit", *tiny_demo_args(tmp_path, "--trainer.max_epochs", "1", "--trainer.limit_train_batches", "2"))
    assert [p.name for p in run_folders(tmp_path)] == ["version_0", "version_1"]


def test_resume_continues_and_validate_reproduces_val_acc(tmp_path, run_cli):
    first = run_cli("fit", *tiny_demo_args(tmp_path, "--trainer.max_epochs", "2"))
    steps_per_epoch = first.trainer.num_training_batches
    last = run_folders(tmp_path)[0] / "checkpoints" / "last.ckpt"
    assert torch.load(last, weights_only=True)["global_step"] == 2 * steps_per_epoch

    resumed = run_cli("fit", *tiny_demo_args(tmp_path, "--trainer.max_epochs", "3", "--ckpt_path", str(last)))
    assert resumed.trainer.current_epoch == 3
    assert resumed.trainer.global_step == 3 * steps_per_epoch  # continued, not started over

    # `last` finds the newest last.ckpt of earlier runs even though each run has its own folder.
    again = run_cli("fit", *tiny_demo_args(tmp_path, "--trainer.max_epochs", "4", "--ckpt_path", "last"))
    assert again.trainer.global_step == 4 * steps_per_epoch

    best = next((run_folders(tmp_path)[0] / "checkpoints").glob("best-*.ckpt"))
    saved = torch.load(last, weights_only=True)  # the whole training state; "best" keeps the weights only
    score = next(v for k, v in saved["callbacks"].items() if k.startswith("ModelCheckpoint"))["best_model_score"]
    validated = run_cli("validate", *tiny_demo_args(tmp_path, "--ckpt_path", str(best)))
    assert validated.trainer.callback_metrics["val/acc"].item() == pytest.approx(float(score), abs=1e-6)


def test_predict_writes_csv_with_class_names_from_checkpoint(tmp_path, run_cli, capsys):
    run_cli("fit", *tiny_demo_args(tmp_path, "--trainer.max_epochs", "1"))
    ckpt = run_folders(tmp_path)[0] / "checkpoints" / "last.ckpt"
    images = sorted((tmp_path / "shapes" / "val" / "square").glob("*.png"))[:3]
    folder = tmp_path / "to_predict"
    folder.mkdir()
    for img in images:
        (folder / img.name).write_bytes(img.read_bytes())
    # Prediction needs no config and no data folder: net, class names and eval transforms come
    # from the checkpoint.
    cli = run_cli(*predict_args(ckpt, folder, tmp_path))
    out = capsys.readouterr().out
    (csv_path,) = written(tmp_path, "predictions-*.csv")
    assert str(csv_path) in out
    rows = list(csv.DictReader(csv_path.open()))
    assert [Path(r["path"]).name for r in rows] == [p.name for p in images]
    assert {r["class_name"] for r in rows} <= {"circle", "square", "triangle"}
    assert all(0.0 <= float(r["probability"]) <= 1.0 for r in rows)
    assert cli.model.class_names == ["circle", "square", "triangle"]
    # A second call writes a second file, it does not overwrite the first.
    run_cli("predict", *tiny_demo_args(tmp_path, "--ckpt_path", str(ckpt), "--data.predict_root", str(images[0])))
    assert len(list(written(tmp_path, "predictions-*.csv"))) == 2


@pytest.mark.parametrize(
    "extra, expected",
    [
        (["--config", "configs/does_not_exist.yaml"], "does_not_exist.yaml"),
        (["--data.class_path", "lit_transfer.data.NoSuchData"], "unknown class_path"),
        (["--model.init_args.net.class_path", "lit_transfer.nets.NoSuchNet"], "unknown class_path"),
        (
            ["--data.class_path", "lit_transfer.data.ImageFolderDataModule", "--data.root", "/no/such/folder"],
            "/no/such/folder",
        ),
        (["--ckpt_path", "/no/such.ckpt"], "/no/such.ckpt"),
    ],
)
def test_user_mistakes_give_one_line_and_exit_2(tmp_path, run_cli, capsys, extra, expected):
    with pytest.raises(SystemExit) as exc:
        run_cli("fit", *tiny_demo_args(tmp_path), *extra)
    assert exc.value.code == 2
    err_lines = [line for line in capsys.readouterr().err.splitlines() if "error" in line]
    assert len(err_lines) == 1 and expected in err_lines[0], err_lines
    assert "Traceback" not in err_lines[0]


def test_help_print_config_and_console_script():
    for args in (["--help"], ["fit", "--help"], ["fit", "--config", "configs/demo.yaml", "--print_config"]):
        result = subprocess.run([sys.executable, "-m", "lit_transfer", *args], cwd=REPO, capture_output=True, text=True)
        assert result.returncode == 0, result.stderr
    assert "class_path: lit_transfer.nets.SimpleCNN" in result.stdout
    scripts = {ep.name: ep.value for ep in entry_points(group="console_scripts")}
    assert scripts.get("lit-transfer") == "lit_transfer.cli:main"
    script = Path(sys.executable).parent / "lit-transfer"
    assert subprocess.run([script, "--help"], capture_output=True, text=True).stdout.startswith("usage: lit-transfer")
    module_help = subprocess.run(
        [sys.executable, "-m", "lit_transfer", "--help"], cwd=REPO, capture_output=True, text=True
    )
    assert module_help.stdout.startswith("usage: python -m lit_transfer")


def test_fit_ends_with_one_summary_line(tmp_path, run_cli, capsys):
    cli = run_cli("fit", *tiny_demo_args(tmp_path, "--trainer.max_epochs", "2"))
    last_line = capsys.readouterr().out.strip().splitlines()[-1]
    best = cli.trainer.checkpoint_callback
    assert last_line.startswith(f"best val/acc {float(best.best_model_score):.4f} at epoch ")
    assert best.best_model_path in last_line and Path(best.best_model_path).is_file()
    assert last_line.endswith(f"view it with: tensorboard --logdir {tmp_path / 'lightning_logs'}")


def test_the_real_data_folder_comes_from_the_environment(tmp_path):
    env = {**os.environ, "LIT_TRANSFER_DATA": str(tmp_path)}
    for module in ("tests.conftest", "benchmarks.common"):
        name = "SHARED_DATA" if module.startswith("tests") else "DEFAULT_DATA"
        code = f"from {module} import {name}; print({name})"
        shown = subprocess.run([sys.executable, "-c", code], cwd=REPO, env=env, capture_output=True, text=True)
        assert shown.stdout.strip() == str(tmp_path), shown.stderr


def test_demo_config_reaches_90_percent(tmp_path, run_cli):
    """The README demo exactly as configured (its own data size and epochs), in a scratch folder."""
    cli = run_cli(
        "fit",
        "--config",
        str(REPO / "configs" / "demo.yaml"),
        "--data.root",
        str(tmp_path / "shapes"),
        *run_dir_args(tmp_path),
    )
    assert cli.trainer.callback_metrics["val/acc"].item() >= 0.90


NOISE = (
    "litlogger",  # Lightning's advertisement
    "LeafSpec",  # Lightning's use of a deprecated torch API
    "The dirpath has changed",
    "No seed found",
    "does not have many workers",
)


def test_a_normal_run_prints_no_third_party_noise(tmp_path):
    """fit then predict as a user runs them (warnings on, as Python's default): none of the noise lines."""
    env = {**os.environ, "PYTHONWARNINGS": "default"}
    fit = tiny_demo_args(tmp_path, "--trainer.max_epochs", "1", "--trainer.enable_model_summary", "true")
    ckpt = tmp_path / "lightning_logs" / "demo" / "version_0" / "checkpoints" / "last.ckpt"  # written by the fit
    images = tmp_path / "shapes" / "val" / "circle"
    outputs = []
    for args in (["fit", *fit], ["validate", *fit, "--ckpt_path", str(ckpt)], predict_args(ckpt, images, tmp_path)):
        done = subprocess.run(
            [sys.executable, "-m", "lit_transfer", *args], cwd=REPO, env=env, capture_output=True, text=True
        )
        assert done.returncode == 0, done.stderr[-2000:]
        outputs.append(done.stdout + done.stderr)
    assert "wrote 8 predictions" in outputs[-1]  # the 8 validation circles of tiny_demo_args
    (flops,) = [line.split()[:2] for line in outputs[0].splitlines() if line.endswith("Total Flops")]
    assert float(flops[0]) > 0 and flops[1] == "M"  # the summary counts the net's FLOPs on a real image
    for output in outputs:
        assert not [line for line in output.splitlines() if any(noise in line for noise in NOISE)]


def test_the_top_level_help_lists_lightnings_subcommands_without_importing_torch():
    code = (
        "import sys; from lit_transfer.cli import main; main(['--help']); "
        "assert 'torch' not in sys.modules and 'lightning' not in sys.modules, 'imported torch'"
    )
    done = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True)
    assert done.returncode == 0, done.stderr[-2000:]
    from lit_transfer.cli import LitTransferCLI
    from lit_transfer.cli.overview import SUBCOMMANDS

    assert list(SUBCOMMANDS) == [*LitTransferCLI.subcommands(), "export"]  # export: plain argparse (cli/export.py)
    for name in SUBCOMMANDS:
        assert f"  {name} " in done.stdout
