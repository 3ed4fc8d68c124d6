"""Multi-process training on the CPU: Lightning's DDP strategy with two processes (gloo).

A DDP run must start the same command again (Lightning's subprocess launcher re-runs ``sys.argv``),
so these tests run ``python -m lit_transfer`` in a subprocess instead of in pytest's process.
"""

from __future__ import annotations

import csv
import json
import multiprocessing
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from lit_transfer.data.shapes import SHAPES, generate_shapes
from tests.conftest import REPO, run_folders, written

DEMO_DATA = REPO / "data" / "shapes"  # the demo's own data set, generated once and shared
DEMO = ["--config", str(REPO / "configs" / "demo.yaml"), "--data.root", str(DEMO_DATA)]
QUIET = ["--trainer.enable_progress_bar", "false", "--trainer.enable_model_summary", "false"]
DDP_CPU = ["--trainer.strategy", "ddp", "--trainer.devices", "2", "--trainer.accelerator", "cpu"]


def run_module(*args: str, timeout: int = 300) -> subprocess.CompletedProcess:
    # One thread per process: two DDP processes share the CPU cores instead of fighting over them.
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONWARNINGS": "ignore"}
    result = subprocess.run(
        [sys.executable, "-m", "lit_transfer", *args],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=timeout,
    )
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    return result


def logged_scalars(version_dir: Path) -> dict[str, list[float]]:
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    events = EventAccumulator(str(version_dir))
    events.Reload()
    return {tag: [e.value for e in events.Scalars(tag)] for tag in events.Tags()["scalars"]}


def one_version(root: Path) -> Path:
    versions = run_folders(root)
    assert len(versions) == 1, versions  # every process wrote into the one run folder of rank 0
    return versions[0]


def in_forked_processes(target, *per_process: tuple) -> None:
    """``target(*args)`` for each ``args`` of ``per_process``, each in a forked process, all at once; each
    must exit cleanly within a minute."""
    context = multiprocessing.get_context("fork")
    workers = [context.Process(target=target, args=args) for args in per_process]
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join(60)
        assert worker.exitcode == 0


def join_gloo_group(rank: int, processes: int, store_path: str) -> None:
    """Make this forked process rank ``rank`` of a gloo process group of ``processes``, met through a file."""
    torch.distributed.init_process_group(
        "gloo", store=torch.distributed.FileStore(store_path, processes), rank=rank, world_size=processes
    )


def _generate(root: str, start, results) -> None:
    start.wait()
    results.put(str(generate_shapes(root, train_per_class=6, val_per_class=3, image_size=16, seed=0)))


def test_shapes_generation_is_safe_when_processes_race(tmp_path):
    """Two processes (like torchrun's) write the demo data at the same moment: one complete set, no debris."""
    root = tmp_path / "shapes"
    context = multiprocessing.get_context("fork")
    start, results = context.Barrier(2), context.Queue()
    in_forked_processes(_generate, *[(str(root), start, results)] * 2)
    assert {results.get(timeout=5), results.get(timeout=5)} == {str(root)}
    for split, count in (("train", 6), ("val", 3)):
        assert sorted(p.name for p in (root / split).iterdir()) == sorted(SHAPES)
        for shape in SHAPES:
            assert len(list((root / split / shape).glob("*.png"))) == count
    assert sorted(p.name for p in tmp_path.iterdir()) == ["shapes"]  # no half-written temporary folder left


def test_ddp_two_cpu_processes_fit(tmp_path, run_cli):
    """``--trainer.strategy ddp --trainer.devices 2 --trainer.accelerator cpu`` trains with two processes:
    one run folder with one best checkpoint, and the logged validation metrics cover the whole
    validation set (synchronised across the processes, not rank 0's half of it), each image once: 15
    images on 2 processes, which Lightning's own sampler pads to 16 with a repeated one."""
    data = ["--data.root", str(tmp_path / "shapes"), "--data.train_per_class", "30", "--data.val_per_class", "5"]
    run_module(
        "fit",
        *DEMO,
        *data,
        *DDP_CPU,
        *QUIET,
        "--data.batch_size",
        "16",
        "--trainer.max_epochs",
        "2",
        "--trainer.default_root_dir",
        str(tmp_path),
        "--seed_everything",
        "false",  # unseeded: each process starts from its own seed, and the training order takes rank 0's
    )
    version = one_version(tmp_path)
    assert len(list((version / "checkpoints").glob("best-*.ckpt"))) == 1
    scalars = logged_scalars(version)
    assert len(scalars["val/acc"]) == 2  # one synchronised value per epoch

    # One process re-validates the last weights on the whole validation set: the numbers DDP logged.
    last = version / "checkpoints" / "last.ckpt"
    assert torch.load(last, map_location="cpu", weights_only=False)["epoch"] == 1
    cli = run_cli(
        "validate",
        *DEMO,
        *data,
        *QUIET,
        "--ckpt_path",
        str(last),
        "--trainer.default_root_dir",
        str(tmp_path / "check"),
    )
    metrics = cli.trainer.callback_metrics
    assert float(metrics["val/acc"]) == pytest.approx(scalars["val/acc"][-1], abs=1e-6)
    assert float(metrics["val/loss"]) == pytest.approx(scalars["val/loss"][-1], rel=1e-5)


def _write_predictions(rank: int, store_path: str, folder: str) -> None:
    import types

    from lit_transfer.callbacks import PredictionCSVWriter

    join_gloo_group(rank, 2, store_path)
    # DistributedSampler over 5 images: rank 0 gets 0, 2, 4; rank 1 gets 1, 3 and image 0 again as padding.
    indices = [[0, 2], [4]] if rank == 0 else [[1, 3], [0]]
    predictions = [
        {
            "paths": [f"img{i}.png" for i in batch],
            "class_names": [f"class{i}" for i in batch],
            "probabilities": torch.tensor([0.5] * len(batch)),
        }
        for batch in indices
    ]
    trainer = types.SimpleNamespace(
        world_size=2, is_global_zero=rank == 0, log_dir=folder, default_root_dir=folder, datamodule=None
    )
    PredictionCSVWriter(print_rows=0).write_on_epoch_end(trainer, None, predictions, [indices])
    torch.distributed.destroy_process_group()


def test_prediction_csv_collects_every_process(tmp_path):
    """Under DDP each process predicts its share of the images; the CSV (written once, by rank 0) has them
    all, each once, in data order."""
    args = (str(tmp_path / "store"), str(tmp_path / "out"))
    in_forked_processes(_write_predictions, *[(rank, *args) for rank in range(2)])
    files = list(written((tmp_path / "out"), "predictions*.csv"))
    assert len(files) == 1
    with open(files[0], newline="") as f:
        rows = list(csv.DictReader(f))
    assert [row["path"] for row in rows] == [f"img{i}.png" for i in range(5)]
    assert [row["class_name"] for row in rows] == [f"class{i}" for i in range(5)]


@pytest.mark.slow
def test_ddp_reaches_the_single_process_accuracy(tmp_path):
    """The demo in one process and in two DDP processes (same 64 images per step) land in the same accuracy
    band (>= 0.9 val/acc), and a DDP predict writes one complete CSV."""
    accuracy = {}
    for name, flags in (
        ("single", ["--trainer.accelerator", "cpu", "--trainer.devices", "1"]),
        ("ddp", [*DDP_CPU, "--data.batch_size", "32"]),
    ):
        root = tmp_path / name
        run_module("fit", *DEMO, *flags, *QUIET, "--trainer.default_root_dir", str(root))
        accuracy[name] = logged_scalars(one_version(root))["val/acc"][-1]
    assert accuracy["single"] >= 0.9 and accuracy["ddp"] >= 0.9, accuracy
    assert abs(accuracy["single"] - accuracy["ddp"]) <= 0.05, accuracy

    # A two-process predict writes one CSV with every image.
    best = next((one_version(tmp_path / "ddp") / "checkpoints").glob("best-*.ckpt"))
    predict_root, out = DEMO_DATA / "val" / "circle", tmp_path / "predict"
    run_module(
        "predict",
        *DEMO,
        *DDP_CPU,
        *QUIET,
        "--ckpt_path",
        str(best),
        "--data.predict_root",
        str(predict_root),
        "--trainer.default_root_dir",
        str(out),
    )
    files = list(written(out, "predictions*.csv"))
    assert len(files) == 1
    with open(files[0], newline="") as f:
        rows = list(csv.DictReader(f))
    assert sorted(row["path"] for row in rows) == sorted(str(p) for p in predict_root.glob("*.png"))
    assert sum(row["class_name"] == "circle" for row in rows) >= 0.9 * len(rows)


def test_predicting_fewer_images_than_processes_is_one_line(tmp_path):
    """Lightning's predict sampler asserts that every process gets an image; said before it does."""
    import types

    from PIL import Image

    from lit_transfer.data import ImageFolderDataModule
    from lit_transfer.errors import UserError

    Image.new("RGB", (20, 20)).save(tmp_path / "one.png")
    data = ImageFolderDataModule(predict_root=str(tmp_path / "one.png"), num_workers=0)
    data.trainer = types.SimpleNamespace(world_size=2)
    with pytest.raises(
        UserError, match=r"1 image to predict on 2 processes: predict on one device \(--trainer.devices 1\)"
    ):
        data.predict_dataloader()


@pytest.mark.parametrize("balanced", [False, True])
def test_every_process_shuffles_with_rank_0s_seed(balanced, class_folder):
    """Each DDP process takes its share of one training order: an unseeded run has a seed per process,
    so the training sampler takes rank 0's, broadcast."""
    import types

    from lit_transfer.data import ImageFolderDataModule

    data = ImageFolderDataModule(str(class_folder), num_workers=0, image_size=32, balanced_sampling=balanced)
    data.setup("fit")
    asked = []

    def broadcast(value, src):
        asked.append((value, src))
        return 1234  # rank 0's seed

    data.trainer = types.SimpleNamespace(
        world_size=2, global_rank=1, accelerator=None, strategy=types.SimpleNamespace(broadcast=broadcast)
    )
    assert data.make_loader(data.train_set, train=True).sampler.seed == 1234
    assert asked == [(torch.initial_seed(), 0)]


# None: the control (replicas without an unfreeze stay identical anyway), with -m slow.
@pytest.mark.parametrize("unfreeze", ["{1: [model.layer4]}", pytest.param(None, marks=pytest.mark.slow)])
def test_replicas_stay_identical_when_layers_are_unfrozen_mid_fit(unfreeze, class_folder, tmp_path):
    """DDP syncs the gradients of the parameters that trained when it wrapped the net; layers unfrozen
    later must be synced too, or each process trains them on its own share and the replicas drift."""
    from tests.conftest import catsdogs_resnet18_args

    digests = tmp_path / "digests"
    callback = json.dumps({"class_path": "tests.helpers.WriteWeightsDigest", "init_args": {"folder": str(digests)}})
    schedule = ["--model.unfreeze", unfreeze] if unfreeze else []
    args = catsdogs_resnet18_args(class_folder, tmp_path, "--model.finetune", "feature_extractor", *schedule)
    run_module(
        *args,
        *DDP_CPU,
        "--data.batch_size",
        "4",
        "--trainer.max_epochs",
        "2",
        "--trainer.limit_train_batches",
        "3",
        "--trainer.callbacks+",
        callback,
    )
    rank0, rank1 = ((digests / f"rank{rank}.txt").read_text() for rank in range(2))
    assert rank0 == rank1


def _resume_random_states(rank: int, store_path: str) -> None:
    import random
    import types

    import numpy as np

    from lit_transfer.callbacks import RNGStateCheckpoint

    join_gloo_group(rank, 2, store_path)
    trainer = types.SimpleNamespace(strategy=types.SimpleNamespace(root_device=torch.device("cpu")))

    def draws() -> tuple:
        return torch.rand(3).tolist(), np.random.rand(3).tolist(), [random.random() for _ in range(3)]

    def resume_from_rank_0s_file(saved: dict) -> None:
        file = [saved]  # every process of the resumed run reads the one checkpoint rank 0 wrote
        torch.distributed.broadcast_object_list(file, src=0)
        callback = RNGStateCheckpoint()
        callback.load_state_dict(file[0])
        callback.on_train_start(trainer, None)

    def reseed() -> None:
        for generator in (torch, np.random, random):
            generator.seed()  # unseeded: each process has its own states

    reseed()
    saving = RNGStateCheckpoint()
    saving.setup(trainer, None, "fit")
    saved = saving.state_dict()  # every process writes the checkpoint together
    expected = draws()
    reseed()
    resume_from_rank_0s_file(saved)
    assert draws() == expected, f"rank {rank} did not get its own states back"

    # A one-process run's checkpoint resumed on two: rank 0 takes its states, rank 1 goes on with its own.
    reseed()
    rank_1_own = [torch.get_rng_state(), np.random.get_state()[1].copy(), random.getstate()]
    resume_from_rank_0s_file({"processes": saved["processes"][:1]})
    if rank == 0:
        assert draws() == expected
    else:
        assert torch.equal(rank_1_own[0], torch.get_rng_state())
        assert (rank_1_own[1] == np.random.get_state()[1]).all() and rank_1_own[2] == random.getstate()
    torch.distributed.destroy_process_group()


def test_each_process_resumes_its_own_random_states(tmp_path):
    """The checkpoint holds every process's random states and each process of the resumed run takes its own
    (each crops its own images, and an unseeded run seeds each process apart); a checkpoint of fewer
    processes gives its states to the ranks it has."""
    in_forked_processes(_resume_random_states, *[(rank, str(tmp_path / "store")) for rank in range(2)])


def test_a_resumed_ddp_run_equals_one_never_stopped(tmp_path, run_cli):
    """Two processes, stopped after the first epoch and resumed from last.ckpt, end with the weights of two
    processes never stopped: each process resumes its own random states. Images of several shapes make
    each process's random crops draw a different count of random numbers, so the processes' states part."""
    from PIL import Image

    from tests.conftest import simple_cnn_folder_args, write_image_folder
    from tests.test_options_resume import STOP_AFTER_FIRST_EPOCH, saved_weights

    folder = write_image_folder(tmp_path / "images", per_class=6)
    for i, path in enumerate(sorted(folder.rglob("*.png"))):
        Image.open(path).resize([(32, 32), (64, 16), (16, 64)][i % 3]).save(path)

    def fit(run: str, *extra: str) -> None:
        args = simple_cnn_folder_args(folder, tmp_path / run, "--trainer.max_epochs", "2", *DDP_CPU, *QUIET)
        run_module("fit", *args, "--seed_everything", "7", "--trainer.deterministic", "true", *extra)

    fit("straight")
    fit("resumed", "--trainer.callbacks+", STOP_AFTER_FIRST_EPOCH)
    first = one_version(tmp_path / "resumed") / "checkpoints" / "last.ckpt"
    states = torch.load(first, weights_only=True)["callbacks"]["RNGStateCheckpoint"]["processes"]
    assert len(states) == 2 and not torch.equal(states[0]["torch"], states[1]["torch"])
    shutil.copy(first, tmp_path / "two_processes.ckpt")
    fit("resumed", "--ckpt_path", "last")

    straight, resumed = saved_weights(tmp_path / "straight"), saved_weights(tmp_path / "resumed")
    for key, value in straight["state_dict"].items():
        assert torch.equal(value, resumed["state_dict"][key]), key

    # The two processes' checkpoint resumes in one process too (not bit-identical: the images are shared out anew).
    one = simple_cnn_folder_args(folder, tmp_path / "one", "--trainer.max_epochs", "2", *QUIET)
    run_cli("fit", *one, "--ckpt_path", str(tmp_path / "two_processes.ckpt"))
    assert saved_weights(tmp_path / "one")["state_dict"].keys() == straight["state_dict"].keys()


def _cache_features(rank: int, processes: int, store_path: str, folder: str, out: str) -> None:
    import contextlib
    import types

    from lit_transfer.data import ImageFolderDataModule
    from lit_transfer.finetune.feature_cache import compute_features
    from lit_transfer.nets import SimpleCNN

    # A forked child must not enter the OpenMP thread pool its parent used (libgomp is not fork-safe: it hangs).
    torch.set_num_threads(1)
    if processes > 1:
        join_gloo_group(rank, processes, store_path)

    def all_gather(tensor):
        parts = [torch.empty_like(tensor) for _ in range(processes)]
        torch.distributed.all_gather(parts, tensor)
        return torch.stack(parts)

    trainer = types.SimpleNamespace(
        world_size=processes,
        global_rank=rank,
        precision_plugin=types.SimpleNamespace(forward_context=contextlib.nullcontext),
        strategy=types.SimpleNamespace(all_gather=all_gather, root_device=torch.device("cpu")),
    )
    data = ImageFolderDataModule(folder, batch_size=4, num_workers=0, image_size=32, augment="none", val_fraction=0.1)
    data.setup("fit")
    torch.manual_seed(0)
    net = SimpleCNN(num_classes=3, width=8)
    seen = []
    net.stem.register_forward_pre_hook(lambda module, args: seen.append(len(args[0])))
    features = compute_features(net, data, data.train_set, trainer, torch.device("cpu"))
    torch.save({"features": features.tensors, "seen": sum(seen), "items": len(data.train_set)}, f"{out}/rank{rank}.pt")
    if processes > 1:
        torch.distributed.destroy_process_group()


def test_each_process_computes_its_share_of_the_cached_features(class_folder, tmp_path):
    """Under DDP the feature cache's images are shared out (each process computes every n-th one's
    features) and exchanged: every process ends with the whole set's features, in order, as one process
    computes them."""
    for processes in (1, 2):
        out = tmp_path / str(processes)
        out.mkdir()
        args = (processes, str(tmp_path / f"store{processes}"), str(class_folder), str(out))
        in_forked_processes(_cache_features, *[(rank, *args) for rank in range(processes)])
    (alone,) = [torch.load(tmp_path / "1" / "rank0.pt", weights_only=True)]
    shared = [torch.load(tmp_path / "2" / f"rank{rank}.pt", weights_only=True) for rank in range(2)]
    assert alone["items"] % 2 == 1  # an odd count: the shares differ by one image
    assert [s["seen"] for s in shared] == [alone["items"] // 2 + 1, alone["items"] // 2]
    for result in shared:
        for ours, theirs in zip(result["features"], alone["features"]):
            torch.testing.assert_close(ours, theirs)
