"""The error hierarchy: statuses, codes, gRPC mapping and the tree drawn in the docstring."""

from __future__ import annotations

import pickle
import re
from http import HTTPStatus

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from moorage.core import errors
from moorage.core.errors import (
    GRPC_STATUS_NAMES,
    HTTP_TO_GRPC,
    InvalidInput,
    MoorageError,
    ValidationError,
    error_for_code,
    error_for_status,
    grpc_status_for,
)

# class -> (parent, HTTP status, code, gRPC status name): the contract clients and servers share.
TABLE: dict[str, tuple[str | None, int, str, str]] = {
    "MoorageError": (None, 500, "internal", "INTERNAL"),
    "InvalidInput": ("MoorageError", 400, "invalid_input", "INVALID_ARGUMENT"),
    "InvalidTensor": ("InvalidInput", 400, "invalid_tensor", "INVALID_ARGUMENT"),
    "UnsupportedDatatype": ("InvalidInput", 400, "unsupported_datatype", "INVALID_ARGUMENT"),
    "PayloadTooLarge": ("InvalidInput", 413, "payload_too_large", "RESOURCE_EXHAUSTED"),
    "ValidationError": ("MoorageError", 422, "validation_error", "INVALID_ARGUMENT"),
    "InvalidStorageURI": ("MoorageError", 400, "invalid_storage_uri", "INVALID_ARGUMENT"),
    "ModelNotFound": ("MoorageError", 404, "model_not_found", "NOT_FOUND"),
    "NotFound": ("MoorageError", 404, "not_found", "NOT_FOUND"),
    "ModelNotReady": ("MoorageError", 503, "model_not_ready", "UNAVAILABLE"),
    "ServerNotReady": ("MoorageError", 503, "server_not_ready", "UNAVAILABLE"),
    "Overloaded": ("MoorageError", 503, "overloaded", "UNAVAILABLE"),
    "Unauthenticated": ("MoorageError", 401, "unauthenticated", "UNAUTHENTICATED"),
    "PermissionDenied": ("MoorageError", 403, "permission_denied", "PERMISSION_DENIED"),
    "Timeout": ("MoorageError", 504, "timeout", "DEADLINE_EXCEEDED"),
    "UnsupportedProtocol": ("MoorageError", 400, "unsupported_protocol", "INVALID_ARGUMENT"),
    "InferenceError": ("MoorageError", 500, "inference_error", "INTERNAL"),
    "ServerError": ("MoorageError", 500, "server_error", "INTERNAL"),
    "ConnectionFailed": ("MoorageError", 503, "connection_failed", "UNAVAILABLE"),
    "StorageError": ("MoorageError", 500, "storage_error", "INTERNAL"),
    "StorageNotFound": ("StorageError", 404, "storage_not_found", "NOT_FOUND"),
    "StorageAuthError": ("StorageError", 403, "storage_auth_error", "PERMISSION_DENIED"),
    "UnsupportedScheme": ("StorageError", 400, "unsupported_scheme", "INVALID_ARGUMENT"),
    "IntegrityError": ("StorageError", 500, "integrity_error", "INTERNAL"),
    "UnsafeArchive": ("StorageError", 400, "unsafe_archive", "INVALID_ARGUMENT"),
}

ALL_CLASSES = [getattr(errors, name) for name in TABLE]


def _every_error_class() -> set[type[MoorageError]]:
    found: set[type[MoorageError]] = {MoorageError}
    todo = [MoorageError]
    while todo:
        for sub in todo.pop().__subclasses__():
            if sub.__module__ == errors.__name__:
                found.add(sub)
                todo.append(sub)
    return found


@pytest.mark.parametrize("name", list(TABLE))
def test_each_class_has_its_status_code_and_grpc_status(name: str) -> None:
    parent, status, code, grpc_name = TABLE[name]
    cls = getattr(errors, name)
    assert cls.status == HTTPStatus(status)
    assert isinstance(cls.status, HTTPStatus)
    assert cls.code == code
    assert cls("boom").grpc_status == grpc_name
    assert grpc_status_for(cls.status) == grpc_name
    if parent is not None:
        assert cls.__bases__ == (getattr(errors, parent),)
    assert name in errors.__all__


def test_table_covers_every_class() -> None:
    assert {c.__name__ for c in _every_error_class()} == set(TABLE)


def test_docstring_tree_matches_the_classes() -> None:
    doc = errors.__doc__ or ""
    rows = re.findall(r"^\s*[│├└─ ]*([A-Z]\w+)\s+(\d{3})\s+(\w+)", doc, flags=re.MULTILINE)
    drawn = {name: (int(status), code) for name, status, code in rows}
    assert drawn == {name: (row[1], row[2]) for name, row in TABLE.items()}


def test_codes_are_unique_and_round_trip() -> None:
    codes = [cls.code for cls in ALL_CLASSES]
    assert len(set(codes)) == len(codes)
    for cls in ALL_CLASSES:
        assert error_for_code(cls.code) is cls
    assert error_for_code("no_such_code") is None


@pytest.mark.parametrize(
    ("status", "expected"),
    [
        (400, "InvalidInput"),
        (401, "Unauthenticated"),
        (403, "PermissionDenied"),
        (404, "ModelNotFound"),
        (413, "PayloadTooLarge"),
        (422, "InvalidInput"),  # FastAPI's request validation status: the caller's input is bad
        (429, "Overloaded"),
        (503, "ModelNotReady"),
        (504, "Timeout"),
        (500, "ServerError"),
        (409, "InvalidInput"),
        (418, "InvalidInput"),
        (501, "ServerError"),
        (502, "ServerError"),
        (599, "ServerError"),  # not an HTTPStatus member
        (200, "ServerError"),  # a success status is no error class of its own
    ],
)
def test_error_for_status(status: int, expected: str) -> None:
    assert error_for_status(status) is getattr(errors, expected)
    if status in HTTPStatus._value2member_map_:
        assert error_for_status(HTTPStatus(status)) is getattr(errors, expected)


def test_error_for_status_round_trips_the_status_of_each_class() -> None:
    # The class a client raises for a bare status carries that status back, except 422, which
    # clients read as "your input is wrong" (InvalidInput) rather than a resource rule.
    for cls in ALL_CLASSES:
        back = error_for_status(cls.status)
        if cls.status == HTTPStatus.UNPROCESSABLE_ENTITY:
            assert back is InvalidInput
        else:
            assert back.status == cls.status, cls
        assert issubclass(back, MoorageError)


def test_grpc_table_round_trips() -> None:
    # Every gRPC name the server can send maps back to an HTTP status of the same family.
    for status, grpc_name in HTTP_TO_GRPC.items():
        assert grpc_name in GRPC_STATUS_NAMES
        back = GRPC_STATUS_NAMES[grpc_name]
        assert back // 100 == status // 100, (status, grpc_name, back)
        assert grpc_status_for(back) == grpc_name
    for cls in ALL_CLASSES:
        assert cls("x").grpc_status in GRPC_STATUS_NAMES


def test_grpc_names_are_grpc_status_codes() -> None:
    grpc = pytest.importorskip("grpc")
    names = {code.name for code in grpc.StatusCode}
    assert set(HTTP_TO_GRPC.values()) <= names
    assert set(GRPC_STATUS_NAMES) <= names


@given(st.integers(min_value=100, max_value=599))
@settings(max_examples=200, deadline=None)
def test_grpc_status_for_any_http_status(status: int) -> None:
    if status not in HTTPStatus._value2member_map_:
        with pytest.raises(ValueError):
            grpc_status_for(status)
        return
    name = grpc_status_for(status)
    if status in HTTP_TO_GRPC:
        assert name == HTTP_TO_GRPC[HTTPStatus(status)]
    elif 400 <= status < 500:
        assert name == "INVALID_ARGUMENT"
    else:
        assert name == "UNKNOWN"
    assert issubclass(error_for_status(status), MoorageError)


def test_validation_error_string_format() -> None:
    err = ValidationError("cannot be greater than maxReplicas", field="spec.predictor.minReplicas")
    assert str(err) == "spec.predictor.minReplicas: cannot be greater than maxReplicas"
    assert err.message == str(err)
    assert err.field == "spec.predictor.minReplicas"
    assert err.reason == "cannot be greater than maxReplicas"
    assert err.details == {"field": "spec.predictor.minReplicas"}
    assert err.status == HTTPStatus.UNPROCESSABLE_ENTITY
    bare = ValidationError("no field here")
    assert str(bare) == "no field here"
    assert bare.field == ""


@given(field=st.text(min_size=1), message=st.text())
@settings(max_examples=50, deadline=None)
def test_validation_error_format_property(field: str, message: str) -> None:
    assert str(ValidationError(message, field=field)) == f"{field}: {message}"


def test_message_details_and_repr() -> None:
    err = errors.ModelNotFound("Model with name m does not exist.", model="m")
    assert str(err) == err.message == "Model with name m does not exist."
    assert err.details == {"model": "m"}
    assert repr(err) == "ModelNotFound('Model with name m does not exist.')"
    assert isinstance(errors.InvalidTensor("x"), InvalidInput)
    assert isinstance(errors.StorageNotFound("x"), errors.StorageError)


@pytest.mark.parametrize("cls", ALL_CLASSES, ids=lambda c: c.__name__)
def test_errors_pickle(cls: type[MoorageError]) -> None:
    # Errors cross process boundaries (worker pools); the type, message and details survive.
    err = cls("went wrong", field="a.b") if cls is ValidationError else cls("went wrong", k=1)
    back = pickle.loads(pickle.dumps(err))
    assert type(back) is cls
    assert str(back) == str(err)
    assert back.details == err.details
