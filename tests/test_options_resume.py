"""Each training option that draws random numbers, or keeps state across epochs, resumes exactly: a run
stopped after its first epoch and resumed from last.ckpt ends with the weights of a run never stopped."""

from __future__ import annotations

import json

import pytest
import torch

from tests.conftest import last_checkpoint, simple_cnn_folder_args
from tests.test_training_options import RANDAUGMENT

OPTIONS = {
    "balanced_sampling": ("--data.balanced_sampling", "true"),
    "ema": ("--ema.decay", "0.5"),
    "mixup_cutmix": ("--model.mixup_alpha", "0.4", "--model.cutmix_alpha", "1.0"),
    "class_weights_auto": ("--model.class_weights", "auto"),
    "randaugment": ("--data.augment", "flip", "--data.augmentations", RANDAUGMENT),
    "freeze": ("--model.freeze", "[stem]"),
}
STOP_AFTER_FIRST_EPOCH = json.dumps({"class_path": "tests.helpers.StopAfterEpoch", "init_args": {"epoch": 0}})


def saved_weights(root) -> dict[str, dict[str, torch.Tensor]]:
    ckpt = torch.load(last_checkpoint(root), weights_only=True)
    assert ckpt["epoch"] == 1
    return {key: ckpt[key] for key in ("state_dict", "current_model_state") if key in ckpt}


@pytest.mark.parametrize("option", OPTIONS)
def test_a_resumed_run_equals_one_never_stopped(option, class_folder, tmp_path, run_cli):
    def args(run, *extra):
        return (
            "fit",
            *simple_cnn_folder_args(class_folder, tmp_path / run, "--trainer.max_epochs", "2", *OPTIONS[option]),
            "--seed_everything",
            "7",
            "--trainer.deterministic",
            "true",
            *extra,
        )

    run_cli(*args("straight"))
    first = run_cli(*args("resumed", "--trainer.callbacks+", STOP_AFTER_FIRST_EPOCH))
    assert first.trainer.current_epoch == 1
    run_cli(*args("resumed", "--ckpt_path", "last"))

    straight, resumed = saved_weights(tmp_path / "straight"), saved_weights(tmp_path / "resumed")
    assert (
        straight.keys()
        == resumed.keys()
        == ({"state_dict", "current_model_state"} if option == "ema" else {"state_dict"})
    )
    for part in straight:
        for key, value in straight[part].items():
            assert torch.equal(value, resumed[part][key]), (part, key)
