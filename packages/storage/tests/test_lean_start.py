"""The storage initializer starts in every pod: what it imports is its start-up time."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

#: Modules the download path must not load: numpy (not in the storage image), asyncio (the
#: engine is threads), pydantic and pydantic-settings (core's StorageSettings is a plain class
#: that reads the environment itself: ~110 ms of every start), the AWS SDK when keys are
#: given (requests are signed by moorage), http.client and the email package it parses headers
#: with (the engine speaks HTTP/1.1 itself), and ssl until an https URL needs it.
NOT_LOADED = (
    "numpy",
    "asyncio",
    "pydantic",
    "pydantic_settings",
    "boto3",
    "botocore",
    "http.client",
    "email",
    "ssl",
)

PROBE = """
import sys
from pathlib import Path
from moorage.storage.__main__ import main
from moorage.storage.providers import s3
main(["-q", sys.argv[1], sys.argv[2]])
print(",".join(name for name in sys.argv[3].split(",") if name in sys.modules))
"""


def test_a_download_loads_none_of_the_heavy_modules(tmp_path: Path) -> None:
    source = tmp_path / "model.bin"
    source.write_bytes(b"weights")
    done = subprocess.run(
        [sys.executable, "-c", PROBE, str(source), str(tmp_path / "out"), ",".join(NOT_LOADED)],
        capture_output=True,
        text=True,
        timeout=60,
        env={"PATH": "/usr/bin:/bin", "AWS_ACCESS_KEY_ID": "k", "AWS_SECRET_ACCESS_KEY": "s"},
        check=True,
    )
    assert done.stdout.strip() == "", f"loaded: {done.stdout.strip()}"
    assert (tmp_path / "out" / "model.bin").read_bytes() == b"weights"
