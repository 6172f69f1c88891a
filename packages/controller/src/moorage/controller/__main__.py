"""``python -m moorage.controller`` is the ``moorage`` command."""

from __future__ import annotations

import sys

from moorage.controller.cli import main

if __name__ == "__main__":
    sys.exit(main())
