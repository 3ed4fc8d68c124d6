"""Every option of the data modules, models and nets has a description in the CLI's help
(jsonargparse reads it from the class's ``Args:`` docstring section)."""

from __future__ import annotations

import inspect
import re

import pytest

import lit_transfer.data
import lit_transfer.models
import lit_transfer.nets
from lit_transfer.cli import main


def _abstract(cls: type) -> bool:
    # LightningDataModule is no ABC, so inspect.isabstract misses ClassificationDataModule's abstract methods.
    return any(getattr(getattr(cls, name, None), "__isabstractmethod__", False) for name in dir(cls))


def _classes(module) -> list[type]:
    """The concrete classes ``module`` exports (an abstract base cannot be chosen on the command line)."""
    exported = [getattr(module, name) for name in module.__all__]
    return [cls for cls in exported if inspect.isclass(cls) and not _abstract(cls)]


CASES = (
    [("--data.help", lit_transfer.data, cls) for cls in _classes(lit_transfer.data)]
    + [("--model.help", lit_transfer.models, cls) for cls in _classes(lit_transfer.models)]
    + [("--model.net.help", lit_transfer.nets, cls) for cls in _classes(lit_transfer.nets)]
)

# An option entry of argparse's help: "  --opt ..." and its lines indented deeper; the help text is
# what follows the invocation after two or more spaces, on the same line or on the next ones.
_ENTRY = re.compile(r"^  (-\S.*?)(?: {2,}(.*))?$")


def option_help(text: str) -> dict[str, str]:
    """``{invocation: help text}`` of every option entry in an argparse help ``text``."""
    entries: dict[str, list[str]] = {}
    current: list[str] | None = None
    for line in text.splitlines():
        match = _ENTRY.match(line)
        if match:
            current = entries.setdefault(match[1], [])
            if match[2]:
                current.append(match[2])
        elif current is not None and line.startswith("   ") and line.strip():
            current.append(line.strip())
        else:
            current = None
    return {option: " ".join(words) for option, words in entries.items()}


def help_text(flag: str, class_path: str, capsys: pytest.CaptureFixture[str]) -> str:
    with pytest.raises(SystemExit) as exit_info:
        main(["fit", flag, class_path])
    assert exit_info.value.code in (0, None)
    return capsys.readouterr().out


@pytest.mark.parametrize(("flag", "module", "cls"), CASES, ids=[cls.__name__ for _, _, cls in CASES])
def test_every_option_has_a_description(flag: str, module, cls: type, capsys: pytest.CaptureFixture[str]) -> None:
    class_path = f"{module.__name__}.{cls.__name__}"
    text = help_text(flag, class_path, capsys)
    options = option_help(text)
    # Each parameter has an entry (a net's num_classes is given by the model, not configured).
    variadic = (inspect.Parameter.VAR_POSITIONAL, inspect.Parameter.VAR_KEYWORD)
    params = inspect.signature(cls.__init__).parameters.values()
    own = [p.name for p in params if p.name not in ("self", "num_classes") and p.kind not in variadic]
    missing = [name for name in own if not any(f".{name} " in f"{option} " for option in options)]
    assert not missing, f"{class_path}: no entry for {missing} in:\n{text}"
    bare = [option for option, words in options.items() if not words or words.startswith("(")]
    assert not bare, f"{class_path}: options without a description: {bare}\n{text}"
