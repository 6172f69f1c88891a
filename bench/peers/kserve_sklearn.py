"""KServe 0.14 peer for the benchmark: a ``kserve.Model`` serving a joblib sklearn model.

KServe's own sklearn runtime (``sklearnserver``) lives in the KServe repository and is
not published on PyPI; this file does what it does for the benchmark's purposes: load one
``*.joblib``/``*.pkl`` file from ``--model_dir`` and answer v1 and v2 (REST JSON, REST
binary, gRPC) with ``estimator.predict`` through KServe's own request/response helpers.

Runs in the kserve peer venv (bench/setup-peers.sh)::

    $PEERS_DIR/kserve/bin/python bench/peers/kserve_sklearn.py \\
        --model_name sklearn-iris --model_dir DIR --http_port P --grpc_port Q

All of KServe's model-server flags apply (``--workers``, ``--max_threads`` ...).

KServe 0.14 binds REST to 0.0.0.0 and gRPC to [::] with no flag to change it; the benchmark
only ever listens on loopback, so :func:`bind_loopback` rewrites those two addresses to
``--bind_host`` (127.0.0.1) before the servers start.  Nothing on the request path changes.
"""

from __future__ import annotations

import argparse
import pathlib
import types

import grpc
import joblib
import kserve
import kserve.protocol.grpc.server as kserve_grpc_server
import kserve.protocol.rest.server as kserve_rest_server
import uvicorn
from kserve.utils.utils import get_predict_input, get_predict_response

MODEL_SUFFIXES = (".joblib", ".pkl", ".pickle")


class SKLearnPeer(kserve.Model):
    """Load a fitted estimator from a directory and answer ``predict``."""

    def __init__(self, name: str, model_dir: str) -> None:
        super().__init__(name)
        self.model_dir = pathlib.Path(model_dir)
        self._estimator = None

    def load(self) -> bool:
        files = sorted(p for p in self.model_dir.iterdir() if p.suffix in MODEL_SUFFIXES)
        if len(files) != 1:
            raise RuntimeError(f"expected one model file in {self.model_dir}, found {files}")
        self._estimator = joblib.load(files[0])
        self.ready = True
        return self.ready

    def predict(self, payload, headers=None):
        instances = get_predict_input(payload)
        result = self._estimator.predict(instances)
        return get_predict_response(payload, result, self.name)


def bind_loopback(host: str) -> None:
    """Make KServe's REST and gRPC servers listen on ``host`` instead of every interface."""

    def config(*args, **kwargs):
        kwargs["host"] = host
        return uvicorn.Config(*args, **kwargs)

    def grpc_server(*args, **kwargs):
        server = grpc.aio.server(*args, **kwargs)
        add_port = server.add_insecure_port

        def add_insecure_port(address: str) -> int:
            port = address.rsplit(":", 1)[1]
            return add_port(f"{host}:{port}")

        server.add_insecure_port = add_insecure_port
        return server

    kserve_rest_server.uvicorn = types.SimpleNamespace(Server=uvicorn.Server, Config=config)
    kserve_grpc_server.aio = types.SimpleNamespace(server=grpc_server)


def main() -> None:
    parser = argparse.ArgumentParser(parents=[kserve.model_server.parser])
    parser.add_argument("--model_dir", required=True, help="directory holding the model file")
    parser.add_argument("--bind_host", default="127.0.0.1", help="address to listen on")
    args, _ = parser.parse_known_args()
    bind_loopback(args.bind_host)
    model = SKLearnPeer(args.model_name, args.model_dir)
    model.load()
    kserve.ModelServer().start([model])


if __name__ == "__main__":
    main()
