"""One run, one folder: claimed atomically, continued on resume, given back when a start fails."""

from __future__ import annotations

import multiprocessing
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from jsonargparse import Namespace
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

from lit_transfer.cli.runs import run_name
from tests.conftest import REPO, exit_message, predict_args, run_folder, run_folders, tiny_demo_args

NET_SPEC = {
    "class_path": "lit_transfer.models.ImageClassifier",
    "init_args": {"net": {"class_path": "lit_transfer.nets.SimpleCNN"}},
}
DATA_CLASS = "lit_transfer.data.ShapesDataModule"
SHORT = ["--trainer.max_epochs", "1", "--trainer.limit_train_batches", "1", "--trainer.limit_val_batches", "1"]


def _versions(root: Path) -> list[str]:
    return sorted(p.name for p in run_folders(root))


def _start_a_run(root: str) -> None:
    from lit_transfer.callbacks import RunLogger

    logger = RunLogger(Path(root) / "lightning_logs", "run")
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
        assert len(list((tmp_path / "lightning_logs" / "run" / version).glob("events.out.tfevents.*"))) == 1, version


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
        folder = tmp_path / "lightning_logs" / "shapes-simplecnn" / version
        assert len(list(folder.glob("events.out.tfevents.*"))) == 1, version
        assert (folder / "checkpoints" / "last.ckpt").is_file(), version


def test_a_resumed_fit_continues_in_its_run_folder_and_keeps_the_best(tmp_path, run_cli, capsys):
    run_cli("fit", *tiny_demo_args(tmp_path, "--trainer.max_epochs", "1"))
    folder = run_folder(tmp_path, 0)
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
    state = torch.load(folder / "checkpoints" / "last.ckpt", weights_only=True)["callbacks"]
    score = next(v for k, v in state.items() if k.startswith("ModelCheckpoint{'monitor': 'val/acc'"))[
        "best_model_score"
    ]
    assert float(score) == pytest.approx(max(accuracies), abs=1e-6)


def test_resuming_an_older_checkpoint_branches_into_a_new_folder(tmp_path, run_cli):
    every_step = ("--step_checkpoint.every_n_train_steps", "1", "--step_checkpoint.save_top_k", "-1")
    run_cli("fit", *tiny_demo_args(tmp_path, "--trainer.max_epochs", "2", *every_step))
    checkpoints = run_folder(tmp_path, 0) / "checkpoints"
    older = min(checkpoints.glob("step*.ckpt"), key=lambda p: p.stat().st_mtime)
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


# --- names: a folder per task, `last` within it, evaluations inside the run they evaluate ---------


def test_runs_are_named_after_their_config_or_their_data_and_net(tmp_path, run_cli):
    run_cli("fit", *tiny_demo_args(tmp_path, *SHORT))
    run_cli("fit", *tiny_demo_args(tmp_path, *SHORT, "--run_name", "my-try"))
    assert [f"{p.parent.name}/{p.name}" for p in run_folders(tmp_path)] == ["demo/version_0", "my-try/version_0"]
    assert run_name(Namespace(config=None, run_name=None, model=NET_SPEC, data={"class_path": DATA_CLASS})) == (
        "shapes-simplecnn"
    )


def test_a_run_name_that_is_not_a_folder_name_is_one_line(tmp_path, run_cli, capsys):
    line = exit_message(run_cli, capsys, "fit", *tiny_demo_args(tmp_path, *SHORT, "--run_name", "../elsewhere"))
    assert "run_name '../elsewhere'" in line
    assert not run_folders(tmp_path)


def test_last_looks_only_among_runs_of_the_same_task(tmp_path, run_cli, capsys):
    run_cli("fit", *tiny_demo_args(tmp_path, *SHORT))
    capsys.readouterr()
    # Another task name: the demo's checkpoint is not its to resume.
    line = exit_message(
        run_cli, capsys, "fit", *tiny_demo_args(tmp_path, *SHORT, "--run_name", "other", "--ckpt_path", "last")
    )
    assert "no checkpoint of run 'other'" in line and "without --ckpt_path" in line
    # The same name with another net: passed over, said, and then there is none.
    other_net = ("--model.net", "lit_transfer.nets.AlexNet32")
    with pytest.raises(SystemExit):
        run_cli("fit", *tiny_demo_args(tmp_path, *SHORT, *other_net, "--ckpt_path", "last"))
    out = capsys.readouterr().out
    assert "passing over" in out and "SimpleCNN, not ImageClassifier/AlexNet32" in out
    # The same task goes on.
    again = run_cli("fit", *tiny_demo_args(tmp_path, "--trainer.max_epochs", "2", "--ckpt_path", "last"))
    assert again.trainer.current_epoch == 2


def test_best_keeps_the_weights_and_last_the_whole_state(tmp_path, run_cli, capsys):
    run_cli("fit", *tiny_demo_args(tmp_path, *SHORT))
    checkpoints = run_folder(tmp_path) / "checkpoints"
    (best,) = checkpoints.glob("best-*.ckpt")
    last = checkpoints / "last.ckpt"
    best_state, last_state = torch.load(best, weights_only=True), torch.load(last, weights_only=True)
    assert "optimizer_states" in last_state and "optimizer_states" not in best_state
    assert best_state["hyper_parameters"]["class_names"] == ["circle", "square", "triangle"]
    assert best.stat().st_size < 0.6 * last.stat().st_size  # AdamW keeps two numbers per weight
    # Predicting from "best" works; resuming from it is refused with what to do instead.
    predicted = run_cli("predict", "--ckpt_path", str(best), "--data.predict_root", str(tmp_path / "shapes/val"))
    assert predicted.trainer.predict_loop.predictions
    capsys.readouterr()
    line = exit_message(run_cli, capsys, "fit", *tiny_demo_args(tmp_path, *SHORT, "--ckpt_path", str(best)))
    assert "holds only the weights" in line and "last.ckpt" in line and "--model.init_from" in line


def test_evaluations_write_inside_the_run_they_evaluate(tmp_path, run_cli):
    run_cli("fit", *tiny_demo_args(tmp_path, *SHORT))
    folder = run_folder(tmp_path)
    last = folder / "checkpoints" / "last.ckpt"
    for command in ("validate", "test"):
        run_cli(command, *tiny_demo_args(tmp_path, "--ckpt_path", str(last)))
    run_cli("predict", "--ckpt_path", str(last), "--data.predict_root", str(tmp_path / "shapes/val/circle"))
    assert [p.name for p in run_folders(tmp_path)] == ["version_0"]  # no new runs
    made = sorted(p.name.split("-")[0] for p in folder.iterdir() if p.is_dir() and p.name != "checkpoints")
    assert made == ["predict", "test", "validate"]
    assert len(list(folder.glob("validate-*/events.out.tfevents.*"))) == 1
    assert len(list(folder.glob("predict-*/predictions-*.csv"))) == 1
    # Another root given: the user's choice wins.
    elsewhere = tmp_path / "elsewhere"
    run_cli(*predict_args(last, tmp_path / "shapes/val/circle", elsewhere))
    assert len(list(elsewhere.glob("lightning_logs/*/predict-*/predictions-*.csv"))) == 1


def test_predict_without_a_model_says_what_to_give(tmp_path, run_cli, capsys):
    line = exit_message(run_cli, capsys, "predict", "--data.predict_root", str(tmp_path))
    assert "predict needs a trained model" in line and "--ckpt_path" in line
