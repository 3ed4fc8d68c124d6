"""``python -m lit_transfer export``: a checkpoint's net as an ONNX, TorchScript or torch.export file,
checked against the checkpoint before it is written.

It needs no config and no data: the net, the class names and the preprocessing come from the
checkpoint (Lightning's ``load_from_checkpoint`` rebuilds the LightningCLI model and data module from
their saved settings; the data module reads no image for it). The file is written in a temporary
folder beside the output, run on a batch of random images (and, with ``--verify``, on real ones)
next to the checkpoint's net, and moved into place only when every top-1 agrees and every logit is
within the tolerance (``lit_transfer.export.parity``): a failed export leaves nothing behind.
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path
from typing import Any

import torch
from lightning.pytorch import LightningDataModule

from lit_transfer.cli.checkpoints import Checkpoint, read_checkpoint
from lit_transfer.cli.errors import one_line
from lit_transfer.cli.overview import program_name
from lit_transfer.cli.quiet import quiet_third_party
from lit_transfer.cli.runs import last_of_run
from lit_transfer.data.base import ClassificationDataModule
from lit_transfer.errors import UserError, first_line
from lit_transfer.export import FORMATS, Deployable, Parity, check_available, compare, load_runner, write
from lit_transfer.files import staging_folder
from lit_transfer.models import ImageClassifier
from lit_transfer.preprocessing import Preprocessing, eval_resize_size

RANDOM_BATCHES = 2  # of 4 random images each: the check that runs on every export


class _Parser(argparse.ArgumentParser):
    def error(self, message: str):
        sys.stderr.write(f"lit_transfer: error: {one_line(message)}  (see: {self.prog} --help)\n")
        sys.exit(2)


def parser() -> argparse.ArgumentParser:
    p = _Parser(
        prog=f"{program_name()} export",
        description="Write a checkpoint's net as a file to deploy, with its class names and preprocessing, "
        "after checking that it computes what the checkpoint computes.",
    )
    p.add_argument("--ckpt_path", required=True, help="checkpoint file, or `last`: the newest of a run (--run_name)")
    p.add_argument("--format", choices=list(FORMATS), default="onnx", help="file format (default: onnx)")
    p.add_argument("--output", help="file to write (default: the checkpoint's path with the format's ending)")
    p.add_argument("--verify", metavar="IMAGES", help="also compare on these images (a file or a folder)")
    p.add_argument("--run_name", help="with --ckpt_path last: the run's name under lightning_logs/")
    p.add_argument("--config", help="with --ckpt_path last: the task config whose runs to look in (its name)")
    return p


def resolve_checkpoint(args: argparse.Namespace) -> Checkpoint:
    if args.ckpt_path != "last":
        return read_checkpoint(args.ckpt_path)
    name = args.run_name or (Path(args.config).stem if args.config else None)
    if not name:
        raise UserError("--ckpt_path last needs the run: give --run_name <name> or --config <task config>")
    return last_of_run(None, name, None, full_state=False)


def load_for_export(checkpoint: Checkpoint, predict_root: str | None) -> tuple[ImageClassifier, Preprocessing, Any]:
    """The checkpoint's model, the preprocessing it was trained with and its data module (with
    ``predict_root`` set, for ``--verify``)."""
    if "_class_path" not in checkpoint.model_settings:
        raise UserError(
            f"checkpoint {str(checkpoint.path)!r} was not written by lit_transfer (no model settings): "
            "give a checkpoint from a run's checkpoints/ folder"
        )
    path = str(checkpoint.path)
    try:
        model = ImageClassifier.load_from_checkpoint(path, map_location="cpu", weights_only=True)
        data = None
        if "_class_path" in checkpoint.data_settings:
            data = LightningDataModule.load_from_checkpoint(
                path, weights_only=True, num_workers=0, predict_root=predict_root
            )
    except (RuntimeError, KeyError, ValueError, TypeError, ImportError) as err:
        raise UserError(f"checkpoint {path!r} cannot be rebuilt ({first_line(err, with_type=True)})") from err
    model.eval()
    if isinstance(data, ClassificationDataModule):
        data.follow(model.expected_input())
        return model, data.preprocessing, data
    preprocessing = model.expected_input()
    if preprocessing is None or preprocessing.image_size is None or preprocessing.mean is None:
        raise UserError(f"checkpoint {path!r} does not say how its images were prepared (it has no data settings)")
    return model, preprocessing, None


def metadata(model: ImageClassifier, preprocessing: Preprocessing, checkpoint: Checkpoint) -> dict[str, Any]:
    resize = eval_resize_size(preprocessing.image_size, preprocessing.resize_size)
    return {
        "format_version": 1,
        "class_names": list(model.class_names),
        "image_size": preprocessing.image_size,
        "resize_size": resize,
        "interpolation": preprocessing.interpolation,
        "mean": list(preprocessing.mean),
        "std": list(preprocessing.std),
        "input": f"uint8 RGB images (N, 3, {preprocessing.image_size}, {preprocessing.image_size}): the short side "
        f"resized to {resize} ({preprocessing.interpolation}), then center-cropped; normalised inside",
        "output": f"logits (N, {len(model.class_names)}); softmax gives the probabilities",
        "checkpoint": checkpoint.path.name,
    }


def output_path(args: argparse.Namespace, checkpoint: Checkpoint) -> Path:
    output = Path(args.output).expanduser() if args.output else checkpoint.path.with_suffix(FORMATS[args.format])
    if output.is_dir():
        raise UserError(
            f"--output {str(output)!r} is a folder: give a file name, e.g. {output / 'model'}{FORMATS[args.format]}"
        )
    try:
        output.parent.mkdir(parents=True, exist_ok=True)
    except OSError as err:
        raise UserError(f"cannot create the folder of --output {str(output)!r} ({first_line(err)})") from err
    if not os.access(output.parent, os.W_OK):
        raise UserError(f"cannot write to {str(output.parent)!r}: choose another --output")
    return output


def random_batches(image_size: int) -> list[torch.Tensor]:
    generator = torch.Generator().manual_seed(0)
    return [
        torch.randint(0, 256, (4, 3, image_size, image_size), dtype=torch.uint8, generator=generator)
        for _ in range(RANDOM_BATCHES)
    ]


def real_batches(data: Any) -> list[torch.Tensor]:
    """The images under ``--verify`` as the exported file takes them: RGB (a gray net's data module gives
    them gray; the file makes them gray itself)."""
    return [images.expand(-1, 3, -1, -1) for images, _paths in data.predict_dataloader()]


def export(args: argparse.Namespace) -> Path:
    check_available(args.format)
    checkpoint = resolve_checkpoint(args)
    model, preprocessing, data = load_for_export(checkpoint, args.verify)
    if args.verify and data is None:
        raise UserError("--verify needs the checkpoint's data settings to prepare the images; this checkpoint has none")
    output = output_path(args, checkpoint)
    deployable = Deployable(model.net, preprocessing.mean, preprocessing.std, preprocessing.channels or 3)
    batches = random_batches(preprocessing.image_size)
    with staging_folder(output, "export") as tmp:
        try:
            files = write(
                deployable, batches[0], args.format, tmp / output.name, metadata(model, preprocessing, checkpoint)
            )
        except OSError as err:  # a full disk, a quota
            raise UserError(
                f"cannot write {str(output)!r} ({first_line(err)}): free some space or choose another --output"
            ) from err
        run = load_runner(args.format, files[0])
        checks: list[tuple[str, Parity]] = [("random images", compare(deployable, run, batches))]
        if args.verify:
            checks.append((args.verify, compare(deployable, run, real_batches(data))))
        for what, parity in checks:
            if not parity.holds:
                raise UserError(
                    f"the exported {args.format} file does not compute what the checkpoint computes on {what}: "
                    f"{parity.describe()}; nothing written"
                )
        for file in files:
            os.replace(file, output.parent / file.name)
    size = output.stat().st_size / 2**20
    print(f"exported {output} ({args.format}, {size:.1f} MiB)")
    for what, parity in checks:
        print(f"checked on {what}: {parity.describe()}")
    return output


def main(argv: list[str]) -> Path:
    quiet_third_party()
    return export(parser().parse_args(argv))
