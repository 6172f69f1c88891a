"""One client library under load, or timing its codec; run by bench/client.py in that
library's own venv, and prints one JSON object on stdout.

Libraries (each imported only when chosen, so each venv needs only its own):
    moorage       moorage.client InferenceRESTClient / InferenceGRPCClient (moorage's .venv)
    moorage-grpcio  the same with InferenceGRPCClient(transport="grpcio") (grpc.aio)
    kserve        kserve 0.14 InferenceRESTClient / InferenceGRPCClient (the kserve peer venv)
    tritonclient  tritonclient.http.aio / tritonclient.grpc.aio (the triton peer venv)

Modes: ``rest-json`` (JSON in and out), ``rest-binary`` (binary tensor extension in and out),
``grpc`` (raw contents).  Every call builds its request from a numpy array and turns the
reply back into a numpy array, as an application would.

    python client_worker.py load --library kserve --mode rest-json --http-port P \\
        --grpc-port Q --output-name output-0 --concurrency 32 --duration 5
    python client_worker.py codec --library kserve --mib 16
"""

from __future__ import annotations

import argparse
import asyncio
import json
import resource
import statistics
import sys
import time
from typing import Any

import numpy as np

MODEL = "sklearn-iris"
INPUT = "input-0"
ROWS = np.array([[5.1, 3.5, 1.4, 0.2]], dtype=np.float32)
EXPECTED = [0]
MODES = ("rest-json", "rest-binary", "grpc")
CODEC_OUTPUT = "output-0"


class Unavailable(Exception):
    """The library cannot be imported (or lacks an API) in this interpreter."""


# --------------------------------------------------------------------------- adapters


class Tritonclient:
    name = "tritonclient"

    def __init__(self) -> None:
        try:
            import tritonclient.grpc as grpc_client
            import tritonclient.grpc.aio as grpc_aio
            import tritonclient.http as http_client
            import tritonclient.http.aio as http_aio
            from tritonclient.grpc import service_pb2
            from tritonclient.grpc._utils import _get_inference_request
        except ImportError as error:
            raise Unavailable(str(error)) from error
        self.http, self.http_aio = http_client, http_aio
        self.grpc, self.grpc_aio = grpc_client, grpc_aio
        self.pb2, self.grpc_request = service_pb2, _get_inference_request
        self.client: Any = None

    async def open(self, mode: str, http_port: int, grpc_port: int, concurrency: int) -> None:
        self.mode = mode
        if mode == "grpc":
            self.client = self.grpc_aio.InferenceServerClient(f"127.0.0.1:{grpc_port}")
        else:
            self.client = self.http_aio.InferenceServerClient(
                f"127.0.0.1:{http_port}", conn_limit=max(concurrency, 1)
            )

    async def infer(self, data: np.ndarray, output: str) -> np.ndarray:
        if self.mode == "grpc":
            tensor = self.grpc.InferInput(INPUT, list(data.shape), "FP32")
            tensor.set_data_from_numpy(data)
            result = await self.client.infer(MODEL, [tensor])
            return result.as_numpy(output)
        binary = self.mode == "rest-binary"
        tensor = self.http.InferInput(INPUT, list(data.shape), "FP32")
        tensor.set_data_from_numpy(data, binary_data=binary)
        wanted = self.http.InferRequestedOutput(output, binary_data=binary)
        result = await self.client.infer(MODEL, [tensor], outputs=[wanted])
        return result.as_numpy(output)

    async def close(self) -> None:
        await self.client.close()

    def encode(self, data: np.ndarray, mode: str) -> bytes:
        if mode == "grpc":
            tensor = self.grpc.InferInput(INPUT, list(data.shape), "FP32")
            tensor.set_data_from_numpy(data)
            request = self.grpc_request(
                MODEL, [tensor], "", "", None, 0, False, False, 0, None, None
            )
            return request.SerializeToString()
        binary = mode == "rest-binary"
        tensor = self.http.InferInput(INPUT, list(data.shape), "FP32")
        tensor.set_data_from_numpy(data, binary_data=binary)
        wanted = self.http.InferRequestedOutput(CODEC_OUTPUT, binary_data=binary)
        body, _ = self.http.InferenceServerClient.generate_request_body([tensor], [wanted])
        return body

    def decode(self, body: bytes, mode: str, header_length: int | None) -> np.ndarray:
        if mode == "grpc":
            response = self.pb2.ModelInferResponse.FromString(body)
            return self.grpc.InferResult(response).as_numpy(CODEC_OUTPUT)
        result = self.http.InferenceServerClient.parse_response_body(
            body, header_length=header_length
        )
        return result.as_numpy(CODEC_OUTPUT)

    def grpc_response(self, data: np.ndarray) -> bytes:
        return grpc_response_bytes(self.pb2.ModelInferResponse(), data)


class Kserve:
    name = "kserve"

    def __init__(self) -> None:
        try:
            import kserve
            from kserve.protocol.grpc.grpc_predict_v2_pb2 import ModelInferResponse
            from kserve.protocol.infer_type import InferResponse
        except ImportError as error:
            raise Unavailable(str(error)) from error
        self.kserve, self.response_pb, self.response = kserve, ModelInferResponse, InferResponse
        self.client: Any = None

    async def open(self, mode: str, http_port: int, grpc_port: int, concurrency: int) -> None:
        self.mode = mode
        if mode == "grpc":
            self.client = self.kserve.InferenceGRPCClient(f"127.0.0.1:{grpc_port}")
        else:
            config = self.kserve.RESTConfig(protocol="v2")
            self.client = self.kserve.InferenceRESTClient(config)
        self.base_url = f"http://127.0.0.1:{http_port}"

    def request(self, data: np.ndarray, mode: str) -> Any:
        tensor = self.kserve.InferInput(INPUT, list(data.shape), "FP32")
        tensor.set_data_from_numpy(data, binary_data=mode != "rest-json")
        parameters = {"binary_data_output": True} if mode == "rest-binary" else None
        return self.kserve.InferRequest(MODEL, [tensor], parameters=parameters)

    async def infer(self, data: np.ndarray, output: str) -> np.ndarray:
        request = self.request(data, self.mode)
        if self.mode == "grpc":
            response = await self.client.infer(request)
        else:
            response = await self.client.infer(self.base_url, request, model_name=MODEL)
        return response.outputs[0].as_numpy()

    async def close(self) -> None:
        await self.client.close()

    def encode(self, data: np.ndarray, mode: str) -> bytes:
        request = self.request(data, mode)
        if mode == "grpc":
            return request.to_grpc().SerializeToString()
        body, _ = request.to_rest()
        if isinstance(body, dict):
            import orjson  # what InferenceRESTClient.infer serializes a dict with

            body = orjson.dumps(body)
        return body

    def decode(self, body: bytes, mode: str, header_length: int | None) -> np.ndarray:
        if mode == "grpc":
            response = self.response.from_grpc(self.response_pb.FromString(body))
        else:
            length = header_length if header_length is not None else len(body)
            response = self.response.from_bytes(body, length)
        return response.outputs[0].as_numpy()

    def grpc_response(self, data: np.ndarray) -> bytes:
        return grpc_response_bytes(self.response_pb(), data)


class Moorage:
    name = "moorage"
    transport = "auto"  # InferenceGRPCClient's default: the native HTTP/2 transport

    def __init__(self) -> None:
        try:
            import moorage.client as client
            from moorage.core.protocol import grpc as protocol_grpc
            from moorage.core.protocol import rest as protocol_rest
        except ImportError as error:
            raise Unavailable(str(error)) from error
        self.client_mod, self.pgrpc, self.prest = client, protocol_grpc, protocol_rest
        self.client: Any = None

    async def open(self, mode: str, http_port: int, grpc_port: int, concurrency: int) -> None:
        self.mode = mode
        if mode == "grpc":
            self.client = self.client_mod.InferenceGRPCClient(
                f"127.0.0.1:{grpc_port}", transport=self.transport
            )
        else:
            config = self.client_mod.RESTConfig(protocol="v2")
            self.client = self.client_mod.InferenceRESTClient(config)
        self.base_url = f"http://127.0.0.1:{http_port}"

    def request(self, data: np.ndarray, mode: str) -> Any:
        tensor = self.client_mod.InferInput(INPUT, list(data.shape), "FP32")
        tensor.set_data_from_numpy(data, binary_data=mode != "rest-json")
        parameters = {"binary_data_output": True} if mode == "rest-binary" else None
        return self.client_mod.InferRequest(MODEL, [tensor], parameters=parameters)

    async def infer(self, data: np.ndarray, output: str) -> np.ndarray:
        request = self.request(data, self.mode)
        if self.mode == "grpc":
            response = await self.client.infer(request)
        else:
            response = await self.client.infer(self.base_url, request, model_name=MODEL)
        return response.outputs[0].as_numpy()

    async def close(self) -> None:
        await self.client.close()

    def encode(self, data: np.ndarray, mode: str) -> bytes:
        request = self.request(data, mode)
        if mode == "grpc":
            return self.pgrpc.request_to_bytes(request)  # what InferenceGRPCClient sends
        body, _ = self.prest.encode_request(request)
        return body

    def decode(self, body: bytes, mode: str, header_length: int | None) -> np.ndarray:
        if mode == "grpc":
            message = self.pgrpc.pb.ModelInferResponse.FromString(body)
            response = self.pgrpc.response_from_proto(message)
        else:
            response = self.prest.decode_response(body, header_length=header_length)
        return response.outputs[0].as_numpy()

    def grpc_response(self, data: np.ndarray) -> bytes:
        return grpc_response_bytes(self.pgrpc.pb.ModelInferResponse(), data)


class MoorageGrpcio(Moorage):
    """moorage's client with ``transport="grpcio"`` (grpc.aio underneath), for the A/B."""

    name = "moorage-grpcio"
    transport = "grpcio"


LIBRARIES = {
    "moorage": Moorage,
    "moorage-grpcio": MoorageGrpcio,
    "kserve": Kserve,
    "tritonclient": Tritonclient,
}


# --------------------------------------------------------------------------- load


async def load(lib: Any, args: argparse.Namespace) -> dict[str, Any]:
    await lib.open(args.mode, args.http_port, args.grpc_port, args.concurrency)
    try:
        first = await lib.infer(ROWS, args.output_name)
        if [int(v) for v in np.asarray(first).ravel()] != EXPECTED:
            raise RuntimeError(f"wrong prediction {first!r}, expected {EXPECTED}")
        await phase(lib, args, args.warmup)
        before_cpu = cpu_seconds()
        before = time.perf_counter()
        latencies, errors, first_error = await phase(lib, args, args.duration)
        elapsed = time.perf_counter() - before
        cpu = cpu_seconds() - before_cpu
    finally:
        await lib.close()
    done = len(latencies)
    latencies.sort()
    return {
        "requests": done,
        "errors": errors,
        "first_error": first_error,
        "rps": done / elapsed if elapsed else 0.0,
        "p50_ms": pick(latencies, 50) * 1e3,
        "p99_ms": pick(latencies, 99) * 1e3,
        "cpu_us_per_request": cpu / done * 1e6 if done else float("nan"),
    }


async def phase(lib: Any, args: argparse.Namespace, seconds: float):
    """Run ``concurrency`` request loops until ``seconds`` pass or the request cap is hit."""
    latencies: list[float] = []
    errors = 0
    first_error = ""
    deadline = time.perf_counter() + seconds
    budget = args.max_requests

    async def loop() -> None:
        nonlocal errors, first_error, budget
        while budget > 0 and time.perf_counter() < deadline:
            budget -= 1
            start = time.perf_counter()
            try:
                await lib.infer(ROWS, args.output_name)
            except Exception as error:  # counted and reported, not hidden
                errors += 1
                first_error = first_error or f"{type(error).__name__}: {error}"[:300]
                continue
            latencies.append(time.perf_counter() - start)

    if seconds > 0:
        await asyncio.gather(*(loop() for _ in range(args.concurrency)))
    return latencies, errors, first_error


def cpu_seconds() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def pick(sorted_values: list[float], pct: float) -> float:
    if not sorted_values:
        return float("nan")
    return sorted_values[min(len(sorted_values) - 1, round(pct / 100 * (len(sorted_values) - 1)))]


# --------------------------------------------------------------------------- codec


def grpc_response_bytes(message: Any, data: np.ndarray) -> bytes:
    """A ModelInferResponse carrying ``data`` as raw contents, built with a library's own
    message class (so each library parses the bytes its own protobuf made)."""
    message.model_name = MODEL
    output = message.outputs.add()
    output.name = CODEC_OUTPUT
    output.datatype = "FP32"
    output.shape.extend(data.shape)
    message.raw_output_contents.append(data.tobytes())
    return message.SerializeToString()


def rest_response(data: np.ndarray, mode: str) -> tuple[bytes, int | None]:
    """A v2 REST reply carrying ``data``, JSON or binary, built without any client library."""
    tensor: dict[str, Any] = {"name": CODEC_OUTPUT, "datatype": "FP32", "shape": list(data.shape)}
    if mode == "rest-json":
        tensor["data"] = data.ravel().tolist()
        return json.dumps({"model_name": MODEL, "outputs": [tensor]}).encode(), None
    tensor["parameters"] = {"binary_data_size": data.nbytes}
    header = json.dumps({"model_name": MODEL, "outputs": [tensor]}).encode()
    return header + data.tobytes(), len(header)


def timed(func, *, min_runs: int, budget_s: float, max_runs: int = 50) -> list[float]:
    """Call ``func`` at least ``min_runs`` times, more while within ``budget_s``."""
    times: list[float] = []
    started = time.perf_counter()
    while len(times) < max_runs and (
        len(times) < min_runs or time.perf_counter() - started < budget_s
    ):
        t0 = time.perf_counter()
        func()
        times.append(time.perf_counter() - t0)
    return times


def codec(lib: Any, args: argparse.Namespace) -> dict[str, Any]:
    count = args.mib * 1024 * 1024 // 4
    data = np.random.default_rng(7).random(count, dtype=np.float32).reshape(-1, 1024)
    sink = np.empty_like(data)
    copy_ms = statistics.median(timed(lambda: np.copyto(sink, data), min_runs=5, budget_s=0.5))
    results: dict[str, Any] = {"mib": args.mib, "memcpy_ms": copy_ms * 1e3, "modes": {}}
    for mode in args.modes:
        if mode == "grpc":
            body, header_length = lib.grpc_response(data), None
        else:
            body, header_length = rest_response(data, mode)
        decoded = lib.decode(body, mode, header_length)
        if not np.array_equal(np.asarray(decoded).reshape(data.shape), data):
            raise RuntimeError(f"{lib.name} {mode}: decoded tensor differs")
        runs = 1 if mode == "rest-json" else 3
        encode_s = timed(lambda m=mode: lib.encode(data, m), min_runs=runs, budget_s=args.budget)
        decode_s = timed(
            lambda m=mode, b=body, h=header_length: lib.decode(b, m, h),
            min_runs=runs,
            budget_s=args.budget,
        )
        results["modes"][mode] = {
            "encode_ms": statistics.median(encode_s) * 1e3,
            "decode_ms": statistics.median(decode_s) * 1e3,
            "runs": [len(encode_s), len(decode_s)],
        }
    return results


# --------------------------------------------------------------------------- main


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True)
    for name in ("load", "codec"):
        cmd = sub.add_parser(name)
        cmd.add_argument("--library", choices=sorted(LIBRARIES), required=True)
    load_cmd = sub.choices["load"]
    load_cmd.add_argument("--mode", choices=MODES, required=True)
    load_cmd.add_argument("--http-port", type=int, required=True)
    load_cmd.add_argument("--grpc-port", type=int, required=True)
    load_cmd.add_argument("--output-name", required=True)
    load_cmd.add_argument("--concurrency", type=int, default=1)
    load_cmd.add_argument("--duration", type=float, default=5.0)
    load_cmd.add_argument("--warmup", type=float, default=1.0)
    load_cmd.add_argument("--max-requests", type=int, default=1_000_000)
    codec_cmd = sub.choices["codec"]
    codec_cmd.add_argument("--mib", type=int, default=16)
    codec_cmd.add_argument("--modes", default=",".join(MODES))
    codec_cmd.add_argument("--budget", type=float, default=2.0, help="seconds per timing")
    args = parser.parse_args()
    try:
        lib = LIBRARIES[args.library]()
    except Unavailable as error:
        print(json.dumps({"unavailable": str(error)}))
        return 3
    if args.command == "load":
        result = asyncio.run(load(lib, args))
    else:
        args.modes = [m for m in args.modes.split(",") if m]
        result = codec(lib, args)
    print(json.dumps(result))
    return 0


if __name__ == "__main__":
    sys.exit(main())
