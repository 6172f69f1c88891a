"""schemathesis against the server's own OpenAPI document (``--enable_docs_url``), on the ASGI app.

Served: an echo model, the real sklearn runtime with an iris model (so generated bodies reach the
codecs, the data plane and a runtime) and a model that is not ready. Path parameters
``model_name`` are drawn from those names plus an unknown one (random strings would only ever
meet 404), and the models are put back before each case (generated ``load``/``unload`` calls
would otherwise change what later cases meet).

Checks: every default check but two. ``positive_data_acceptance`` expects every body the JSON
schema admits to be accepted, and OIP has rules no JSON schema expresses: the element count of
``data`` must match ``shape``, values must fit the ``datatype`` (300 is no UINT8), a model takes
only the inputs it knows; the server answers those with 400 by design. ``not_a_server_error`` is
done by hand: 501 for ``:explain`` on a model without an explainer and 503 for a model that is
not ready are KServe's answers; any other 5xx fails the test.
"""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

import pytest

from moorage.core.config.server import ServerSettings
from moorage.core.protocol import InferRequest, InferResponse
from moorage.server import Model, ModelRepository, ModelServer

from .conftest import LazyModel

schemathesis = pytest.importorskip("schemathesis")
from hypothesis import HealthCheck, settings  # noqa: E402
from schemathesis.checks import not_a_server_error  # noqa: E402
from schemathesis.specs.openapi.checks import positive_data_acceptance  # noqa: E402

MODEL_NAMES = ["echo", "iris", "lazy", "nope"]


class Echo(Model):
    """Answers v2 with its inputs and v1 with ``{"predictions": [...]}``, whatever it is sent
    (v1 bodies of content types other than JSON reach models as raw bytes, as in KServe)."""

    def __init__(self) -> None:
        super().__init__("echo")
        self.ready = True

    def predict(self, payload: Any, headers: Any = None) -> Any:
        if isinstance(payload, InferRequest):
            return InferResponse(self.name, list(payload.inputs), id=payload.id)
        if isinstance(payload, dict):
            instances = payload.get("instances", payload.get("inputs"))
            return {"predictions": instances if isinstance(instances, list) else [instances]}
        return {"predictions": [len(payload)]}

    explain = predict


def _models(iris_dir: Path) -> list[Any]:
    from moorage.server.runtimes.sklearn import SKLearnModel

    iris = SKLearnModel("iris", iris_dir)
    iris.load()
    return [Echo(), iris, LazyModel()]


@pytest.fixture(scope="module")
def served(iris_dir: Path) -> tuple[ModelRepository, list[Any], Any]:
    repository = ModelRepository("/nonexistent")
    models = _models(iris_dir)
    server = ModelServer(
        ServerSettings(_cli_parse_args=False, enable_docs_url=True), registered_models=repository
    )
    for model in models:
        server.register_model(model)
    return repository, models, server.create_application()


class _Delegate:
    """The ASGI app schemathesis calls; the fixture points it at the served app. (The schema
    must exist at import time; ``schemathesis.pytest.from_fixture`` fails on pytest 9.)"""

    target: Any = None

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        await self.target(scope, receive, send)


def _document() -> dict[str, Any]:
    app = ModelServer(
        ServerSettings(_cli_parse_args=False, enable_docs_url=True),
        registered_models=ModelRepository("/nonexistent"),
    ).create_application()
    document = copy.deepcopy(app.openapi())
    for operations in document["paths"].values():
        for operation in operations.values():
            for parameter in operation.get("parameters", []):
                if parameter["name"] == "model_name":
                    parameter["schema"] = {"type": "string", "enum": MODEL_NAMES}
    return document


delegate = _Delegate()
schema = schemathesis.openapi.from_dict(_document())
schema.app = delegate
# Schema-valid and schema-invalid requests (wrong types, missing fields, junk bodies).
schema.config.generation.update(modes=list(schemathesis.GenerationMode))


@pytest.mark.slow
@schema.parametrize()
@settings(max_examples=25, deadline=None, suppress_health_check=list(HealthCheck))
def test_openapi_conformance(case: Any, served: tuple[ModelRepository, list[Any], Any]) -> None:
    repository, models, app = served
    delegate.target = app
    for model in models:
        model.ready = model.name != "lazy"
        repository.update(model)
    response = case.call()
    status = response.status_code
    if status == 501:
        assert case.path.endswith(":explain"), response.text
    elif status == 503:
        assert case.path_parameters.get("model_name") == "lazy" or case.path.endswith(
            "/health/ready"
        ), response.text
    else:
        assert status < 500, response.text
    case.validate_response(response, excluded_checks=[positive_data_acceptance, not_a_server_error])


def test_document_is_served_only_with_the_flag(served: tuple[Any, Any, Any]) -> None:
    import httpx

    async def fetch(app: Any) -> int:
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://t") as client:
            return (await client.get("/openapi.json")).status_code

    import asyncio

    _, _, app = served
    assert asyncio.run(fetch(app)) == 200
    plain = ModelServer(ServerSettings(_cli_parse_args=False)).create_application()
    assert asyncio.run(fetch(plain)) == 404


# ----------------------------------------------------------------------------- what it found
def test_readiness_documents_its_503() -> None:
    paths = _document()["paths"]
    for path in ("/v2/health/ready", "/v2/models/{model_name}/ready"):
        responses = paths[path]["get"]["responses"]
        assert responses["503"]["content"] == responses["200"]["content"]


def test_request_tensor_schema_matches_the_decoder() -> None:
    from moorage.core.protocol.schema import RequestInputSchema

    tensor = RequestInputSchema.model_json_schema()
    datatypes = tensor["$defs"]["Datatype"]["enum"]
    assert "FP32" in datatypes and "BYTES" in datatypes and "" not in datatypes
    assert tensor["properties"]["shape"]["items"] == {"minimum": 0, "type": "integer"}
    kinds = {option.get("type") for option in tensor["properties"]["data"]["anyOf"]}
    assert kinds == {"array", "boolean", "number", "string", "null"}
