"""Kubernetes quantities (``1.7T``, ``10Gi``, ``500M``) as a number of bytes."""

from __future__ import annotations

import re
from decimal import Decimal, InvalidOperation

__all__ = ["format_bytes", "parse_bytes"]

_SUFFIX = {
    "": 1,
    "k": 10**3,
    "M": 10**6,
    "G": 10**9,
    "T": 10**12,
    "P": 10**15,
    "E": 10**18,
    "Ki": 2**10,
    "Mi": 2**20,
    "Gi": 2**30,
    "Ti": 2**40,
    "Pi": 2**50,
    "Ei": 2**60,
}
_QUANTITY = re.compile(r"^([+-]?[0-9.]+(?:[eE][+-]?[0-9]+)?)(Ki|Mi|Gi|Ti|Pi|Ei|k|M|G|T|P|E|m)?$")


def parse_bytes(value: str | int | float) -> int:
    """Bytes in a quantity, rounded up (``"1.5Ki"`` -> 1536). Raises ``ValueError``."""
    if isinstance(value, int | float):
        return int(Decimal(str(value)).to_integral_value(rounding="ROUND_CEILING"))
    match = _QUANTITY.match(value.strip())
    if match is None:
        raise ValueError(f"not a quantity: {value!r}")
    number, suffix = match.group(1), match.group(2) or ""
    try:
        amount = Decimal(number)
    except InvalidOperation:
        raise ValueError(f"not a quantity: {value!r}") from None
    scaled = amount / 1000 if suffix == "m" else amount * _SUFFIX[suffix]
    return int(scaled.to_integral_value(rounding="ROUND_CEILING"))


def format_bytes(n: int) -> str:
    """A short human form (``1.5 GiB``) for messages."""
    size = float(n)
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if abs(size) < 1024 or unit == "TiB":
            return f"{size:.0f} {unit}" if unit == "B" else f"{size:.1f} {unit}"
        size /= 1024
    return f"{n} B"
