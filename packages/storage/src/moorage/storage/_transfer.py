"""The transfer engine: parallel, resumable, verified fetching of a :class:`Plan`'s files.

Each file is cut into parts (one part below ``multipart_threshold``; ``part_size`` parts above
it, or the S3 multipart part size when the ETag can be checked that way). Every part of every
file goes to one thread pool of ``concurrency`` workers, so one big object is fetched by many
ranged GETs and many small objects are fetched side by side. Each worker streams into its own
1 MiB buffer and ``pwrite``s at the part's offset, so memory stays bounded whatever the size.

Resume: bytes land in ``<staging>/.moorage-partial/<id>.part`` next to a JSON state
(``<id>.json``: identity, size, part size, finished parts with their MD5s). A rerun that finds
the same identity (ETag/version/digest) and size fetches only the missing parts. Finished files
are renamed to their place and listed in ``done.jsonl``, so a rerun skips them.

Verification: every file's size; MD5 or SHA-256 when the source declares one (computed while
streaming for one-part files, by re-reading otherwise); S3 multipart ETags from per-part MD5s.
A one-part file whose source can report the server's own whole-object checksum
(``fetch_whole_checked``: S3's ``x-amz-checksum-crc32``, which AWS SDKs store with every
upload) is checked against that CRC32 instead of its MD5: the same guard against corrupt bytes
at zlib's ~5 GB/s instead of MD5's ~0.8 GB/s.
A mismatch refetches the file once, then raises :class:`~moorage.core.errors.IntegrityError`.
"""

from __future__ import annotations

import base64
import hashlib
import json
import logging
import os
import threading
import zlib
from collections.abc import Callable
from concurrent.futures import FIRST_EXCEPTION, Future, ThreadPoolExecutor, wait
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath
from typing import Any

from moorage.core.errors import IntegrityError, MoorageError, StorageError, UnsafeArchive
from moorage.core.retry import Backoff, retry
from moorage.storage._context import Context
from moorage.storage._errors import _sdk_status
from moorage.storage._http import HttpError
from moorage.storage._plan import RemoteFile
from moorage.storage._progress import Progress

__all__ = ["PARTIAL_DIR", "FileRecord", "Transfer", "safe_relpath"]

logger = logging.getLogger(__name__)

PARTIAL_DIR = ".moorage-partial"
_LEDGER = "done.jsonl"
_HASH_CHUNK = 4 * 1024 * 1024
#: The longest wait between two tries of a part (``retry_backoff_s`` doubles up to it).
_MAX_BACKOFF_S = 8.0


@dataclass
class FileRecord:
    """What the manifest says about one file."""

    path: str
    size: int
    md5: str | None = None
    sha256: str | None = None
    etag: str | None = None
    identity: str = ""
    #: the server's whole-object CRC32 the bytes matched (base64 of the big-endian value, as S3
    #: writes it)
    crc32: str | None = None

    def to_json(self) -> dict[str, Any]:
        data: dict[str, Any] = {"path": self.path, "size": self.size}
        for key in ("md5", "sha256", "etag", "crc32"):
            value = getattr(self, key)
            if value:
                data[key] = value
        return data


def safe_relpath(path: str) -> str:
    """``path`` as a clean relative POSIX path; raises if it is absolute or climbs out."""
    pure = PurePosixPath(path)
    if pure.is_absolute() or not path or any(p in ("..", "") for p in path.split("/")):
        clean = str(pure)
        if pure.is_absolute() or ".." in pure.parts or clean in ("", "."):
            raise UnsafeArchive(f"refusing unsafe file path {path!r}", path=path)
        return clean
    return str(pure)


@dataclass
class _Part:
    index: int
    start: int
    end: int | None


@dataclass
class _Job:
    """One file being fetched: its parts, state file and hashes."""

    file: RemoteFile
    part_path: Path
    state_path: Path
    final_path: Path
    parts: list[_Part]
    part_size: int
    done: dict[int, str] = field(default_factory=dict)
    lock: threading.Lock = field(default_factory=threading.Lock)
    fd: int = -1
    md5: str | None = None
    sha256: str | None = None
    git_sha1: str | None = None
    #: ``(the server's CRC32, the bytes')`` of a one-part file checked that way
    crc32: tuple[str, str] | None = None
    attempt: int = 0
    size: int | None = None

    @property
    def inline(self) -> bool:
        return len(self.parts) == 1


class Transfer:
    def __init__(self, ctx: Context, staging: Path, progress: Progress) -> None:
        self.ctx = ctx
        self.settings = ctx.settings
        self.staging = staging
        self.partial = staging / PARTIAL_DIR
        self.progress = progress
        self._ledger_lock = threading.Lock()
        self._ledger_fd = -1
        #: directories known to exist under the staging directory (one mkdir each, not per file)
        self._dirs: set[Path] = set()
        self._dirs_lock = threading.Lock()
        self.fetched_bytes = 0
        self._fetched_lock = threading.Lock()

    # -- public ---------------------------------------------------------------------------------
    def run(self, files: list[RemoteFile]) -> list[FileRecord]:
        self.partial.mkdir(parents=True, exist_ok=True)
        ledger = self._load_ledger()
        records: dict[str, FileRecord] = {}
        jobs: list[_Job] = []
        seen: set[str] = set()
        for remote in files:
            rel = safe_relpath(remote.path)
            if rel in seen:
                raise StorageError(f"{self.ctx.uri}: two source objects map to {rel!r}")
            seen.add(rel)
            previous = ledger.get(rel)
            final = self.staging / rel
            if (
                previous is not None
                and previous.identity == remote.identity
                and (remote.size is None or previous.size == remote.size)
                and final.is_file()
                and final.stat().st_size == previous.size
            ):
                records[rel] = previous
                continue
            jobs.append(self._job(remote, rel))
        if len(records):
            logger.info("%s: %d file(s) already fetched, resuming", self.ctx.uri, len(records))
        self.progress.add_total(sum(j.file.size or 0 for j in jobs), files=len(files))
        for _ in records:
            self.progress.file_done()
        if jobs:
            self._ledger_fd = os.open(
                self.partial / _LEDGER, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644
            )
            try:
                for record in self._fetch_all(jobs):
                    records[record.path] = record
            finally:
                os.close(self._ledger_fd)
                self._ledger_fd = -1
        return [records[safe_relpath(f.path)] for f in files]

    # -- planning -------------------------------------------------------------------------------
    def _job(self, remote: RemoteFile, rel: str) -> _Job:
        key = hashlib.sha1(rel.encode()).hexdigest()[:20]
        size = remote.size
        s = self.settings
        part_size = s.part_size
        if remote.multipart_etag and remote.multipart_part_size and size and remote.source.ranged:
            part_size = remote.multipart_part_size
            parts = _split(size, part_size)
        elif size is None or not remote.source.ranged or size <= s.multipart_threshold:
            parts = [_Part(0, 0, size)]
            part_size = size or 0
        else:
            parts = _split(size, part_size)
        if size == 0:
            parts = []
        job = _Job(
            file=remote,
            part_path=self.partial / f"{key}.part",
            state_path=self.partial / f"{key}.json",
            final_path=self.staging / rel,
            parts=parts,
            part_size=part_size,
            size=size,
        )
        self._load_state(job)
        return job

    def _load_state(self, job: _Job) -> None:
        if len(job.parts) <= 1 or job.size is None:  # only multi-part files resume part-wise
            job.done = {}
            job.part_path.unlink(missing_ok=True)
            return
        try:
            state = json.loads(job.state_path.read_text())
        except (OSError, ValueError):
            state = None
        usable = (
            isinstance(state, dict)
            and state.get("identity") == job.file.identity
            and state.get("size") == job.size
            and state.get("part_size") == job.part_size
            and job.part_path.exists()
            and job.size is not None
            and len(job.parts) > 1
        )
        if usable and isinstance(state, dict):
            job.done = {int(k): str(v) for k, v in state.get("done", {}).items()}
            if job.done:
                logger.info(
                    "%s: resuming %s (%d of %d parts already fetched)",
                    self.ctx.uri,
                    job.file.path,
                    len(job.done),
                    len(job.parts),
                )
        else:
            job.done = {}
            job.part_path.unlink(missing_ok=True)

    def _save_state(self, job: _Job) -> None:
        data = {
            "path": job.file.path,
            "identity": job.file.identity,
            "size": job.size,
            "part_size": job.part_size,
            "done": {str(k): v for k, v in sorted(job.done.items())},
        }
        tmp = job.state_path.with_suffix(".json.tmp")
        tmp.write_text(json.dumps(data))
        os.replace(tmp, job.state_path)

    # -- fetching -------------------------------------------------------------------------------
    def _fetch_all(self, jobs: list[_Job]) -> list[FileRecord]:
        records: list[FileRecord] = []
        records_lock = threading.Lock()
        workers = max(1, min(self.settings.concurrency, sum(max(1, len(j.parts)) for j in jobs)))
        pool = ThreadPoolExecutor(max_workers=workers, thread_name_prefix="moorage-fetch")
        futures: list[Future[None]] = []
        try:
            for job in jobs:
                todo = [p for p in job.parts if p.index not in job.done]
                already = sum((p.end or 0) - p.start for p in job.parts if p.index in job.done)
                self.progress.advance(already)
                if not todo:
                    futures.append(pool.submit(self._complete, job, records, records_lock))
                for part in todo:
                    futures.append(pool.submit(self._part_task, job, part, records, records_lock))
            done, _ = wait(futures, return_when=FIRST_EXCEPTION)
            failed = [f for f in done if f.exception() is not None]
            if failed:
                self.ctx.stop.set()
                for f in futures:
                    f.cancel()
                wait(futures)
                exc = failed[0].exception()
                assert exc is not None
                raise exc
        finally:
            pool.shutdown(wait=True, cancel_futures=True)
            for job in jobs:
                self._close(job)
        return records

    def _fd(self, job: _Job) -> int:
        """The job's partial file, opened by the first worker that needs it.

        Files are opened when their first part starts and closed once they are complete, so
        a model of many thousands of files never holds more descriptors than workers.
        """
        if job.fd < 0:
            with job.lock:
                if job.fd < 0:
                    fd = os.open(job.part_path, os.O_RDWR | os.O_CREAT, 0o644)
                    if job.size is not None and os.fstat(fd).st_size != job.size:
                        os.ftruncate(fd, job.size)
                    job.fd = fd
        return job.fd

    def _close(self, job: _Job) -> None:
        if job.fd >= 0:
            os.close(job.fd)
            job.fd = -1

    def _part_task(
        self, job: _Job, part: _Part, records: list[FileRecord], lock: threading.Lock
    ) -> None:
        digest = self._fetch_part(job, part)
        with job.lock:
            job.done[part.index] = digest
            complete = len(job.done) == len(job.parts)
            if len(job.parts) > 1:
                self._save_state(job)
        if complete:
            self._complete(job, records, lock)

    def _fetch_part(self, job: _Job, part: _Part) -> str:
        s = self.settings
        want_md5 = (job.inline and job.file.md5 is not None) or bool(job.file.multipart_etag)
        want_sha = job.inline and job.file.sha256 is not None
        want_git = job.inline and job.file.git_sha1 is not None and job.size is not None
        stop = self.ctx.stop
        checked = getattr(job.file.source, "fetch_whole_checked", None)
        if not (job.inline and part.start == 0 and s.verify_hashes):
            checked = None

        def attempt() -> _PartWriter:
            if stop.is_set():
                raise StorageError(f"{self.ctx.uri}: download cancelled")
            writer = _PartWriter(
                self._fd(job),
                part.start,
                self.progress,
                md5=hashlib.md5(usedforsecurity=False) if want_md5 else None,
                sha=hashlib.sha256() if want_sha else None,
                git=_git_hasher(job.size or 0) if want_git else None,
            )
            try:
                if checked is not None:
                    checked(writer.write, should_stop=stop.is_set, on_headers=writer.checksum)
                else:
                    job.file.source.fetch(
                        writer.write, start=part.start, end=part.end, should_stop=stop.is_set
                    )
            except BaseException:
                self.progress.rewind(writer.written)
                raise
            return writer

        def retrying(_: int, exc: BaseException, delay: float) -> None:
            logger.warning(
                "%s: %s part %d failed (%s); retrying in %.1fs",
                self.ctx.uri,
                job.file.path,
                part.index,
                type(exc).__name__,
                delay,
            )

        writer = retry(
            attempt,
            Backoff(attempts=s.retries + 1, initial=s.retry_backoff_s, maximum=_MAX_BACKOFF_S),
            retry_on=lambda exc: not stop.is_set() and _retryable(exc),
            on_retry=retrying,
            sleep=stop.wait,  # a cancelled download does not sit out the wait
        )
        written = writer.written
        md5, sha, git = writer.md5, writer.sha, writer.git
        with self._fetched_lock:
            self.fetched_bytes += written
        if part.end is None:
            job.size = written
        elif written != part.end - part.start:
            raise IntegrityError(
                f"{self.ctx.uri}: {job.file.path} part {part.index} delivered {written} bytes,"
                f" expected {part.end - part.start}"
            )
        if job.inline:
            job.md5 = md5.hexdigest() if md5 is not None else None
            job.sha256 = sha.hexdigest() if sha is not None else None
            job.git_sha1 = git.hexdigest() if git is not None else None
            job.crc32 = writer.crc32_checked()
        return md5.hexdigest() if md5 is not None else ""

    def _complete(self, job: _Job, records: list[FileRecord], lock: threading.Lock) -> None:
        self._fd(job)
        try:
            self._verify(job)
        except IntegrityError:
            if job.attempt >= 1:
                raise
            logger.warning("%s: %s failed verification; refetching", self.ctx.uri, job.file.path)
            job.attempt += 1
            job.done = {}
            job.md5 = job.sha256 = job.git_sha1 = job.crc32 = None
            job.state_path.unlink(missing_ok=True)
            os.ftruncate(job.fd, 0)
            if job.size is not None:
                os.ftruncate(job.fd, job.size)
            self.progress.rewind(job.size or 0)
            for part in job.parts:
                job.done[part.index] = self._fetch_part(job, part)
            self._verify(job)
        self._ensure_dir(job.final_path.parent)
        if job.final_path.is_dir():
            raise StorageError(f"{self.ctx.uri}: {job.file.path} is both a file and a directory")
        if not job.parts:  # empty file
            job.final_path.write_bytes(b"")
            job.part_path.unlink(missing_ok=True)
        else:
            os.replace(job.part_path, job.final_path)
        size = os.fstat(job.fd).st_size
        self._close(job)
        if len(job.parts) > 1:
            job.state_path.unlink(missing_ok=True)
        record = FileRecord(
            path=safe_relpath(job.file.path),
            size=size,
            md5=job.md5,
            sha256=job.sha256,
            etag=job.file.multipart_etag,
            identity=job.file.identity,
            crc32=job.crc32[0] if job.crc32 is not None else None,
        )
        self._append_ledger(record)
        self.progress.file_done()
        with lock:
            records.append(record)

    def _verify(self, job: _Job) -> None:
        f = job.file
        actual = os.fstat(job.fd).st_size
        if f.size is not None and actual != f.size:
            raise IntegrityError(
                f"{self.ctx.uri}: {f.path} is {actual} bytes, the source says {f.size}"
            )
        if job.crc32 is not None:
            server, ours = job.crc32
            if server != ours:
                raise IntegrityError(
                    f"{self.ctx.uri}: {f.path} has CRC32 {ours}, the source says {server}"
                )
        # The server's checksum of the whole object, when checked, stands for its MD5 / ETag.
        by_etag = job.crc32 is None
        if f.multipart_etag and len(job.parts) > 1:
            combined = hashlib.md5(usedforsecurity=False)
            for index in range(len(job.parts)):
                combined.update(bytes.fromhex(job.done[index]))
            etag = f"{combined.hexdigest()}-{len(job.parts)}"
            if etag != f.multipart_etag:
                raise IntegrityError(
                    f"{self.ctx.uri}: {f.path} does not match its ETag {f.multipart_etag}"
                    f" (got {etag})"
                )
        elif f.multipart_etag and job.inline and by_etag:
            whole = job.done.get(0, "")
            single = hashlib.md5(bytes.fromhex(whole), usedforsecurity=False).hexdigest()
            if f"{single}-1" != f.multipart_etag:
                raise IntegrityError(f"{self.ctx.uri}: {f.path} does not match its ETag")
        need_md5 = f.md5 is not None and job.md5 is None and by_etag
        need_sha = f.sha256 is not None and job.sha256 is None
        need_git = f.git_sha1 is not None and job.git_sha1 is None
        if (need_md5 or need_sha or need_git) and self.settings.verify_hashes:
            md5, sha, git = _hash_fd(job.fd, md5=need_md5, sha256=need_sha, git=need_git)
            job.md5 = job.md5 or md5
            job.sha256 = job.sha256 or sha
            job.git_sha1 = job.git_sha1 or git
        if f.git_sha1 is not None and job.git_sha1 is not None and job.git_sha1 != f.git_sha1:
            raise IntegrityError(
                f"{self.ctx.uri}: {f.path} has git blob id {job.git_sha1}, "
                f"the source says {f.git_sha1}"
            )
        if f.md5 is not None and job.md5 is not None and job.md5 != f.md5:
            raise IntegrityError(
                f"{self.ctx.uri}: {f.path} has MD5 {job.md5}, the source says {f.md5}"
            )
        if f.sha256 is not None and job.sha256 is not None and job.sha256 != f.sha256:
            raise IntegrityError(
                f"{self.ctx.uri}: {f.path} has SHA-256 {job.sha256}, the source says {f.sha256}"
            )

    # -- ledger ---------------------------------------------------------------------------------
    def _load_ledger(self) -> dict[str, FileRecord]:
        ledger: dict[str, FileRecord] = {}
        try:
            lines = (self.partial / _LEDGER).read_text().splitlines()
        except OSError:
            return ledger
        for line in lines:
            try:
                data = json.loads(line)
                ledger[data["path"]] = FileRecord(**data)
            except (ValueError, TypeError, KeyError):
                continue
        return ledger

    def _append_ledger(self, record: FileRecord) -> None:
        line = json.dumps({**record.to_json(), "identity": record.identity}) + "\n"
        with self._ledger_lock:  # one O_APPEND write per line: a crash loses at most that line
            os.write(self._ledger_fd, line.encode())

    def _ensure_dir(self, path: Path) -> None:
        if path in self._dirs:
            return
        path.mkdir(parents=True, exist_ok=True)
        with self._dirs_lock:
            self._dirs.add(path)


class _PartWriter:
    """Sink for one part: ``pwrite`` at the running offset, hash, count, report."""

    def __init__(
        self,
        fd: int,
        offset: int,
        progress: Progress,
        *,
        md5: Any = None,
        sha: Any = None,
        git: Any = None,
    ) -> None:
        self.fd = fd
        self.offset = offset
        self.progress = progress
        self.md5 = md5
        self.sha = sha
        self.git = git
        self.written = 0
        #: running CRC32 and the server's value, once :meth:`checksum` found one
        self.crc32: int | None = None
        self.server_crc32: str | None = None

    def checksum(self, header: Callable[[str], str | None]) -> None:
        """Read the response's headers (before its body): a whole-object CRC32 from the server
        is checked instead of the MD5, which is then not computed."""
        value = header("x-amz-checksum-crc32")
        kind = (header("x-amz-checksum-type") or "FULL_OBJECT").upper()
        if value and "-" not in value and kind == "FULL_OBJECT":  # not a per-part composite
            self.crc32, self.server_crc32 = 0, value.strip()
            self.md5 = None

    def crc32_checked(self) -> tuple[str, str] | None:
        """``(the server's CRC32, the bytes')`` in S3's base64 form, when one was reported."""
        if self.crc32 is None or self.server_crc32 is None:
            return None
        return self.server_crc32, base64.b64encode(self.crc32.to_bytes(4, "big")).decode()

    def write(self, chunk: memoryview) -> None:
        view = chunk
        while view:
            n = os.pwrite(self.fd, view, self.offset)
            self.offset += n
            view = view[n:]
        if self.md5 is not None:
            self.md5.update(chunk)
        if self.sha is not None:
            self.sha.update(chunk)
        if self.git is not None:
            self.git.update(chunk)
        if self.crc32 is not None:
            self.crc32 = zlib.crc32(chunk, self.crc32)
        self.written += len(chunk)
        self.progress.advance(len(chunk))


def _split(size: int, part_size: int) -> list[_Part]:
    return [
        _Part(i, off, min(off + part_size, size)) for i, off in enumerate(range(0, size, part_size))
    ]


def _git_hasher(size: int) -> Any:
    hasher = hashlib.sha1(usedforsecurity=False)
    hasher.update(b"blob %d\0" % size)
    return hasher


def _hash_fd(
    fd: int, *, md5: bool, sha256: bool, git: bool = False
) -> tuple[str | None, str | None, str | None]:
    h_md5 = hashlib.md5(usedforsecurity=False) if md5 else None
    h_sha = hashlib.sha256() if sha256 else None
    h_git = _git_hasher(os.fstat(fd).st_size) if git else None
    offset = 0
    while True:
        chunk = os.pread(fd, _HASH_CHUNK, offset)
        if not chunk:
            break
        offset += len(chunk)
        if h_md5 is not None:
            h_md5.update(chunk)
        if h_sha is not None:
            h_sha.update(chunk)
        if h_git is not None:
            h_git.update(chunk)
    return (
        h_md5.hexdigest() if h_md5 is not None else None,
        h_sha.hexdigest() if h_sha is not None else None,
        h_git.hexdigest() if h_git is not None else None,
    )


def _retryable(exc: BaseException) -> bool:
    if isinstance(exc, HttpError):
        return exc.retryable
    if isinstance(exc, MoorageError):
        return False
    if isinstance(exc, (KeyboardInterrupt, SystemExit)):
        return False
    status = _sdk_status(exc)
    if status:
        return status >= 500 or status in (408, 429)
    return isinstance(exc, (OSError, TimeoutError)) or "connection" in type(exc).__name__.lower()
