"""``predict --ckpt_path <file>.onnx``: predict with an exported ONNX file through ``lit_transfer.deploy``
(onnxruntime, numpy and Pillow; torch is not imported), writing the same CSV as predict from a checkpoint."""

from __future__ import annotations

import sys

from lit_transfer.cli.args import arg_value
from lit_transfer.cli.overview import program_name

# What predict from an ONNX file reads; any other flag would be ignored, so it is refused instead.
FLAGS = ("--ckpt_path", "--data.predict_root", "--data.batch_size")


def _fail(message: str) -> None:
    sys.stderr.write(f"lit_transfer: error: {message}\n")
    sys.exit(2)


def predict_onnx(args: list[str]) -> None:
    given = [arg.split("=", 1)[0] for arg in args if arg.startswith("--")]
    unknown = [flag for flag in given if flag not in FLAGS]
    if unknown:
        _fail(
            f"predict from an ONNX file takes only {', '.join(FLAGS)}; not {', '.join(unknown)} (the file holds the "
            f"net, classes and preprocessing): {program_name()} predict --ckpt_path <file>.onnx --data.predict_root <images>"
        )
    images = arg_value(args, "--data.predict_root")
    if images is None:
        _fail("nothing to predict: give the images with --data.predict_root <file or folder>")
    batch_size = arg_value(args, "--data.batch_size") or "32"
    if not batch_size.isdigit():
        _fail(f"--data.batch_size {batch_size!r}: give a whole number of images, at least 1")
    from lit_transfer.deploy import DeployError, run

    try:
        run(str(arg_value(args, "--ckpt_path")), images, batch_size=int(batch_size))
    except DeployError as err:
        _fail(str(err))
