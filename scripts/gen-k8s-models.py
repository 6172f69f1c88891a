#!/usr/bin/env python3
"""Generate pydantic v2 models of the Kubernetes core types moorage-core needs.

Source: the Kubernetes OpenAPI definitions shipped inside the ``kubernetes-validate`` package
(JSON-schema form, one ``_definitions.json`` per Kubernetes version). We take the definitions
reachable from ROOTS, give them short class names, make ``Quantity`` / ``IntOrString`` / ``Time``
plain JSON scalars (so a parsed YAML dumps back byte-for-byte), drop descriptions (they would
triple the size of the CRDs) and hand the result to ``datamodel-code-generator``.

The ``x-kubernetes-*`` extensions the API server merges by (list and map types, list-map keys)
and the integer formats (``int32``/``int64``) become each field's ``json_schema_extra``, so the
models' JSON schemas, and the CRDs made from them, carry them as Kubernetes' own schemas do.

Run: ``.venv/bin/python scripts/gen-k8s-models.py`` (writes
``packages/core/src/moorage/core/_generated/k8s.py``). ``test_crds.py`` checks the output is
fresh (by hashes, without running the generator).
"""

from __future__ import annotations

import argparse
import copy
import hashlib
import json
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

#: Kubernetes version whose schemas we generate from: KServe v0.14 builds against k8s.io/api v0.30.
K8S_VERSION = "1.30.0"

#: Definitions we use directly; everything they reference comes along.
ROOTS = [
    "io.k8s.api.core.v1.PodSpec",
    "io.k8s.api.core.v1.Container",
    "io.k8s.api.core.v1.PersistentVolumeSpec",
    "io.k8s.api.core.v1.PersistentVolumeClaimSpec",
    "io.k8s.api.apps.v1.DeploymentStrategy",
    "io.k8s.apimachinery.pkg.apis.meta.v1.ObjectMeta",
]

#: The text form of a resource.Quantity, as the API server's CRD schemas check it (``2Gi``,
#: ``500m``, ``1e3``; not ``2GB``).
QUANTITY = (
    r"^(\+|-)?(([0-9]+(\.[0-9]*)?)|(\.[0-9]+))(([KMGTPE]i)|[numkMGTPE]|"
    r"([eE](\+|-)?(([0-9]+(\.[0-9]*)?)|(\.[0-9]+))))?$"
)

#: Where KServe's CRDs depart from the Kubernetes schemas, applied to the definitions before
#: generating: ``(definition, key, values to remove from that list)``. KServe's InferenceService
#: CRD drops ``required: [port]`` from probes' httpGet/tcpSocket (the port defaults to the
#: container's), so its probe samples apply; the models follow the more permissive schema.
RELAXED: list[tuple[str, str, set[str]]] = [
    ("io.k8s.api.core.v1.HTTPGetAction", "required", {"port"}),
    ("io.k8s.api.core.v1.TCPSocketAction", "required", {"port"}),
]

#: Scalars the API server accepts as JSON scalars; kept as such so values round-trip unchanged.
SCALARS: dict[str, dict[str, Any]] = {
    "io.k8s.apimachinery.pkg.api.resource.Quantity": {
        "anyOf": [{"type": "integer"}, {"type": "number"}, {"type": "string", "pattern": QUANTITY}],
        "x-kubernetes-int-or-string": True,
    },
    "io.k8s.apimachinery.pkg.util.intstr.IntOrString": {
        "anyOf": [{"type": "integer"}, {"type": "string"}],
        "x-kubernetes-int-or-string": True,
    },
    "io.k8s.apimachinery.pkg.apis.meta.v1.Time": {"type": "string"},
    "io.k8s.apimachinery.pkg.apis.meta.v1.MicroTime": {"type": "string"},
    # managedFields' fieldsV1 is free-form JSON.
    "io.k8s.apimachinery.pkg.apis.meta.v1.FieldsV1": {
        "type": "object",
        "additionalProperties": {},
        "x-kubernetes-preserve-unknown-fields": True,
    },
}

ROOT = Path(__file__).resolve().parent.parent
OUT = ROOT / "packages/core/src/moorage/core/_generated/k8s.py"


def _definitions() -> dict[str, Any]:
    import kubernetes_validate

    base = Path(kubernetes_validate.__file__).parent / "kubernetes-json-schema"
    path = base / f"v{K8S_VERSION}-local-strict" / "_definitions.json"
    data: dict[str, Any] = json.loads(path.read_text())
    return data["$defs"]


def _refs(node: Any) -> set[str]:
    found: set[str] = set()
    if isinstance(node, dict):
        ref = node.get("$ref")
        if isinstance(ref, str):
            found.add(ref.rsplit("/", 1)[-1])
        for value in node.values():
            found |= _refs(value)
    elif isinstance(node, list):
        for value in node:
            found |= _refs(value)
    return found


def _closure(defs: dict[str, Any]) -> list[str]:
    todo = list(ROOTS)
    seen: set[str] = set()
    while todo:
        name = todo.pop()
        if name in seen:
            continue
        seen.add(name)
        if name not in SCALARS:
            todo.extend(_refs(defs[name]))
    return sorted(seen)


def _short_names(names: list[str]) -> dict[str, str]:
    short: dict[str, str] = {}
    taken: dict[str, str] = {}
    for name in names:
        candidate = name.rsplit(".", 1)[-1]
        if candidate in taken:
            raise SystemExit(f"name clash: {name} and {taken[candidate]} -> {candidate}")
        taken[candidate] = name
        short[name] = candidate
    return short


#: Integer formats, recorded on the models as Kubernetes' schemas declare them. The generator keeps extra keys only when they start with ``x-`` and strips the prefix
#: again (``--field-extra-keys-without-x-prefix``); it keeps none on array items, so an item
#: with a format refers to one of these named integers instead.
INT_FORMATS = {"int32": "Int32", "int64": "Int64"}


def _int_format(node: Any) -> str | None:
    if isinstance(node, dict) and node.get("format") in INT_FORMATS:
        kinds = node.get("type")
        if kinds == "integer" or (isinstance(kinds, list) and "integer" in kinds):
            return str(node["format"])
    return None


def _clean(node: Any, short: dict[str, str]) -> Any:
    if isinstance(node, dict):
        out: dict[str, Any] = {}
        for key, value in node.items():
            if key == "description":
                continue
            if key == "$ref":
                out[key] = "#/$defs/" + short[value.rsplit("/", 1)[-1]]
                continue
            if key == "items" and (fmt := _int_format(value)):
                out[key] = {"$ref": "#/$defs/" + INT_FORMATS[fmt]}
                continue
            if key == "format" and _int_format(node):
                out["x-format"] = value
                continue
            if key == "type" and isinstance(value, list):
                # ["string", "null"]: the null only says "optional"; required-ness says the rest.
                kinds = [v for v in value if v != "null"]
                out[key] = kinds[0] if len(kinds) == 1 else kinds
                continue
            if key in ("x-kubernetes-patch-strategy", "x-kubernetes-patch-merge-key"):
                continue
            out[key] = _clean(value, short)
        return out
    if isinstance(node, list):
        return [_clean(v, short) for v in node]
    return node


def build_schema() -> dict[str, Any]:
    defs = _definitions()
    names = _closure(defs)
    short = _short_names(names)
    out: dict[str, Any] = {}
    relaxed = {(d, k): v for d, k, v in RELAXED}
    for name in names:
        body = copy.deepcopy(SCALARS.get(name) or defs[name])
        for (definition, key), drop in relaxed.items():
            if definition == name:
                body[key] = [v for v in body.get(key, []) if v not in drop]
                if not body[key]:
                    del body[key]
        out[short[name]] = _clean(body, short)
    used = {ref.rsplit("/", 1)[-1] for ref in _refs(out)}
    for fmt, alias in INT_FORMATS.items():
        if alias in used:
            if alias in out:
                raise SystemExit(f"name clash: a Kubernetes definition is named {alias}")
            out[alias] = {"type": "integer", "x-format": fmt}
    # No top-level type: the generator then emits only the definitions.
    return {"$schema": "http://json-schema.org/draft-07/schema#", "$defs": out}


HEADER = '''"""Kubernetes {version} core types as pydantic v2 models. GENERATED, do not edit.

Regenerate with ``.venv/bin/python scripts/gen-k8s-models.py``.
"""
# input-sha256: {input_hash}
# output-sha256: {output_hash}
'''


def _digest(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()


def _input_text() -> str:
    return json.dumps(build_schema(), indent=1, sort_keys=True)


def generate() -> str:
    source = _input_text()
    with tempfile.TemporaryDirectory() as tmp:
        src = Path(tmp) / "k8s.json"
        dst = Path(tmp) / "k8s.py"
        src.write_text(source)
        cmd = [
            sys.executable,
            "-m",
            "datamodel_code_generator",
            "--input",
            str(src),
            "--input-file-type",
            "jsonschema",
            "--output",
            str(dst),
            "--output-model-type",
            "pydantic_v2.BaseModel",
            "--target-python-version",
            "3.11",
            "--snake-case-field",
            "--allow-population-by-field-name",
            "--extra-fields",
            "forbid",
            "--use-standard-collections",
            "--use-union-operator",
            "--use-annotated",
            "--field-constraints",
            "--use-type-alias",
            "--disable-timestamp",
            "--enum-field-as-literal",
            "all",
            "--use-schema-description",
            "--field-extra-keys-without-x-prefix",
            "x-format",
            "--field-extra-keys",
            "x-kubernetes-list-type",
            "x-kubernetes-list-map-keys",
            "x-kubernetes-map-type",
            "x-kubernetes-int-or-string",
            "--model-extra-keys",
            "x-kubernetes-map-type",
        ]
        subprocess.run(cmd, check=True)
        body = dst.read_text()
    # The schema has no root type; the generator still names one. Drop it.
    body = body.replace('Model = TypeAliasType("Model", Any)\n\n\n', "")
    # Build each model's validator on first use, not at import: most commands touch few of these
    # models. The generator has no option for pydantic's defer_build, so add it to every config.
    config = "    model_config = ConfigDict(\n"
    if body.count(config) != body.count("\nclass "):
        raise SystemExit("a generated model has no model_config to add defer_build to")
    body = body.replace(config, config + "        defer_build=True,\n")
    header = HEADER.format(
        version=K8S_VERSION, input_hash=_digest(source), output_hash=_digest(body)
    )
    return header + body


def is_fresh(path: Path = OUT) -> bool:
    """Whether ``path`` was generated from today's input and not edited since (no codegen run)."""
    if not path.exists():
        return False
    text = path.read_text()
    lines = text.splitlines(keepends=True)
    recorded = {}
    for line in lines[:8]:
        if line.startswith("# input-sha256: ") or line.startswith("# output-sha256: "):
            key, _, value = line[2:].partition(": ")
            recorded[key] = value.strip()
    body = text.split(f"# output-sha256: {recorded.get('output-sha256', '')}\n", 1)[-1]
    return recorded.get("input-sha256") == _digest(_input_text()) and recorded.get(
        "output-sha256"
    ) == _digest(body)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument(
        "--check", action="store_true", help="fail if the output is stale (no generator needed)"
    )
    parser.add_argument("--schema", action="store_true", help="print the input schema and stop")
    args = parser.parse_args()
    if args.schema:
        print(json.dumps(build_schema(), indent=1, sort_keys=True))
        return
    if args.check:
        if not is_fresh():
            raise SystemExit(f"{OUT} is stale or edited; run scripts/gen-k8s-models.py")
        return
    text = generate()
    OUT.parent.mkdir(parents=True, exist_ok=True)
    OUT.write_text(text)
    print(f"wrote {OUT} ({len(text.splitlines())} lines)")


if __name__ == "__main__":
    main()
