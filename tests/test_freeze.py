"""``--model.freeze``: named modules kept as they start for the whole fit (BatchNorm statistics
included), composable with ``init_from``; the head and a mode that already freezes are refused."""

from __future__ import annotations

from functools import partial

import pytest
import torch
from torch.utils.data import DataLoader, TensorDataset

from lit_transfer.errors import UserError
from lit_transfer.models import FineTuneClassifier, ImageClassifier
from lit_transfer.nets import SimpleCNN
from tests.conftest import exit_message, last_checkpoint, quiet_trainer, simple_cnn_folder_args


def test_frozen_modules_keep_their_weights_and_statistics_bit_for_bit(tmp_path):
    torch.manual_seed(0)
    model = ImageClassifier(
        partial(SimpleCNN, width=8), num_classes=3, optimizer=partial(torch.optim.AdamW, lr=0.05), freeze=["stem"]
    )
    start = {k: v.clone() for k, v in model.net.state_dict().items()}
    data = TensorDataset(torch.rand(16, 3, 16, 16), torch.randint(0, 3, (16,)))
    quiet_trainer(tmp_path, max_epochs=2).fit(model, DataLoader(data, batch_size=4))
    end = model.net.state_dict()
    stem = [k for k in start if k.startswith("stem.")]
    assert any(k.endswith("running_mean") for k in stem)  # BatchNorm statistics are among them
    for key in stem:
        assert torch.equal(start[key], end[key]), key
    assert all(not torch.equal(start[k], end[k]) for k in ("body.1.0.weight", "body.1.1.running_mean", "head.weight"))


def test_a_run_started_from_another_keeps_its_frozen_modules(class_folder, tmp_path, run_cli):
    run_cli("fit", *simple_cnn_folder_args(class_folder, tmp_path / "first"))
    first = torch.load(last_checkpoint(tmp_path / "first"), weights_only=True)["state_dict"]
    ckpt = str(last_checkpoint(tmp_path / "first"))
    flags = ("--model.init_from", ckpt, "--model.freeze", "[stem, body.1]", "--trainer.max_epochs", "2")
    cli = run_cli("fit", *simple_cnn_folder_args(class_folder, tmp_path / "second", *flags))
    second = torch.load(last_checkpoint(tmp_path / "second"), weights_only=True)["state_dict"]
    assert cli.model.frozen == ["stem", "body.1"]
    frozen = [k for k in first if k.startswith(("net.stem.", "net.body.1."))]
    assert frozen and all(torch.equal(first[k], second[k]) for k in frozen)
    assert not torch.equal(first["net.body.3.0.weight"], second["net.body.3.0.weight"])  # the rest trained on


def test_freezing_the_head_or_on_top_of_a_frozen_backbone_is_refused(class_folder, tmp_path, run_cli, capsys):
    with pytest.raises(UserError, match=r"names the head \(head\): it must train"):
        ImageClassifier(partial(SimpleCNN, width=8), num_classes=3, freeze=["stem", "head"])
    with pytest.raises(UserError, match="freeze is for finetune: full"):
        FineTuneClassifier(partial(SimpleCNN, width=8), num_classes=3, finetune="feature_extractor", freeze=["stem"])
    line = exit_message(
        run_cli, capsys, "fit", *simple_cnn_folder_args(class_folder, tmp_path, "--model.freeze", "[trunk]")
    )
    assert "SimpleCNN has no module 'trunk': use one of its stages (stem, body, head)" in line
