"""Typed readers shared by core's plain settings classes (``ServerSettings``,
``StorageSettings``): each takes a value (a string from a flag or an environment variable, or
a keyword's Python value) and ``where`` it came from, and returns the typed value or raises
:class:`SettingsError` naming ``where``."""

from __future__ import annotations

import os
from typing import Any

__all__ = ["BOOL_WORDS", "SettingsError", "check_bounds", "read_bool", "read_number", "read_text"]


class SettingsError(ValueError):
    """A setting with a value it cannot take; the message names where the value came from."""


#: The spellings of a boolean that settings accept (pydantic's, which they always accepted).
BOOL_WORDS = {
    **dict.fromkeys(("1", "on", "t", "true", "y", "yes"), True),
    **dict.fromkeys(("0", "off", "f", "false", "n", "no"), False),
}


def read_bool(value: Any, where: str) -> bool:
    if isinstance(value, bool):
        return value
    if isinstance(value, int) and value in (0, 1):
        return bool(value)
    if isinstance(value, str) and value.strip().lower() in BOOL_WORDS:
        return BOOL_WORDS[value.strip().lower()]
    raise SettingsError(
        f"{where}: expected a boolean (true/false, 1/0, yes/no, on/off), got {value!r}"
    )


def read_text(value: Any, where: str) -> str:
    if isinstance(value, str):
        return value
    if isinstance(value, os.PathLike):
        return os.fspath(value)
    # the type only: the value may be a secret
    raise SettingsError(f"{where}: expected a string, got {type(value).__name__}")


def read_number(kind: type[int] | type[float], value: Any, where: str) -> Any:
    """``value`` as an ``int`` or a ``float`` (``kind``): a number, or its text; not a bool,
    not NaN, and an ``int`` only from a whole number."""
    number: int | float
    try:
        if isinstance(value, bool):
            raise TypeError
        if isinstance(value, str):
            text = value.strip()
            number = int(text) if kind is int else float(text)
        elif kind is int and isinstance(value, float) and value.is_integer():
            number = int(value)
        elif isinstance(value, int | float) and (kind is float or isinstance(value, int)):
            number = kind(value)
        else:
            raise TypeError
    except (TypeError, ValueError):
        noun = "an integer" if kind is int else "a number"
        raise SettingsError(f"{where}: expected {noun}, got {value!r}") from None
    if number != number:  # NaN passes no bound
        raise SettingsError(f"{where}: expected a number, got {value!r}")
    return number


def check_bounds(
    number: float,
    value: Any,
    where: str,
    *,
    ge: float | None = None,
    gt: float | None = None,
    le: float | None = None,
) -> None:
    """:class:`SettingsError` unless ``ge <= number``, ``gt < number`` and ``number <= le``
    (the bounds given); the message shows ``value`` as it was given."""
    for limit, holds, sign in (
        (ge, lambda limit: number >= limit, ">="),
        (gt, lambda limit: number > limit, ">"),
        (le, lambda limit: number <= limit, "<="),
    ):
        if limit is not None and not holds(limit):
            shown = int(limit) if float(limit).is_integer() else limit
            raise SettingsError(f"{where}: must be {sign} {shown}, got {value!r}")
