"""Task 1: AlexNet-32 on CIFAR (issue 3): the net, the CIFAR data module, the config and its schedule."""

from __future__ import annotations

import os
import pickle
from pathlib import Path

import numpy as np
import pytest
import torch
import torchvision.datasets.cifar
from lightning.pytorch import Callback
from PIL import Image

from lit_transfer.data import CIFARDataModule, ImageFolderDataModule
from lit_transfer.data.presets import CIFAR_MEAN, CIFAR_STD
from lit_transfer.errors import UserError
from lit_transfer.nets import AlexNet32
from tests.conftest import REPO, SHARED_DATA, quiet_run_args, write_image_folder

CONFIG = str(REPO / "configs" / "cifar10_alexnet.yaml")
CIFAR10_CLASSES = ["airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck"]


def _dump(obj, path: Path) -> None:
    with open(path, "wb") as f:
        pickle.dump(obj, f)


def _batch(n: int, num_classes: int, rng: np.random.Generator, label_key: str = "labels") -> dict:
    return {
        "data": rng.integers(0, 256, (n, 3 * 32 * 32), dtype=np.uint8),
        label_key: [i % num_classes for i in range(n)],
        "filenames": [f"img_{i}.png" for i in range(n)],
    }


def write_fake_cifar10(root: Path, per_batch: int = 6, test_size: int = 10, meta_only: bool = False) -> Path:
    """A few random images in torchvision's ``cifar-10-batches-py`` pickle format."""
    folder = root / "cifar-10-batches-py"
    folder.mkdir(parents=True)
    _dump({"label_names": CIFAR10_CLASSES, "num_cases_per_batch": per_batch, "num_vis": 3072}, folder / "batches.meta")
    if not meta_only:
        rng = np.random.default_rng(0)
        for i in range(1, 6):
            _dump(_batch(per_batch, 10, rng), folder / f"data_batch_{i}")
        _dump(_batch(test_size, 10, rng), folder / "test_batch")
    return root


@pytest.fixture
def skip_md5(monkeypatch):
    """Fake files cannot match torchvision's MD5 sums: check only that they exist."""
    monkeypatch.setattr(torchvision.datasets.cifar, "check_integrity", lambda fpath, md5=None: os.path.isfile(fpath))


@pytest.fixture
def fake_cifar10(tmp_path: Path, skip_md5) -> Path:
    return write_fake_cifar10(tmp_path / "cifar")


def cli_args(root: Path, tmp_path: Path, *extra: str) -> list[str]:
    return [
        "--config",
        CONFIG,
        "--data.root",
        str(root),
        "--data.num_workers",
        "0",
        *quiet_run_args(tmp_path / "runs"),
        *extra,
    ]


# -- the network ------------------------------------------------------------------------------
def test_alexnet32_is_the_recipe_network():
    net = AlexNet32(10)
    assert sum(p.numel() for p in net.parameters()) == 67_004_746
    assert net(torch.zeros(2, 3, 32, 32)).shape == (2, 10)
    assert net.get_classifier().in_features == 4608
    dropouts = [m.p for m in net.modules() if isinstance(m, torch.nn.Dropout)]
    assert dropouts == [0.5, 0.5]
    # every parameter belongs to a stage, stem first and head last
    stages = {net.stage_of(name) for name, _ in net.named_parameters()}
    assert stages == set(net.stages())
    assert net.stages()[0] == "features.0" and net.stages()[-1] == net.head_name
    net.reset_classifier(3)
    assert net(torch.zeros(1, 3, 32, 32)).shape == (1, 3)


# -- the data module --------------------------------------------------------------------------
def test_class_names_come_from_the_meta_file_alone(tmp_path, skip_md5):
    root = write_fake_cifar10(tmp_path, meta_only=True)  # no image batches at all
    dm = CIFARDataModule(root=str(root))
    assert dm.class_names == CIFAR10_CLASSES
    assert dm.num_classes == 10


def test_missing_cifar_is_a_user_error(tmp_path, run_cli, capsys):
    dm = CIFARDataModule(root=str(tmp_path / "nowhere"), download=False)
    with pytest.raises(UserError, match=r"CIFAR-10 not found under root .*set download: true"):
        dm.class_names
    with pytest.raises(SystemExit) as exit_info:
        run_cli("fit", *cli_args(tmp_path / "nowhere", tmp_path, "--data.download", "false"))
    assert exit_info.value.code == 2
    err = capsys.readouterr().err
    assert "CIFAR-10 not found under root" in err and "Traceback" not in err


def test_corrupted_cifar_is_a_user_error(tmp_path):
    root = write_fake_cifar10(tmp_path)  # without skip_md5: the MD5 sums do not match
    dm = CIFARDataModule(root=str(root), val_size=0)
    with pytest.raises(UserError, match="incomplete or corrupted"):
        dm.setup("fit")
    (root / "cifar-10-batches-py" / "batches.meta").write_bytes(b"truncated")
    with pytest.raises(UserError, match="is not CIFAR-10's class list"):
        CIFARDataModule(root=str(root)).class_names


def test_validation_split_is_seeded_and_uses_eval_transform(fake_cifar10):
    dm = CIFARDataModule(root=str(fake_cifar10), val_size=5, batch_size=4, num_workers=0)
    dm.setup("fit")
    assert (len(dm.train_set), len(dm.val_set)) == (25, 5)
    assert not set(dm.train_set.indices) & set(dm.val_set.indices)
    again = CIFARDataModule(root=str(fake_cifar10), val_size=5)
    again.setup("fit")
    assert again.val_set.indices == dm.val_set.indices
    other_seed = CIFARDataModule(root=str(fake_cifar10), val_size=5, split_seed=7)
    other_seed.setup("fit")
    assert other_seed.val_set.indices != dm.val_set.indices
    # validation images are not augmented: the same tensor every time
    assert torch.equal(dm.val_set[0][0], dm.val_set[0][0])
    # and they are torchvision's images and labels (read from its array, not through PIL)
    index = dm.val_set.indices[0]
    pil_image, label = torchvision.datasets.CIFAR10(str(fake_cifar10))[index]
    assert dm.val_set[0][1] == label
    assert torch.equal(dm.val_set[0][0], dm.eval_transform()(pil_image))
    x, y = next(iter(dm.train_dataloader()))
    assert x.shape == (4, 3, 32, 32) and x.dtype == torch.uint8 and y.shape == (4,)
    # the batch is normalised once it is on the model's device, with the recipe's mean and std
    normalised, labels = dm.on_after_batch_transfer([x, y], 0)
    assert normalised.dtype == torch.float32 and torch.equal(labels, y)
    expected = (x[:, 1].float() / 255 - CIFAR_MEAN[1]) / CIFAR_STD[1]
    torch.testing.assert_close(normalised[:, 1], expected, rtol=0, atol=1e-5)
    assert normalised.min() < 0 < normalised.max()
    assert next(iter(dm.val_dataloader()))[0].shape == (5, 3, 32, 32)

    dm.setup("test")
    assert len(dm.test_set) == 10


def test_val_size_zero_validates_on_the_test_set(fake_cifar10):
    dm = CIFARDataModule(root=str(fake_cifar10), val_size=0, num_workers=0)
    assert dm.batch_size == 128 and dm.eval_batch_size == 100  # the recipe's batch sizes
    dm.setup("fit")
    assert len(dm.train_set) == 30 and dm.val_set is dm.test_set and len(dm.val_set) == 10
    too_big = CIFARDataModule(root=str(fake_cifar10), val_size=30)
    with pytest.raises(UserError, match="leaves no training images"):
        too_big.setup("fit")


def test_cifar100(tmp_path, skip_md5):
    folder = tmp_path / "cifar-100-python"
    folder.mkdir()
    names = [f"class_{i:02d}" for i in range(100)]
    _dump({"fine_label_names": names, "coarse_label_names": [f"super_{i}" for i in range(20)]}, folder / "meta")
    rng = np.random.default_rng(1)
    _dump(_batch(12, 100, rng, "fine_labels"), folder / "train")
    _dump(_batch(4, 100, rng, "fine_labels"), folder / "test")
    dm = CIFARDataModule(root=str(tmp_path), dataset="cifar100", val_size=2, num_workers=0)
    assert dm.class_names == names and dm.num_classes == 100
    dm.setup("fit")
    assert (len(dm.train_set), len(dm.val_set)) == (10, 2)


def test_predict_uses_the_eval_transform_on_any_image_size(tmp_path):
    images = tmp_path / "images"
    images.mkdir()
    Image.new("RGB", (50, 40), (200, 10, 10)).save(images / "a.png")
    dm = CIFARDataModule(root=str(tmp_path / "absent"), predict_root=str(images), num_workers=0)
    assert dm.class_names is None  # predicting: names come from the checkpoint, no data set needed
    x, paths = dm.on_after_batch_transfer(next(iter(dm.predict_dataloader())), 0)
    assert x.shape == (1, 3, 32, 32) and list(paths) == [str(images / "a.png")]
    expected = (200 / 255 - CIFAR_MEAN[0]) / CIFAR_STD[0]
    assert x[0, 0, 16, 16].item() == pytest.approx(expected, abs=1e-4)


# -- the task through the CLI -----------------------------------------------------------------
def test_fit_fast_dev_run_with_the_task_config(fake_cifar10, tmp_path, run_cli):
    cli = run_cli("fit", *cli_args(fake_cifar10, tmp_path, "--trainer.fast_dev_run", "true"))
    assert cli.trainer.state.finished
    assert isinstance(cli.model.net, AlexNet32)
    assert cli.model.class_names == CIFAR10_CLASSES
    optimizer = cli.trainer.optimizers[0]
    assert isinstance(optimizer, torch.optim.SGD)
    assert optimizer.defaults["weight_decay"] == 5e-4
    config = cli.trainer.lr_scheduler_configs[0]
    assert isinstance(config.scheduler, torch.optim.lr_scheduler.OneCycleLR) and config.interval == "step"
    assert cli.trainer.datamodule.batch_size == 128 and cli.trainer.datamodule.eval_batch_size == 100
    assert cli.config.fit.seed_everything == 42 and cli.config.fit.trainer.max_epochs == 5


class LrRecorder(Callback):
    """The learning rate each training batch ran with."""

    def __init__(self) -> None:
        self.lrs: list[float] = []

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx) -> None:
        self.lrs.append(trainer.optimizers[0].param_groups[0]["lr"])


def simple_cnn_task(root: Path, tmp_path: Path, *extra: str):
    """The task config with a SimpleCNN for AlexNet-32 and no best-k checkpoints, built, not run: the task's optimizer,
    schedule, data and trainer with a small net (67M parameters make each SGD step slow on a CPU)."""
    from lit_transfer.cli import LitTransferCLI

    args = cli_args(
        root, tmp_path, "--model.net", "lit_transfer.nets.SimpleCNN", "--checkpoint.save_top_k", "0", *extra
    )
    return LitTransferCLI(args=args, run=False)


@pytest.mark.parametrize("max_epochs", [1, 3])
def test_one_cycle_ends_on_the_last_batch(fake_cifar10, tmp_path, max_epochs):
    batches = 4  # per epoch; OneCycleLR needs >= 4 steps for its first step to be the initial lr
    # The schedule does not depend on the net: a small one keeps this fast.
    cli = simple_cnn_task(
        fake_cifar10,
        tmp_path,
        "--data.batch_size",
        "4",
        "--trainer.max_epochs",
        str(max_epochs),
        "--trainer.limit_train_batches",
        str(batches),
        "--trainer.limit_val_batches",
        "1",
        "--checkpoint.save_last",
        "false",
    )
    recorder = LrRecorder()
    cli.trainer.callbacks.append(recorder)
    cli.trainer.fit(cli.model, cli.datamodule)  # a schedule too short would raise "Tried to step ..."

    total = max_epochs * batches
    scheduler = cli.trainer.lr_scheduler_configs[0].scheduler
    assert scheduler.total_steps == total == len(recorder.lrs) == cli.trainer.global_step
    assert scheduler.last_epoch == total  # stepped once after every batch
    max_lr, initial, final = 0.1, 0.1 / 25, 0.1 / 25 / 1e4
    assert recorder.lrs[0] == pytest.approx(initial)
    assert recorder.lrs[-1] == pytest.approx(final)  # the last batch ran at the schedule's end
    assert max(recorder.lrs) <= max_lr + 1e-12
    assert min(recorder.lrs) == recorder.lrs[-1]


def test_our_training_steps_are_the_plain_loops(fake_cifar10, tmp_path):
    """Same start, same batches, no randomness: the task config trained by our module and Trainer
    ends with exactly the weights of the tutorial's plain SGD + OneCycleLR loop (what makes the
    benchmark's comparison fair, and what a change to the optimizer path would break)."""
    from torch.utils.data import DataLoader, TensorDataset

    from lit_transfer.nets import SimpleCNN

    torch.manual_seed(0)
    steps, batch = 5, 8
    xs, ys = torch.randn(steps * batch, 3, 32, 32), torch.randint(0, 10, (steps * batch,))
    initial = SimpleCNN(10, dropout=0.0).state_dict()

    net = SimpleCNN(10, dropout=0.0)
    net.load_state_dict(initial)
    optimizer = torch.optim.SGD(net.parameters(), lr=0.1, momentum=0.9, weight_decay=5e-4)
    scheduler = torch.optim.lr_scheduler.OneCycleLR(
        optimizer, max_lr=0.1, total_steps=steps, div_factor=25, final_div_factor=1e4, pct_start=0.3
    )
    for i in range(steps):
        optimizer.zero_grad()
        torch.nn.functional.cross_entropy(
            net(xs[i * batch : (i + 1) * batch]), ys[i * batch : (i + 1) * batch]
        ).backward()
        optimizer.step()
        scheduler.step()

    cli = simple_cnn_task(fake_cifar10, tmp_path, "--model.net.init_args.dropout", "0", "--trainer.max_epochs", "1")
    cli.model.net.load_state_dict(initial)
    cli.trainer.fit(cli.model, train_dataloaders=DataLoader(TensorDataset(xs, ys), batch_size=batch))
    assert cli.trainer.global_step == steps
    ours = cli.model.net.state_dict()
    for name, value in net.state_dict().items():
        assert torch.allclose(ours[name], value, atol=1e-6), name
    assert not torch.allclose(ours["head.weight"], initial["head.weight"])  # it did train


# -- the same recipe on a CIFAR-style image folder (train/ + test/) --------------------------
def _cifar_folder_module(root: Path, **kwargs) -> ImageFolderDataModule:
    return ImageFolderDataModule(
        root=str(root), image_size=32, resize_size=32, augment="crop_flip", mean=CIFAR_MEAN, std=CIFAR_STD, **kwargs
    )


def test_image_folder_with_train_and_test_validates_on_test(tmp_path):
    root = tmp_path / "pngs"
    write_image_folder(root / "train", per_class=4, seed=1)
    write_image_folder(root / "test", per_class=2, seed=2)
    dm = _cifar_folder_module(root, batch_size=4, num_workers=0)
    dm.setup("fit")
    assert Path(dm.val_set.root) == root / "test" and len(dm.val_set) == 6
    assert next(iter(dm.train_dataloader()))[0].shape == (4, 3, 32, 32)


@pytest.mark.skipif(not (SHARED_DATA / "cifar10_partial_png").is_dir(), reason="shared CIFAR-10 subset absent")
def test_real_cifar10_subset_as_image_folder():
    dm = _cifar_folder_module(SHARED_DATA / "cifar10_partial_png", batch_size=128, eval_batch_size=100, num_workers=0)
    assert dm.class_names == CIFAR10_CLASSES  # same order as CIFAR-10's labels
    dm.setup("fit")
    assert (len(dm.train_set), len(dm.val_set)) == (5170, 1017)
    x, y = next(iter(dm.train_dataloader()))
    assert x.shape == (128, 3, 32, 32) and int(y.max()) < 10


class _WritesMarker:
    """Unpickling this runs code: it creates the marker file."""

    def __init__(self, marker: str) -> None:
        self.marker = marker

    def __reduce__(self):
        return (open, (self.marker, "w"))


def test_the_meta_file_is_checked_before_it_is_unpickled(tmp_path):
    root = write_fake_cifar10(tmp_path, meta_only=True)
    marker = tmp_path / "unpickled"
    with open(root / "cifar-10-batches-py" / "batches.meta", "wb") as f:
        pickle.dump({"label_names": _WritesMarker(str(marker))}, f)
    with pytest.raises(UserError, match="MD5 checksum differs"):
        CIFARDataModule(root=str(root)).class_names
    assert not marker.exists()
