"""Training options from the config: early stopping (an option group, off by default, resumable) and
test-time augmentation (``model.tta: hflip``)."""

from __future__ import annotations

from functools import partial

import pytest
import torch
from lightning.pytorch import LightningModule, Trainer
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

from lit_transfer.callbacks import EarlyStop
from lit_transfer.models import FineTuneClassifier, ImageClassifier
from lit_transfer.nets import SimpleCNN
from tests.conftest import exit_message, last_checkpoint, tiny_demo_args


class ScoreByEpoch(LightningModule):
    """Logs ``score`` = ``scores[epoch]`` at each validation: a crafted metric."""

    def __init__(self, scores: list[float]) -> None:
        super().__init__()
        self.scores = scores
        self.layer = nn.Linear(1, 1)

    def training_step(self, batch, batch_idx):
        return self.layer(batch[0]).sum()

    def validation_step(self, batch, batch_idx):
        self.log("score", self.scores[self.current_epoch])

    def train_dataloader(self):
        return DataLoader(TensorDataset(torch.ones(2, 1)), batch_size=2)

    val_dataloader = train_dataloader

    def configure_optimizers(self):
        return torch.optim.SGD(self.parameters(), lr=0.0)


def fit(scores, callback, tmp_path, max_epochs=None, ckpt_path=None) -> Trainer:
    trainer = Trainer(
        max_epochs=max_epochs or len(scores),
        callbacks=[callback],
        default_root_dir=tmp_path,
        logger=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        num_sanity_val_steps=0,
    )
    trainer.fit(ScoreByEpoch(scores), ckpt_path=ckpt_path)
    return trainer


SCORES = [0.1, 0.5, 0.6, 0.55, 0.6, 0.58, 0.9, 0.95]  # best 0.6 at epoch 2, then 3 epochs without a gain


def test_early_stopping_stops_when_the_metric_stops_improving(tmp_path):
    trainer = fit(SCORES, EarlyStop(monitor="score", patience=3, mode="max"), tmp_path)
    assert trainer.current_epoch == 6  # epochs 3, 4, 5 without improvement: stopped after epoch 5
    assert float(trainer.early_stopping_callback.best_score) == pytest.approx(0.6)


def test_without_a_monitor_it_is_off(tmp_path):
    trainer = fit(SCORES, EarlyStop(), tmp_path)
    assert trainer.current_epoch == len(SCORES) and not trainer.early_stopping_callback.enabled


def test_the_mode_follows_the_metric():
    assert EarlyStop("val/acc").mode == "max" and EarlyStop("val/loss").mode == "min"
    assert EarlyStop("val/acc", mode="min").mode == "min"


def test_a_resumed_run_stops_where_the_uninterrupted_one_does(tmp_path):
    from lightning.pytorch.callbacks import ModelCheckpoint

    first = Trainer(
        max_epochs=4,
        callbacks=[EarlyStop(monitor="score", patience=3, mode="max"), ModelCheckpoint(tmp_path, save_last=True)],
        default_root_dir=tmp_path,
        logger=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        num_sanity_val_steps=0,
    )
    first.fit(ScoreByEpoch(SCORES))
    assert first.early_stopping_callback.wait_count == 1  # epoch 3 was no gain
    resumed = fit(
        SCORES, EarlyStop(monitor="score", patience=3, mode="max"), tmp_path, ckpt_path=tmp_path / "last.ckpt"
    )
    assert resumed.current_epoch == 6


def test_the_cli_option_group(tmp_path, run_cli, capsys, caplog):
    flags = ("--early_stopping.monitor", "val/acc", "--early_stopping.stopping_threshold", "0.0")
    cli = run_cli("fit", *tiny_demo_args(tmp_path, *flags))
    stop = cli.trainer.early_stopping_callback
    assert stop.enabled and stop.mode == "max" and cli.trainer.current_epoch == 1  # not the demo's 4 epochs
    assert "early stopping after epoch" in caplog.text
    saved = torch.load(last_checkpoint(tmp_path), weights_only=True)["callbacks"]
    assert any(key.startswith("EarlyStop") for key in saved)
    line = exit_message(run_cli, capsys, "fit", *tiny_demo_args(tmp_path, "--early_stopping.monitor", "val/nope"))
    assert (
        "early_stopping.monitor 'val/nope' is not a metric this run logs: use one of val/acc, val/acc_macro, val/loss"
        in line
    )


def test_hflip_tta_averages_the_probabilities_of_the_image_and_its_mirror():
    torch.manual_seed(0)
    model = ImageClassifier(partial(SimpleCNN, width=8), num_classes=3, tta="hflip").eval()
    x = torch.randn(4, 3, 16, 16)
    with torch.no_grad():
        expected = (model.net(x).softmax(-1) + model.net(x.flip(-1)).softmax(-1)) / 2
        out = model.predict_step((x, ["a", "b", "c", "d"]), 0)["all_probabilities"]
        plain = model.net(x).softmax(-1)
    assert torch.allclose(out, expected, atol=1e-6) and not torch.allclose(out, plain, atol=1e-3)


def test_tta_takes_part_in_validation_and_prediction_through_the_cli(tmp_path, run_cli):
    cli = run_cli("fit", *tiny_demo_args(tmp_path, "--trainer.max_epochs", "1", "--model.tta", "hflip"))
    assert cli.model.tta == "hflip"
    cli = run_cli(
        "validate", "--ckpt_path", str(last_checkpoint(tmp_path)), "--model.tta", "none", *tiny_demo_args(tmp_path)[2:]
    )
    assert cli.model.tta == "none"  # the flag wins over the checkpoint's setting


def test_tta_and_the_feature_cache_are_refused_together():
    with pytest.raises(Exception, match="tta flips images, and feature_cache validates on features"):
        FineTuneClassifier(
            partial(SimpleCNN, width=8), num_classes=2, finetune="feature_extractor", feature_cache=True, tta="hflip"
        )


RANDAUGMENT = "[{class_path: torchvision.transforms.v2.RandAugment, init_args: {num_ops: 2, magnitude: 9}}]"


def test_augmentations_from_the_config_follow_the_preset_and_stay_out_of_evaluation(class_folder):
    from torchvision.transforms import v2 as T

    from lit_transfer.data import ImageFolderDataModule

    plain = ImageFolderDataModule(str(class_folder), num_workers=0, image_size=32, augment="none")
    jitter = ImageFolderDataModule(
        str(class_folder), num_workers=0, image_size=32, augment="none", augmentations=[T.ColorJitter(brightness=0.9)]
    )
    assert not plain.randomly_augmented and jitter.randomly_augmented
    assert isinstance(jitter.train_transform().transforms[-1], T.ColorJitter)
    assert str(jitter.eval_transform()) == str(plain.eval_transform())
    plain.setup("fit")
    jitter.setup("fit")
    torch.manual_seed(0)
    assert not torch.equal(jitter.train_set[0][0], plain.train_set[0][0])
    assert torch.equal(jitter.val_set[0][0], plain.val_set[0][0])


def test_augmentations_are_config_entries_saved_with_the_run_and_refused_with_the_feature_cache(
    class_folder, tmp_path, run_cli, capsys
):
    from tests.conftest import FROZEN_CACHED, catsdogs_resnet18_args, predict_args

    cli = run_cli(
        *catsdogs_resnet18_args(
            class_folder, tmp_path, "--trainer.max_epochs", "1", "--data.augmentations", RANDAUGMENT
        )
    )
    assert type(cli.datamodule.train_transform().transforms[-1]).__name__ == "RandAugment"
    saved = torch.load(last_checkpoint(tmp_path), weights_only=True)["datamodule_hyper_parameters"]["augmentations"]
    assert saved[0]["class_path"] == "torchvision.transforms.v2.RandAugment" and saved[0]["init_args"]["num_ops"] == 2
    run_cli(
        *predict_args(
            last_checkpoint(tmp_path), class_folder / "circle", tmp_path, "--trainer.enable_progress_bar", "false"
        )
    )
    args = catsdogs_resnet18_args(
        class_folder, tmp_path / "cached", *FROZEN_CACHED, "--data.augmentations", RANDAUGMENT
    )
    line = exit_message(run_cli, capsys, *args)
    assert "feature_cache needs training images that are the same every epoch" in line and "1 now" in line


def test_balanced_class_weights_give_every_class_the_same_total_weight():
    from lit_transfer.models.classifier import balanced_weights

    weights = balanced_weights([30, 10, 0])
    assert torch.allclose(weights, torch.tensor([40 / 90, 40 / 30, 0.0]))
    assert weights[0] * 30 == pytest.approx(weights[1] * 10)


def test_class_weights_auto_come_from_the_training_split_and_weigh_the_loss(tmp_path, run_cli, caplog):
    from tests.conftest import catsdogs_resnet18_args, predict_args, write_image_folder

    data = write_image_folder(tmp_path / "unbalanced", per_class=10)
    for extra in sorted((data / "square").iterdir())[4:]:  # square: 4 images, of which 1 validates
        extra.unlink()
    cli = run_cli(*catsdogs_resnet18_args(data, tmp_path, "--trainer.max_epochs", "1", "--model.class_weights", "auto"))
    counts = cli.datamodule.train_class_counts()
    assert counts == [8, 3, 8]  # 80 % of each class trains (val_fraction 0.2)
    assert "training images per class: circle 8, square 3, triangle 8" in caplog.text
    assert torch.allclose(cli.model.loss_weights, torch.tensor([19 / 24, 19 / 9, 19 / 24]))
    logits, labels = torch.randn(5, 3), torch.tensor([0, 1, 1, 2, 0])
    cli.model.to("cpu")
    batch_loss = torch.nn.functional.cross_entropy(logits, labels, weight=cli.model.loss_weights)
    assert batch_loss != torch.nn.functional.cross_entropy(logits, labels)
    assert "val/acc_macro" in cli.trainer.callback_metrics
    # the weights are settings, not state: predicting from the checkpoint needs no data and loads cleanly
    run_cli(
        *predict_args(last_checkpoint(tmp_path), data / "circle", tmp_path, "--trainer.enable_progress_bar", "false")
    )


@pytest.mark.parametrize(
    ("weights", "message"),
    [
        ("[1.0, 2.0]", "give auto, null or 3 numbers"),
        ("[0, 0, 0]", "at least one above 0"),
        ("[1, -1, 1]", "0 or more"),
    ],
)
def test_wrong_class_weights_are_one_line(weights, message, class_folder, tmp_path, run_cli, capsys):
    from tests.conftest import catsdogs_resnet18_args

    line = exit_message(
        run_cli, capsys, *catsdogs_resnet18_args(class_folder, tmp_path, "--model.class_weights", weights)
    )
    assert message in line


def test_the_balanced_sampler_draws_classes_evenly_and_the_same_for_a_seed_and_epoch():
    from lit_transfer.data.sampling import BalancedEpochSampler

    labels = [0] * 90 + [1] * 10
    sampler = BalancedEpochSampler(labels, seed=7)
    sampler.set_epoch(3)
    drawn = list(sampler)
    share = sum(labels[i] for i in drawn) / len(drawn)
    assert len(drawn) == 100 and 0.35 <= share <= 0.65  # 10 % of the images, about half of the draws
    again = BalancedEpochSampler(labels, seed=7)
    again.set_epoch(3)
    assert list(again) == drawn  # a resumed run draws the same epoch
    again.set_epoch(4)
    assert list(again) != drawn
    minority = 0
    for epoch in range(20):
        sampler.set_epoch(epoch)
        minority += sum(labels[i] for i in sampler)
    assert abs(minority / 2000 - 0.5) < 0.05


def test_balanced_sampling_through_the_cli_trains_on_a_balanced_draw(tmp_path, run_cli):
    from tests.conftest import catsdogs_resnet18_args, write_image_folder

    data = write_image_folder(tmp_path / "unbalanced", per_class=10)
    for extra in sorted((data / "square").iterdir())[4:]:
        extra.unlink()
    cli = run_cli(
        *catsdogs_resnet18_args(data, tmp_path, "--trainer.max_epochs", "1", "--data.balanced_sampling", "true")
    )
    loader = cli.datamodule.train_dataloader()
    assert type(loader.sampler).__name__ == "BalancedEpochSampler" and len(loader.sampler) == 19


def test_mixup_targets_are_the_shares_of_the_blended_images():
    from lit_transfer.models.classifier import batch_mixer

    x, y = torch.rand(6, 3, 8, 8), torch.tensor([0, 1, 2, 0, 1, 2])
    torch.manual_seed(0)
    mixed, targets = batch_mixer(0.4, 0.0, num_classes=3)(x, y)
    assert targets.shape == (6, 3) and torch.allclose(targets.sum(-1), torch.ones(6))
    share = targets[0, 0].item()  # image 0 (class 0) is blended with image 5 (class 2): torchvision rolls the batch
    assert 0 < share < 1 and targets[0, 2].item() == pytest.approx(1 - share)
    assert torch.allclose(mixed[0], share * x[0] + (1 - share) * x[5], atol=1e-6)


def test_cutmix_targets_are_the_shares_of_the_pasted_area():
    from lit_transfer.models.classifier import batch_mixer

    x = torch.zeros(4, 3, 16, 16)
    x[1:] = 1.0  # image 0 black, the others white: the pasted box is what turned white in image 0
    y = torch.tensor([0, 1, 1, 1])
    for seed in range(20):
        torch.manual_seed(seed)
        mixed, targets = batch_mixer(0.0, 1.0, num_classes=2)(x, y)
        assert torch.allclose(targets.sum(-1), torch.ones(4))
        pasted = mixed[0, 0].mean().item()  # image 0 gets a box of image 3 (white)
        assert targets[0, 1].item() == pytest.approx(pasted, abs=1e-6)


def test_the_training_loss_takes_the_soft_targets_and_accuracy_their_larger_share():
    model = ImageClassifier(partial(SimpleCNN, width=8), num_classes=3, mixup_alpha=0.4).eval()
    x, y = torch.rand(6, 3, 16, 16), torch.tensor([0, 1, 2, 0, 1, 2])
    # A draw where the images are mostly their partners, so the larger share is not the image's own label.
    seed = next(s for s in range(100) if torch.manual_seed(s) and model.mixer(x, y)[1][0, 0] < 0.5)
    torch.manual_seed(seed)
    loss = model.training_step((x, y), 0)
    torch.manual_seed(seed)
    mixed, targets = model.mixer(x, y)
    assert targets.dim() == 2 and not torch.equal(targets.argmax(-1), y)
    with torch.no_grad():
        logits = model(mixed)
        assert loss.item() == pytest.approx(torch.nn.functional.cross_entropy(logits, targets).item(), abs=1e-6)
    expected_acc = (logits.argmax(-1) == targets.argmax(-1)).float().mean()
    assert model.train_metrics["acc"].compute().item() == pytest.approx(expected_acc.item())


def test_mixing_settings_are_checked(tmp_path, run_cli, capsys):
    line = exit_message(run_cli, capsys, "fit", *tiny_demo_args(tmp_path, "--model.cutmix_alpha", "-1"))
    assert "model.cutmix_alpha is -1.0: give 0 (off) or more" in line
    with pytest.raises(Exception, match="mixup/cutmix mix images, and feature_cache trains on features"):
        FineTuneClassifier(
            partial(SimpleCNN, width=8),
            num_classes=2,
            finetune="feature_extractor",
            feature_cache=True,
            mixup_alpha=0.2,
        )
