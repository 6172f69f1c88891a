"""CustomResourceDefinitions (apiextensions.k8s.io/v1) generated from the resource models.

``python -m moorage.core.resources.crds --out charts/moorage/crds`` writes one file per kind,
``serving.kserve.io_<plural>.yaml``; ``--check`` fails when the files there are stale.

Each schema is the model's pydantic JSON schema made *structural* the way the API server wants
it: references inlined, ``null`` branches of optional fields dropped, ``const``/``Literal`` as
``enum``, quantities and int-or-string fields as ``x-kubernetes-int-or-string``, free-form
objects as ``x-kubernetes-preserve-unknown-fields``, ``metadata`` as a bare object (the API server
validates it itself). Lists of type ``map`` whose keys are not all required lose the list type
(apiextensions rejects map keys without defaults, and the native schemas carry no defaults),
except ports, whose ``protocol`` key gets the API server's default ``TCP``. As KServe's CRDs:
quantities carry their pattern, ``status`` preserves unknown fields, there are no
``ephemeralContainers``, and probes' ``httpGet``/``tcpSocket`` do not require ``port`` (that one
is in the generated core models, ``scripts/gen-k8s-models.py``).

Integer formats (``int32``/``int64``) and the ``x-kubernetes-list-type``/``-list-map-keys``/
``-map-type`` extensions that server-side apply merges by come from the models themselves: the
core types' from Kubernetes' OpenAPI definitions (the generator copies them), KServe's from its
Go types (``Int32``/``Int64`` in ``_meta``; Go's ``int`` has no format).
"""

from __future__ import annotations

import argparse
import copy
import functools
import sys
from pathlib import Path
from typing import Any

import yaml

from moorage.core.resources._loader import KINDS
from moorage.core.resources._meta import GROUP, Resource

__all__ = ["crd_for", "crds", "openapi_schema", "render", "write"]

_DROP = {"title", "default", "$defs", "propertyNames", "examples"}


def _resolve(node: Any, defs: dict[str, Any], stack: tuple[str, ...] = ()) -> Any:
    if isinstance(node, list):
        return [_resolve(v, defs, stack) for v in node]
    if not isinstance(node, dict):
        return node
    if "$ref" in node:
        name = node["$ref"].rsplit("/", 1)[-1]
        if name in stack:
            raise ValueError(f"recursive schema through {name}; CRDs cannot express it")
        target = copy.deepcopy(defs[name])
        merged = {**target, **{k: v for k, v in node.items() if k != "$ref"}}
        return _resolve(merged, defs, (*stack, name))
    return {k: _resolve(v, defs, stack) for k, v in node.items()}


def _is_null(node: Any) -> bool:
    return isinstance(node, dict) and node.get("type") == "null"


def _structural(node: Any) -> Any:
    if isinstance(node, list):
        return [_structural(v) for v in node]
    if not isinstance(node, dict):
        return node
    node = dict(node)
    for key in ("anyOf", "oneOf"):
        if key in node:
            branches = [b for b in node.pop(key) if not _is_null(b)]
            if len(branches) == 1:
                node = {**branches[0], **node}
            elif branches and all("enum" in b or "const" in b for b in branches):
                values: list[Any] = []
                for b in branches:
                    values += b.get("enum", [b.get("const")])
                node = {**node, "type": branches[0].get("type", "string"), "enum": values}
            elif node.get("x-kubernetes-int-or-string"):
                # A quantity's string form has a pattern; the API server checks it on strings.
                patterns = [b["pattern"] for b in branches if "pattern" in b]
                if patterns:
                    node["pattern"] = patterns[0]
                node["anyOf"] = [{"type": "integer"}, {"type": "string"}]
            else:
                node[key] = branches
    if "const" in node:
        node["enum"] = [node.pop("const")]
    out: dict[str, Any] = {}
    for key, value in node.items():
        if key in _DROP:
            continue
        if key == "properties":
            out[key] = {name: _structural(v) for name, v in value.items()}
        elif key == "additionalProperties":
            if value is False:
                continue  # closed objects: unknown fields are pruned/rejected without it
            if value is True or value == {}:
                out["x-kubernetes-preserve-unknown-fields"] = True
            else:
                out[key] = _structural(value)
        elif key in ("items", "not"):
            out[key] = _structural(value)
        elif key in ("anyOf", "oneOf", "allOf"):
            out[key] = [_structural(v) for v in value]
        else:
            out[key] = value
    if out.get("x-kubernetes-int-or-string"):
        out.pop("type", None)
        out["anyOf"] = [{"type": "integer"}, {"type": "string"}]
    if out.get("x-kubernetes-preserve-unknown-fields"):
        out.setdefault("type", "object")
    if "properties" in out:
        out.setdefault("type", "object")
    if out.get("x-kubernetes-list-type") == "map":
        item = out.get("items", {})
        required = set(item.get("required", ()))
        missing = set(out.get("x-kubernetes-list-map-keys", ())) - required
        protocol = item.get("properties", {}).get("protocol")
        if missing == {"protocol"} and protocol is not None:
            # Container and Service ports: keyed by (port, protocol), protocol defaulting to TCP
            # as the API server's own schema does, so that server-side apply merges them alike.
            protocol["default"] = "TCP"
        elif missing:
            out.pop("x-kubernetes-list-type")
            out.pop("x-kubernetes-list-map-keys", None)
    return out


def _without(node: Any, key: str) -> Any:
    """``node`` with every property named ``key`` removed, at any depth."""
    if isinstance(node, list):
        return [_without(v, key) for v in node]
    if not isinstance(node, dict):
        return node
    out = {k: _without(v, key) for k, v in node.items()}
    if isinstance(out.get("properties"), dict):
        out["properties"].pop(key, None)
    return out


def openapi_schema(cls: type[Resource]) -> dict[str, Any]:
    """The structural ``openAPIV3Schema`` of one kind."""
    raw = cls.model_json_schema(by_alias=True, mode="validation")
    resolved = _resolve(raw, raw.get("$defs", {}))
    schema = _without(_structural(resolved), "ephemeralContainers")  # none in KServe's CRDs
    props = schema["properties"]
    if "status" in props:
        # A newer controller may write status fields this schema does not know: keep them.
        props["status"]["x-kubernetes-preserve-unknown-fields"] = True
    props["apiVersion"] = {"type": "string"}
    props["kind"] = {"type": "string"}
    props["metadata"] = {"type": "object"}
    schema["required"] = [r for r in schema.get("required", []) if r in ("spec",)] or ["spec"]
    schema["type"] = "object"
    return schema


def crd_for(cls: type[Resource]) -> dict[str, Any]:
    """The CustomResourceDefinition of one kind."""
    version = cls.API_VERSION.split("/", 1)[1]
    singular = cls.KIND.lower()
    names: dict[str, Any] = {
        "kind": cls.KIND,
        "listKind": f"{cls.KIND}List",
        "plural": cls.PLURAL,
        "singular": singular,
    }
    if cls.SHORT_NAMES:
        names["shortNames"] = list(cls.SHORT_NAMES)
    entry: dict[str, Any] = {
        "name": version,
        "served": True,
        "storage": True,
        "schema": {"openAPIV3Schema": openapi_schema(cls)},
    }
    if cls.PRINTER_COLUMNS:
        entry["additionalPrinterColumns"] = [
            {
                "name": c.name,
                "type": c.type,
                "jsonPath": c.json_path,
                **({"priority": c.priority} if c.priority else {}),
                **({"description": c.description} if c.description else {}),
            }
            for c in cls.PRINTER_COLUMNS
        ]
    if cls.HAS_STATUS:
        entry["subresources"] = {"status": {}}
    return {
        "apiVersion": "apiextensions.k8s.io/v1",
        "kind": "CustomResourceDefinition",
        "metadata": {
            "name": f"{cls.PLURAL}.{GROUP}",
            "labels": {"app.kubernetes.io/part-of": "moorage"},
        },
        "spec": {"group": GROUP, "names": names, "scope": cls.SCOPE, "versions": [entry]},
    }


@functools.cache
def _crds() -> tuple[tuple[str, dict[str, Any]], ...]:
    out = {f"{GROUP}_{cls.PLURAL}.yaml": crd_for(cls) for cls in KINDS.values()}
    return tuple(sorted(out.items()))


def crds() -> dict[str, dict[str, Any]]:
    """``{file name: CRD}`` for every kind, in file-name order (fresh copies)."""
    return copy.deepcopy(dict(_crds()))


HEADER = "# Generated by `python -m moorage.core.resources.crds`; do not edit.\n"


_Dumper: Any = getattr(yaml, "CSafeDumper", yaml.SafeDumper)
_Loader: Any = getattr(yaml, "CSafeLoader", yaml.SafeLoader)


def render(crd: dict[str, Any]) -> str:
    return HEADER + "---\n" + yaml.dump(crd, Dumper=_Dumper, sort_keys=False, width=100)


def write(out: Path, *, check: bool = False) -> list[str]:
    """Write (or with ``check``, compare) every CRD file; returns the names that differ.

    The comparison is by content (the parsed YAML), so that a libyaml and a pure-Python
    emitter, which may wrap lines differently, agree on what is stale.
    """
    stale: list[str] = []
    if not check:
        out.mkdir(parents=True, exist_ok=True)
    for name, crd in _crds():
        path = out / name
        current = yaml.load(path.read_text(), Loader=_Loader) if path.exists() else None
        if current != crd:
            stale.append(name)
            if not check:
                path.write_text(render(crd))
    return stale


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="Write moorage's CRDs.")
    parser.add_argument("--out", type=Path, default=Path("charts/moorage/crds"))
    parser.add_argument("--check", action="store_true", help="fail if the files are stale")
    args = parser.parse_args(argv)
    stale = write(args.out, check=args.check)
    if args.check and stale:
        print(f"stale CRDs in {args.out}: {', '.join(stale)}", file=sys.stderr)
        return 1
    for name in stale:
        print(f"wrote {args.out / name}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
