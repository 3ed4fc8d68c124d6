"""The ImageFolder data module: layouts, presets, RGB conversion, unreadable files, download."""

from __future__ import annotations

import hashlib
import logging
import shutil
import zipfile
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from torchvision.transforms import v2 as T

from lit_transfer.data import ImageFolderDataModule
from lit_transfer.data import download as download_module
from lit_transfer.data.folder import SKIPPED_IMAGES_FILE
from lit_transfer.data.images import load_rgb
from lit_transfer.data.presets import IMAGENET_MEAN, IMAGENET_STD
from lit_transfer.data.scan import find_bad_images
from lit_transfer.errors import UserError
from tests.conftest import add_bad_files, simple_cnn_folder_args, write_image_folder


def module(root: Path, **kwargs) -> ImageFolderDataModule:
    kwargs = {"batch_size": 4, "num_workers": 0, "image_size": 32, **kwargs}
    return ImageFolderDataModule(str(root), **kwargs)


# -- layouts ------------------------------------------------------------------------------------
def test_train_val_layout_with_and_without_test(split_folder):
    data = module(split_folder)
    data.setup("fit")
    assert data.class_names == ["circle", "square", "triangle"]
    assert (len(data.train_set), len(data.val_set)) == (24, 12)
    assert data.test_set is data.val_set  # no test/: test on val
    write_image_folder(split_folder / "test", per_class=2, seed=5)
    data = module(split_folder)
    data.setup("test")
    assert len(data.test_set) == 6 and data.test_set.root.endswith("test")


def test_testing_without_a_test_folder_is_said_once(split_folder, caplog):
    caplog.set_level(logging.INFO)
    module(split_folder).setup("test")
    module(split_folder).setup("fit")
    said = [r.getMessage() for r in caplog.records if "testing on the validation images" in r.getMessage()]
    assert said == [f"no test/ folder in {str(split_folder)!r}: testing on the validation images (val/)"]


def test_validation_comes_in_one_fixed_order_that_mixes_the_classes(split_folder):
    """Folders list their images class by class; a partial validation (limit_val_batches) must not
    score one class alone."""
    data = module(split_folder, eval_batch_size=4)
    data.setup("fit")
    labels_in_order = [label for _, label in data.val_set]
    assert labels_in_order[:4] == [0, 0, 0, 0]  # as stored: one class first
    batches = [batch[1].tolist() for batch in data.val_dataloader()]
    assert len(set(batches[0])) > 1
    assert sorted(sum(batches, [])) == sorted(labels_in_order)  # every image once
    again = module(split_folder, eval_batch_size=4)
    again.setup("fit")
    assert [batch[1].tolist() for batch in again.val_dataloader()] == batches  # the same order every time
    assert [batch[1].tolist() for batch in data.test_dataloader()] == batches


def test_one_folder_of_classes_is_split_stratified_and_seeded(class_folder):
    data = module(class_folder, val_fraction=0.2, split_seed=1)
    data.setup("fit")
    assert (len(data.train_set), len(data.val_set)) == (24, 6)
    val_labels = [data.val_set.dataset.targets[i] for i in data.val_set.indices]
    assert sorted(val_labels) == [0, 0, 1, 1, 2, 2]  # every class keeps its share
    assert not set(data.train_set.indices) & set(data.val_set.indices)
    # The validation images get the eval transform, the training images the augmenting one.
    assert data.val_set.dataset.transform is not data.train_set.dataset.transform
    again = module(class_folder, val_fraction=0.2, split_seed=1)
    again.setup("fit")
    other = module(class_folder, val_fraction=0.2, split_seed=2)
    other.setup("fit")
    assert again.val_set.indices == data.val_set.indices and other.val_set.indices != data.val_set.indices


def test_hidden_folders_are_not_classes_and_labels_match_the_class_names(split_folder):
    hidden = split_folder / "train" / ".ipynb_checkpoints"
    hidden.mkdir()
    shutil.copy(next((split_folder / "train" / "circle").iterdir()), hidden / "copy.png")
    data = module(split_folder)
    data.setup("fit")
    assert data.train_set.classes == data.class_names == ["circle", "square", "triangle"]
    assert len(data.train_set) == 24
    assert all(Path(path).parent.name == data.class_names[label] for path, label in data.train_set.samples)


def test_empty_class_folder_and_class_mismatch_are_clear_errors(split_folder):
    (split_folder / "val" / "hexagon").mkdir()
    with pytest.raises(UserError, match="hexagon' holds no image files"):
        module(split_folder).class_names
    (split_folder / "val" / "hexagon" / "h.png").write_bytes(
        (split_folder / "val" / "circle").iterdir().__next__().read_bytes()
    )
    with pytest.raises(UserError, match=r"class folders differ between train/ .* and val/"):
        module(split_folder).class_names


# -- presets ------------------------------------------------------------------------------------
def test_default_presets_are_the_imagenet_ones(split_folder):
    data = ImageFolderDataModule(str(split_folder))
    train = {type(t): t for t in data.train_transform().transforms}
    evaluation = {type(t): t for t in data.eval_transform().transforms}
    crop = next(t for t in train.values() if isinstance(t, T.RandomResizedCrop))
    assert list(crop.size) == [224, 224] and any(isinstance(t, T.RandomHorizontalFlip) for t in train.values())
    assert list(evaluation[T.Resize].size) == [256] and list(evaluation[T.CenterCrop].size) == [224, 224]
    assert data.normalize.mean == IMAGENET_MEAN and data.normalize.std == IMAGENET_STD


def test_presets_come_from_yaml(run_cli, split_folder, tmp_path):
    config = tmp_path / "tiny.yaml"
    config.write_text(
        f"""
model:
  class_path: lit_transfer.models.ImageClassifier
  init_args:
    net: {{class_path: lit_transfer.nets.SimpleCNN, init_args: {{width: 8}}}}
data:
  class_path: lit_transfer.data.ImageFolderDataModule
  init_args:
    root: {split_folder}
    num_workers: 0
    batch_size: 4
    image_size: 40
    resize_size: 48
    mean: [0.5, 0.4, 0.3]
    std: [0.2, 0.2, 0.2]
"""
    )
    cli = run_cli(
        "fit", "--config", str(config), "--trainer.fast_dev_run", "true", "--trainer.default_root_dir", str(tmp_path)
    )
    evaluation = {type(t): t for t in cli.datamodule.val_set.transform.transforms}
    assert list(evaluation[T.Resize].size) == [48] and list(evaluation[T.CenterCrop].size) == [40, 40]
    assert cli.datamodule.normalize.mean == (0.5, 0.4, 0.3) and cli.datamodule.normalize.std == (0.2, 0.2, 0.2)
    image, _ = cli.datamodule.train_set[0]
    assert image.shape == (3, 40, 40) and image.dtype == torch.uint8
    batch = torch.stack([image, image])
    torch.testing.assert_close(
        cli.datamodule.normalize(batch)[0, 2], (image[2].float() / 255 - 0.3) / 0.2, rtol=0, atol=1e-5
    )


# -- every image becomes RGB ---------------------------------------------------------------------
def write_all_modes(folder: Path) -> dict[str, Path]:
    """One 20x16 image per mode the loader must turn into RGB."""
    folder.mkdir(parents=True, exist_ok=True)
    rgb = Image.fromarray(np.random.default_rng(0).integers(0, 256, (16, 20, 3), dtype=np.uint8))
    gradient16 = Image.fromarray((np.arange(16 * 20).reshape(16, 20) * 200).astype(np.uint16))
    files = {
        "1": (rgb.convert("1"), "bilevel.png"),
        "L": (rgb.convert("L"), "gray.png"),
        "LA": (rgb.convert("LA"), "gray_alpha.png"),
        "P": (rgb.convert("P"), "palette.png"),
        "RGBA": (rgb.convert("RGBA"), "rgba.png"),
        "CMYK": (rgb.convert("CMYK"), "cmyk.jpg"),
        "I;16": (gradient16, "gray16.png"),
        "GIF": (rgb.convert("P"), "animation.gif"),
        "RGB": (rgb, "plain.jpeg"),
    }
    paths = {}
    for mode, (img, name) in files.items():
        img.save(folder / name)
        paths[mode] = folder / name
    return paths


def test_every_mode_loads_as_rgb(tmp_path):
    paths = write_all_modes(tmp_path / "modes")
    assert Image.open(paths["I;16"]).mode == "I;16" and Image.open(paths["CMYK"]).mode == "CMYK"
    for mode, path in paths.items():
        img = load_rgb(path)
        assert img.mode == "RGB" and img.size == (20, 16), mode
    # 16 bits are scaled down, not clipped to white
    values = np.asarray(load_rgb(paths["I;16"]))
    assert values.min() == 0 and 200 < values.max() <= 255 and len(np.unique(values)) > 100


def test_every_mode_goes_through_the_data_module(tmp_path):
    root = tmp_path / "data"
    write_all_modes(root / "train" / "a")
    write_all_modes(root / "train" / "b")
    write_all_modes(root / "val" / "a")
    write_all_modes(root / "val" / "b")
    data = module(root, image_size=16)
    data.setup("fit")
    assert len(data.train_set) == 18 and not data.skipped
    for i in range(len(data.train_set)):
        image, _ = data.train_set[i]
        assert image.shape == (3, 16, 16)


# -- unreadable files -----------------------------------------------------------------------------
def test_scan_finds_each_kind_of_bad_file(tmp_path):
    bad = add_bad_files(tmp_path)
    found = dict(find_bad_images(sorted(str(p) for p in tmp_path.iterdir())))
    assert set(found) == {str(p) for p in bad.values()}
    assert found[str(bad["empty"])] == "empty file"
    assert "truncated" in found[str(bad["truncated"])]
    assert "cannot identify image file" in found[str(bad["text"])]


def test_bad_files_are_skipped_counted_and_listed_before_training(run_cli, split_folder, tmp_path):
    bad = add_bad_files(split_folder / "train" / "square")
    (split_folder / "val" / "circle" / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\n garbage")
    data = module(split_folder)
    with pytest.warns(UserWarning, match=r"skipped 3 unreadable image files in .*train") as warned:
        data.setup("fit")
    assert any("square/empty.jpg (empty file)" in str(w.message) for w in warned)
    assert len(data.train_set) == 25  # 24 + the good JPEG
    assert {p for p, _ in data.skipped} == {str(p) for p in bad.values()} | {
        str(split_folder / "val" / "circle" / "broken.png")
    }

    # Through the CLI: the run goes on and the list lands in the run folder.
    cli = run_cli("fit", *simple_cnn_folder_args(split_folder, tmp_path / "run", batch_size=8))
    assert cli.trainer.global_step == 4  # ceil(25 / 8): every readable training image was used
    listing = Path(cli.trainer.log_dir) / SKIPPED_IMAGES_FILE
    lines = listing.read_text().splitlines()
    assert len(lines) == 4 and all("\t" in line for line in lines)
    assert {line.split("\t")[0] for line in lines} == {p for p, _ in data.skipped}


def test_a_class_with_only_unreadable_files_is_a_clear_error(split_folder):
    for path in (split_folder / "val" / "circle").iterdir():
        path.write_bytes(b"")
    data = module(split_folder)
    with (
        pytest.warns(UserWarning, match="skipped 4"),
        pytest.raises(UserError, match="Found no valid file for the classes circle"),
    ):
        data.setup("fit")


# -- download -----------------------------------------------------------------------------------
def make_archive(source: Path, archive: Path, top: str) -> str:
    """Zip ``source`` under the top folder ``top`` (as the hymenoptera zip does); returns the MD5."""
    with zipfile.ZipFile(archive, "w") as zf:
        for path in sorted(source.rglob("*")):
            zf.write(path, Path(top) / path.relative_to(source))
        zf.writestr("__MACOSX/._junk", b"resource fork")
    return hashlib.md5(archive.read_bytes()).hexdigest()


def test_download_with_md5_from_a_local_server(http_server, split_folder, tmp_path):
    served, url = http_server
    md5 = make_archive(split_folder, served / "tiny_data.zip", "tiny_data")
    root = tmp_path / "downloads" / "tiny_data"
    data = module(root, download=True, archive_url=f"{url}/tiny_data.zip", archive_md5=md5)
    assert data.class_names == ["circle", "square", "triangle"]
    data.setup("fit")
    assert (len(data.train_set), len(data.val_set)) == (24, 12)
    assert sorted(p.name for p in (tmp_path / "downloads").iterdir()) == ["tiny_data"]  # no temporary leftovers
    # Present now: a second module does not download again (the server is no longer needed).
    (served / "tiny_data.zip").unlink()
    assert module(root, download=True, archive_url=f"{url}/tiny_data.zip").class_names == data.class_names


def test_download_with_a_wrong_checksum_leaves_nothing_behind(http_server, split_folder, tmp_path):
    served, url = http_server
    make_archive(split_folder, served / "tiny_data.zip", "tiny_data")
    root = tmp_path / "downloads" / "tiny_data"
    with pytest.raises(UserError, match="does not match its MD5 checksum 0123"):
        module(root, download=True, archive_url=f"{url}/tiny_data.zip", archive_md5="0123" * 8).class_names
    assert list((tmp_path / "downloads").iterdir()) == []
    with pytest.raises(UserError, match=r"cannot download .*missing.zip \(HTTP Error 404"):
        module(root, download=True, archive_url=f"{url}/missing.zip", archive_sha256="0" * 64).class_names


def test_known_archive_by_folder_name_with_sha256(http_server, split_folder, tmp_path, monkeypatch):
    served, url = http_server
    make_archive(split_folder, served / "hymenoptera_data.zip", "hymenoptera_data")
    sha256 = hashlib.sha256((served / "hymenoptera_data.zip").read_bytes()).hexdigest()
    real = download_module.KNOWN_ARCHIVES["hymenoptera_data"]
    assert real.url == "https://download.pytorch.org/tutorial/hymenoptera_data.zip" and real.sha256
    known = {"hymenoptera_data": download_module.Archive(url=f"{url}/hymenoptera_data.zip", sha256=sha256)}
    monkeypatch.setattr(download_module, "KNOWN_ARCHIVES", known)
    data = module(tmp_path / "data" / "hymenoptera_data", download=True)
    assert data.class_names == ["circle", "square", "triangle"]
    # A wrong SHA-256 is refused just like a wrong MD5.
    known["hymenoptera_data"] = download_module.Archive(url=f"{url}/hymenoptera_data.zip", sha256="0" * 64)
    with pytest.raises(UserError, match="SHA-256"):
        module(tmp_path / "other" / "hymenoptera_data", download=True).class_names
    with pytest.raises(UserError, match="no archive is known for 'my_photos'"):
        module(tmp_path / "my_photos", download=True).class_names


def test_a_custom_archive_needs_its_checksum_or_an_explicit_opt_out(http_server, split_folder, tmp_path):
    served, url = http_server
    make_archive(split_folder, served / "tiny_data.zip", "tiny_data")
    sha256 = hashlib.sha256((served / "tiny_data.zip").read_bytes()).hexdigest()
    root = tmp_path / "downloads" / "tiny_data"
    with pytest.raises(UserError, match="needs its checksum"):
        module(root, download=True, archive_url=f"{url}/tiny_data.zip").class_names
    assert not root.exists()
    with pytest.raises(UserError, match="does not match its SHA-256 checksum"):
        module(root, download=True, archive_url=f"{url}/tiny_data.zip", archive_sha256="f" * 64).class_names
    data = module(root, download=True, archive_url=f"{url}/tiny_data.zip", archive_sha256=sha256)
    assert data.class_names == ["circle", "square", "triangle"]
    other = tmp_path / "downloads" / "unchecked" / "tiny_data"
    unchecked = module(other, download=True, archive_url=f"{url}/tiny_data.zip", archive_unverified=True)
    assert unchecked.class_names == data.class_names
