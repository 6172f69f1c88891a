"""The Kubernetes API stand-in of the operator's tests: the shared kmock script, two gaps filled.

Usage: python standin.py SHARED_SCRIPT PORT KUBECONFIG_OUT

It runs ``../shared/testing/kmock_apiserver.py`` (kmock 0.8 with kopf's gaps filled) with two
more things a real API server does and kmock does not, both in this fixture, never in the
operator (and, for speed, forgets all but the recent requests and finds objects by key rather
than by scanning them all):

* **server-side apply, as far as a merge goes**: ``PATCH`` with ``application/apply-patch+yaml``
  creates the object when it is absent and merges it otherwise (kmock answers 404 for a patch
  of an absent object). Field ownership is not modelled: a field dropped from an applied object
  stays, where a real API server removes it.
* **the garbage collector**: deleting an object deletes, in the background, the objects whose
  ``ownerReferences`` name its uid (and theirs in turn).
"""

import asyncio
import datetime
import sys
import uuid

import aiohttp.web
from kmock._internal import enums

SHARED, PORT, KUBECONFIG = sys.argv[1], sys.argv[2], sys.argv[3]
with open(SHARED) as handle:
    source = handle.read()
# The shared script ends by running its server; load its definitions, run ours.
source = source.replace("\nasyncio.run(main())", "\n")
sys.argv = [SHARED, PORT, KUBECONFIG]
namespace: dict = {"__name__": "kmock_apiserver"}
exec(compile(source, SHARED, "exec"), namespace)
Base = namespace["Emulator"]


# kmock finds the reactions to a request by looking for the request in its record of all
# requests (quadratic in their number): give it the requests being served only.
SERVING: list = []


class Emulator(Base):
    def __attrs_post_init__(self):
        super().__attrs_post_init__()
        # What kopf writes to keep admission webhooks pointed at the operator.
        for plural, kind in (
            ("validatingwebhookconfigurations", "ValidatingWebhookConfiguration"),
            ("mutatingwebhookconfigurations", "MutatingWebhookConfiguration"),
        ):
            info = self.resources[f"admissionregistration.k8s.io/v1/{plural}"]
            info.kind = kind
            info.namespaced = False
            info.verbs = {"get", "list", "watch", "create", "update", "patch", "delete"}

    def __iter__(self):
        yield from reversed(SERVING)

    def _KubernetesEmulator__get_obj(self, request, strict):  # noqa: N802 (kmock's private name)
        # kmock scans every object to answer for one; look it up by its key instead.
        if strict and request.name is not None and request.resource is not None:
            key = (request.resource, request.namespace, request.name)
            return self._objects[key] if key in self._objects else None  # noqa: SIM401
        return super()._KubernetesEmulator__get_obj(request, strict)

    async def _handle(self, request):
        self._requests.clear()  # kmock's record of every request: not needed here
        SERVING.append(request)
        try:
            return await self._handle_one(request)
        finally:
            SERVING.remove(request)

    async def _handle_one(self, request):
        if request.resource is not None and request.action == enums.action.UPDATE:
            content_type = request.headers.get("Content-Type", "")
            key = (request.resource, request.namespace, request.name)
            absent = key not in self._objects or self._objects[key].deleted
            if (
                content_type.startswith("application/apply-patch")
                and absent
                and not request.subresource
            ):
                return await self._create_applied(request, key)
        uid = None
        if request.resource is not None and request.action == enums.action.DELETE and request.name:
            key = (request.resource, request.namespace, request.name)
            if key in self._objects and not self._objects[key].deleted:
                uid = (self._objects[key].get("metadata") or {}).get("uid")
        response = await super()._handle(request)
        if uid is not None:
            await self._collect(uid)
        return response

    async def _create_applied(self, request, key):
        obj = dict(request.data)
        meta = dict(obj.get("metadata") or {})
        meta.setdefault("uid", str(uuid.uuid4()))
        meta["resourceVersion"] = str(next(namespace["_rv"]))
        meta["generation"] = 1
        meta["creationTimestamp"] = datetime.datetime.now(datetime.UTC).strftime(
            "%Y-%m-%dT%H:%M:%SZ"
        )
        meta.setdefault("namespace", request.namespace)
        obj["metadata"] = meta
        async with self._lock:
            if key in self._objects:
                self._objects[key].create(obj)
            else:
                self._objects[key] = obj
            raw = self._objects[key].raw
            await self._buses[request.resource].put({"type": "ADDED", "object": raw})
        return aiohttp.web.json_response(raw, status=201)

    async def _collect(self, uid):
        """Delete the dependents of ``uid``, recursively (background cascading deletion)."""
        pending = [uid]
        while pending:
            owner = pending.pop()
            async with self._lock:
                for (resource, _ns, _name), obj in list(self._objects.items()):
                    if obj.deleted:
                        continue
                    meta = obj.get("metadata") or {}
                    refs = meta.get("ownerReferences") or []
                    if any(r.get("uid") == owner for r in refs):
                        raw = obj.raw
                        obj.delete()
                        await self._buses[resource].put({"type": "DELETED", "object": raw})
                        if meta.get("uid"):
                            pending.append(meta["uid"])


namespace["Emulator"] = Emulator
asyncio.run(namespace["main"]())
