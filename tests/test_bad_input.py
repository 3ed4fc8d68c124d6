"""A corpus of unreadable images (truncated JPEG, empty file, text named .png, decompression-bomb PNG)
through fit, validate, test and predict: no traceback, every readable image used, every unreadable
one listed."""

from __future__ import annotations

import csv
from pathlib import Path

import pytest

from tests.conftest import (
    add_bad_files,
    add_decompression_bomb,
    run_folder,
    simple_cnn_folder_args,
    tiny_demo_args,
    write_image_folder,
    written,
)


def bad_corpus(folder: Path) -> set[str]:
    """The corpus written into ``folder`` (which also gets one good JPEG); the bad files' paths."""
    bad = add_bad_files(folder)
    return {str(p) for p in bad.values()} | {str(add_decompression_bomb(folder))}


@pytest.mark.parametrize("subcommand", ["fit", "validate", "test"])
def test_unreadable_images_are_left_out_and_listed_at_fit_validate_and_test(tmp_path, run_cli, subcommand):
    root = tmp_path / "data"
    write_image_folder(root / "train", per_class=4, seed=1)
    write_image_folder(root / "val", per_class=2, seed=2)
    write_image_folder(root / "test", per_class=2, seed=3)
    bad = bad_corpus(root / "train" / "circle") | bad_corpus(root / "val" / "square")
    bad |= bad_corpus(root / "test" / "triangle")
    with pytest.warns(UserWarning, match="skipped 4 unreadable image files in .*train"):
        cli = run_cli(subcommand, *simple_cnn_folder_args(root, tmp_path / "run"))
    assert {path for path, _ in cli.datamodule.skipped} == bad  # setup builds every split
    data = cli.datamodule
    # each split: its class folders' images and the corpus' one good JPEG
    assert (len(data.train_set), len(data.val_set), len(data.test_set)) == (13, 7, 7)


def test_predict_lists_unreadable_images_and_predicts_every_other(tmp_path, run_cli, capsys):
    run_cli("fit", *tiny_demo_args(tmp_path, "--trainer.max_epochs", "1"))
    ckpt = run_folder(tmp_path, 0) / "checkpoints/last.ckpt"
    images = write_image_folder(tmp_path / "to_predict", per_class=1, seed=5)
    bad = bad_corpus(images)
    good = {str(p) for p in images.rglob("*") if p.is_file()} - bad
    capsys.readouterr()
    with pytest.warns(UserWarning, match="skipped 4 unreadable image files"):
        run_cli("predict", *tiny_demo_args(tmp_path, "--ckpt_path", str(ckpt), "--data.predict_root", str(images)))
    out = capsys.readouterr().out
    (csv_path,) = written(tmp_path, "predictions-*.csv")
    assert {row["path"] for row in csv.DictReader(csv_path.open())} == good
    listing = csv_path.with_name(csv_path.stem + "-skipped.txt")
    assert {line.split("\t")[0] for line in listing.read_text().splitlines()} == bad
    assert f"left out 4 unreadable image files, listed in {listing}" in out


@pytest.mark.parametrize("kind", ["truncated", "empty", "text", "bomb"])
def test_predict_on_a_single_unreadable_file_is_one_line(tmp_path, run_cli, capsys, kind):
    run_cli("fit", *tiny_demo_args(tmp_path, "--trainer.max_epochs", "1"))
    ckpt = run_folder(tmp_path, 0) / "checkpoints/last.ckpt"
    folder = tmp_path / "bad"
    folder.mkdir()
    files = {**add_bad_files(folder), "bomb": add_decompression_bomb(folder)}
    capsys.readouterr()
    with pytest.raises(SystemExit) as exc:
        run_cli("predict", *tiny_demo_args(tmp_path, "--ckpt_path", str(ckpt), "--data.predict_root", str(files[kind])))
    assert exc.value.code == 2
    err = capsys.readouterr().err.strip()
    assert "Traceback" not in err and f"image {str(files[kind])!r} cannot be read" in err.splitlines()[-1]
    assert not list(written(tmp_path, "predictions-*.csv"))


@pytest.mark.parametrize(
    "extra, expected",
    [
        (["--data.batch_size", "0"], "data.batch_size is 0"),
        (["--data.batch_size", "-3"], "data.batch_size is -3"),
        (["--data.num_workers", "-1"], "data.num_workers is -1"),
        (["--data.image_size", "0"], "data.image_size is 0"),
        (["--model.init_args.optimizer.init_args.lr", "-0.1"], "Invalid learning rate"),
        (["--model.init_args.optimizer.init_args.lr", "0"], "lr is 0.0"),
        (["--model.init_args.optimizer.init_args.weight_decay", "-1"], "weight_decay"),
    ],
)
def test_numbers_out_of_range_are_one_line_before_anything_runs(tmp_path, run_cli, capsys, extra, expected):
    with pytest.raises(SystemExit) as exc:
        run_cli("fit", *tiny_demo_args(tmp_path, *extra))
    assert exc.value.code == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and expected in err, err
    assert not (tmp_path / "lightning_logs").exists()


@pytest.mark.parametrize(
    "extra, expected",
    [
        (["--data.val_fraction", "2.0"], "data.val_fraction is 2.0"),
        (["--data.val_fraction", "-0.5"], "data.val_fraction is -0.5"),
        (["--data.val_fraction", "0"], "data.val_fraction is 0"),
        (["--data.resize_size", "0"], "data.resize_size is 0"),
        (["--data.eval_batch_size", "0"], "data.eval_batch_size is 0"),
    ],
)
def test_folder_settings_out_of_range_are_one_line(tmp_path, class_folder, run_cli, capsys, extra, expected):
    with pytest.raises(SystemExit) as exc:
        run_cli("fit", *simple_cnn_folder_args(class_folder, tmp_path / "run", *extra))
    assert exc.value.code == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and expected in err, err


def test_a_data_root_that_is_a_file_says_so(tmp_path, run_cli, capsys):
    a_file = tmp_path / "images.zip"
    a_file.write_bytes(b"PK")
    for data in (
        ["--data", "lit_transfer.data.ImageFolderDataModule"],
        ["--data", "lit_transfer.data.CIFARDataModule"],
    ):
        with pytest.raises(SystemExit) as exc:
            run_cli("fit", *simple_cnn_folder_args(a_file, tmp_path / "run"), *data, "--data.root", str(a_file))
        assert exc.value.code == 2
        assert "is a file, not a folder" in capsys.readouterr().err


def test_too_many_workers_are_lowered_to_the_usable_cpus_with_a_warning(class_folder):
    from lit_transfer.data import ImageFolderDataModule
    from lit_transfer.data.base import usable_cpus

    with pytest.warns(UserWarning, match="data.num_workers 1000 lowered to"):
        data = ImageFolderDataModule(root=str(class_folder), num_workers=1000)
    assert data.num_workers == usable_cpus()


@pytest.mark.parametrize(
    "make, reason",
    [
        (lambda p: p.write_bytes(b""), "is empty (0 bytes)"),
        (lambda p: p.write_bytes(bytes(range(256)) * 20), "is not a torch file"),
        (lambda p: p.write_text("model weights, honest\n"), "is not a torch file"),
        (lambda p: p.mkdir(), "is a folder, not a file"),
    ],
    ids=["empty", "random-bytes", "text", "folder"],
)
def test_a_bad_checkpoint_or_weights_file_is_named_for_what_it_is(tmp_path, run_cli, capsys, make, reason):
    bad = tmp_path / "bad.ckpt"
    make(bad)
    for flag in ("--ckpt_path", "--model.init_args.init_from"):
        with pytest.raises(SystemExit) as exc:
            run_cli("validate", *tiny_demo_args(tmp_path, flag, str(bad)))
        assert exc.value.code == 2
        err = capsys.readouterr().err.strip().splitlines()[-1]
        assert reason in err and str(bad) in err and "mmap" not in err and "pickled" not in err, err


@pytest.mark.parametrize("flag", ["--model.init_args.init_from", "--model.init_args.weights"])
def test_an_unreadable_weights_file_is_reported_before_the_data_scan(
    tmp_path, class_folder, run_cli, capsys, recwarn, flag
):
    bad_corpus(class_folder / "circle")
    empty = tmp_path / "start.pth"
    empty.write_bytes(b"")
    model = ["--model", "lit_transfer.models.FineTuneClassifier"] if flag.endswith("weights") else []
    with pytest.raises(SystemExit) as exc:
        run_cli("fit", *simple_cnn_folder_args(class_folder, tmp_path / "run", *model, flag, str(empty)))
    assert exc.value.code == 2
    assert "is empty (0 bytes)" in capsys.readouterr().err.strip().splitlines()[-1]
    assert not any("unreadable image" in str(w.message) for w in recwarn)  # the scan never ran
    assert not (tmp_path / "run" / "lightning_logs").exists() or not any(
        (tmp_path / "run" / "lightning_logs").iterdir()
    )
