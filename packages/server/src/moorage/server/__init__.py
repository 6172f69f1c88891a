"""moorage-server: KServe-compatible model server (Open Inference Protocol v1/v2, REST + gRPC).

Port a KServe custom model by changing ``from kserve import Model, ModelServer`` to
``from moorage.server import Model, ModelServer``.
"""

from moorage.core.protocol import InferRequest, InferResponse, InferTensor, RequestedOutput
from moorage.server._version import __version__
from moorage.server.dataplane import DataPlane, InferenceEvent, InferenceHook, request_id_var
from moorage.server.model import Model, PredictorConfig
from moorage.server.repository import ModelRepository
from moorage.server.server import ModelServer

__all__ = [
    "DataPlane",
    "InferRequest",
    "InferResponse",
    "InferTensor",
    "InferenceEvent",
    "InferenceHook",
    "Model",
    "ModelRepository",
    "ModelServer",
    "PredictorConfig",
    "RequestedOutput",
    "__version__",
    "request_id_var",
]
