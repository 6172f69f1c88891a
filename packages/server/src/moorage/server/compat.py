"""KServe's tensor and message constructors, for custom models ported from KServe.

A KServe model that builds its own messages keeps doing so after changing its imports::

    # from kserve import InferInput, InferOutput, InferRequest, InferResponse
    from moorage.server.compat import InferInput, InferOutput, InferRequest, InferResponse

    output = InferOutput(name="output-0", shape=[2], datatype="FP32")
    output.set_data_from_numpy(result)
    return InferResponse(model_name=self.name, infer_outputs=[output], response_id=payload.id)

Each class is a subclass of the core type it mirrors (:class:`~moorage.core.protocol.InferTensor`,
:class:`~moorage.core.protocol.InferRequest`, :class:`~moorage.core.protocol.InferResponse`), so
the server encodes them like any other; only the constructors and a few accessors follow KServe.
"""

from __future__ import annotations

import uuid
from typing import Any

import numpy as np

from moorage.core.protocol import Datatype, InferTensor, RequestedOutput
from moorage.core.protocol import InferRequest as _InferRequest
from moorage.core.protocol import InferResponse as _InferResponse

__all__ = ["InferInput", "InferOutput", "InferRequest", "InferResponse", "generate_uuid"]


def generate_uuid() -> str:
    """A random request id (KServe's ``kserve.utils.utils.generate_uuid``)."""
    return str(uuid.uuid4())


class _KServeTensor(InferTensor):
    """``InferInput`` / ``InferOutput(name, shape, datatype, data=None, parameters=None)``."""

    def __init__(
        self,
        name: str,
        shape: list[int] | tuple[int, ...],
        datatype: str,
        data: Any = None,
        parameters: dict[str, Any] | None = None,
    ) -> None:
        dt = Datatype.parse(datatype)
        dims = tuple(int(d) for d in shape)
        if data is None:
            array = np.empty(dims, dtype=object if dt is Datatype.BYTES else dt.numpy_dtype)
        else:
            array = InferTensor.from_numpy(name, data, datatype=dt).data
        super().__init__(name, dt, dims, array, dict(parameters or {}))

    def set_data_from_numpy(self, input_tensor: np.ndarray, binary_data: bool = False) -> None:
        """Replace the data (and shape) with ``input_tensor``; ``binary_data`` as in KServe."""
        tensor = InferTensor.from_numpy(self.name, input_tensor, datatype=self.datatype)
        self.data = tensor.data
        self.shape = tensor.shape
        if binary_data:
            self.parameters["binary_data"] = True
        else:
            self.parameters.pop("binary_data", None)

    def set_shape(self, shape: list[int]) -> None:
        self.shape = tuple(int(d) for d in shape)
        self.data = self.data.reshape(self.shape)


class InferInput(_KServeTensor):
    """KServe's ``InferInput``."""


class InferOutput(_KServeTensor):
    """KServe's ``InferOutput``."""


class InferRequest(_InferRequest):
    """KServe's ``InferRequest(model_name, infer_inputs, request_id=None, ...)``."""

    def __init__(
        self,
        model_name: str,
        infer_inputs: list[InferTensor],
        request_id: str | None = None,
        raw_inputs: Any = None,
        from_grpc: bool = False,
        parameters: dict[str, Any] | None = None,
        request_outputs: list[Any] | None = None,
        model_version: str | None = None,
    ) -> None:
        outputs = None
        if request_outputs is not None:
            outputs = [
                o if isinstance(o, RequestedOutput) else RequestedOutput(o.name, o.parameters)
                for o in request_outputs
            ]
        super().__init__(
            model_name=model_name,
            inputs=list(infer_inputs),
            id=request_id,
            parameters=dict(parameters or {}),
            outputs=outputs,
            model_version=model_version,
        )

    @property
    def request_outputs(self) -> list[RequestedOutput] | None:
        return self.outputs


class InferResponse(_InferResponse):
    """KServe's ``InferResponse(response_id, model_name, infer_outputs, ...)``."""

    def __init__(
        self,
        response_id: str | None,
        model_name: str,
        infer_outputs: list[InferTensor],
        model_version: str | None = None,
        raw_outputs: Any = None,
        from_grpc: bool = False,
        parameters: dict[str, Any] | None = None,
    ) -> None:
        super().__init__(
            model_name=model_name,
            outputs=list(infer_outputs),
            id=response_id,
            parameters=dict(parameters or {}),
            model_version=model_version,
        )
