"""The one exception type for a user's mistake (a missing folder, a wrong checkpoint, ...), and the two
small helpers every message uses.

The CLI turns a ``UserError`` into one line on stderr and exit status 2; anything else is a
programming error and keeps its traceback.
"""

from __future__ import annotations

from collections.abc import Iterable


class UserError(Exception):
    """Something the user can fix: the message says what is wrong and what to do."""


def require(condition: bool, message: str) -> None:
    """A user error with ``message`` unless ``condition`` holds: for settings out of range."""
    if not condition:
        raise UserError(message)


def first_line(err: BaseException, with_type: bool = False) -> str:
    """The first line of ``err``'s text (its type's name when it has none), for a one-line message;
    ``with_type`` puts the type's name in front (``OSError: image file is truncated``)."""
    text = str(err).strip()
    if not text:
        return type(err).__name__
    line = text.splitlines()[0].strip()
    return f"{type(err).__name__}: {line}" if with_type else line


def some(items: Iterable[object], limit: int = 8, sep: str = ", ") -> str:
    """The first ``limit`` items joined by ``sep``, then how many more there are:
    ``a, b, c ... and 12 more``."""
    items = [str(item) for item in items]
    shown = sep.join(items[:limit])
    return shown + (f" ... and {len(items) - limit} more" if len(items) > limit else "")
