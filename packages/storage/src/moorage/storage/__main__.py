"""``moorage-storage <src_uri> <dest_path>`` (also ``python -m moorage.storage``).

A drop-in for KServe's ``initializer-entrypoint``: same two arguments, same environment
variables. Exit status: 0 on success, 1 when the download fails (the message names the URI and
the cause, never a credential), 2 on a usage error or a setting that cannot be read (the message
names the variable). Options: ``--force`` (fetch even if the
destination already holds this URI), ``--progress=auto|bar|log|off``, ``-q`` (warnings only).

The command (:func:`entrypoint`) leaves with ``os._exit`` once :func:`main` has returned and the
logs and standard streams are flushed: by then every file, socket, thread and lock of the
download is closed, and the interpreter's own teardown (freeing every module's objects) would
only add to what an init container costs. :func:`main` itself returns normally (tests, callers).
"""

from __future__ import annotations

import logging
import os
import sys
from typing import Literal, NoReturn, cast

from moorage.core.config.storage import SettingsError
from moorage.core.errors import MoorageError

USAGE = "Usage: moorage-storage [--force] [--progress=auto|bar|log|off] [-q] src_uri dest_path"
_PROGRESS = ("auto", "bar", "log", "off")


def main(argv: list[str] | None = None) -> int:
    args = list(sys.argv[1:] if argv is None else argv)
    force = False
    quiet = False
    progress: str | None = None
    positional: list[str] = []
    for arg in args:
        if arg in ("-h", "--help"):
            print(USAGE)
            return 0
        if arg == "--force":
            force = True
        elif arg in ("-q", "--quiet"):
            quiet = True
        elif arg.startswith("--progress="):
            progress = arg.split("=", 1)[1]
            if progress not in _PROGRESS:
                choices = ", ".join(_PROGRESS)
                print(f"moorage-storage: --progress must be one of {choices}", file=sys.stderr)
                return 2
        elif arg.startswith("--") and arg != "--":
            print(f"moorage-storage: unknown option {arg}\n{USAGE}", file=sys.stderr)
            return 2
        else:
            positional.append(arg)
    if len(positional) != 2:
        print(USAGE, file=sys.stderr)
        return 2
    logging.basicConfig(
        level=logging.WARNING if quiet else logging.INFO,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        stream=sys.stderr,
    )
    from moorage.storage import download

    src, dest = positional
    try:
        download(
            src,
            dest,
            force=force,
            progress=cast(Literal["auto", "bar", "log", "off"] | None, progress),
        )
    except SettingsError as exc:
        print(f"moorage-storage: error: {exc}", file=sys.stderr)
        return 2
    except MoorageError as exc:
        # One line on stderr, where the log lines go too (a log record as well said it twice).
        print(f"moorage-storage: error: {exc.message}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("moorage-storage: interrupted", file=sys.stderr)
        return 130
    return 0


def entrypoint() -> NoReturn:
    """``moorage-storage``: :func:`main`, then a prompt exit (see the module docstring)."""
    code = main()
    logging.shutdown()
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(code)


if __name__ == "__main__":
    entrypoint()
