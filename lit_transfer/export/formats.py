"""Writing a ``Deployable`` net in one of ``FORMATS``, and running a written file back.

The file takes ``uint8`` RGB images ``(N, 3, H, W)``, already resized and center-cropped as its
metadata says, any batch size, and gives logits ``(N, classes)``: the normalisation is inside the
graph, the resize and crop (which depend on each image's size) are the caller's, as in the data
modules. The metadata (one JSON object: class names, sizes, interpolation, mean, std) travels inside
the file where the format has a place for it (ONNX ``metadata_props``, TorchScript extra files) and
in a side file ``<file>.json`` for the exported program.
"""

from __future__ import annotations

import importlib.util
import json
import warnings
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn
from torchvision.transforms.v2.functional import rgb_to_grayscale

from lit_transfer.errors import UserError
from lit_transfer.preprocessing import Normalize

# Format -> file name ending. TorchScript is deprecated in torch (2.9+) but still what many C++ and
# mobile runtimes load; ONNX and the exported program are the maintained paths.
FORMATS = {"onnx": ".onnx", "torchscript": ".torchscript.pt", "exported_program": ".pt2"}
METADATA_KEY = "lit_transfer"  # the ONNX metadata key and the TorchScript extra file holding the JSON
# What each format needs beyond torch: (module, the package that installs it).
_NEEDS = {"onnx": [("onnx", "onnx"), ("onnxscript", "onnxscript"), ("onnxruntime", "onnxruntime")]}


def check_available(fmt: str) -> None:
    """Refuse, naming the extra to install, a format whose packages are missing."""
    missing = [package for module, package in _NEEDS.get(fmt, []) if importlib.util.find_spec(module) is None]
    if missing:
        raise UserError(
            f"export to {fmt} needs {', '.join(missing)}: pip install 'lit-transfer[export]' "
            "(in a clone: pip install -e '.[export]')"
        )


class Deployable(nn.Module):
    """The net with its normalisation (the data modules' own ``Normalize``) in front: ``uint8`` RGB images
    in, logits out, in eval mode (dropout off, BatchNorm on its running statistics) and in the default
    memory format. A net that takes gray images (``channels`` 1) gets them made gray first, as the
    data modules do (``presets.ToChannels``)."""

    def __init__(self, net: nn.Module, mean: Sequence[float], std: Sequence[float], channels: int = 3) -> None:
        super().__init__()
        self.net = net.eval().float().to(memory_format=torch.contiguous_format)
        self.normalize = Normalize(mean, std)
        self.channels = channels
        self.eval()

    def forward(self, images: Tensor) -> Tensor:
        if self.channels == 1:
            images = rgb_to_grayscale(images)
        return self.net(self.normalize(images))


def write(deployable: Deployable, example: Tensor, fmt: str, path: Path, metadata: dict[str, Any]) -> list[Path]:
    """Write ``deployable`` (traced on ``example``, a batch of at least 2) as ``fmt`` to ``path``;
    returns the files written (the exported program's metadata goes beside it)."""
    text = json.dumps(metadata)
    batch = torch.export.Dim("batch", min=1)
    with torch.no_grad():
        if fmt == "onnx":
            program = torch.onnx.export(
                deployable, (example,), dynamic_shapes=({0: batch},), dynamo=True, verbose=False
            )
            program.model.metadata_props[METADATA_KEY] = text
            program.save(str(path))
            return [path]
        if fmt == "torchscript":
            with warnings.catch_warnings():  # the format's own deprecation: chosen by the user, said above
                warnings.simplefilter("ignore", FutureWarning)
                traced = torch.jit.trace(deployable, example)
                torch.jit.save(traced, str(path), _extra_files={METADATA_KEY: text})
            return [path]
        if fmt == "exported_program":
            program = torch.export.export(deployable, (example,), dynamic_shapes=({0: batch},))
            torch.export.save(program, str(path))
            side = path.with_name(path.name + ".json")
            side.write_text(text + "\n")
            return [path, side]
    raise UserError(f"unknown export format {fmt!r}: use one of {', '.join(FORMATS)}")


def load_runner(fmt: str, path: Path) -> Callable[[Tensor], Tensor]:
    """A function that runs the file at ``path`` on a ``uint8`` batch and gives its logits."""
    if fmt == "onnx":
        import onnxruntime

        session = onnxruntime.InferenceSession(str(path), providers=["CPUExecutionProvider"])
        name = session.get_inputs()[0].name
        return lambda images: torch.from_numpy(session.run(None, {name: images.numpy()})[0])
    if fmt == "torchscript":
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", FutureWarning)
            module = torch.jit.load(str(path))
    else:
        module = torch.export.load(str(path)).module()

    def run(images: Tensor) -> Tensor:
        with torch.no_grad():
            return module(images)

    return run
