"""Learning-rate groups from YAML: module names, group assignment, the optimizer and TensorBoard."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

from lit_transfer.errors import UserError
from lit_transfer.finetune.param_groups import DEFAULT_GROUP, optimizer_groups, parse_param_groups
from lit_transfer.nets import AlexNet, TorchvisionNet
from tests.conftest import catsdogs_resnet18_args, short_epoch_args

RECIPE = [
    {"name": "early", "modules": ["conv1", "bn1", "layer1", "layer2", "layer3"], "lr": 1e-5, "momentum": 0.1},
    {"name": "layer4", "modules": ["layer4"], "lr": 1e-4},
    {"name": "head", "modules": ["head"], "lr": 1e-3},
]


@pytest.fixture(scope="module")
def resnet() -> TorchvisionNet:
    return TorchvisionNet(num_classes=2, name="resnet18")


def test_module_names_resolve_generically(resnet):
    assert resnet.stages() == [f"model.{n}" for n in ("conv1", "bn1", "layer1", "layer2", "layer3", "layer4", "fc")]
    assert resnet.find_module("layer4") == "model.layer4"
    assert resnet.find_module("model.layer4") == "model.layer4"
    assert resnet.find_module("conv1") == "model.conv1"  # the top-level one, not model.layer1.0.conv1
    assert resnet.find_module("layer4.1") == "model.layer4.1"
    assert resnet.find_module("head") == "model.fc"
    append = AlexNet(num_classes=2, head="append")
    assert append.find_module("head") == "head"
    assert append.find_module("classifier") == "model.classifier"
    with pytest.raises(UserError, match="ambiguous"):
        resnet.find_module("0")
    with pytest.raises(UserError, match=r"no module 'layer9'.*model\.layer4"):
        resnet.find_module("layer9")


@pytest.mark.parametrize(
    "groups, message",
    [
        ([{"modules": ["fc"]}], "has no name"),
        ([{"name": "default", "modules": ["fc"]}], "reserved"),
        ([{"name": "a", "modules": ["fc"]}, {"name": "a", "modules": ["layer4"]}], "used twice"),
        ([{"name": "a", "modules": []}], "names no modules"),
        (
            [{"name": "a", "modules": ["layer4"]}, {"name": "b", "modules": ["model.layer4"]}],
            "both name module 'model.layer4'",
        ),
        ([{"name": "a", "modules": ["fc"], "lr": "fast"}], "lr must be a number"),
        (["fc"], "expected a mapping"),
    ],
)
def test_bad_groups_are_user_errors(resnet, groups, message):
    with pytest.raises(UserError, match=message):
        parse_param_groups(groups, resnet)


def test_every_trainable_parameter_lands_in_exactly_one_group(resnet):
    groups = optimizer_groups(resnet.named_parameters(), parse_param_groups(RECIPE, resnet))
    assert [g["name"] for g in groups] == ["early", "layer4", "head"]
    ids = [id(p) for g in groups for p in g["params"]]
    assert len(ids) == len(set(ids)) == len(list(resnet.parameters()))
    assert {id(p) for p in groups[1]["params"]} == {id(p) for p in resnet.model.layer4.parameters()}
    assert groups[2]["params"] == [resnet.model.fc.weight, resnet.model.fc.bias]
    assert (groups[0]["lr"], groups[0]["momentum"]) == (1e-5, 0.1) and "momentum" not in groups[1]

    # The most specific module wins (everything in `model`, its fc in `head`); unnamed modules go to
    # `default`; frozen parameters go nowhere.
    specs = parse_param_groups(
        [{"name": "head", "modules": ["head"], "lr": 1.0}, {"name": "body", "modules": ["layer1", "model.layer2"]}],
        resnet,
    )
    resnet.model.layer1.requires_grad_(False)
    try:
        groups = optimizer_groups(resnet.named_parameters(), specs)
    finally:
        resnet.model.layer1.requires_grad_(True)
    by_name = {g["name"]: g["params"] for g in groups}
    assert list(by_name) == ["head", "body", DEFAULT_GROUP]
    assert {id(p) for p in by_name["body"]} == {id(p) for p in resnet.model.layer2.parameters()}
    assert len(by_name[DEFAULT_GROUP]) == len(list(resnet.parameters())) - 2 - len(
        list(resnet.model.layer1.parameters())
    ) - len(by_name["body"])


def tiny_task_args(data_root: Path, tmp_path: Path, *extra: str) -> list[str]:
    """The cats/dogs task config with resnet18 at 32 px on tiny data, two steps, no checkpoint files."""
    return catsdogs_resnet18_args(
        data_root,
        tmp_path,
        "--trainer.max_epochs",
        "1",
        *short_epoch_args(),
        "--trainer.log_every_n_steps",
        "1",
        "--last_checkpoint.save_top_k",
        "0",
        *extra,
    )


def test_the_task_config_gives_the_optimizer_its_three_groups_and_tensorboard_their_names(
    run_cli, class_folder, tmp_path
):
    cli = run_cli(*tiny_task_args(class_folder, tmp_path))
    optimizer = cli.trainer.optimizers[0]
    assert type(optimizer) is torch.optim.SGD
    got = [(g["name"], g["lr"], g["momentum"], len(g["params"])) for g in optimizer.param_groups]
    net = cli.model.net
    assert got == [
        (
            "early",
            1e-5,
            0.1,
            sum(
                len(list(net.get_submodule(f"model.{m}").parameters()))
                for m in ("conv1", "bn1", "layer1", "layer2", "layer3")
            ),
        ),
        ("layer4", 1e-4, 0.9, len(list(net.model.layer4.parameters()))),
        ("head", 1e-3, 0.9, 2),
    ]
    events = EventAccumulator(str(cli.trainer.log_dir)).Reload()
    lr_tags = sorted(t for t in events.Tags()["scalars"] if t.startswith("lr-"))
    assert lr_tags == ["lr-SGD/early", "lr-SGD/head", "lr-SGD/layer4"]
    assert events.Scalars("lr-SGD/early")[-1].value == pytest.approx(1e-5)


def test_frozen_parameters_stay_out_of_the_optimizer(run_cli, class_folder, tmp_path):
    cli = run_cli(*tiny_task_args(class_folder, tmp_path, "--model.finetune", "feature_extractor"))
    groups = cli.trainer.optimizers[0].param_groups
    assert [(g["name"], g["lr"], len(g["params"])) for g in groups] == [("head", 1e-3, 2)]


def test_an_option_the_optimizer_lacks_is_a_user_error(run_cli, class_folder, tmp_path, capsys):
    bad = "[{name: head, modules: [head], lr: 0.001, betas: [0.9, 0.99]}]"
    with pytest.raises(SystemExit) as exit_info:
        run_cli(*tiny_task_args(class_folder, tmp_path, "--model.param_groups", bad))
    assert exit_info.value.code == 2
    assert "SGD has no option betas" in capsys.readouterr().err
