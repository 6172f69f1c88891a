"""Repository-wide pytest set-up: the real-server fixtures of ``moorage.storage.testing``
(SeaweedFS, the OCI registry, the Hub stand-in, ...) registered once for the whole session.

Registered here, not imported into each package's conftest: an imported fixture function is a
fixture of its own in every conftest that imports it, so one session would start a second
SeaweedFS beside the first (which does not come up while the first runs). A run whose
environment lacks moorage-storage (one package's tox env) simply has no such fixtures.
"""

from __future__ import annotations

import importlib.util

pytest_plugins = (
    ["moorage.storage.testing.pytest_plugin"] if importlib.util.find_spec("moorage.storage") else []
)
