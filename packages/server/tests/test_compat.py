"""KServe-style message constructors (``moorage.server.compat``) through the server."""

from __future__ import annotations

from typing import Any

import httpx
import numpy as np

from moorage.core.protocol import InferResponse as CoreResponse
from moorage.server import DataPlane, Model, ModelRepository
from moorage.server.compat import (
    InferInput,
    InferOutput,
    InferRequest,
    InferResponse,
    generate_uuid,
)
from moorage.server.rest import create_app


class KServeStyle(Model):
    """Written the way KServe's docs write a v2 custom model."""

    def __init__(self) -> None:
        super().__init__("kstyle")
        self.ready = True

    def predict(self, payload: Any, headers: Any = None, response_headers: Any = None) -> Any:
        data = payload.inputs[0].as_numpy()
        output = InferOutput(name="output-0", shape=list(data.shape), datatype="FP32")
        output.set_data_from_numpy(data * 2, binary_data=False)
        return InferResponse(
            model_name=self.name, infer_outputs=[output], response_id=payload.id or generate_uuid()
        )


def test_constructors() -> None:
    tensor = InferInput(name="x", shape=[2, 2], datatype="INT32", data=[1, 2, 3, 4])
    assert tensor.as_numpy().tolist() == [[1, 2], [3, 4]]
    tensor.set_shape([4])
    assert tensor.shape == (4,)
    request = InferRequest(model_name="m", infer_inputs=[tensor], request_id="r")
    assert request.id == "r" and request.inputs[0] is tensor and request.request_outputs is None
    response = InferResponse(response_id="r", model_name="m", infer_outputs=[tensor])
    assert isinstance(response, CoreResponse) and response.id == "r"
    empty = InferOutput("s", [2], "BYTES")
    empty.set_data_from_numpy(np.array(["a", "b"], dtype=object), binary_data=True)
    assert empty.binary is True and empty.data.tolist() == ["a", "b"]


async def test_served() -> None:
    repository = ModelRepository()
    repository.update(KServeStyle())
    app = create_app(DataPlane(repository))
    body = {"id": "k1", "inputs": [{"name": "x", "shape": [2], "datatype": "FP32",
                                    "data": [1.5, 2]}]}  # fmt: skip
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://t") as client:
        out = (await client.post("/v2/models/kstyle/infer", json=body)).json()
    assert out["id"] == "k1"
    assert out["outputs"] == [
        {"name": "output-0", "datatype": "FP32", "shape": [2], "data": [3.0, 4.0]}
    ]


def test_model_server_parser_extends_like_kserve() -> None:
    import argparse

    from moorage.server import model_server

    parser = argparse.ArgumentParser(parents=[model_server.parser])
    parser.add_argument("--my_flag", default="x")
    args, rest = parser.parse_known_args(
        ["--model_name", "m", "--http_port", "9", "--enable_grpc", "false", "--other", "1"]
    )
    assert (args.model_name, args.http_port, args.enable_grpc, args.my_flag) == ("m", 9, False, "x")
    assert args.grpc_port == 8081 and args.model_dir == "/mnt/models"
    assert rest == ["--other", "1"]
    assert model_server.ModelServer is not None
