"""One active replica: leader election on a ``coordination.k8s.io/v1`` Lease.

Each replica tries to take the Lease ``moorage-operator`` in the controller's namespace: it is
free when absent, when its ``renewTime`` is older than ``leaseDurationSeconds``, or when this
replica holds it. The holder renews it every ``renew`` seconds; the others retry at that pace.
The write carries the ``resourceVersion`` it read, so of two replicas racing for a free Lease the
API server accepts one (409 for the other). A holder that cannot renew for the lease's duration
stops (the pod restarts and contends again); one that stops gracefully releases the Lease so
that a standby takes over at once. :func:`holder_after` is the pure decision.
"""

from __future__ import annotations

import asyncio
import datetime
import logging
from collections.abc import Mapping
from typing import Any

from moorage.controller.operator.client import ApiError, KubeClient

__all__ = ["LeaderElector", "holder_after"]

logger = logging.getLogger(__name__)

_FORMAT = "%Y-%m-%dT%H:%M:%S.%fZ"


def _parse(text: str | None) -> datetime.datetime | None:
    if not text:
        return None
    for fmt in (_FORMAT, "%Y-%m-%dT%H:%M:%SZ"):
        try:
            return datetime.datetime.strptime(text, fmt).replace(tzinfo=datetime.UTC)
        except ValueError:
            continue
    return None


def holder_after(
    lease: Mapping[str, Any] | None, identity: str, now: datetime.datetime
) -> str | None:
    """Who may hold the Lease at ``now``: ``identity`` when it is free or already ours, else the
    current holder."""
    if lease is None:
        return identity
    spec = lease.get("spec") or {}
    holder = spec.get("holderIdentity") or ""
    if not holder or holder == identity:
        return identity
    renewed = _parse(spec.get("renewTime")) or _parse(spec.get("acquireTime"))
    duration = float(spec.get("leaseDurationSeconds") or 15)
    if renewed is None or (now - renewed).total_seconds() > duration:
        return identity
    return str(holder)


class LeaderElector:
    """Take, renew and release the Lease (see the module docstring)."""

    def __init__(
        self,
        client: KubeClient,
        *,
        identity: str,
        namespace: str,
        name: str = "moorage-operator",
        duration: float = 15.0,
        renew: float = 5.0,
    ) -> None:
        self.client = client
        self.identity = identity
        self.namespace = namespace
        self.name = name
        self.duration = duration
        self.renew = renew
        self.lost = asyncio.Event()

    def _body(self, lease: Mapping[str, Any] | None, now: datetime.datetime) -> dict[str, Any]:
        stamp = now.strftime(_FORMAT)
        spec = dict((lease or {}).get("spec") or {})
        if spec.get("holderIdentity") != self.identity:
            spec["acquireTime"] = stamp
            spec["leaseTransitions"] = int(spec.get("leaseTransitions") or 0) + (1 if lease else 0)
        spec.update(
            holderIdentity=self.identity,
            leaseDurationSeconds=int(self.duration),
            renewTime=stamp,
        )
        meta: dict[str, Any] = {"name": self.name, "namespace": self.namespace}
        if lease is not None:
            meta["resourceVersion"] = (lease.get("metadata") or {}).get("resourceVersion")
        return {
            "apiVersion": "coordination.k8s.io/v1",
            "kind": "Lease",
            "metadata": meta,
            "spec": spec,
        }

    async def try_acquire(self) -> bool:
        """One attempt: True when this replica holds the Lease afterwards."""
        now = datetime.datetime.now(datetime.UTC)
        try:
            lease = await self.client.get("Lease", self.namespace, self.name)
            if holder_after(lease, self.identity, now) != self.identity:
                return False
            body = self._body(lease, now)
            if lease is None:
                await self.client.create(body)
            else:
                await self.client.merge(body)
            return True
        except ApiError as exc:
            if exc.status == 409:
                return False
            logger.warning("leader election: %s", exc)
            return False
        except OSError as exc:
            logger.warning("leader election: %s", exc)
            return False

    async def acquire(self) -> None:
        """Wait until this replica leads."""
        logged = False
        while not await self.try_acquire():
            if not logged:
                logger.info("waiting for the Lease %s/%s", self.namespace, self.name)
                logged = True
            await asyncio.sleep(self.renew)
        logger.info("leading as %s (Lease %s/%s)", self.identity, self.namespace, self.name)

    async def keep(self) -> None:
        """Renew until cancelled; sets :attr:`lost` and returns when renewal fails too long."""
        loop = asyncio.get_running_loop()
        last = loop.time()
        while True:
            await asyncio.sleep(self.renew)
            if await self.try_acquire():
                last = loop.time()
            elif loop.time() - last > self.duration:
                logger.error("lost the Lease %s/%s", self.namespace, self.name)
                self.lost.set()
                return

    async def release(self) -> None:
        try:
            lease = await self.client.get("Lease", self.namespace, self.name)
            if lease and (lease.get("spec") or {}).get("holderIdentity") == self.identity:
                body = self._body(lease, datetime.datetime.now(datetime.UTC))
                body["spec"]["holderIdentity"] = ""
                await self.client.merge(body)
        except (ApiError, OSError) as exc:
            logger.warning("could not release the Lease: %s", exc)
