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
