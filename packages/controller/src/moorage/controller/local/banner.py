"""What ``moorage run`` prints once everything is ready: where to reach the model and a request
that works when pasted.

It says where the servers really listen (the addresses the OS reports for their ports, or the
``--host`` they were given where it does not say), and whether other machines can connect.

The sample request is built from the model's v2 metadata (``GET /v2/models/<name>``): one row of
each declared input, with ``-1`` dimensions set to 1. A model that declares no inputs gets a
request with a single FP32 input of four values (the shape of the README's iris example); the
banner says so, since that is a guess.
"""

from __future__ import annotations

import ipaddress
import json
import shlex
import urllib.error
import urllib.request
from dataclasses import dataclass
from typing import Any

__all__ = ["Banner", "fetch_metadata", "sample_inputs"]

_SAMPLE_VALUES = {"BOOL": True, "BYTES": "text"}
_GUESS = [{"name": "input-0", "datatype": "FP32", "shape": [1, 4]}]


def fetch_metadata(
    rest_url: str, model_name: str, *, timeout: float = 2.0
) -> dict[str, Any] | None:
    """The model's v2 metadata, or None when the server does not answer it."""
    url = f"{rest_url}/v2/models/{model_name}"
    try:
        with urllib.request.urlopen(url, timeout=timeout) as response:
            data = json.loads(response.read())
    except (urllib.error.URLError, OSError, ValueError):
        return None
    return data if isinstance(data, dict) else None


def _size(shape: list[int]) -> int:
    size = 1
    for dim in shape:
        size *= dim
    return size


def sample_inputs(metadata: dict[str, Any] | None) -> tuple[list[dict[str, Any]], bool]:
    """``(inputs, guessed)``: v2 input tensors of the declared shapes filled with sample values."""
    declared = (metadata or {}).get("inputs") or []
    guessed = not declared
    tensors: list[dict[str, Any]] = []
    for spec in declared or _GUESS:
        shape = [d if isinstance(d, int) and d > 0 else 1 for d in spec.get("shape") or [1]]
        datatype = str(spec.get("datatype") or "FP32")
        fill: Any = _SAMPLE_VALUES.get(datatype, 1 if datatype.startswith(("INT", "UINT")) else 0.5)
        tensors.append(
            {
                "name": spec.get("name") or "input-0",
                "shape": shape,
                "datatype": datatype,
                "data": [fill] * min(_size(shape), 64),
            }
        )
    return tensors, guessed


def reach(addresses: list[str]) -> str:
    """Who can connect to servers listening on ``addresses``, in words."""
    kinds = set()
    for address in addresses:
        try:
            ip = ipaddress.ip_address(address.strip("[]"))
        except ValueError:  # a host name
            kinds.add("named")
            continue
        kinds.add("loopback" if ip.is_loopback else "any" if ip.is_unspecified else "address")
    if kinds == {"loopback"}:
        return "loopback only: this machine alone can connect"
    if "any" in kinds:
        return "every interface: other machines can connect"
    return "other machines on that network can connect"


def _rows(tensor: dict[str, Any]) -> list[Any]:
    shape = tensor["shape"]
    data = tensor["data"]
    if len(shape) < 2:
        return list(data)
    width = _size(shape[1:])
    return [data[i : i + width] for i in range(0, len(data), width)]


@dataclass(frozen=True)
class Banner:
    """The ready message for one InferenceService."""

    name: str
    model_name: str
    rest_url: str
    grpc_address: str | None
    runtime: str
    model_dir: str
    metadata: dict[str, Any] | None
    seconds: float
    transformer: bool = False
    #: ``host:port`` of every listening socket of the public server
    listening: tuple[str, ...] = ()

    def curl_v2(self) -> str:
        inputs, _ = sample_inputs(self.metadata)
        body = json.dumps({"inputs": inputs}, separators=(",", ":"))
        url = f"{self.rest_url}/v2/models/{self.model_name}/infer"
        return f"curl -s {url} -H 'Content-Type: application/json' -d {shlex.quote(body)}"

    def curl_v1(self) -> str:
        inputs, _ = sample_inputs(self.metadata)
        body = json.dumps({"instances": _rows(inputs[0])}, separators=(",", ":"))
        url = f"{self.rest_url}/v1/models/{self.model_name}:predict"
        return f"curl -s {url} -H 'Content-Type: application/json' -d {shlex.quote(body)}"

    def render(self) -> str:
        _, guessed = sample_inputs(self.metadata)
        lines = [
            f"moorage: {self.name} is ready in {self.seconds:.1f} s "
            f"(runtime {self.runtime}; model in {self.model_dir})",
            f"  REST  {self.rest_url}   v1 /v1/models/{self.model_name}:predict, "
            f"v2 /v2/models/{self.model_name}/infer",
        ]
        if self.grpc_address:
            lines.append(f"  gRPC  {self.grpc_address}   inference.GRPCInferenceService")
        if self.listening:
            hosts = [a.rsplit(":", 1)[0] for a in self.listening]
            lines.append(f"  listening on {', '.join(self.listening)} ({reach(hosts)})")
        if self.transformer:
            lines.append("  (requests go through the transformer to the predictor)")
        note = "  (the model declares no inputs: the shape below is a guess)" if guessed else ""
        lines += ["", "Try it from another shell:" + (f"\n{note}" if note else "")]
        lines += [f"  {self.curl_v1()}", f"  {self.curl_v2()}", "", "Press Ctrl-C to stop."]
        return "\n".join(lines)
