"""Output selection: requested outputs, binary flags and KServe's unknown-output message."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from moorage.core.errors import InvalidInput
from moorage.core.protocol import (
    InferRequest,
    InferResponse,
    InferTensor,
    RequestedOutput,
    select_outputs,
)
from moorage.core.protocol.rest import decode_request, decode_response, encode_response


def _response() -> InferResponse:
    return InferResponse(
        "iris",
        [
            InferTensor.from_numpy("a", np.arange(3, dtype=np.int32)),
            InferTensor.from_numpy("b", np.ones((2, 2), dtype=np.float32)),
            InferTensor.from_numpy("c", np.array([b"x"], dtype=object)),
        ],
    )


def _request(outputs: list[RequestedOutput] | None = None, **parameters: object) -> InferRequest:
    return InferRequest("iris", [], outputs=outputs, parameters=dict(parameters))


def test_no_requested_outputs_returns_all_in_model_order() -> None:
    selected = select_outputs(_response(), _request())
    assert [t.name for t in selected] == ["a", "b", "c"]
    assert [t.binary for t in selected] == [False, False, False]


def test_binary_data_output_makes_every_output_binary() -> None:
    selected = select_outputs(_response(), _request(binary_data_output=True))
    assert [t.binary for t in selected] == [True, True, True]


def test_requested_outputs_in_request_order_only() -> None:
    wanted = [RequestedOutput("c"), RequestedOutput("a")]
    selected = select_outputs(_response(), _request(wanted))
    assert [t.name for t in selected] == ["c", "a"]


def test_per_output_flag_beats_request_flag() -> None:
    wanted = [
        RequestedOutput("a", {"binary_data": False}),
        RequestedOutput("b", {"binary_data": True}),
        RequestedOutput("c"),
    ]
    selected = select_outputs(_response(), _request(wanted, binary_data_output=True))
    assert [t.binary for t in selected] == [False, True, True]
    selected = select_outputs(_response(), _request(wanted, binary_data_output=False))
    assert [t.binary for t in selected] == [False, True, False]
    selected = select_outputs(_response(), _request(wanted))
    assert [t.binary for t in selected] == [False, True, False]


def test_model_set_flag_kept_without_requested_outputs() -> None:
    response = _response()
    response.outputs[1].parameters["binary_data"] = True
    assert [t.binary for t in select_outputs(response, _request())] == [False, True, False]
    # ...and a requested output's own flag still decides.
    wanted = [RequestedOutput("b", {"binary_data": False})]
    assert [t.binary for t in select_outputs(response, _request(wanted))] == [False]


def test_selection_does_not_mutate_the_response() -> None:
    response = _response()
    select_outputs(response, _request(binary_data_output=True))
    assert all(t.binary is None for t in response.outputs)
    assert all("binary_data" not in t.parameters for t in response.outputs)


def test_unknown_requested_output_message() -> None:
    with pytest.raises(InvalidInput) as info:
        select_outputs(_response(), _request([RequestedOutput("a"), RequestedOutput("zz")]))
    assert str(info.value) == "Unexpected inference output 'zz' for model 'iris'"
    assert type(info.value) is InvalidInput
    assert info.value.status == 400


def test_encode_response_follows_the_request() -> None:
    wanted = [RequestedOutput("b", {"binary_data": True}), RequestedOutput("a")]
    body, length = encode_response(_response(), request=_request(wanted))
    assert length is not None
    back = decode_response(body, header_length=length)
    assert [t.name for t in back.outputs] == ["b", "a"]
    assert back.outputs[0].binary is True and back.outputs[1].binary is None
    assert back.outputs[0].data.tolist() == [[1.0, 1.0], [1.0, 1.0]]
    assert body[length:] == np.ones(4, dtype="<f4").tobytes()


def test_requested_outputs_from_a_rest_body() -> None:
    body = (
        b'{"inputs":[],"parameters":{"binary_data_output":true},'
        b'"outputs":[{"name":"a","parameters":{"binary_data":false}},{"name":"c"}]}'
    )
    request = decode_request(body, model_name="iris")
    selected = select_outputs(_response(), request)
    assert [(t.name, t.binary) for t in selected] == [("a", False), ("c", True)]


@given(
    default=st.one_of(st.none(), st.booleans()),
    wanted=st.one_of(
        st.none(),
        st.lists(
            st.tuples(st.sampled_from("abcd"), st.one_of(st.none(), st.booleans())),
            max_size=4,
            unique_by=lambda w: w[0],
        ),
    ),
)
@settings(max_examples=150, deadline=None)
def test_selection_rule(default: bool | None, wanted: list[tuple[str, bool | None]] | None) -> None:
    params = {} if default is None else {"binary_data_output": default}
    outputs = (
        None
        if wanted is None
        else [
            RequestedOutput(n, {} if flag is None else {"binary_data": flag}) for n, flag in wanted
        ]
    )
    request = InferRequest("iris", [], outputs=outputs, parameters=params)
    if wanted is not None and any(n == "d" for n, _ in wanted):
        with pytest.raises(InvalidInput, match="Unexpected inference output 'd' for model 'iris'"):
            select_outputs(_response(), request)
        return
    selected = select_outputs(_response(), request)
    if wanted is None:
        assert [t.name for t in selected] == ["a", "b", "c"]
        assert all(t.binary is bool(default) for t in selected)
    else:
        assert [(t.name, t.binary) for t in selected] == [
            (n, bool(default) if flag is None else flag) for n, flag in wanted
        ]
