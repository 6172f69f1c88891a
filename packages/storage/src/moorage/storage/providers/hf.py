"""``hf://<org>/<repo>[:<revision>]`` from the Hugging Face Hub (needs ``moorage-storage[hf]``).

``huggingface_hub`` resolves the revision (branch, tag or commit; default ``main``) to a commit
and lists the repository's files with their sizes and hashes; the bytes are then fetched by the
engine from ``<HF_ENDPOINT>/<repo>/resolve/<commit>/<path>`` (parallel ranged parts, resume).
LFS files are checked against their SHA-256, other files against their git blob id. The token
comes from ``HF_TOKEN`` (bound from a Secret by KServe's credential injection) and the hub from
``HF_ENDPOINT``. Files land directly in the destination, as with KServe's
``snapshot_download(local_dir=...)``; the manifest records the resolved commit.
"""

from __future__ import annotations

from typing import Any
from urllib.parse import quote

from moorage.core.errors import StorageAuthError, StorageError, StorageNotFound
from moorage.core.storage_uri import HFURI
from moorage.storage._context import Context
from moorage.storage._plan import HttpSource, Plan, RemoteFile
from moorage.storage.providers.base import require

__all__ = ["HFProvider", "provider"]


class HFProvider:
    name = "hf"

    def plan(self, uri: HFURI, ctx: Context, /) -> Plan:
        hub = require("huggingface_hub", "hf")
        errors = require("huggingface_hub.errors", "hf")
        s = ctx.settings
        token = s.hf_token.get_secret_value() if s.hf_token else None
        endpoint = s.hf_endpoint.rstrip("/")
        api = hub.HfApi(endpoint=endpoint, token=token or False)
        revision = uri.revision or "main"
        try:
            info = api.model_info(uri.repo_id, revision=revision, token=token or False)
            commit = str(info.sha)
            entries = list(
                api.list_repo_tree(
                    uri.repo_id, revision=commit, recursive=True, token=token or False
                )
            )
        except errors.GatedRepoError:
            raise StorageAuthError(
                f"{uri}: the repository is gated; accept its terms and set HF_TOKEN"
            ) from None
        except errors.RevisionNotFoundError:
            raise StorageNotFound(f"{uri}: revision {revision!r} not found") from None
        except errors.RepositoryNotFoundError:
            hint = "" if token else " (for a private repository set HF_TOKEN)"
            raise StorageNotFound(f"{uri}: repository not found or not accessible{hint}") from None
        except errors.HfHubHTTPError as exc:
            status = getattr(getattr(exc, "response", None), "status_code", 0) or 0
            cls = StorageAuthError if status in (401, 403) else StorageError
            raise cls(f"{uri}: the hub answered HTTP {status}") from None
        headers = {"Authorization": f"Bearer {token}"} if token else {}
        files: list[RemoteFile] = []
        for entry in entries:
            if getattr(entry, "blob_id", None) is None and not hasattr(entry, "size"):
                continue  # a folder
            if type(entry).__name__ == "RepoFolder":
                continue
            files.append(self._file(uri, ctx, endpoint, commit, entry, headers))
        if not files:
            raise StorageNotFound(f"Failed to fetch model. No model found in {uri}.")
        return Plan(files=files, revision=commit, extra={"repo_id": uri.repo_id})

    @staticmethod
    def _file(
        uri: HFURI, ctx: Context, endpoint: str, commit: str, entry: Any, headers: dict[str, str]
    ) -> RemoteFile:
        path = str(entry.path)
        lfs = getattr(entry, "lfs", None)
        sha256 = None
        if lfs is not None:
            sha256 = lfs.get("sha256") if isinstance(lfs, dict) else getattr(lfs, "sha256", None)
        blob_id = getattr(entry, "blob_id", None)
        url = f"{endpoint}/{uri.repo_id}/resolve/{commit}/{quote(path)}"
        return RemoteFile(
            path=path,
            size=int(entry.size) if entry.size is not None else None,
            source=HttpSource(ctx.http, url, headers=headers),
            identity=f"{commit}|{sha256 or blob_id}",
            sha256=sha256 if ctx.settings.verify_hashes else None,
            git_sha1=None if sha256 or not ctx.settings.verify_hashes else blob_id,
            origin=f"hf://{uri.repo_id}/{path}",
        )


provider = HFProvider()
