"""gRPC transport: ``inference.GRPCInferenceService``, natively on the event loop or on grpcio."""

from moorage.server.grpc.native import NativeGrpcServer
from moorage.server.grpc.server import GrpcImplementation, create_grpc_server
from moorage.server.grpc.servicer import InferenceServicer, metadata_to_headers

__all__ = [
    "GrpcImplementation",
    "InferenceServicer",
    "NativeGrpcServer",
    "create_grpc_server",
    "metadata_to_headers",
]
