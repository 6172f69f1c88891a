"""Write the benchmark's request bodies, and check that a server answers them.

Runs in the triton peer venv (it needs ``tritonclient`` and ``grpcio``); bench/server.py
calls it as a subprocess.  The binary and gRPC bodies are built by tritonclient, an
implementation independent of every server under test; every server receives the same bytes:

    v1.json             {"instances": [[...4 floats...], ...]}
    v2.json             OIP v2 JSON, one FP32 input [rows, 4], data inline (same values)
    v2-binary.bin       OIP v2 with the binary tensor extension (JSON header + raw FP32),
                        binary outputs requested; header length in payloads.json
    grpc.bin            a gRPC frame for h2load: 0 byte, 4-byte big-endian length,
                        serialized ModelInferRequest (raw_input_contents or typed contents)
    payloads.json       the header length and the rows used

Usage::

    python bench/peers/payloads.py write OUT_DIR --model sklearn-iris --rows 1
    python bench/peers/payloads.py check-grpc OUT_DIR --port 8081
"""

from __future__ import annotations

import argparse
import json
import pathlib
import struct

import numpy as np
import tritonclient.http as triton_http
from tritonclient.grpc import service_pb2

# The first rows of iris (one per class, then repeating), so every row is a valid sample.
IRIS_ROWS = [
    [5.1, 3.5, 1.4, 0.2],
    [7.0, 3.2, 4.7, 1.4],
    [6.3, 3.3, 6.0, 2.5],
]
INPUT_NAME = "input-0"
GRPC_METHOD = "/inference.GRPCInferenceService/ModelInfer"


def sample(rows: int) -> np.ndarray:
    return np.array([IRIS_ROWS[i % len(IRIS_ROWS)] for i in range(rows)], dtype=np.float32)


def grpc_request(model: str, data: np.ndarray, *, raw: bool) -> bytes:
    tensor = service_pb2.ModelInferRequest().InferInputTensor(
        name=INPUT_NAME, datatype="FP32", shape=list(data.shape)
    )
    request = service_pb2.ModelInferRequest(model_name=model)
    if raw:
        request.raw_input_contents.append(data.tobytes())
    else:
        tensor.contents.fp32_contents.extend(data.ravel().tolist())
    request.inputs.append(tensor)
    return request.SerializeToString()


def write(out_dir: pathlib.Path, *, model: str, rows: int, grpc_contents: str) -> None:
    out_dir.mkdir(parents=True, exist_ok=True)
    data = sample(rows)
    # Round-trip through float32 so the JSON bodies carry exactly the binary body's values.
    values = [[float(f"{v:.6g}") for v in row] for row in data.tolist()]
    (out_dir / "v1.json").write_text(json.dumps({"instances": values}))

    flat = [v for row in values for v in row]
    tensor = {"name": INPUT_NAME, "shape": list(data.shape), "datatype": "FP32", "data": flat}
    v2 = {"inputs": [tensor]}
    (out_dir / "v2.json").write_text(json.dumps(v2))

    binary_input = triton_http.InferInput(INPUT_NAME, list(data.shape), "FP32")
    binary_input.set_data_from_numpy(data, binary_data=True)
    body, header_length = triton_http.InferenceServerClient.generate_request_body(
        [binary_input], outputs=None
    )
    (out_dir / "v2-binary.bin").write_bytes(body)

    message = grpc_request(model, data, raw=grpc_contents == "raw")
    (out_dir / "grpc.bin").write_bytes(b"\x00" + struct.pack(">I", len(message)) + message)
    meta = {
        "rows": rows,
        "binary_header_length": header_length,
        "grpc_contents": grpc_contents,
        "expected_classes": [i % len(IRIS_ROWS) for i in range(rows)],
    }
    (out_dir / "payloads.json").write_text(json.dumps(meta, indent=2) + "\n")


def check_grpc(out_dir: pathlib.Path, *, port: int, timeout: float) -> int:
    """Send grpc.bin's exact message and print the response; non-zero on a gRPC error."""
    import grpc

    frame = (out_dir / "grpc.bin").read_bytes()
    message = frame[5:]
    with grpc.insecure_channel(f"127.0.0.1:{port}") as channel:
        call = channel.unary_unary(GRPC_METHOD)
        try:
            raw = call(message, timeout=timeout)
        except grpc.RpcError as error:
            print(json.dumps({"ok": False, "code": str(error.code()), "detail": error.details()}))
            return 1
    response = service_pb2.ModelInferResponse.FromString(raw)
    outputs = []
    for index, output in enumerate(response.outputs):
        if index < len(response.raw_output_contents):
            dtype = {"INT64": np.int64, "INT32": np.int32, "FP32": np.float32}.get(
                output.datatype, np.int64
            )
            values = np.frombuffer(response.raw_output_contents[index], dtype=dtype).tolist()
        else:
            contents = output.contents
            values = list(contents.int64_contents) or list(contents.int_contents)
            values = values or list(contents.fp32_contents)
        outputs.append({"name": output.name, "datatype": output.datatype, "data": values})
    print(json.dumps({"ok": True, "outputs": outputs}))
    return 0


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True)
    w = sub.add_parser("write")
    w.add_argument("out_dir", type=pathlib.Path)
    w.add_argument("--model", default="sklearn-iris")
    w.add_argument("--rows", type=int, default=1)
    w.add_argument("--grpc-contents", choices=["raw", "typed"], default="raw")
    c = sub.add_parser("check-grpc")
    c.add_argument("out_dir", type=pathlib.Path)
    c.add_argument("--port", type=int, required=True)
    c.add_argument("--timeout", type=float, default=5.0)
    args = parser.parse_args()
    if args.command == "write":
        write(args.out_dir, model=args.model, rows=args.rows, grpc_contents=args.grpc_contents)
        return 0
    return check_grpc(args.out_dir, port=args.port, timeout=args.timeout)


if __name__ == "__main__":
    raise SystemExit(main())
