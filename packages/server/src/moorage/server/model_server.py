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

from moorage.core.config.server import ServerSettings
from moorage.server.server import ModelServer

__all__ = ["ModelServer", "build_parser", "parser"]


def build_parser() -> argparse.ArgumentParser:
    """An argparse parser (``add_help=False``) with every ``ServerSettings`` flag, converted and
    with its default (the parser ``moorage-server`` parses its own flags with, KServe-style)."""
    return ServerSettings.argument_parser(kserve=True)


#: KServe's ``model_server.parser``.
parser = build_parser()
