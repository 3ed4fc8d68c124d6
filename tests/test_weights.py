"""Pretrained weights: torchvision names through a planted cache file, local files, wrappers, mismatches, safety.

No ImageNet weights can be downloaded here; every weight file is a state_dict the tests save
themselves from a freshly built torchvision model.
"""

from __future__ import annotations

import os
import urllib.error
from pathlib import Path

import pytest
import torch
import torchvision
from torchvision.models import AlexNet_Weights

from lit_transfer.errors import UserError
from lit_transfer.finetune.weights import load_pretrained, torchvision_cache_file
from lit_transfer.nets import AlexNet, SimpleCNN, TorchvisionNet

HEAD = "model.classifier.6."


@pytest.fixture(scope="module")
def alexnet_file(tmp_path_factory) -> tuple[Path, dict[str, torch.Tensor]]:
    """A fresh torchvision AlexNet's state_dict saved as a plain ``.pth`` (written once: 233 MB)."""
    torch.manual_seed(123)
    state = torchvision.models.alexnet(weights=None).state_dict()
    path = tmp_path_factory.mktemp("weights") / "alexnet_fresh.pth"
    torch.save(state, path)
    return path, state


def assert_backbone_equal(net: TorchvisionNet, state: dict[str, torch.Tensor], skip_prefix: str = HEAD) -> int:
    """Every tensor of the net except the head equals the source's; returns how many were compared."""
    compared = 0
    for key, value in net.state_dict().items():
        if not key.startswith("model.") or key.startswith(skip_prefix):
            continue
        assert torch.equal(value, state[key[len("model.") :]]), key
        compared += 1
    return compared


@pytest.fixture
def no_download(monkeypatch):
    """Any attempt to reach the network fails the way an offline machine does."""

    def offline(url, *args, **kwargs):
        raise urllib.error.URLError("[Errno -3] Temporary failure in name resolution")

    monkeypatch.setattr(torch.hub, "download_url_to_file", offline)


def test_local_file_gives_identical_backbone_and_reports_the_new_head(alexnet_file):
    path, state = alexnet_file
    net = AlexNet(num_classes=2, head="replace")
    report = load_pretrained(net, str(path))
    assert assert_backbone_equal(net, state) == 14  # 5 conv + 2 hidden fc layers, weight and bias
    assert net.get_classifier().weight.shape == (2, 4096)
    assert sorted(report.missing) == [HEAD + "bias", HEAD + "weight"]
    assert sorted(k for k, _, _ in report.mismatched) == ["classifier.6.bias", "classifier.6.weight"]
    assert (
        "skipped 2" in report.summary() and "classifier.6.weight (file [1000, 4096], net [2, 4096])" in report.summary()
    )


def test_append_mode_keeps_the_1000_way_layer_and_only_the_appended_head_is_new(alexnet_file):
    path, state = alexnet_file
    net = AlexNet(num_classes=3, head="append")
    report = load_pretrained(net, str(path))
    assert assert_backbone_equal(net, state, skip_prefix="none") == 16  # classifier.6 loaded too
    assert sorted(report.missing) == ["head.bias", "head.weight"] and not report.mismatched
    out = net.eval()(torch.randn(2, 3, 64, 64))
    assert out.shape == (2, 3)  # logits of the appended Linear(1000, 3), no softmax
    assert not torch.allclose(out.softmax(-1).sum(-1), out.sum(-1))


def test_torchvision_names_resolve_through_a_planted_cache_file(alexnet_file, tmp_path, monkeypatch, no_download):
    path, state = alexnet_file
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch_home"))
    cached = torchvision_cache_file(AlexNet_Weights.IMAGENET1K_V1)
    # The file name from the weights' URL; torch.hub checks no hash by default (check_hash=False).
    assert cached == tmp_path / "torch_home" / "hub" / "checkpoints" / "alexnet-owt-7be5be79.pth"
    cached.parent.mkdir(parents=True)
    os.symlink(path, cached)
    for name in ("DEFAULT", "IMAGENET1K_V1", "AlexNet_Weights.IMAGENET1K_V1", "AlexNet_Weights.DEFAULT"):
        net = AlexNet(num_classes=2)
        report = load_pretrained(net, name)
        assert report.source == "torchvision AlexNet_Weights.IMAGENET1K_V1"
        assert assert_backbone_equal(net, state) == 14, name


def test_failed_download_says_where_to_put_the_file(tmp_path, monkeypatch, no_download):
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "empty_home"))
    with pytest.raises(UserError) as err:
        load_pretrained(AlexNet(num_classes=2), "DEFAULT")
    message = str(err.value)
    assert "cannot download AlexNet_Weights.IMAGENET1K_V1" in message
    assert str(tmp_path / "empty_home" / "hub" / "checkpoints") in message
    assert "alexnet-owt-7be5be79.pth" in message and "--model.weights /path/to/file.pth" in message


@pytest.mark.parametrize(
    "name, expected",
    [
        ("IMAGENET9K_V9", "unknown weights 'IMAGENET9K_V9' for alexnet: use one of IMAGENET1K_V1, DEFAULT"),
        ("AlexNet_Weights.NOPE", "unknown torchvision weights 'AlexNet_Weights.NOPE'"),
        ("ResNet18_Weights.DEFAULT", "weights 'ResNet18_Weights.DEFAULT' are not for alexnet"),
    ],
)
def test_unknown_weights_names_list_the_valid_ones(name, expected):
    with pytest.raises(UserError, match="AlexNet_Weights.IMAGENET1K_V1") as err:
        load_pretrained(AlexNet(num_classes=2), name)
    assert expected in str(err.value)


def test_torchvision_name_for_a_non_torchvision_net_is_a_user_error():
    with pytest.raises(UserError, match="SimpleCNN is not a torchvision model"):
        load_pretrained(SimpleCNN(num_classes=2), "DEFAULT")


def test_wrapped_and_prefixed_checkpoints_load(tmp_path):
    # A small torchvision model with BatchNorm buffers keeps the four files small.
    state = torchvision.models.mobilenet_v3_small(weights=None).state_dict()
    variants = {
        "dataparallel.pth": {f"module.{k}": v for k, v in state.items()},
        "tutorial_checkpoint.pth": {"epoch": 3, "model_state_dict": {f"module.{k}": v for k, v in state.items()}},
        "model_key.pth": {"model": state, "optimizer": {"lr": 0.1}},
        # A Lightning checkpoint of our own net: "state_dict" with "net.model." in front.
        "lightning.ckpt": {"state_dict": {f"net.model.{k}": v for k, v in state.items()}, "epoch": 1},
    }
    for filename, content in variants.items():
        torch.save(content, tmp_path / filename)
        net = TorchvisionNet(num_classes=2, name="mobilenet_v3_small")
        report = load_pretrained(net, str(tmp_path / filename))
        assert len(report.loaded) == len(state) - 2, filename  # all but the replaced head
        assert assert_backbone_equal(net, state, skip_prefix="model.classifier.3.") == len(state) - 2, filename


def test_mismatched_files_are_reported_or_refused(tmp_path):
    # Another architecture: nothing matches, which must not end as a silent random init.
    torch.save(torchvision.models.resnet18(weights=None).state_dict(), tmp_path / "resnet18.pth")
    with pytest.raises(UserError, match="match none of the .* tensors of AlexNet"):
        load_pretrained(AlexNet(num_classes=2), str(tmp_path / "resnet18.pth"))
    # A partial file: what matches loads, the rest is reported and warned about.
    source = SimpleCNN(num_classes=5, width=8).state_dict()
    partial = {k: v for k, v in source.items() if k.startswith("stem.")}
    partial["extra.weight"] = torch.zeros(3)
    torch.save(partial, tmp_path / "partial.pth")
    net = SimpleCNN(num_classes=3, width=8)
    with pytest.warns(UserWarning, match="outside the head of SimpleCNN were not in"):
        report = load_pretrained(net, str(tmp_path / "partial.pth"))
    assert report.unused == ["extra.weight"]
    assert {k for k in report.loaded} == {k for k in source if k.startswith("stem.")}
    assert torch.equal(net.stem[0].weight, source["stem.0.weight"])
    assert "body.3.0.weight" in report.missing and "head.weight" in report.missing


class WritesAFile:
    """Unpickling this object would create ``marker``: the kind of payload weights_only must refuse."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return (open, (str(self.marker), "w"))


def test_a_file_that_would_run_code_is_refused(tmp_path, monkeypatch, no_download):
    marker = tmp_path / "pwned"
    torch.save({"features.0.weight": torch.zeros(1), "payload": WritesAFile(marker)}, tmp_path / "evil.pth")
    with pytest.raises(UserError, match="pickled Python objects"):
        load_pretrained(AlexNet(num_classes=2), str(tmp_path / "evil.pth"))
    assert not marker.exists()
    # The same file planted as the torchvision cache is refused as well.
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch_home"))
    cached = torchvision_cache_file(AlexNet_Weights.IMAGENET1K_V1)
    cached.parent.mkdir(parents=True)
    os.symlink(tmp_path / "evil.pth", cached)
    with pytest.raises(UserError, match="cannot be read safely"):
        load_pretrained(AlexNet(num_classes=2), "DEFAULT")
    assert not marker.exists()


def test_missing_or_garbage_files_are_user_errors(tmp_path):
    with pytest.raises(UserError, match="does not exist"):
        load_pretrained(SimpleCNN(num_classes=2), str(tmp_path / "nope.pth"))
    (tmp_path / "garbage.pth").write_bytes(b"not a torch file at all")
    with pytest.raises(UserError, match="garbage.pth"):
        load_pretrained(SimpleCNN(num_classes=2), str(tmp_path / "garbage.pth"))
    torch.save({"epoch": 3}, tmp_path / "no_tensors.pth")
    with pytest.raises(UserError, match="hold no tensors"):
        load_pretrained(SimpleCNN(num_classes=2), str(tmp_path / "no_tensors.pth"))


def test_head_modes_report_their_head_and_stages():
    replace = AlexNet(num_classes=2, head="replace")
    assert replace.head_name == "model.classifier.6" and replace.get_classifier() is replace.model.classifier[6]
    assert replace.stages() == ["model.features", "model.classifier", "model.classifier.6"]
    assert replace.stage_of("model.classifier.6.weight") == "model.classifier.6"
    assert replace.stage_of("model.classifier.1.weight") == "model.classifier"
    append = AlexNet(num_classes=2, head="append")
    assert append.head_name == "head" and append.get_classifier() is append.head
    assert append.get_classifier().in_features == 1000 and append.model.classifier[6].out_features == 1000
    assert append.stages() == ["model.features", "model.classifier", "head"]
    append.reset_classifier(5)
    assert append(torch.randn(1, 3, 64, 64)).shape == (1, 5)
    # The same wrapper serves other torchvision models (ResNet's head is fc).
    resnet = TorchvisionNet(num_classes=4, name="resnet18")
    assert resnet.head_name == "model.fc" and resnet.get_classifier().out_features == 4
    assert resnet.stages()[0] == "model.conv1" and resnet.stages()[-1] == "model.fc"
    with pytest.raises(UserError, match="unknown torchvision classification model 'alexnett'"):
        TorchvisionNet(num_classes=2, name="alexnett")
