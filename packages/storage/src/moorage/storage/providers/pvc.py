"""``pvc://<claim>/<path>``: the claim as mounted in the pod, or a directory named in settings.

In a pod KServe's webhook mounts the claim at ``/mnt/pvc`` and passes ``/mnt/pvc/<path>``; a
``pvc://`` URI reaching the initializer is resolved the same way (``pvc_mount_root``). Outside a
cluster (``moorage run``), ``MOORAGE_STORAGE_PVC_CLAIM_ROOTS='{"claim": "/some/dir"}'`` maps a
claim to a directory. The files are then linked like a local path.
"""

from __future__ import annotations

from pathlib import Path

from moorage.core.storage_uri import PVCURI
from moorage.storage._context import Context
from moorage.storage._plan import Plan
from moorage.storage.providers.local import plan_local

__all__ = ["PVCProvider", "provider"]


class PVCProvider:
    name = "pvc"

    def plan(self, uri: PVCURI, ctx: Context, /) -> Plan:
        roots = ctx.settings.pvc_claim_roots
        root = Path(roots[uri.claim]) if uri.claim in roots else Path(ctx.settings.pvc_mount_root)
        source = root / uri.path if uri.path else root
        return plan_local(
            source, ctx.uri, missing_message=f"Cannot locate source uri {ctx.uri} for PVC"
        )


provider = PVCProvider()
