"""The average of the weights (``--ema.decay``, callbacks/ema.py): the hand-computed average, used only
once it holds steps, in every checkpoint the run writes, and refused when a resume would drop it."""

from __future__ import annotations

import pytest
import torch
from lightning.pytorch import Callback, LightningModule, Trainer
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

from lit_transfer.callbacks import EMA
from tests.conftest import exit_message, last_checkpoint, tiny_demo_args, written

START = 3.0  # what on_fit_start sets the weights to, as loading pretrained weights does


class Drift(LightningModule):
    """Two weights moved by SGD; each validation records the weights it sees."""

    def __init__(self) -> None:
        super().__init__()
        self.layer = nn.Linear(2, 1, bias=False)
        self.validated: list[torch.Tensor] = []

    def on_fit_start(self) -> None:
        with torch.no_grad():
            self.layer.weight.fill_(START)

    def training_step(self, batch, batch_idx):
        return (self.layer(batch[0]) - 1.0).pow(2).mean()

    def validation_step(self, batch, batch_idx):
        if batch_idx == 0:
            self.validated.append(self.layer.weight.detach().clone())

    def train_dataloader(self):
        return DataLoader(TensorDataset(torch.linspace(-1, 1, 16).view(8, 2)), batch_size=2)  # 4 steps an epoch

    val_dataloader = train_dataloader

    def configure_optimizers(self):
        return torch.optim.SGD(self.parameters(), lr=0.2)


class RecordSteps(Callback):
    def __init__(self) -> None:
        self.weights: list[torch.Tensor] = []

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        self.weights.append(pl_module.layer.weight.detach().clone())


def fit(ema: EMA, epochs: int = 2) -> tuple[Drift, list[torch.Tensor]]:
    torch.manual_seed(0)
    model, record = Drift(), RecordSteps()
    Trainer(
        max_epochs=epochs,
        callbacks=[record, ema],
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        num_sanity_val_steps=1,
    ).fit(model)
    return model, record.weights


def hand_average(weights: list[torch.Tensor], decay: float, start: int = 0) -> torch.Tensor:
    average = weights[start]
    for w in weights[start + 1 :]:
        average = decay * average + (1 - decay) * w
    return average


@pytest.mark.parametrize("start", [None, 3])
def test_the_fit_ends_on_the_hand_computed_average(start):
    model, steps = fit(EMA(decay=0.6, update_starting_at_step=start))
    expected = hand_average(steps, 0.6, start or 0)
    assert len(steps) == 8 and not torch.allclose(expected, steps[-1], atol=1e-3)
    assert torch.allclose(model.layer.weight, expected, atol=1e-6)


def test_validation_sees_the_average_after_an_update_and_the_training_weights_before():
    model, steps = fit(EMA(decay=0.6, update_starting_at_step=6))
    sanity, after_epoch_0, after_epoch_1 = model.validated
    # Before any update: the weights the fit started from, not the copy the average was made from.
    assert torch.all(sanity == START)
    assert torch.equal(after_epoch_0, steps[3])  # steps 0-3 (epoch 0) come before the first update (step 6)
    assert torch.allclose(after_epoch_1, hand_average(steps, 0.6, 6), atol=1e-6)


def test_a_fit_that_ends_before_the_first_update_keeps_its_training_weights():
    model, steps = fit(EMA(decay=0.6, update_starting_at_step=100))
    assert torch.equal(model.layer.weight, steps[-1])


def test_off_without_a_decay():
    model, steps = fit(EMA())
    assert torch.equal(model.layer.weight, steps[-1]) and torch.all(model.validated[0] == START)


def test_best_and_last_checkpoints_hold_the_averaged_weights(tmp_path, run_cli):
    run_cli("fit", *tiny_demo_args(tmp_path, "--trainer.max_epochs", "1", "--ema.decay", "0.5"))
    (best,) = written(tmp_path, "best-*.ckpt")
    best, last = (torch.load(path, weights_only=True) for path in (best, last_checkpoint(tmp_path)))
    assert "optimizer_states" not in best and "current_model_state" in last
    for key, averaged in last["state_dict"].items():
        assert torch.equal(best["state_dict"][key], averaged), key
    trained = last["current_model_state"]
    assert any(not torch.equal(trained[key], value) for key, value in last["state_dict"].items())
    # Export rebuilds the net from the checkpoint: the averaged weights.
    output = tmp_path / "averaged.pt2"
    run_cli(
        "export", "--ckpt_path", str(last_checkpoint(tmp_path)), "--format", "exported_program", "--output", str(output)
    )
    program = torch.export.load(output)
    exported = {key.removeprefix("model."): value for key, value in program.state_dict.items()}
    assert exported.keys() >= {key for key in last["state_dict"] if key.startswith("net.")}
    for key in exported.keys() & last["state_dict"].keys():
        assert torch.equal(exported[key], last["state_dict"][key]), key


def test_a_resume_keeps_the_average_or_says_why_it_cannot(tmp_path, run_cli, capsys, caplog):
    with_average, without = tmp_path / "with", tmp_path / "without"
    run_cli("fit", *tiny_demo_args(with_average, "--trainer.max_epochs", "1", "--ema.decay", "0.5"))
    line = exit_message(
        run_cli, capsys, "fit", *tiny_demo_args(with_average, "--trainer.max_epochs", "2", "--ckpt_path", "last")
    )
    assert "trained with an average of its weights (--ema.decay): resume with the same --ema.* flags" in line
    cli = run_cli(
        "fit", *tiny_demo_args(with_average, "--trainer.max_epochs", "2", "--ckpt_path", "last", "--ema.decay", "0.5")
    )
    assert cli.trainer.current_epoch == 2

    run_cli("fit", *tiny_demo_args(without, "--trainer.max_epochs", "1"))
    cli = run_cli(
        "fit", *tiny_demo_args(without, "--trainer.max_epochs", "2", "--ckpt_path", "last", "--ema.decay", "0.5")
    )
    assert "the average starts from this resume" in caplog.text
    assert "current_model_state" in torch.load(last_checkpoint(without), weights_only=True)


def test_checkpoints_written_before_the_first_update_hold_the_training_weights(tmp_path, run_cli):
    cli = run_cli(
        "fit",
        *tiny_demo_args(
            tmp_path, "--trainer.max_epochs", "1", "--ema.decay", "0.5", "--ema.update_starting_at_step", "99"
        ),
    )
    last = torch.load(last_checkpoint(tmp_path), weights_only=True)
    assert "current_model_state" not in last
    for key, value in cli.model.state_dict().items():
        assert torch.equal(last["state_dict"][key], value), key


@pytest.mark.parametrize(
    "flag, value, said",
    [
        ("--ema.decay", "1.5", "ema.decay is 1.5: give a number between 0 and 1"),
        ("--ema.update_every_n_steps", "0", "ema.update_every_n_steps is 0: give 1 or more"),
    ],
)
def test_settings_out_of_range_are_one_line(tmp_path, run_cli, capsys, flag, value, said):
    assert said in exit_message(run_cli, capsys, "fit", *tiny_demo_args(tmp_path, "--ema.decay", "0.9", flag, value))
