"""``import moorage.core`` stays light: resources, protocol and config load on first use.

How long the import takes is measured by ``bench/import_time.py`` (figures in bench/RESULTS.md),
not asserted here: a time bound fails on a busy machine and passes a regression on a fast one.
What is asserted is the cause of a slow import: a heavy module loaded eagerly.
"""

from __future__ import annotations

import subprocess
import sys

CODE = """
import sys
import moorage.core
heavy = [m for m in ("moorage.core.resources", "moorage.core._generated.k8s", "pydantic", "yaml",
                     "numpy", "grpc", "google.protobuf") if m in sys.modules]
print(",".join(heavy))
"""


def test_import_moorage_core_loads_nothing_heavy() -> None:
    out = subprocess.run(
        [sys.executable, "-c", CODE], capture_output=True, text=True, check=True
    ).stdout.strip()
    assert out == "", f"import moorage.core pulled in {out}"


def test_submodules_load_on_first_use() -> None:
    code = "import sys, moorage.core.protocol; print('moorage.core.resources' in sys.modules)"
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True
    ).stdout.strip()
    assert out == "False"  # the protocol does not drag in the Kubernetes resources
