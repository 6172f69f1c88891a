"""Tensor codec throughput: moorage.core.protocol beside tritonclient's own encoders.

One FP32 tensor of ``--mib`` MiB (16 by default) goes through each path; the figure is payload
MB/s (10^6 bytes of tensor data per second, median of several runs) and the ratio to a plain
memory copy of the same bytes (``np.copyto``), so 1.00x means "as fast as memcpy".

* encode = numpy array to wire bytes (what a client does with a request, a server with a
  response); decode = wire bytes to a numpy array of the tensor.
* moorage REST JSON / binary extension: ``encode_request``/``decode_request`` and
  ``encode_response``/``decode_response``; protobuf: ``request_to_proto`` + ``SerializeToString``
  (and ``request_to_bytes``, which frames the raw contents itself) and ``FromString`` +
  ``request_from_proto``, with raw contents and with typed ``fp32_contents``.
* tritonclient.http: ``InferInput.set_data_from_numpy(binary_data=...)`` +
  ``InferenceServerClient.generate_request_body``, and ``InferResult.from_response_body`` +
  ``as_numpy`` on the same response bytes moorage produces (the formats are wire-identical).
* tritonclient.grpc: ``InferInput.set_data_from_numpy`` + building the ``ModelInferRequest`` +
  ``SerializeToString``, and ``ModelInferResponse.FromString`` + ``InferResult.as_numpy``.

Decoding binary/raw data is zero-copy in moorage (the array is a view of the body), so its
decode figure can exceed memcpy by far; ``decode+sum`` rows read every element once, for a
fairer "data in hand" comparison.

    .venv/bin/python bench/codec.py            # ~1 minute, prints a Markdown table
    .venv/bin/python bench/codec.py --mib 4 --min-time 0.2
"""

from __future__ import annotations

import argparse
import importlib.metadata
import os
import platform
import statistics
import sys
import time
from collections.abc import Callable
from typing import Any

import numpy as np

from moorage.core.protocol import InferRequest, InferResponse, InferTensor
from moorage.core.protocol import grpc as oip_grpc
from moorage.core.protocol.rest import (
    decode_request,
    decode_response,
    encode_request,
    encode_response,
)

Row = tuple[str, str, float]  # (path, operation, seconds)


def measure(call: Callable[[], Any], *, min_time: float, min_runs: int = 3) -> float:
    """Median seconds of ``call`` over at least ``min_runs`` runs and ``min_time`` seconds."""
    call()  # warm up: imports, allocator, caches
    times: list[float] = []
    started = time.perf_counter()
    while len(times) < min_runs or time.perf_counter() - started < min_time:
        t0 = time.perf_counter()
        call()
        times.append(time.perf_counter() - t0)
        if len(times) >= 1000:
            break
    return statistics.median(times)


def machine() -> list[str]:
    model = "unknown"
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as info:
            for line in info:
                if line.startswith("model name"):
                    model = line.split(":", 1)[1].strip()
                    break
    except OSError:
        pass
    versions = []
    for name in ("moorage-core", "numpy", "orjson", "protobuf", "tritonclient"):
        try:
            versions.append(f"{name} {importlib.metadata.version(name)}")
        except importlib.metadata.PackageNotFoundError:
            versions.append(f"{name} (not installed)")
    load = " ".join(f"{v:.2f}" for v in os.getloadavg())
    return [
        f"CPU: {model}; nproc {len(os.sched_getaffinity(0))}; load average at start {load}",
        f"Python {platform.python_version()} ({platform.python_implementation()}), "
        f"{platform.system()} {platform.release()}",
        ", ".join(versions),
    ]


def moorage_rows(array: np.ndarray, min_time: float) -> list[Row]:
    rows: list[Row] = []

    def add(path: str, operation: str, call: Callable[[], Any]) -> None:
        rows.append((path, operation, measure(call, min_time=min_time)))

    for label, binary in (("JSON", False), ("binary extension", True)):
        path = f"moorage REST {label}"
        tensor = InferTensor.from_numpy("x", array, binary=binary or None)
        request = InferRequest("m", [tensor])
        response = InferResponse("m", [tensor])
        body, length = encode_request(request)
        rbody, rlength = encode_response(response)
        add(path, "encode request", lambda r=request: encode_request(r))
        add(
            path,
            "decode request",
            lambda b=body, n=length: decode_request(b, model_name="m", header_length=n),
        )
        add(path, "encode response", lambda r=response: encode_response(r))
        add(path, "decode response", lambda b=rbody, n=rlength: decode_response(b, header_length=n))
        add(
            path,
            "decode+sum",
            lambda b=rbody, n=rlength: decode_response(b, header_length=n).outputs[0].data.sum(),
        )

    parse = oip_grpc.pb.ModelInferRequest.FromString
    for label, raw in (("raw contents", True), ("typed fp32_contents", False)):
        path = f"moorage protobuf {label}"
        request = InferRequest("m", [InferTensor.from_numpy("x", array)])
        wire = oip_grpc.request_to_proto(request, raw=raw).SerializeToString()
        add(
            path,
            "encode request (`SerializeToString`)",
            lambda r=request, raw=raw: oip_grpc.request_to_proto(r, raw=raw).SerializeToString(),
        )
        add(
            path,
            "encode request (`request_to_bytes`)",
            lambda r=request, raw=raw: oip_grpc.request_to_bytes(r, raw=raw),
        )
        add(path, "decode request", lambda w=wire: oip_grpc.request_from_proto(parse(w)))
        add(
            path,
            "decode+sum",
            lambda w=wire: oip_grpc.request_from_proto(parse(w)).inputs[0].data.sum(),
        )
    return rows


def tritonclient_rows(array: np.ndarray, min_time: float) -> list[Row]:
    try:
        import tritonclient.grpc as tgrpc
        import tritonclient.http as thttp
        from tritonclient.grpc import _utils as tgrpc_utils
        from tritonclient.grpc import service_pb2 as tpb
    except ImportError as exc:  # depends on the environment
        print(f"tritonclient not available ({exc}); skipping its rows", file=sys.stderr)
        return []
    rows: list[Row] = []
    shape = list(array.shape)

    def add(path: str, operation: str, call: Callable[[], Any]) -> None:
        rows.append((path, operation, measure(call, min_time=min_time)))

    for label, binary in (("JSON", False), ("binary extension", True)):
        path = f"tritonclient.http {label}"

        def http_encode(binary: bool = binary) -> bytes:
            tensor = thttp.InferInput("x", shape, "FP32")
            tensor.set_data_from_numpy(array, binary_data=binary)
            body, _ = thttp.InferenceServerClient.generate_request_body([tensor])
            return body

        tensor = InferTensor.from_numpy("x", array, binary=binary or None)
        rbody, rlength = encode_response(InferResponse("m", [tensor]))  # wire-identical bytes

        def http_decode(body: bytes = rbody, length: int | None = rlength) -> np.ndarray:
            return thttp.InferResult.from_response_body(body, header_length=length).as_numpy("x")

        add(path, "encode request", http_encode)
        add(path, "decode response", http_decode)
        add(path, "decode+sum", lambda decode=http_decode: decode().sum())

    def grpc_encode() -> bytes:
        tensor = tgrpc.InferInput("x", shape, "FP32")
        tensor.set_data_from_numpy(array)
        request = tgrpc_utils._get_inference_request(
            "m", [tensor], "", "", None, 0, False, False, 0, None, None
        )
        return request.SerializeToString()

    wire = oip_grpc.response_to_proto(
        InferResponse("m", [InferTensor.from_numpy("x", array)])
    ).SerializeToString()

    def grpc_decode() -> np.ndarray:
        return tgrpc.InferResult(tpb.ModelInferResponse.FromString(wire)).as_numpy("x")

    path = "tritonclient.grpc raw contents"
    add(path, "encode request", grpc_encode)
    add(path, "decode response", grpc_decode)
    add(path, "decode+sum", lambda: grpc_decode().sum())
    return rows


def table(rows: list[Row], nbytes: int, copy_seconds: float) -> str:
    lines = [
        "| path | operation | ms | MB/s | vs memcpy |",
        "|---|---|---:|---:|---:|",
        f"| memcpy (`np.copyto`) | copy | {copy_seconds * 1e3:.2f} | "
        f"{nbytes / copy_seconds / 1e6:,.0f} | 1.00x |",
    ]
    for path, operation, seconds in rows:
        ms = seconds * 1e3
        mbps = nbytes / seconds / 1e6
        lines.append(
            f"| {path} | {operation} | {ms:.2f} | {mbps:,.0f} | {copy_seconds / seconds:.2f}x |"
        )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--mib", type=int, default=16, help="tensor size in MiB (default 16)")
    parser.add_argument(
        "--min-time", type=float, default=1.0, help="seconds to spend per figure (default 1)"
    )
    parser.add_argument("--skip-tritonclient", action="store_true")
    args = parser.parse_args(argv)

    count = args.mib * 2**20 // 4
    array = np.random.default_rng(0).standard_normal(count, dtype=np.float32)
    target = np.empty_like(array)
    copy_seconds = measure(lambda: np.copyto(target, array), min_time=args.min_time, min_runs=10)

    rows = moorage_rows(array, args.min_time)
    if not args.skip_tritonclient:
        rows += tritonclient_rows(array, args.min_time)

    print(f"Codec throughput, one FP32 tensor of {args.mib} MiB ({array.nbytes:,} bytes), median")
    print()
    for line in machine():
        print(f"- {line}")
    print()
    print(table(rows, array.nbytes, copy_seconds))


if __name__ == "__main__":
    main()
