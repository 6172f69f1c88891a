"""The bare-handler ceiling: what a REST model server on this stack can do at best.

A raw ASGI application on the same server stack as moorage-server (uvicorn, httptools,
uvloop, one process) that does only what every inference must: read the body, ``orjson``
parse, build the numpy array, ``predict`` with the scikit-learn model, ``orjson`` render the
response. No routing framework, no request ids, metrics, logs, limits or error mapping: a
server with none of those features cannot be faster on this stack, so moorage's throughput
as a share of this one is how much its features cost.

It answers, for the model it loads (``--model_name``):

- ``POST /v2/models/<name>/infer``: v2 JSON (the first input's ``data``/``shape``; the
  response has one ``output-0`` tensor, INT64 or FP64 as predict returns it);
- ``POST /v1/models/<name>:predict``: ``{"instances": [...]}`` -> ``{"predictions": [...]}``;
- ``GET /v2/models/<name>/ready``: 200, so bench/server.py can wait for it;

and 404 to anything else. bench/server.py starts it as the server ``ceiling``::

    python bench/server.py --only moorage,kserve,ceiling --protocols v2-json

or by hand::

    .venv/bin/python bench/ceiling.py --model_dir DIR --http_port 8080
"""

from __future__ import annotations

import argparse
import pathlib
from typing import Any

import joblib
import numpy as np
import orjson
import uvicorn

_DTYPES = {"FP32": np.float32, "FP64": np.float64, "INT32": np.int32, "INT64": np.int64}
_JSON = [(b"content-type", b"application/json")]


def build_app(model: Any, name: str) -> Any:
    """The ASGI application serving ``model`` as ``name``."""
    infer_path = f"/v2/models/{name}/infer"
    predict_path = f"/v1/models/{name}:predict"
    ready_path = f"/v2/models/{name}/ready"
    predict = model.predict

    def v2(body: bytes) -> bytes:
        request = orjson.loads(body)
        tensor = request["inputs"][0]
        array = np.asarray(tensor["data"], dtype=_DTYPES[tensor["datatype"]])
        result = predict(array.reshape(tensor["shape"]))
        response = {
            "model_name": name,
            "outputs": [
                {
                    "name": "output-0",
                    "datatype": "INT64" if result.dtype.kind in "iu" else "FP64",
                    "shape": list(result.shape),
                    "data": result.ravel().tolist(),
                }
            ],
        }
        if "id" in request:
            response["id"] = request["id"]
        return orjson.dumps(response)

    def v1(body: bytes) -> bytes:
        instances = np.asarray(orjson.loads(body)["instances"])
        return orjson.dumps({"predictions": predict(instances).tolist()})

    async def app(scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            return
        path = scope["path"]
        status, body = 404, b'{"error":"not found"}'
        if path in (infer_path, predict_path):
            chunks = []
            more = True
            while more:
                message = await receive()
                chunks.append(message.get("body", b""))
                more = message.get("more_body", False)
            body = (v2 if path == infer_path else v1)(b"".join(chunks))
            status = 200
        elif path == ready_path:
            status, body = 200, b'{"name":"%s","ready":true}' % name.encode()
        headers = [*_JSON, (b"content-length", b"%d" % len(body))]
        await send({"type": "http.response.start", "status": status, "headers": headers})
        await send({"type": "http.response.body", "body": body})

    return app


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model_dir", type=pathlib.Path, required=True)
    parser.add_argument("--model_name", default="sklearn-iris")
    parser.add_argument("--http_port", type=int, default=8080)
    parser.add_argument("--host", default="127.0.0.1")
    args = parser.parse_args()
    model = joblib.load(args.model_dir / "model.joblib")
    uvicorn.run(
        build_app(model, args.model_name),
        host=args.host,
        port=args.http_port,
        http="httptools",
        loop="uvloop",
        ws="none",
        lifespan="off",
        access_log=False,
        log_level="warning",
        server_header=False,
    )


if __name__ == "__main__":
    main()
