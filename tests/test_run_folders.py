"""One run, one folder: claimed atomically, continued on resume, given back when a start fails."""

from __future__ import annotations

import multiprocessing
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

from tests.conftest import REPO, tiny_demo_args

SHORT = ["--trainer.max_epochs", "1", "--trainer.limit_train_batches", "1", "--trainer.limit_val_batches", "1"]


def _versions(root: Path) -> list[str]:
    return sorted(p.name for p in (root / "lightning_logs").iterdir()) if (root / "lightning_logs").exists() else []


def _start_a_run(root: str) -> None:
    from lit_transfer.callbacks import RunLogger

    logger = RunLogger(root)
    logger.experiment.add_scalar("pid", os.getpid())  # writes its event file into the claimed folder
    logger.experiment.flush()


def test_run_folders_are_claimed_atomically(tmp_path):
    """Run folders claimed by processes started together, 4 at a time, 10 times."""
    context = multiprocessing.get_context("fork")
    for _ in range(10):
        children = [context.Process(target=_start_a_run, args=(str(tmp_path),)) for _ in range(4)]
        for child in children:
            child.start()
        for child in children:
            child.join(timeout=60)
        assert [child.exitcode for child in children] == [0, 0, 0, 0]
    assert _versions(tmp_path) == sorted(f"version_{n}" for n in range(40))
    for version in _versions(tmp_path):
        assert len(list((tmp_path / "lightning_logs" / version).glob("events.out.tfevents.*"))) == 1, version


@pytest.mark.slow
def test_fits_started_together_each_get_their_own_folder(tmp_path, run_cli):
    """The same through the command line: 4 fits at once in one folder, 10 times (minutes)."""
    args = tiny_demo_args(tmp_path, *SHORT, "--trainer.num_sanity_val_steps", "0")
    run_cli("fit", *args)  # writes the shapes once; version_0
    for _ in range(10):
        runs = [
            subprocess.Popen([sys.executable, "-m", "lit_transfer", "fit", *args], cwd=REPO, stderr=subprocess.PIPE)
            for _ in range(4)
        ]
        errors = [run.communicate(timeout=600)[1].decode() for run in runs]
        assert [run.returncode for run in runs] == [0, 0, 0, 0], errors
        assert not any("Traceback" in e for e in errors), errors
    versions = _versions(tmp_path)
    assert versions == sorted(f"version_{n}" for n in range(41))
    for version in versions:
        folder = tmp_path / "lightning_logs" / version
        assert len(list(folder.glob("events.out.tfevents.*"))) == 1, version
        assert (folder / "checkpoints" / "last.ckpt").is_file(), version


def test_a_resumed_fit_continues_in_its_run_folder_and_keeps_the_best(tmp_path, run_cli, capsys):
    run_cli("fit", *tiny_demo_args(tmp_path, "--trainer.max_epochs", "1"))
    folder = tmp_path / "lightning_logs" / "version_0"
    stale = folder / "checkpoints" / ".last.ckpt.x1y2z3.tmp"
    stale.write_bytes(b"half a checkpoint")
    first_config = (folder / "config.yaml").read_text()
    capsys.readouterr()
    resumed = run_cli("fit", *tiny_demo_args(tmp_path, "--trainer.max_epochs", "3", "--ckpt_path", "last"))
    out = capsys.readouterr().out
    assert resumed.trainer.current_epoch == 3
    assert _versions(tmp_path) == ["version_0"]
    assert f"resuming in {folder}" in out and f"removed {stale}" in out and not stale.exists()
    assert (folder / "config.yaml").read_text() == first_config  # the run's own settings stay
    assert len(list(folder.glob("config-resumed-*.yaml"))) == 1
    # one curve: three epochs of val/acc in the run's folder
    events = EventAccumulator(str(folder))
    events.Reload()
    accuracies = [e.value for e in events.Scalars("val/acc")]
    assert len(accuracies) == 3
    # "best" is the best of all three epochs, not of the resumed ones only
    (best,) = (folder / "checkpoints").glob("best-*.ckpt")
    state = torch.load(best, weights_only=True)["callbacks"]
    score = next(v for k, v in state.items() if k.startswith("ModelCheckpoint{'monitor': 'val/acc'"))[
        "best_model_score"
    ]
    assert float(score) == pytest.approx(max(accuracies), abs=1e-6)


def test_resuming_an_older_checkpoint_branches_into_a_new_folder(tmp_path, run_cli):
    run_cli("fit", *tiny_demo_args(tmp_path, "--trainer.max_epochs", "2", "--checkpoint.save_top_k", "-1"))
    checkpoints = tmp_path / "lightning_logs" / "version_0" / "checkpoints"
    older = min(checkpoints.glob("best-*.ckpt"), key=lambda p: p.stat().st_mtime)
    newest = {p.name: p.read_bytes() for p in checkpoints.glob("*.ckpt")}
    run_cli("fit", *tiny_demo_args(tmp_path, "--trainer.max_epochs", "2", "--ckpt_path", str(older)))
    assert _versions(tmp_path) == ["version_0", "version_1"]
    assert {p.name: p.read_bytes() for p in checkpoints.glob("*.ckpt")} == newest  # nothing overwritten


def test_a_run_that_fails_while_starting_leaves_no_folder(tmp_path, class_folder, run_cli):
    for image in (class_folder / "circle").iterdir():
        image.write_bytes(b"")  # a class with no readable image: the data module refuses at setup
    args = [
        "--config",
        str(REPO / "configs" / "demo.yaml"),
        "--data",
        "lit_transfer.data.ImageFolderDataModule",
        "--data.root",
        str(class_folder),
        "--data.image_size",
        "32",
        "--trainer.default_root_dir",
        str(tmp_path / "run"),
    ]
    with pytest.warns(UserWarning, match="skipped"), pytest.raises(SystemExit) as exc:
        run_cli("fit", *args)
    assert exc.value.code == 2
    assert _versions(tmp_path / "run") == []
