"""gRPC transport: ``inference.GRPCInferenceService`` on grpc.aio."""

from moorage.server.grpc.server import create_grpc_server
from moorage.server.grpc.servicer import InferenceServicer, metadata_to_headers

__all__ = ["InferenceServicer", "create_grpc_server", "metadata_to_headers"]
