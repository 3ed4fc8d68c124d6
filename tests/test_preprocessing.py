"""Images are prepared as the net's weights expect, unless the config says otherwise, and the
checkpoint keeps what was used (lit_transfer.preprocessing)."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from torchvision.models import ResNet50_Weights
from torchvision.transforms import v2 as T

from lit_transfer.data import ImageFolderDataModule
from lit_transfer.files import safe_load
from lit_transfer.models import FineTuneClassifier
from lit_transfer.nets import SimpleCNN, TorchvisionNet
from lit_transfer.preprocessing import Preprocessing
from tests.conftest import exit_message, last_checkpoint, quiet_run_args, short_epoch_args

V2 = Preprocessing.of_torchvision(ResNet50_Weights.IMAGENET1K_V2)


def eval_resize(data: ImageFolderDataModule) -> T.Resize:
    (resize,) = [step for step in data.eval_transform().transforms if isinstance(step, T.Resize)]
    return resize


def test_torchvision_weights_say_their_own_evaluation_transform():
    v1 = Preprocessing.of_torchvision(ResNet50_Weights.IMAGENET1K_V1)
    assert (V2.resize_size, V2.image_size, V2.interpolation) == (232, 224, "bilinear")
    assert v1.resize_size == 256 and v1.mean == V2.mean == (0.485, 0.456, 0.406)
    assert V2.source == "ResNet50_Weights.IMAGENET1K_V2"


@pytest.mark.parametrize(
    ("weights", "resize"),
    [
        ("DEFAULT", 232),
        ("IMAGENET1K_V1", 256),
        ("ResNet50_Weights.IMAGENET1K_V2", 232),
        ("/models/resnet50-11ad3fa6.pth", 232),  # torchvision's own file name for IMAGENET1K_V2
        ("/models/resnet50-0676ba61.pth", 256),  # ... and for IMAGENET1K_V1
        ("/models/my_resnet.pth", None),  # a file of unknown origin says nothing
        (None, None),
    ],
)
def test_a_fine_tuned_net_expects_what_its_weights_were_trained_with(weights, resize):
    model = FineTuneClassifier(lambda n: TorchvisionNet(n, name="resnet50"), num_classes=2, weights=weights)
    expected = model.expected_input()
    assert (expected.resize_size if expected else None) == resize


def test_the_data_follows_the_weights_where_the_config_says_nothing(class_folder):
    data = ImageFolderDataModule(str(class_folder), num_workers=0)
    assert data.follow(V2) == {"image_size": 224, "resize_size": 232, "interpolation": "bilinear", **_norm(V2)}
    assert eval_resize(data).size == [232]
    assert data.normalize.mean == V2.mean
    # kept with the module's settings, so a checkpoint holds what was used
    assert data.hparams["resize_size"] == 232 and data.hparams["interpolation"] == "bilinear"


def test_the_config_wins_and_sizes_go_together(class_folder):
    data = ImageFolderDataModule(str(class_folder), num_workers=0, image_size=64, mean=[0.5, 0.5, 0.5])
    taken = data.follow(V2)
    assert taken == {"interpolation": "bilinear", "std": list(V2.std)}  # not the sizes, not the mean
    assert eval_resize(data).size == [73]  # 64 / 0.875, not the weights' 232 for 224
    assert data.normalize.mean == (0.5, 0.5, 0.5) and data.normalize.std == V2.std


def test_without_weights_the_data_modules_defaults_hold(class_folder):
    data = ImageFolderDataModule(str(class_folder), num_workers=0)
    assert data.follow(None) == {}
    assert eval_resize(data).size == [256] and data.preprocessing.image_size == 224


def _norm(p: Preprocessing) -> dict:
    return {"mean": list(p.mean), "std": list(p.std)}


class DeclaringCNN(SimpleCNN):
    """A user's net that declares its input: 24 px crops of 28 px resizes, bicubic, its own normalisation."""

    preprocessing = Preprocessing(24, 28, "bicubic", (0.5, 0.5, 0.5), (0.25, 0.25, 0.25), source="DeclaringCNN")


def test_a_user_net_declares_its_input_and_predict_reuses_it_from_the_checkpoint(
    class_folder, tmp_path, run_cli, monkeypatch, caplog
):
    net = f"{__name__}.DeclaringCNN"
    run = tmp_path / "run"
    common = ["--data.root", str(class_folder), "--data.num_workers", "0", *quiet_run_args(run)]
    model = ["--model", "lit_transfer.models.ImageClassifier", "--model.net", net]
    data = ["--data", "lit_transfer.data.ImageFolderDataModule"]
    cli = run_cli("fit", *model, *data, *common, *short_epoch_args(), "--trainer.max_epochs", "1")
    assert "images prepared as DeclaringCNN expects: resize 28 (bicubic), center crop 24" in caplog.text
    assert cli.datamodule.train_set[0][0].shape == (3, 24, 24)
    saved = safe_load(last_checkpoint(run), "checkpoint")["datamodule_hyper_parameters"]
    assert (saved["image_size"], saved["resize_size"], saved["interpolation"]) == (24, 28, "bicubic")
    assert saved["std"] == [0.25, 0.25, 0.25]

    # The net now declares something else: predicting from the checkpoint still prepares images as training did.
    monkeypatch.setattr(DeclaringCNN, "preprocessing", Preprocessing(32, 40, "nearest", (0, 0, 0), (1, 1, 1)))
    images = class_folder / "circle"
    cli = run_cli("predict", "--ckpt_path", str(last_checkpoint(run)), "--data.predict_root", str(images), *common[4:])
    used = cli.datamodule.preprocessing
    assert (used.image_size, used.resize_size, used.interpolation, used.std) == (24, 28, "bicubic", (0.25,) * 3)
    assert eval_resize(cli.datamodule).size == [28]


@pytest.mark.parametrize(
    ("flags", "message"),
    [
        (
            ["--data.image_size", "64", "--data.resize_size", "32"],
            "data.resize_size 32 is smaller than data.image_size 64",
        ),
        (["--data.mean", "[0.5, 0.5]"], "data.mean is [0.5, 0.5]: give 3 values"),
        (["--data.std", "[0.2, 0.0, 0.2]"], "data.std is [0.2, 0.0, 0.2]: give values above 0"),
        (["--data.interpolation", "lanczos"], "data.interpolation"),
    ],
)
def test_preprocessing_values_out_of_range_are_one_clear_error(flags, message, class_folder, tmp_path, run_cli, capsys):
    data = ["--data", "lit_transfer.data.ImageFolderDataModule", "--data.root", str(class_folder)]
    line = exit_message(run_cli, capsys, "fit", "--model.net", "SimpleCNN", *data, *quiet_run_args(tmp_path), *flags)
    assert message in line


def test_normalize_follows_the_values_in_use_on_every_batch(class_folder):
    data = ImageFolderDataModule(str(class_folder), num_workers=0, image_size=16, mean=[0.0, 0.0, 0.0])
    data.follow(Preprocessing(std=(0.5, 0.5, 0.5)))
    batch = torch.full((1, 3, 2, 2), 255, dtype=torch.uint8)
    assert torch.allclose(data.on_after_batch_transfer(batch, 0), torch.full((1, 3, 2, 2), 2.0))


def test_follow_is_undone_by_following_nothing(class_folder):
    data = ImageFolderDataModule(str(class_folder), num_workers=0)
    data.follow(V2)
    data.follow(None)
    assert data.preprocessing.resize_size is None and eval_resize(data).size == [256]
    assert Path(data.root) == class_folder
