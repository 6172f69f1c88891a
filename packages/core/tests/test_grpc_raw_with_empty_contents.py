"""Raw contents beside an *empty* ``contents`` message decode (MLServer 1.7 sends that shape);
contents that hold data beside raw contents are still refused."""

from __future__ import annotations

import numpy as np
import pytest

from moorage.core.errors import InvalidInput
from moorage.core.protocol.grpc import pb, response_from_proto


def _response(*, contents: list[int] | None) -> object:
    message = pb.ModelInferResponse(model_name="m")
    output = message.outputs.add(name="y", datatype="INT64", shape=[2])
    output.contents.SetInParent()  # present but empty, as MLServer's converter leaves it
    if contents:
        output.contents.int64_contents.extend(contents)
    message.raw_output_contents.append(np.array([3, 4], dtype="<i8").tobytes())
    return message


def test_raw_contents_with_an_empty_contents_message_decode() -> None:
    message = _response(contents=None)
    assert message.outputs[0].HasField("contents")
    response = response_from_proto(message)
    assert response.outputs[0].as_numpy().tolist() == [3, 4]


def test_raw_contents_with_filled_contents_are_refused() -> None:
    with pytest.raises(InvalidInput, match="contents field must not be specified"):
        response_from_proto(_response(contents=[1, 2]))
