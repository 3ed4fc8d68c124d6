"""AlexNet's and VGG's adaptive pools train under ``--trainer.deterministic true`` on a GPU: torch's CUDA
backward of ``adaptive_avg_pool2d`` raises there, so the nets pool by matrix products instead."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from lit_transfer.nets import TorchvisionNet
from lit_transfer.nets.pooling import DeterministicAdaptiveAvgPool2d, pool_by_matrices
from tests.conftest import alexnet_task_args


@pytest.mark.parametrize(
    "shape, output_size",
    [
        ((2, 3, 13, 13), (6, 6)),
        ((1, 4, 6, 6), 6),
        ((2, 2, 7, 10), (3, None)),
        ((1, 1, 5, 4), (7, 9)),
        ((1, 2, 9, 9), 1),
    ],
)
def test_matrices_pool_as_torch_does(shape, output_size):
    x = torch.randn(shape, dtype=torch.float64, requires_grad=True)
    ours = pool_by_matrices(x, output_size)
    torchs = F.adaptive_avg_pool2d(x, output_size)
    assert ours.shape == torchs.shape
    torch.testing.assert_close(ours, torchs)
    weights = torch.randn_like(ours)
    (ours_grad,) = torch.autograd.grad((ours * weights).sum(), x)
    (torchs_grad,) = torch.autograd.grad((torchs * weights).sum(), x)
    torch.testing.assert_close(ours_grad, torchs_grad)


@pytest.mark.parametrize("name, replaced", [("alexnet", True), ("vgg11", True), ("resnet18", False)])
def test_nets_pooling_above_one_by_one_get_the_deterministic_pool(name, replaced):
    net = TorchvisionNet(num_classes=2, name=name)
    pools = [m for m in net.modules() if isinstance(m, nn.AdaptiveAvgPool2d)]
    assert len(pools) == 1
    assert isinstance(pools[0], DeterministicAdaptiveAvgPool2d) is replaced  # ResNet's 1x1 pool is a mean in torch


def test_the_deterministic_pool_is_torchs_on_the_cpu():
    pool = DeterministicAdaptiveAvgPool2d((6, 6))
    x = torch.randn(1, 3, 13, 13)
    torch.use_deterministic_algorithms(True)
    try:
        assert torch.equal(pool(x), F.adaptive_avg_pool2d(x, (6, 6)))
    finally:
        torch.use_deterministic_algorithms(False)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs an NVIDIA GPU")
def test_the_alexnet_task_fits_deterministically_on_a_gpu(split_folder, tmp_path, run_cli):
    """The README's exact-resume recipe on the AlexNet task: ``--trainer.deterministic true`` on a GPU."""
    flags = ["--trainer.accelerator", "gpu", "--trainer.devices", "1", "--trainer.deterministic", "true"]
    cli = run_cli(*alexnet_task_args(split_folder, tmp_path, *flags, "--model.weights", "null"))
    assert cli.trainer.strategy.root_device.type == "cuda"
    assert torch.isfinite(cli.trainer.callback_metrics["val/loss"])
