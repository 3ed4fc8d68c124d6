"""Adaptive average pooling that a deterministic run can train on a GPU.

torch's ``adaptive_avg_pool2d`` has no deterministic CUDA backward: with ``--trainer.deterministic true``
(Lightning turns on ``torch.use_deterministic_algorithms``) AlexNet's 6x6 and VGG's 7x7 pools raise at
the first backward on a GPU. Pooling to 1x1 (ResNet, EfficientNet, ...) is a mean in torch, with a
deterministic backward, and is left alone. Neither torch nor torchvision offers a deterministic
replacement, hence this one: the same average as two matrix products (rows, then columns), whose
backward is deterministic. It is used only where it is needed (deterministic algorithms on, not on the
CPU), so speed and exports are torch's own everywhere else.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn


class DeterministicAdaptiveAvgPool2d(nn.AdaptiveAvgPool2d):
    """``nn.AdaptiveAvgPool2d`` that pools by matrix products when deterministic algorithms are on and the
    input is on an accelerator (no parameters: a drop-in for the module it replaces)."""

    def forward(self, x: Tensor) -> Tensor:
        if x.device.type == "cpu" or not torch.are_deterministic_algorithms_enabled():
            return super().forward(x)
        return pool_by_matrices(x, self.output_size)


def pool_by_matrices(x: Tensor, output_size) -> Tensor:
    """``adaptive_avg_pool2d(x, output_size)`` as ``rows @ x @ columns.T``: each output cell averages the
    input cells of torch's window, ``[floor(i * n / m), ceil((i + 1) * n / m))``."""
    size = output_size if isinstance(output_size, (tuple, list)) else (output_size, output_size)
    height, width = (x.shape[-2 + i] if size[i] is None else size[i] for i in range(2))
    rows = _window_means(x.shape[-2], height, x)
    columns = _window_means(x.shape[-1], width, x)
    return rows @ x @ columns.T


def _window_means(size_in: int, size_out: int, like: Tensor) -> Tensor:
    """The ``size_out x size_in`` matrix that averages each output cell's window of inputs."""
    cell = torch.arange(size_out, device=like.device)
    start = cell * size_in // size_out
    end = ((cell + 1) * size_in + size_out - 1) // size_out
    position = torch.arange(size_in, device=like.device)
    inside = (position >= start[:, None]) & (position < end[:, None])
    return (inside / (end - start)[:, None]).to(like.dtype)


def use_deterministic_pooling(model: nn.Module) -> None:
    """Replace every ``nn.AdaptiveAvgPool2d`` in ``model`` that pools to more than 1x1 by the deterministic one."""
    for name, module in list(model.named_modules()):
        if type(module) is nn.AdaptiveAvgPool2d and module.output_size not in (1, (1, 1)):
            model.set_submodule(name, DeterministicAdaptiveAvgPool2d(module.output_size))
