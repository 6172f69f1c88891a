"""KServe's ``kserve.model_server`` names: ``parser`` (to extend), ``ModelServer``.

Runtimes written for KServe extend its argparse parser::

    from moorage.server import model_server          # was: from kserve import model_server

    parser = argparse.ArgumentParser(parents=[model_server.parser])
    parser.add_argument("--my_flag", default="x")
    args, _ = parser.parse_known_args()

``parser`` is built from :class:`~moorage.core.config.server.ServerSettings`, so it knows every
flag the server does, with the same defaults; ``ModelServer()`` still reads its own settings
from ``sys.argv`` and the environment.
"""

from __future__ import annotations

import argparse
import types
import typing
from typing import Any

from pydantic.fields import FieldInfo

from moorage.core.config.server import ServerSettings
from moorage.server.server import ModelServer

__all__ = ["ModelServer", "build_parser", "parser"]

_TRUE = {"1", "true", "yes", "on", "y", "t"}


def _strtobool(value: str) -> bool:
    return value.strip().lower() in _TRUE


def _converter(annotation: Any) -> Any:
    args = [a for a in typing.get_args(annotation) if a is not type(None)]
    if typing.get_origin(annotation) in (typing.Union, types.UnionType) and len(args) == 1:
        annotation = args[0]
    if annotation is bool:
        return _strtobool
    if annotation in (int, float):
        return annotation
    return str


def _default(field: FieldInfo) -> Any:
    if field.default_factory is not None:
        return field.default_factory()  # type: ignore[call-arg]
    return field.default


def build_parser() -> argparse.ArgumentParser:
    """An argparse parser (``add_help=False``) with every ``ServerSettings`` flag."""
    result = argparse.ArgumentParser(add_help=False)
    for name, field in ServerSettings.model_fields.items():
        if name == "extra_args":
            continue
        annotation = field.annotation
        if typing.get_origin(annotation) is list:
            continue
        result.add_argument(
            f"--{name}",
            type=_converter(annotation),
            default=_default(field),
            help=field.description,
        )
    return result


#: KServe's ``model_server.parser``.
parser = build_parser()
