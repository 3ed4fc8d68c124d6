"""Small pieces: splits, schedules, nets' interface, metrics."""

from __future__ import annotations

from collections import Counter
from functools import partial

import pytest
import torch

from lit_transfer.data.folder import stratified_split
from lit_transfer.models import ImageClassifier
from lit_transfer.nets import SimpleCNN
from lit_transfer.schedules import build_scheduler


def test_stratified_split_keeps_class_shares_and_is_seeded():
    targets = [0] * 50 + [1] * 30 + [2] * 20
    train, val = stratified_split(targets, 0.2, seed=7)
    assert sorted(train + val) == list(range(100))
    assert Counter(targets[i] for i in val) == {0: 10, 1: 6, 2: 4}
    assert stratified_split(targets, 0.2, seed=7) == (train, val)
    assert stratified_split(targets, 0.2, seed=8) != (train, val)


def test_one_cycle_gets_total_steps_and_steps_per_batch():
    opt = torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=0.1)
    config = build_scheduler(partial(torch.optim.lr_scheduler.OneCycleLR, max_lr=0.1), opt, total_steps=17)
    assert config["interval"] == "step"
    assert config["scheduler"].total_steps == 17
    plain = build_scheduler(partial(torch.optim.lr_scheduler.StepLR, step_size=3), opt, total_steps=17)
    assert plain["interval"] == "epoch"
    plateau = build_scheduler(torch.optim.lr_scheduler.ReduceLROnPlateau, opt, total_steps=17)
    assert plateau["monitor"] == "val/loss"


def test_net_interface_reset_classifier_and_stages():
    net = SimpleCNN(num_classes=3)
    assert net.get_classifier() is net.head
    net.reset_classifier(7)
    assert net(torch.zeros(2, 3, 32, 32)).shape == (2, 7)
    assert net.stages() == ["stem", "body", "head"]
    assert net.stage_of("body.1.0.weight") == "body"


def test_top5_accuracy_only_with_more_than_five_classes():
    few = ImageClassifier(net=SimpleCNN, num_classes=3)
    many = ImageClassifier(net=SimpleCNN, num_classes=10)
    assert set(few.val_metrics.keys()) == {"val/acc", "val/acc_macro"}
    assert set(many.val_metrics.keys()) == {"val/acc", "val/acc_macro", "val/acc_top5"}


def test_class_names_must_match_class_count():
    from lit_transfer.errors import UserError

    with pytest.raises(UserError, match="class names"):
        ImageClassifier(net=SimpleCNN, num_classes=3, class_names=["a", "b"])


def test_the_mean_loss_weighs_batches_by_images_and_keeps_a_nan():
    from lit_transfer.models.classifier import MeanLoss

    mean = MeanLoss()
    mean.update(torch.tensor(1.0), 3)
    mean.update(torch.tensor(4.0), 1)
    assert float(mean.compute()) == pytest.approx(1.75)
    mean.update(torch.tensor(float("nan")), 2)  # no check that waits on the device: a NaN loss shows as NaN
    assert torch.isnan(mean.compute())


def test_the_metrics_skip_their_per_step_argument_checks(monkeypatch, tmp_path, run_cli):
    """torchmetrics' argument checks read the labels back from the device at every step (a host sync);
    the labels come from the data module, always in range, so no metric of a run calls them."""
    import torchmetrics.classification.confusion_matrix as confusion_matrix
    import torchmetrics.classification.stat_scores as stat_scores

    from tests.conftest import last_checkpoint, tiny_demo_args

    def called(*args, **kwargs):
        raise AssertionError("a metric checked its arguments")

    monkeypatch.setattr(stat_scores, "_multiclass_stat_scores_tensor_validation", called)
    monkeypatch.setattr(confusion_matrix, "_multiclass_confusion_matrix_tensor_validation", called)
    run_cli("fit", *tiny_demo_args(tmp_path, "--trainer.max_epochs", "1"))
    run_cli("test", *tiny_demo_args(tmp_path, "--ckpt_path", str(last_checkpoint(tmp_path))))
