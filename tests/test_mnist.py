"""MNIST and Fashion-MNIST (torchvision's raw files, written small by the tests), LeNet and the gray
image path, and the MNIST -> Fashion-MNIST freeze transfer through its pair of configs."""

from __future__ import annotations

import csv
import gzip
import hashlib
import json
import struct
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from lit_transfer.data import ImageFolderDataModule, MNISTDataModule
from lit_transfer.errors import UserError
from lit_transfer.nets import LeNet
from tests.conftest import REPO, exit_message, last_checkpoint, quiet_run_args, written

CONFIGS = REPO / "configs"


def write_raw_mnist(root: Path, folder: str = "MNIST", train: int = 60, test: int = 20) -> Path:
    """``root/<folder>/raw/`` with the four files in torchvision's (unzipped idx) format: digit ``k`` is
    a bright bar at row ``2k``, so the classes can be told apart."""
    raw = root / folder / "raw"
    raw.mkdir(parents=True)
    rng = np.random.default_rng(0)
    for prefix, n in (("train", train), ("t10k", test)):
        labels = np.arange(n, dtype=np.uint8) % 10
        images = rng.integers(0, 40, (n, 28, 28), dtype=np.uint8)
        for image, label in zip(images, labels):
            image[2 * label + 4 : 2 * label + 6, 4:24] = 250
        (raw / f"{prefix}-images-idx3-ubyte").write_bytes(struct.pack(">IIII", 2051, n, 28, 28) + images.tobytes())
        (raw / f"{prefix}-labels-idx1-ubyte").write_bytes(struct.pack(">II", 2049, n) + labels.tobytes())
    return root


@pytest.fixture
def mnist_root(tmp_path: Path) -> Path:
    root = write_raw_mnist(tmp_path / "data")
    return write_raw_mnist(root, "FashionMNIST")


def config_args(config: str, data_root: Path, run: Path, *extra: str) -> list[str]:
    return [
        "fit",
        "--config",
        str(CONFIGS / config),
        "--data.root",
        str(data_root),
        "--data.num_workers",
        "0",
        "--data.batch_size",
        "16",
        *quiet_run_args(run),
        *extra,
    ]


@pytest.mark.parametrize("config", ["fashion_mnist_lenet.yaml", "mnist_lenet.yaml"])
def test_each_config_runs(config, mnist_root, tmp_path, run_cli):
    cli = run_cli(*config_args(config, mnist_root, tmp_path, "--trainer.fast_dev_run", "true"))
    assert isinstance(cli.model.net, LeNet) and len(cli.model.class_names) == 10
    images, labels = next(iter(cli.datamodule.train_dataloader()))
    assert images.shape[1:] == (1, 28, 28) and images.dtype == torch.uint8


def test_class_names_are_known_before_any_file_is_read_and_missing_data_is_one_line(tmp_path, run_cli, capsys):
    assert MNISTDataModule(str(tmp_path), dataset="fashion_mnist").class_names[0] == "T-shirt/top"
    line = exit_message(
        run_cli, *([capsys]), *config_args("mnist_lenet.yaml", tmp_path / "none", tmp_path, "--data.download", "false")
    )
    assert "MNIST not found under root" in line and "set download: true" in line


def test_a_net_built_for_rgb_gets_the_gray_channel_repeated(mnist_root, tmp_path, run_cli, caplog):
    cli = run_cli(
        *config_args(
            "mnist_lenet.yaml",
            mnist_root,
            tmp_path,
            "--model.net",
            "lit_transfer.nets.SimpleCNN",
            "--model.net.init_args.width",
            "8",
            "--trainer.fast_dev_run",
            "true",
        )
    )
    images, _ = next(iter(cli.datamodule.train_dataloader()))
    assert images.shape[1] == 3 and torch.equal(images[:, 0], images[:, 2])
    assert "images: gray images given to the net as RGB (3 channels), as it takes" in caplog.text


def lenet_on_folder_args(class_folder: Path, run: Path, *extra: str) -> list[str]:
    """``fit`` of LeNet (1 channel, 28 px) on the RGB image folder ``class_folder``, one epoch, quiet, in ``run``."""
    return [
        "fit",
        "--model",
        "lit_transfer.models.ImageClassifier",
        "--model.net",
        "lit_transfer.nets.LeNet",
        "--data",
        "lit_transfer.data.ImageFolderDataModule",
        "--data.root",
        str(class_folder),
        "--data.num_workers",
        "0",
        "--trainer.max_epochs",
        "1",
        *quiet_run_args(run),
        *extra,
    ]


def test_lenet_makes_rgb_images_gray_and_predicts_and_exports_from_them(tmp_path, run_cli, class_folder, caplog):
    cli = run_cli(*lenet_on_folder_args(class_folder, tmp_path, "--data.mean", "[0.5]", "--data.std", "[0.5]"))
    assert "images: RGB images given to the net as gray (1 channel), as it takes" in caplog.text
    images, _ = next(iter(cli.datamodule.train_dataloader()))
    assert images.shape[1:] == (1, 28, 28)  # LeNet's size and channels, the config giving none
    ckpt = last_checkpoint(tmp_path)
    run_cli(
        "predict",
        "--ckpt_path",
        str(ckpt),
        "--data.predict_root",
        str(class_folder / "circle"),
        *quiet_run_args(tmp_path),
    )
    (table,) = written(tmp_path, "predictions-*.csv")
    assert len(list(csv.DictReader(table.open()))) == 10
    pytest.importorskip("onnxruntime")
    run_cli("export", "--ckpt_path", str(ckpt), "--format", "onnx", "--verify", str(class_folder / "circle"))
    assert ckpt.with_suffix(".onnx").is_file()  # parity with the checkpoint held on RGB input


def test_rgb_normalisation_for_a_gray_net_is_one_line(tmp_path, run_cli, capsys, class_folder):
    line = exit_message(run_cli, capsys, *lenet_on_folder_args(class_folder, tmp_path))
    assert "the net takes 1-channel images and the mean and std in use have 3 and 3 values" in line


def test_the_freeze_transfer_pair_starts_from_the_mnist_run_and_resumes_exactly(mnist_root, tmp_path, run_cli):
    short = ("--trainer.max_epochs", "2", "--trainer.limit_train_batches", "2", "--trainer.limit_val_batches", "1")
    run_cli(*config_args("mnist_lenet.yaml", mnist_root, tmp_path / "mnist", *short))
    digits = torch.load(last_checkpoint(tmp_path / "mnist"), weights_only=True)["state_dict"]

    def transfer(run: str, *extra: str):
        ckpt = str(last_checkpoint(tmp_path / "mnist"))
        return run_cli(
            *config_args(
                "fashion_mnist_from_mnist.yaml", mnist_root, tmp_path / run, "--model.init_from", ckpt, *short, *extra
            )
        )

    cli = transfer("straight")
    assert cli.model.frozen == ["features"] and cli.datamodule.dataset_title == "Fashion-MNIST"
    clothes = torch.load(last_checkpoint(tmp_path / "straight"), weights_only=True)["state_dict"]
    convs = [k for k in digits if k.startswith("net.features.")]
    assert convs and all(torch.equal(digits[k], clothes[k]) for k in convs)  # frozen from the digits' run
    assert not torch.equal(digits["net.classifier.0.weight"], clothes["net.classifier.0.weight"])

    stop = json.dumps({"class_path": "tests.helpers.StopAfterEpoch", "init_args": {"epoch": 0}})
    transfer("resumed", "--trainer.callbacks+", stop)
    transfer("resumed", "--ckpt_path", "last")
    resumed = torch.load(last_checkpoint(tmp_path / "resumed"), weights_only=True)["state_dict"]
    assert all(torch.equal(clothes[k], resumed[k]) for k in clothes)


def test_mnist_images_reach_the_transform_as_one_channel_tensors(mnist_root):
    data = MNISTDataModule(str(mnist_root), val_size=10, num_workers=0)
    data.follow(LeNet.preprocessing)
    data.setup("fit")
    image, label = data.train_set[0]
    assert image.shape == (1, 28, 28) and image.dtype == torch.uint8 and 0 <= label < 10
    assert len(data.train_set) == 50 and len(data.val_set) == 10
    assert ImageFolderDataModule.image_channels == 3 and MNISTDataModule.image_channels == 1


def test_any_image_predicts_through_the_gray_eval_transform(tmp_path, mnist_root):
    data = MNISTDataModule(str(mnist_root), num_workers=0, predict_root=str(tmp_path / "photo.png"))
    Image.new("RGB", (50, 40), (200, 10, 10)).save(tmp_path / "photo.png")
    data.follow(LeNet.preprocessing)
    (batch,) = list(data.predict_dataloader())
    assert batch[0].shape == (1, 1, 28, 28)


def test_download_goes_through_torchvisions_mirrors_and_checksums(http_server, tmp_path, monkeypatch):
    from torchvision.datasets import MNIST

    served, url = http_server
    resources = []
    for raw in sorted((write_raw_mnist(tmp_path / "source") / "MNIST" / "raw").iterdir()):
        archive = served / f"{raw.name}.gz"
        archive.write_bytes(gzip.compress(raw.read_bytes()))
        resources.append((archive.name, hashlib.md5(archive.read_bytes()).hexdigest()))
    monkeypatch.setattr(MNIST, "mirrors", [url + "/"])
    monkeypatch.setattr(MNIST, "resources", resources)
    data = MNISTDataModule(str(tmp_path / "data"), download=True, val_size=10, num_workers=0)
    data.prepare_data()
    data.setup("fit")
    assert len(data.train_set) == 50 and data.is_present()

    monkeypatch.setattr(MNIST, "resources", [(name, "0" * 32) for name, _ in resources])
    damaged = MNISTDataModule(str(tmp_path / "elsewhere"), download=True)
    with pytest.raises(UserError, match=r"cannot download MNIST \(.*\): check the connection, or put its files in"):
        damaged.prepare_data()
