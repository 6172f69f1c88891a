"""KServe-style request builders, kept thin over core's types.

:class:`InferInput` *is* a core :class:`~moorage.core.protocol.InferTensor` and
:class:`InferRequest` *is* a core :class:`~moorage.core.protocol.InferRequest`: they only add
KServe 0.14's constructor signatures and ``set_data_from_numpy``, so code written against
``kserve.InferInput`` / ``kserve.InferRequest`` ports by changing imports, and everything
core-typed (the codecs, the server) accepts them unchanged.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from moorage.core.errors import InvalidInput, InvalidTensor
from moorage.core.protocol import Datatype, InferTensor, Parameters, RequestedOutput
from moorage.core.protocol import InferRequest as _CoreInferRequest

__all__ = ["InferInput", "InferRequest"]


class InferInput(InferTensor):
    """An input tensor declared KServe's way: name, shape and datatype first, data later.

    ``data`` may be given as a (nested) list or array; otherwise call
    :meth:`set_data_from_numpy` before sending. ``binary_data=True`` (KServe's default) sends
    the tensor in the REST binary extension; gRPC always sends raw contents.
    """

    __slots__ = ()

    def __init__(
        self,
        name: str,
        shape: Sequence[int],
        datatype: str | Datatype,
        data: Any = None,
        parameters: Parameters | None = None,
    ) -> None:
        self.name = name
        self.datatype = Datatype.parse(datatype)
        self.shape = tuple(int(d) for d in shape)
        self.parameters = dict(parameters or {})
        if data is not None:
            self._assign(_as_array(data, self.datatype), check_dtype=False)

    def set_data_from_numpy(self, input_tensor: np.ndarray, binary_data: bool = True) -> None:
        """Take the tensor's data from a numpy array of the declared shape and datatype."""
        if not isinstance(input_tensor, np.ndarray):
            raise InvalidInput(f"input '{self.name}': input_tensor must be a numpy array")
        self._assign(input_tensor, check_dtype=True)
        self.parameters["binary_data"] = bool(binary_data)

    def set_shape(self, shape: Sequence[int]) -> None:
        """Change the declared shape (before setting data)."""
        self.shape = tuple(int(d) for d in shape)

    @property
    def has_data(self) -> bool:
        """Whether data was set."""
        try:
            self.data  # noqa: B018 - probing an unset slot
        except AttributeError:
            return False
        return True

    def _assign(self, array: np.ndarray, *, check_dtype: bool) -> None:
        if check_dtype:
            got = _datatype_of(array, self.datatype)
            if got is not self.datatype:
                raise InvalidTensor(
                    f"input '{self.name}': got unexpected datatype {got} from numpy array, "
                    f"expected {self.datatype}",
                    tensor=self.name,
                )
            if self.datatype is Datatype.BYTES:
                array = array.astype(object, copy=False)
            else:
                array = array.astype(self.datatype.numpy_dtype, copy=False)
        if tuple(array.shape) != self.shape:
            if check_dtype or array.size != int(np.prod(self.shape)):
                raise InvalidTensor(
                    f"input '{self.name}': got unexpected numpy array shape {list(array.shape)}, "
                    f"expected {list(self.shape)}",
                    tensor=self.name,
                )
            array = array.reshape(self.shape)
        self.data = array

    def __repr__(self) -> str:
        data = repr(self.data) if self.has_data else "<not set>"
        return (
            f"InferInput(name={self.name!r}, shape={list(self.shape)}, "
            f"datatype={self.datatype.value!r}, parameters={self.parameters!r}, data={data})"
        )


class InferRequest(_CoreInferRequest):
    """A core inference request with KServe 0.14's constructor.

    ``InferRequest(model_name, infer_inputs, request_id=None, parameters=None,
    request_outputs=None)`` as in KServe; core's spellings ``inputs``, ``id`` and ``outputs`` are
    accepted as keywords too. Inputs may be :class:`InferInput` or any core ``InferTensor``.
    """

    __slots__ = ()

    def __init__(
        self,
        model_name: str,
        infer_inputs: Sequence[InferTensor] | None = None,
        request_id: str | None = None,
        *,
        parameters: Parameters | None = None,
        request_outputs: Sequence[RequestedOutput] | None = None,
        model_version: str | None = None,
        inputs: Sequence[InferTensor] | None = None,
        id: str | None = None,
        outputs: Sequence[RequestedOutput] | None = None,
    ) -> None:
        chosen_inputs = infer_inputs if infer_inputs is not None else inputs
        if chosen_inputs is None:
            raise InvalidInput("InferRequest needs infer_inputs (or inputs)")
        chosen_outputs = request_outputs if request_outputs is not None else outputs
        super().__init__(
            model_name=model_name,
            inputs=list(chosen_inputs),
            id=request_id if request_id is not None else id,
            parameters=dict(parameters or {}),
            outputs=list(chosen_outputs) if chosen_outputs is not None else None,
            model_version=model_version,
        )

    @property
    def request_id(self) -> str | None:
        """KServe's name for ``id``."""
        return self.id

    @property
    def use_binary_outputs(self) -> bool:
        """KServe's name for ``binary_outputs``."""
        return self.binary_outputs


def check_inputs(request: _CoreInferRequest) -> None:
    """Raise :class:`InvalidInput` for an :class:`InferInput` whose data was never set."""
    for tensor in request.inputs:
        if isinstance(tensor, InferInput) and not tensor.has_data:
            raise InvalidInput(
                f"input '{tensor.name}' has no data; call set_data_from_numpy() or pass data="
            )


def _datatype_of(array: np.ndarray, declared: Datatype) -> Datatype:
    if declared is Datatype.BF16 and array.dtype == np.uint16:
        return Datatype.BF16
    return Datatype.from_numpy(array.dtype)


def _as_array(data: Any, datatype: Datatype) -> np.ndarray:
    if datatype is Datatype.BYTES:
        return np.asarray(data, dtype=object)
    try:
        return np.asarray(data, dtype=datatype.numpy_dtype)
    except (TypeError, ValueError, OverflowError) as exc:
        raise InvalidTensor(f"data does not fit datatype {datatype}: {exc}") from None
