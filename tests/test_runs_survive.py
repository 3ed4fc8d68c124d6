"""Runs that survive: SIGKILL and exact resume, interrupted checkpoint writes, TensorBoard content,
safe loading, clear checkpoint errors."""

from __future__ import annotations

import json
import pickle
import signal
import subprocess
import sys
import textwrap
import time
import types
from pathlib import Path

import pytest
import torch

from lit_transfer.files import is_complete
from tests.conftest import REPO, last_checkpoint, run_folder, run_folders, tiny_demo_args

EXACT = ("--trainer.max_epochs", "3", "--trainer.deterministic", "true")


def _final_state(root: Path) -> dict[str, torch.Tensor]:
    return torch.load(last_checkpoint(root), weights_only=True)["state_dict"]


def _wait_for(path: Path, proc: subprocess.Popen, timeout: float = 180) -> None:
    deadline = time.monotonic() + timeout
    while not path.exists():
        if proc.poll() is not None:
            raise AssertionError(f"run ended early: {proc.stdout.read() if proc.stdout else ''}")
        if time.monotonic() > deadline:
            proc.kill()
            raise AssertionError("run did not reach the pause point")
        time.sleep(0.2)


def test_sigkill_then_resume_last_equals_uninterrupted_run(tmp_path, run_cli):
    killed, straight = tmp_path / "killed", tmp_path / "straight"
    marker = tmp_path / "paused"
    pause = json.dumps({"class_path": "tests.helpers.PauseAtEpoch", "init_args": {"epoch": 1, "marker": str(marker)}})
    proc = subprocess.Popen(
        [sys.executable, "-m", "lit_transfer", "fit", *tiny_demo_args(killed, *EXACT), "--trainer.callbacks+", pause],
        cwd=REPO,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    _wait_for(marker, proc)  # epoch 0 is done and checkpointed; epoch 1 has not started
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert torch.load(last_checkpoint(killed), weights_only=True)["epoch"] == 0

    resumed = run_cli("fit", *tiny_demo_args(killed, *EXACT, "--ckpt_path", "last"))
    assert resumed.trainer.current_epoch == 3
    assert [p.name for p in run_folders(killed)] == ["version_0"]  # resumed in the run's folder
    run_cli("fit", *tiny_demo_args(straight, *EXACT))

    a, b = _final_state(killed), _final_state(straight)
    assert a.keys() == b.keys()
    for key in a:
        assert torch.equal(a[key], b[key]), key


KILL_MID_WRITE = textwrap.dedent(
    """
    import io, os, signal, sys
    import torch
    real_save, calls = torch.save, []

    def save_then_die(obj, f, *args, **kwargs):
        calls.append(1)
        if len(calls) < 3:
            return real_save(obj, f, *args, **kwargs)
        buffer = io.BytesIO()
        real_save(obj, buffer)
        data = buffer.getvalue()
        f.write(data[: len(data) // 2])  # half a checkpoint reaches the disk, then the power goes
        f.flush()
        os.fsync(f.fileno())
        os.kill(os.getpid(), signal.SIGKILL)

    torch.save = save_then_die
    from lit_transfer.cli import main
    main(sys.argv[1:])
    """
)


def test_checkpoint_write_killed_half_way_leaves_only_complete_checkpoints(tmp_path, run_cli):
    result = subprocess.run(
        [sys.executable, "-c", KILL_MID_WRITE, "fit", *tiny_demo_args(tmp_path, "--trainer.max_epochs", "3")],
        cwd=REPO,
        capture_output=True,
        text=True,
    )
    assert result.returncode == -signal.SIGKILL, result.stderr[-2000:]
    folder = run_folder(tmp_path, 0) / "checkpoints"
    ckpts = list(folder.glob("*.ckpt"))
    assert ckpts and all(is_complete(p) for p in ckpts)  # the half-written file never got a real name
    for path in ckpts:
        torch.load(path, weights_only=True)

    # A truncated file that is newer than everything else (written by some other tool) is passed over.
    truncated = folder / "last-v9.ckpt"
    data = (folder / "last.ckpt").read_bytes()
    truncated.write_bytes(data[: len(data) // 2])
    assert last_checkpoint(tmp_path) == folder / "last.ckpt"

    resumed = run_cli("fit", *tiny_demo_args(tmp_path, "--trainer.max_epochs", "2", "--ckpt_path", "last"))
    assert resumed.trainer.current_epoch == 2


def test_last_checkpoint_every_epoch_and_every_n_steps(tmp_path, run_cli):
    cli = run_cli("fit", *tiny_demo_args(tmp_path, "--trainer.max_epochs", "3"))
    last = run_folder(tmp_path, 0) / "checkpoints/last.ckpt"
    # Lightning 2.6's own save_last would have stopped at the last improvement of val/acc.
    assert torch.load(last, weights_only=True)["global_step"] == cli.trainer.global_step

    cli = run_cli(
        "fit",
        *tiny_demo_args(tmp_path / "steps", "--trainer.max_epochs", "1", "--step_checkpoint.every_n_train_steps", "2"),
    )
    names = [p.name for p in (run_folder(tmp_path / "steps", 0) / "checkpoints").glob("step*.ckpt")]
    assert names == [f"step{(cli.trainer.global_step // 2) * 2:08d}.ckpt"]  # the newest one is kept


def test_tensorboard_has_scalars_hparams_confusion_matrix_and_prediction_grid(tmp_path, run_cli):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    run_cli("fit", *tiny_demo_args(tmp_path, "--trainer.max_epochs", "2"))
    acc = EventAccumulator(str(run_folder(tmp_path, 0)), size_guidance={"images": 0})
    acc.Reload()
    tags = acc.Tags()
    assert {"train/loss", "train/acc", "val/loss", "val/acc"} <= set(tags["scalars"])
    assert any(t.startswith("lr-") for t in tags["scalars"])
    assert {"val/confusion_matrix", "val/predictions"} <= set(tags["images"])
    assert len(acc.Images("val/confusion_matrix")) == 2  # one per validation epoch
    assert "hparams" in acc.PluginTagToContent("hparams") or acc.PluginTagToContent("hparams")

    ckpt = run_folder(tmp_path, 0) / "checkpoints" / "last.ckpt"
    tested = run_cli("test", *tiny_demo_args(tmp_path, "--ckpt_path", str(ckpt)))
    for name in ("circle", "square", "triangle"):
        assert f"test/acc_{name}" in tested.trainer.callback_metrics


class _WritesMarker:
    def __init__(self, marker: str) -> None:
        self.marker = marker

    def __reduce__(self):
        return (Path.touch, (Path(self.marker),))


def test_pickled_code_in_a_checkpoint_is_refused_and_never_runs(tmp_path, run_cli, capsys):
    marker = tmp_path / "code_ran"
    evil = tmp_path / "evil.ckpt"
    torch.save({"state_dict": {}, "hyper_parameters": {"x": _WritesMarker(str(marker))}}, evil)
    for sub in ("validate", "predict"):
        with pytest.raises(SystemExit) as exc:
            run_cli(sub, *tiny_demo_args(tmp_path, "--ckpt_path", str(evil)))
        assert exc.value.code == 2
        assert "refused" in capsys.readouterr().err
    evil_pth = tmp_path / "evil.pth"
    torch.save({"net.stem.0.weight": _WritesMarker(str(marker))}, evil_pth)
    with pytest.raises(SystemExit) as exc:
        run_cli("validate", *tiny_demo_args(tmp_path, "--model.init_args.init_from", str(evil_pth)))
    assert exc.value.code == 2
    assert "refused" in capsys.readouterr().err
    assert not marker.exists()
    with pytest.raises(pickle.UnpicklingError):  # and the plain unsafe load would have run it
        torch.load(evil, weights_only=True)


def test_checkpoint_of_another_network_is_a_clear_error(tmp_path, run_cli, capsys):
    run_cli("fit", *tiny_demo_args(tmp_path, "--trainer.max_epochs", "1"))
    ckpt = torch.load(run_folder(tmp_path, 0) / "checkpoints/last.ckpt", weights_only=True)
    for key in ("hyper_parameters", "datamodule_hyper_parameters"):  # as if saved by another script
        ckpt.pop(key)
    foreign = tmp_path / "foreign.ckpt"
    torch.save(ckpt, foreign)
    with pytest.raises(SystemExit) as exc:
        run_cli(
            "validate",
            *tiny_demo_args(tmp_path, "--ckpt_path", str(foreign), "--model.init_args.net.init_args.width", "8"),
        )
    assert exc.value.code == 2
    err = capsys.readouterr().err
    assert "does not fit the network SimpleCNN" in err and "init_from" in err


def test_checkpoint_with_other_classes_names_both_sides(tmp_path, run_cli, capsys, class_folder):
    run_cli("fit", *tiny_demo_args(tmp_path, "--trainer.max_epochs", "1"))
    ckpt = run_folder(tmp_path, 0) / "checkpoints/last.ckpt"
    (class_folder / "hexagon").mkdir()
    (class_folder / "hexagon" / "h.png").write_bytes((next(class_folder.glob("circle/*.png"))).read_bytes())
    with pytest.raises(SystemExit) as exc:
        run_cli(
            "validate",
            *tiny_demo_args(tmp_path, "--ckpt_path", str(ckpt)),
            "--data.class_path",
            "lit_transfer.data.ImageFolderDataModule",
            "--data.root",
            str(class_folder),
        )
    assert exc.value.code == 2
    err = capsys.readouterr().err
    assert "3 classes" in err and "4 classes" in err and "hexagon" in err


def test_init_from_takes_the_backbone_of_a_run_with_other_classes(tmp_path, run_cli, class_folder):
    from lit_transfer.data.shapes import SHAPES
    from tests.conftest import write_image_folder

    run_cli("fit", *tiny_demo_args(tmp_path, "--trainer.max_epochs", "1"))  # 3 classes
    ckpt = run_folder(tmp_path, 0) / "checkpoints/last.ckpt"
    source = {k.removeprefix("net."): v for k, v in torch.load(ckpt, weights_only=True)["state_dict"].items()}

    two = write_image_folder(tmp_path / "two", per_class=6, classes=SHAPES[:2])
    cli = run_cli(
        "validate",
        *tiny_demo_args(tmp_path / "second", "--model.init_args.init_from", str(ckpt)),
        "--data.class_path",
        "lit_transfer.data.ImageFolderDataModule",
        "--data.root",
        str(two),
        "--data.image_size",
        "32",
        "--data.resize_size",
        "32",
        "--data.val_fraction",
        "0.5",
    )
    net = cli.model.net
    assert net.get_classifier().out_features == 2
    for key, value in net.state_dict().items():
        if key.startswith("head."):
            assert value.shape != source[key].shape or not torch.equal(value, source[key])
        else:
            assert torch.equal(value, source[key]), key


def test_flags_and_config_win_over_the_checkpoint_settings(tmp_path, run_cli):
    run_cli("fit", *tiny_demo_args(tmp_path, "--trainer.max_epochs", "1"))
    ckpt = run_folder(tmp_path, 0) / "checkpoints/last.ckpt"
    assert torch.load(ckpt, weights_only=True)["hyper_parameters"]["label_smoothing"] == 0.0
    cli = run_cli(
        "validate", *tiny_demo_args(tmp_path, "--ckpt_path", str(ckpt), "--model.init_args.label_smoothing", "0.3")
    )
    assert cli.model.label_smoothing == pytest.approx(0.3)


@pytest.mark.parametrize(
    "contradiction",
    [
        ["--model.init_args.net.init_args.width", "8"],  # the same net, another width
        ["--model.init_args.net", '{"class_path": "lit_transfer.nets.AlexNet32"}'],  # another net
    ],
)
def test_settings_that_contradict_the_checkpoint_network_are_one_line(tmp_path, run_cli, capsys, contradiction):
    run_cli("fit", *tiny_demo_args(tmp_path, "--trainer.max_epochs", "1"))
    ckpt = run_folder(tmp_path, 0) / "checkpoints/last.ckpt"
    capsys.readouterr()
    with pytest.raises(SystemExit) as exc:
        run_cli("validate", *tiny_demo_args(tmp_path, "--ckpt_path", str(ckpt), *contradiction))
    assert exc.value.code == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "does not fit the network" in err and "--model.init_from" in err


def _damage_tensor_bytes(path: Path) -> None:
    """Overwrite bytes inside the largest tensor record of a checkpoint; its zip directory stays intact."""
    import struct
    import zipfile

    with zipfile.ZipFile(path) as archive:
        record = max(archive.infolist(), key=lambda info: info.file_size)
    with open(path, "r+b") as f:
        f.seek(record.header_offset + 26)
        name_length, extra_length = struct.unpack("<HH", f.read(4))
        f.seek(record.header_offset + 30 + name_length + extra_length + record.file_size // 2)
        f.write(b"\xff" * 64)


def test_a_damaged_or_non_finite_checkpoint_is_refused_in_one_line(tmp_path, run_cli, capsys):
    run_cli("fit", *tiny_demo_args(tmp_path, "--trainer.max_epochs", "1"))
    last = run_folder(tmp_path, 0) / "checkpoints/last.ckpt"
    damaged = tmp_path / "damaged.ckpt"
    damaged.write_bytes(last.read_bytes())
    _damage_tensor_bytes(damaged)
    assert is_complete(damaged)  # what the old check looked at
    nan = tmp_path / "nan.ckpt"
    ckpt = torch.load(last, weights_only=True)
    ckpt["state_dict"]["net.head.weight"][0, 0] = float("nan")
    torch.save(ckpt, nan)
    capsys.readouterr()
    for path, reason in ((damaged, "damaged"), (nan, "NaN or infinite weights")):
        for subcommand in ("fit", "validate"):
            with pytest.raises(SystemExit) as exc:
                run_cli(subcommand, *tiny_demo_args(tmp_path, "--trainer.max_epochs", "2", "--ckpt_path", str(path)))
            assert exc.value.code == 2
            err = capsys.readouterr().err.strip()
            assert len(err.splitlines()) == 1 and reason in err and str(path) in err


def test_last_passes_over_a_damaged_checkpoint_and_says_which_it_uses(tmp_path, run_cli, capsys):
    run_cli("fit", *tiny_demo_args(tmp_path, "--trainer.max_epochs", "1", "--step_checkpoint.every_n_train_steps", "1"))
    folder = run_folder(tmp_path, 0) / "checkpoints"
    (step,) = folder.glob("step*.ckpt")  # the whole training state, as last.ckpt ("best" holds the weights only)
    good_history = {p.name: p.read_bytes() for p in folder.glob("*.ckpt")}
    time.sleep(0.01)
    _damage_tensor_bytes(folder / "last.ckpt")
    (folder / "last.ckpt").touch()  # the newest
    capsys.readouterr()
    resumed = run_cli("fit", *tiny_demo_args(tmp_path, "--trainer.max_epochs", "2", "--ckpt_path", "last"))
    out = capsys.readouterr().out
    assert f"passing over {folder / 'last.ckpt'}" in out and f"using {step}" in out
    assert resumed.trainer.current_epoch == 2
    assert step.read_bytes() == good_history[step.name]  # the good history was not written over


def test_a_full_disk_while_saving_is_one_line_and_the_earlier_checkpoints_stay(tmp_path, run_cli, capsys, monkeypatch):
    real_save, calls = torch.save, []

    def save_until_the_disk_is_full(obj, f, *args, **kwargs):
        calls.append(1)
        if len(calls) <= 2:  # epoch 0: best and last
            return real_save(obj, f, *args, **kwargs)
        f.write(b"PK\x03\x04 a few bytes before the disk ran out")
        raise RuntimeError("[enforce fail at inline_container.cc:672] . unexpected pos 2368 vs 2256")

    monkeypatch.setattr(torch, "save", save_until_the_disk_is_full)
    with pytest.raises(SystemExit) as exc:
        run_cli("fit", *tiny_demo_args(tmp_path, "--trainer.max_epochs", "2"))
    monkeypatch.undo()
    assert exc.value.code == 2
    err = capsys.readouterr().err.strip().splitlines()[-1]
    folder = run_folder(tmp_path, 0) / "checkpoints"
    assert err.startswith("lit_transfer: error: cannot write checkpoint") and "disk full" in err
    assert f"the last intact checkpoint is {folder}" in err
    assert sorted(p.name for p in folder.iterdir())[-1] == "last.ckpt"  # no temporary file left
    for path in folder.glob("*.ckpt"):
        assert torch.load(path, weights_only=True)["epoch"] == 0


class FakeAccelerator:
    """Per-device random states of 8 devices; restoring records (state, device index). Calls that touch
    every device fail the test."""

    def __init__(self) -> None:
        self.restored: list[tuple[torch.Tensor, int]] = []

    def is_available(self) -> bool:
        return True

    def get_rng_state(self, device) -> torch.Tensor:
        return torch.tensor([device.index], dtype=torch.uint8)

    def set_rng_state(self, state, device) -> None:
        self.restored.append((state, device.index))

    def get_rng_state_all(self):
        raise AssertionError("the random states of every device were read")

    set_rng_state_all = get_rng_state_all


def run_on(device: str):
    """A trainer on ``device`` (``npu:3`` too: a real torch.device of type npu needs torch_npu)."""
    kind, _, index = device.partition(":")
    root = types.SimpleNamespace(type=kind, index=int(index) if index else None)
    return types.SimpleNamespace(strategy=types.SimpleNamespace(root_device=root))


@pytest.fixture(params=["cuda", "npu"])
def accelerator(request, monkeypatch):
    fake = FakeAccelerator()
    if request.param == "npu":
        monkeypatch.setitem(sys.modules, "torch_npu", types.ModuleType("torch_npu"))
        monkeypatch.setattr(torch, "npu", fake, raising=False)
    else:
        for name in ("is_available", "get_rng_state", "set_rng_state", "get_rng_state_all", "set_rng_state_all"):
            monkeypatch.setattr(torch.cuda, name, getattr(fake, name))
    return request.param, fake


def saved_then_resumed(saved_on: str, resumed_on: str) -> dict:
    """The one process's random states saved on ``saved_on``, after resuming them on ``resumed_on``."""
    from lit_transfer.callbacks import RNGStateCheckpoint

    saving = RNGStateCheckpoint()
    saving.setup(run_on(saved_on), None, "fit")
    saved = saving.state_dict()
    resuming = RNGStateCheckpoint()
    resuming.load_state_dict(saved)
    resuming.setup(run_on(resumed_on), None, "fit")
    resuming.on_train_start(run_on(resumed_on), None)
    (state,) = saved["processes"]
    return state


def test_a_run_on_one_of_eight_devices_resumes_on_a_machine_with_one(accelerator):
    kind, fake = accelerator
    state = saved_then_resumed(f"{kind}:3", f"{kind}:0")
    assert torch.equal(state[kind], torch.tensor([3], dtype=torch.uint8))  # the run's device only
    assert fake.restored == [(state[kind], 0)]  # onto the device the resumed run uses


def test_a_cpu_run_on_an_accelerator_machine_never_touches_the_accelerator(accelerator):
    kind, fake = accelerator
    assert kind not in saved_then_resumed("cpu", "cpu")
    from lit_transfer.callbacks import RNGStateCheckpoint

    from_gpu = RNGStateCheckpoint()
    from_gpu.load_state_dict(
        {"processes": [{**saved_then_resumed("cpu", "cpu"), kind: torch.tensor([5], dtype=torch.uint8)}]}
    )
    from_gpu.on_train_start(run_on("cpu"), None)  # a GPU run's checkpoint resumed on the CPU
    assert fake.restored == []


def test_checkpoints_holding_every_devices_state_still_resume(accelerator):
    """Written before one device's state was saved (and before each process's was): one state per device."""
    from lit_transfer.callbacks import RNGStateCheckpoint

    kind, fake = accelerator
    old = {**saved_then_resumed("cpu", "cpu"), kind: [torch.tensor([i], dtype=torch.uint8) for i in range(8)]}
    callback = RNGStateCheckpoint()
    callback.load_state_dict(old)
    callback.on_train_start(run_on(f"{kind}:0"), None)
    assert len(fake.restored) == 1 and torch.equal(fake.restored[0][0], old[kind][0])


@pytest.mark.parametrize("flag", ["--model.init_args.init_from", "--model.init_args.weights"])
def test_a_damaged_or_non_finite_weights_file_is_refused(tmp_path, run_cli, capsys, flag):
    run_cli("fit", *tiny_demo_args(tmp_path, "--trainer.max_epochs", "1"))
    last = run_folder(tmp_path, 0) / "checkpoints/last.ckpt"
    damaged = tmp_path / "damaged.pth"
    damaged.write_bytes(last.read_bytes())
    _damage_tensor_bytes(damaged)
    nan = tmp_path / "nan.pth"
    state = torch.load(last, weights_only=True)["state_dict"]
    state["net.stem.0.weight"][0] = float("inf")
    torch.save(state, nan)
    model = ["--model", "lit_transfer.models.FineTuneClassifier"] if flag.endswith("weights") else []
    for path, reason in ((damaged, "is damaged"), (nan, "NaN or infinite values")):
        capsys.readouterr()
        with pytest.raises(SystemExit) as exc:
            run_cli("fit", *tiny_demo_args(tmp_path / "second", *model, flag, str(path)))
        assert exc.value.code == 2
        err = capsys.readouterr().err.strip().splitlines()[-1]
        assert reason in err and str(path) in err, err


def test_resuming_with_fewer_epochs_than_done_is_one_line(tmp_path, run_cli, capsys):
    run_cli("fit", *tiny_demo_args(tmp_path, "--trainer.max_epochs", "3"))
    capsys.readouterr()
    with pytest.raises(SystemExit) as exc:
        run_cli("fit", *tiny_demo_args(tmp_path, "--trainer.max_epochs", "1", "--ckpt_path", "last"))
    assert exc.value.code == 2
    err = capsys.readouterr().err
    assert "Traceback" not in err and "max_epochs=1" in err.strip().splitlines()[-1]
    assert [p.name for p in run_folders(tmp_path)] == ["version_0"]
