"""Input pipeline: decoding, resizing and augmenting JPEGs to 224 px, ours against torchvision's default.

Ours is what training gets: ``ImageFolderDataModule``'s training set (the fast ``load_image`` loader,
which decodes JPEGs with TorchCodec, or with Pillow where TorchCodec does not load: the report's
``jpeg_decoder`` says which; and the ``imagenet`` train preset: RandomResizedCrop(224) and flip,
giving uint8 images) and the data module's batch ``normalize``. The default is what a torchvision
tutorial writes: the ``ImageFolder`` PIL loader (``Image.open(f).convert("RGB")``) and
``transforms.Compose([RandomResizedCrop(224), RandomHorizontalFlip(), ToTensor(), Normalize])``.
Ours is timed twice: as a GPU run gets it (uint8 batches from the loader; their normalisation runs
on the GPU) and as a CPU run does (each batch also normalised in the main process). Both read the
same training images through the same DataLoader settings (batch 32, shuffled), taking turns epoch
by epoch (ours, ours normalised, default, ...), in one process (1 torch thread, so both use
one core) and with 2 DataLoader workers. Reported: images/second (from the medians) and the ratio;
in one process also our JPEG decoding alone, the ceiling of any pipeline that decodes every image.

The accuracy side: the same images through both pipelines, compared pixel by pixel (0-255 levels):
decoding alone, the evaluation preset (Resize 256, CenterCrop 224), the training preset under the
same random seed (the same crops and flips), and the reduced-scale JPEG decoding where it applies
(``pixel_check``); and a small net's validation accuracy and predictions on images decoded at
reduced scale against full size (``accuracy_check``).

    python -m benchmarks.input_pipeline --data ../shared/data
    python -m benchmarks.input_pipeline --data ../shared/data --images 1602 --repeats 7

Data: ``<data>/dogs_vs_cats_kaggle_subset/train`` (2002 photos, 50-500 px); when absent, generated
JPEGs of similar sizes stand in (said in the output).
"""

from __future__ import annotations

import tempfile
from collections.abc import Callable
from functools import partial
from pathlib import Path

import numpy as np
import torch
from PIL import Image
from torch.nn import functional as F
from torch.utils.data import DataLoader, Dataset, Subset
from torchvision import transforms
from torchvision.datasets.folder import pil_loader
from torchvision.transforms.v2.functional import pil_to_tensor

from benchmarks.common import (
    add_data_option,
    add_out_option,
    benchmark_parser,
    format_table,
    interleave,
    machine,
    median,
    publish,
    real_or_synthetic,
    write_flat_cats_dogs,
)
from lit_transfer.data import ImageFolderDataModule
from lit_transfer.data.images import JPEG_DECODER, REDUCING_GAP, load_image, load_rgb
from lit_transfer.data.presets import (
    IMAGENET_MEAN,
    IMAGENET_STD,
    ClassificationPresetEval,
    ClassificationPresetTrain,
)
from lit_transfer.nets import SimpleCNN
from lit_transfer.preprocessing import Normalize

SUBSET = Path("dogs_vs_cats_kaggle_subset") / "train"
SIZE, RESIZE, BATCH = 224, 256, 32
NORMALIZE = Normalize(IMAGENET_MEAN, IMAGENET_STD)


class TorchvisionDefault(Dataset):
    """The tutorial's pipeline over the given ``(path, label)`` samples."""

    def __init__(self, samples: list[tuple[str, int]], transform) -> None:
        self.samples = samples
        self.transform = transform

    def __len__(self) -> int:
        return len(self.samples)

    def __getitem__(self, index: int):
        path, label = self.samples[index]
        return self.transform(pil_loader(path)), label


def default_train_transform() -> transforms.Compose:
    return transforms.Compose(
        [
            transforms.RandomResizedCrop(SIZE),
            transforms.RandomHorizontalFlip(),
            transforms.ToTensor(),
            transforms.Normalize(IMAGENET_MEAN, IMAGENET_STD),
        ]
    )


def default_eval_transform() -> transforms.Compose:
    return transforms.Compose(
        [
            transforms.Resize(RESIZE),
            transforms.CenterCrop(SIZE),
            transforms.ToTensor(),
            transforms.Normalize(IMAGENET_MEAN, IMAGENET_STD),
        ]
    )


def write_synthetic(root: Path, per_class: int = 150) -> Path:
    """Flat ``cat.<n>.jpg`` / ``dog.<n>.jpg`` photos-like JPEGs (smooth colours plus noise), 50 to 500
    px a side like the Kaggle subset: timing only."""
    rng = np.random.default_rng(0)

    def photo(label: str, n: int) -> Image.Image:
        w, h = (int(v) for v in rng.integers(50, 501, 2))
        y, x = np.mgrid[0:h, 0:w]
        base = np.stack([(x * c1 + y * c2) % 256 for c1, c2 in rng.uniform(0.2, 2, (3, 2))], axis=-1)
        pixels = np.clip(base + rng.normal(0, 20, (h, w, 3)), 0, 255).astype(np.uint8)
        return Image.fromarray(pixels)

    return write_flat_cats_dogs(root, per_class, photo, quality=90)


def training_sets(root: Path, images: int) -> tuple[Dataset, Normalize, Dataset, list[tuple[str, int]]]:
    """Ours (the data module's training set and its batch normalisation) and the default one, over
    the same first ``images`` training images of the data module's split; and the split's
    ``(path, label)`` samples."""
    data = ImageFolderDataModule(root=str(root), image_size=SIZE, resize_size=RESIZE, augment="imagenet")
    data.setup("fit")
    train = data.train_set  # a Subset of the whole folder: the split's training images
    samples = [train.dataset.samples[i] for i in train.indices]
    indices = list(range(min(images, len(train))))
    return (
        Subset(train, indices),
        data.normalize,
        TorchvisionDefault(samples[: len(indices)], default_train_transform()),
        samples,
    )


class DecodeOnly(Dataset):
    """Our JPEG decoding alone, no resize or augmentation: the ceiling of any pipeline built on it."""

    def __init__(self, samples: list[tuple[str, int]]) -> None:
        self.samples = samples

    def __len__(self) -> int:
        return len(self.samples)

    def __getitem__(self, index: int):
        path, label = self.samples[index]
        return load_image(path), label


def _sizes_differ(batch: list) -> tuple[list, list]:
    return [image for image, _ in batch], [label for _, label in batch]


def count_epoch(loader: DataLoader, finish: Callable = lambda images: images) -> int:
    """Images in one epoch of ``loader``; each batch's images go through ``finish``."""
    return sum(len(labels) for images, labels in loader if finish(images) is not None)


def throughput(
    ours: Dataset,
    normalize: Normalize,
    default: Dataset,
    workers: int,
    repeats: int,
    decode_only: Dataset | None = None,
) -> dict:
    def loader(dataset: Dataset, **kwargs) -> DataLoader:
        return DataLoader(
            dataset,
            batch_size=BATCH,
            shuffle=True,
            generator=torch.Generator().manual_seed(0),
            num_workers=workers,
            persistent_workers=workers > 0,
            **kwargs,
        )

    ours_loader = loader(ours)
    epochs = {
        "ours": partial(count_epoch, ours_loader),  # uint8 batches: a GPU run normalises them on the GPU
        "ours_cpu": partial(count_epoch, ours_loader, normalize),  # and normalised here, as a CPU run does
        "default": partial(count_epoch, loader(default)),
    }
    if decode_only is not None:
        epochs["decode_only"] = partial(count_epoch, loader(decode_only, collate_fn=_sizes_differ))
    # One untimed epoch each first: starts the persistent workers and fills the file cache.
    seconds = interleave(epochs, repeats, warmup=1)
    del epochs  # stops the workers before the next measurement
    n = len(ours)
    result = {
        name: {"epoch_seconds": [round(s, 3) for s in secs], "images_per_second": round(n / median(secs), 1)}
        for name, secs in seconds.items()
    }
    for ours_name, ratio_name in (("ours", "ratio"), ("ours_cpu", "ratio_cpu")):
        result[ratio_name] = round(result[ours_name]["images_per_second"] / result["default"]["images_per_second"], 2)
    return result


def _levels(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """Absolute difference of two images in 0-255 pixel levels: ours (uint8, normalised here as the
    data module does per batch) or the default pipeline's (normalised float)."""
    a, b = (NORMALIZE(x[None])[0] for x in (a, b))
    std = torch.tensor(IMAGENET_STD).view(3, 1, 1) * 255
    return (a - b).abs() * std


def _compare(pairs) -> dict:
    diffs = [_levels(a, b) for a, b in pairs]
    if not diffs:
        return {"images": 0}
    return {
        "images": len(diffs),
        "mean_abs_levels": round(float(torch.stack([d.mean() for d in diffs]).mean()), 3),
        "max_abs_levels": round(float(max(d.max() for d in diffs)), 1),
    }


def _short_side(path: str) -> int:
    with Image.open(path) as img:
        return min(img.size)


def _reduced(path: str, decode_size: int) -> bool:
    """Whether ``load_image`` decodes ``path`` at a reduced DCT scale for this ``decode_size``."""
    return _short_side(path) >= 2 * REDUCING_GAP * decode_size


def pixel_check(samples: list[tuple[str, int]], count: int) -> dict:
    """How far our pixels are from the default pipeline's, in 0-255 levels, on ``count`` images:
    decoding alone; the evaluation and the training preset at 224 px (the training one under the same
    seed: the same crops and flips); and, where reduced-scale JPEG decoding applies (at 224 px only to
    photos of 1024 px and more, none here), the evaluation preset at 56 px (resize 64), against the
    default pipeline and against our own full-size decode."""
    paths = [p for p, _ in samples]
    ours_eval, default_eval = ClassificationPresetEval(SIZE, RESIZE), default_eval_transform()
    ours_train, default_train = ClassificationPresetTrain(SIZE), default_train_transform()
    small_eval = ClassificationPresetEval(56, 64)
    small_default = transforms.Compose([transforms.Resize(64), transforms.CenterCrop(56), *default_eval.transforms[2:]])

    def train_pair(i: int, path: str):
        torch.manual_seed(i)
        ours = ours_train(load_image(path, ours_train.decode_size))
        torch.manual_seed(i)  # the same crop and flip draws for both
        return ours, default_train(pil_loader(path))

    reduced = [p for p in paths if _reduced(p, small_eval.decode_size)][:count]
    return {
        "decode_max_abs_levels": max(
            int((load_image(p).int() - pil_to_tensor(load_rgb(p)).int()).abs().max()) for p in paths[:count]
        ),
        "eval_224": _compare(
            (ours_eval(load_image(p, ours_eval.decode_size)), default_eval(pil_loader(p))) for p in paths[:count]
        ),
        "train_224_same_seed": _compare(train_pair(i, p) for i, p in enumerate(paths[:count])),
        "eval_56_reduced_scale_vs_default": _compare(
            (small_eval(load_image(p, small_eval.decode_size)), small_default(pil_loader(p))) for p in reduced
        ),
        "eval_56_reduced_scale_vs_full_decode": _compare(
            (small_eval(load_image(p, small_eval.decode_size)), small_eval(load_image(p))) for p in reduced
        ),
        "eval_56_full_decode_vs_default": _compare(
            (small_eval(load_image(p)), small_default(pil_loader(p))) for p in reduced
        ),
    }


def accuracy_check(root: Path, epochs: int, workers: int) -> dict:
    """A small net trained on full-size decodes, then validated twice on the same images: decoded as
    the data module now does (reduced DCT scale where it applies) and at full size. At 64 px the
    reduced scale applies to most photos here, so this is where a difference would show."""
    torch.manual_seed(0)
    data = ImageFolderDataModule(root=str(root), image_size=64, augment="flip", num_workers=workers)
    data.setup("fit")
    full_decode = partial(load_image, min_size=0)
    data.train_set.dataset.loader = full_decode
    net = SimpleCNN(len(data.class_names), width=32)
    optimizer = torch.optim.AdamW(net.parameters(), lr=3e-3)
    loader = DataLoader(data.train_set, batch_size=64, shuffle=True, num_workers=workers)
    for _ in range(epochs):
        net.train()
        for images, labels in loader:
            optimizer.zero_grad()
            F.cross_entropy(net(data.normalize(images)), labels).backward()
            optimizer.step()

    net.eval()
    val = data.val_set.dataset  # the Subset's dataset: its loader is what decodes
    decode_size = val.transform.decode_size

    def probabilities(image_loader) -> tuple[torch.Tensor, torch.Tensor]:
        val.loader = image_loader
        with torch.no_grad():
            out = [
                (net(data.normalize(x)).softmax(1), y)
                for x, y in DataLoader(data.val_set, batch_size=100, num_workers=workers)
            ]
        return torch.cat([p for p, _ in out]), torch.cat([y for _, y in out])

    reduced_p, labels = probabilities(partial(load_image, min_size=decode_size))
    full_p, _ = probabilities(full_decode)
    reduced, full = reduced_p.argmax(1), full_p.argmax(1)
    change = (reduced_p - full_p).abs().max(1).values
    paths = [val.samples[i][0] for i in data.val_set.indices]
    return {
        "net": f"SimpleCNN, {epochs} epochs from scratch at 64 px, trained on full-size decodes",
        "val_images": len(labels),
        "val_images_decoded_at_reduced_scale": sum(_reduced(p, decode_size) for p in paths),
        "val_acc_reduced_scale_decoding": round(float((reduced == labels).float().mean()), 4),
        "val_acc_full_decoding": round(float((full == labels).float().mean()), 4),
        "prediction_agreement": round(float((reduced == full).float().mean()), 4),
        "probability_change_mean": round(float(change.mean()), 4),
        "probability_change_max": round(float(change.max()), 4),
    }


def main(argv: list[str] | None = None) -> dict:
    parser = benchmark_parser("benchmarks.input_pipeline", __doc__)
    add_data_option(parser, SUBSET)
    parser.add_argument("--images", type=int, default=800, help="training images per epoch")
    parser.add_argument("--repeats", type=int, default=5, help="timed epochs of each, taking turns")
    parser.add_argument(
        "--workers", type=int, nargs="+", default=[0, 2], help="DataLoader workers, one measurement each"
    )
    parser.add_argument("--check-images", type=int, default=100, help="images in each pixel comparison")
    parser.add_argument(
        "--accuracy-epochs", type=int, default=3, help="epochs of the accuracy check's net (0: no check)"
    )
    add_out_option(parser, "input_pipeline.json")
    args = parser.parse_args(argv)

    with tempfile.TemporaryDirectory(prefix="input_pipeline-") as tmp:
        root, note = real_or_synthetic(
            args.data,
            SUBSET,
            lambda: write_synthetic(Path(tmp) / "flat", per_class=max(20, min(150, args.images))),
            real="Kaggle dogs vs cats subset",
            synthetic="SYNTHETIC generated JPEGs ({subset} not found under {data}): timing only",
        )
        ours, normalize, default, samples = training_sets(root, args.images)
        threads = torch.get_num_threads()
        results = {}
        for workers in args.workers:
            # One process: both on one thread (a worker's setting), so the comparison is per core.
            torch.set_num_threads(1 if workers == 0 else threads)
            print(f"{len(ours)} images, {workers} workers: ours and the default take turns ...", flush=True)
            # In one process also our decoding alone: what is left of the time once it is paid.
            decode_only = DecodeOnly(samples[: len(ours)]) if workers == 0 else None
            results[f"workers_{workers}"] = throughput(ours, normalize, default, workers, args.repeats, decode_only)
        torch.set_num_threads(threads)
        check = pixel_check(samples, args.check_images)
        accuracy = None
        if args.accuracy_epochs:
            print(f"accuracy check: a small net, {args.accuracy_epochs} epochs ...", flush=True)
            accuracy = accuracy_check(root, args.accuracy_epochs, max(args.workers))

    report = {
        "benchmark": "input_pipeline",
        "data": note,
        "images_per_epoch": len(ours),
        "batch_size": BATCH,
        "repeats": args.repeats,
        "ours": "ImageFolderDataModule train set: load_image + ClassificationPresetTrain(224, imagenet) to uint8 batches; ours_cpu: each batch also normalised in the main process",
        "default": "torchvision pil_loader + Compose(RandomResizedCrop(224), RandomHorizontalFlip, ToTensor, Normalize)",
        "jpeg_decoder": JPEG_DECODER,
        "machine": machine(),
        **results,
        "pixels": check,
        "accuracy": accuracy,
    }
    return publish(report, args.out, print_table)


def print_table(report: dict) -> None:
    rows = [
        (
            f"{key.split('_')[1]} DataLoader workers",
            r["default"]["images_per_second"],
            r["ours"]["images_per_second"],
            r["ratio"],
            r["ours_cpu"]["images_per_second"],
            r["ratio_cpu"],
            r.get("decode_only", {}).get("images_per_second"),
        )
        for key, r in report.items()
        if key.startswith("workers_")
    ]
    print(
        f"\nInput pipeline, {report['images_per_epoch']} JPEGs to 224 px per epoch, batch {report['batch_size']}, "
        f"median of {report['repeats']} epochs (images/second)"
    )
    print(
        format_table(
            ["", "default", "ours (GPU run)", "ratio", "ours (CPU run)", "ratio", "our JPEG decoding alone"], rows
        )
    )
    print(
        "ours (GPU run): the uint8 batches as the loader delivers them, normalised afterwards on the GPU; "
        "ours (CPU run): the same batches normalised in this process, as on a CPU"
    )
    px = report["pixels"]
    print(f"our JPEG decoder: {report.get('jpeg_decoder')}")
    print(f"pixels (0-255 levels): JPEG decoding, ours against PIL: max {px['decode_max_abs_levels']}")
    for name, v in px.items():
        if isinstance(v, dict):
            print(f"  {name}: mean {v.get('mean_abs_levels')}, max {v.get('max_abs_levels')} ({v['images']} images)")
    acc = report.get("accuracy")
    if acc:
        print(
            f"accuracy, {acc['net']}: val acc {acc['val_acc_reduced_scale_decoding']} with reduced-scale decoding "
            f"({acc['val_images_decoded_at_reduced_scale']} of {acc['val_images']} images), {acc['val_acc_full_decoding']} "
            f"with full-size decoding; predictions agree on {acc['prediction_agreement']:.1%}; class probabilities "
            f"change by {acc['probability_change_mean']} on average, {acc['probability_change_max']} at most"
        )


if __name__ == "__main__":
    main()
