"""The layout's rules: which layer may import which, the net and data doors, and class paths that moved."""

from __future__ import annotations

import ast
import csv
from pathlib import Path

import pytest
import torch

from tests.conftest import REPO, predict_args, run_folder, tiny_demo_args, written

PACKAGE = REPO / "lit_transfer"

# Each layer may import itself and the layers listed for it (docs/layout.md). The foundation
# modules (errors, files, schedules, preprocessing) are imported by every layer.
FOUNDATION = {"errors", "files", "schedules", "preprocessing"}
ALLOWED = {
    "foundation": FOUNDATION,
    "nets": FOUNDATION | {"nets"},
    "data": FOUNDATION | {"data"},
    "finetune": FOUNDATION | {"nets", "data", "finetune"},
    "callbacks": FOUNDATION | {"nets", "data", "finetune", "callbacks"},
    "models": FOUNDATION | {"nets", "data", "finetune", "models"},
    "accelerators": FOUNDATION | {"accelerators"},
    "export": FOUNDATION | {"export"},
    "deploy": set(),  # no torch, nothing of lit_transfer: onnxruntime, numpy and Pillow only
    "cli": FOUNDATION | {"nets", "data", "finetune", "callbacks", "models", "accelerators", "export", "deploy", "cli"},
}


def _layer(path: Path) -> str:
    top = path.relative_to(PACKAGE).parts[0].removesuffix(".py")
    return "foundation" if top in FOUNDATION else top


def _modules() -> list[Path]:
    """Every module but the package's own ``__init__`` and ``__main__`` (the entry point)."""
    return [p for p in PACKAGE.rglob("*.py") if p.parent != PACKAGE or p.stem in FOUNDATION | {"deploy"}]


def _imported_layers(tree: ast.AST) -> set[str]:
    names = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and node.module:
            names.add(node.module)
        elif isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
    return {n.split(".")[1] for n in names if n.startswith("lit_transfer.")}


def test_every_layer_imports_only_the_layers_above_it():
    assert {_layer(p) for p in _modules()} == set(ALLOWED)  # no package left out of the rules
    wrong = []
    for path in _modules():
        layer = _layer(path)
        for imported in _imported_layers(ast.parse(path.read_text())):
            if imported not in ALLOWED[layer]:
                wrong.append(f"{path.relative_to(REPO)} ({layer}) imports lit_transfer.{imported}")
    assert not wrong, wrong


def test_no_module_outside_nets_pokes_at_a_net():
    """getattr/hasattr on a net, or a net's private attribute, outside nets/: the ClassifierNet door says it all."""
    offences = []
    for path in PACKAGE.rglob("*.py"):
        if _layer(path) == "nets":
            continue
        for node in ast.walk(ast.parse(path.read_text())):
            if (
                isinstance(node, ast.Call)
                and isinstance(node.func, ast.Name)
                and node.func.id in ("getattr", "hasattr")
            ):
                target = ast.unparse(node.args[0])
                if "net" in target.split(".")[-1]:
                    offences.append(f"{path.relative_to(REPO)}:{node.lineno} {ast.unparse(node)}")
            if isinstance(node, ast.Attribute) and node.attr.startswith("_") and not node.attr.startswith("__"):
                owner = ast.unparse(node.value)
                if owner.split(".")[-1] in ("net", "data", "datamodule"):
                    offences.append(f"{path.relative_to(REPO)}:{node.lineno} {ast.unparse(node)}")
    assert not offences, offences


def test_a_config_with_a_moved_class_path_says_what_to_change(tmp_path, run_cli, capsys):
    old = tmp_path / "old.yaml"
    old.write_text((REPO / "configs" / "demo.yaml").read_text().replace("lit_transfer.models.", "lit_transfer.tasks."))
    args = tiny_demo_args(tmp_path)
    args[args.index("--config") + 1] = str(old)
    with pytest.raises(SystemExit) as exc:
        run_cli("fit", *args)
    assert exc.value.code == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1
    assert "lit_transfer.tasks.ImageClassifier is now lit_transfer.models.ImageClassifier" in err


def test_a_checkpoint_saved_under_the_old_class_path_still_predicts(tmp_path, run_cli):
    run_cli("fit", *tiny_demo_args(tmp_path, "--trainer.max_epochs", "1"))
    ckpt = torch.load(run_folder(tmp_path, 0) / "checkpoints/last.ckpt", weights_only=True)
    assert ckpt["hyper_parameters"]["_class_path"] == "lit_transfer.models.ImageClassifier"
    ckpt["hyper_parameters"]["_class_path"] = "lit_transfer.tasks.ImageClassifier"  # as written before the move
    old = tmp_path / "old.ckpt"
    torch.save(ckpt, old)
    image = next((tmp_path / "shapes" / "val" / "circle").glob("*.png"))
    cli = run_cli(*predict_args(old, image, tmp_path))
    assert type(cli.model).__module__ == "lit_transfer.models.classifier"
    (csv_path,) = written(tmp_path, "predictions-*.csv")
    assert [row["path"] for row in csv.DictReader(csv_path.open())] == [str(image)]
