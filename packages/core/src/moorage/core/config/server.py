"""``ServerSettings``: every knob of ``moorage-server``, from the CLI and the environment.

Flag names are KServe's model-server flags (``--model_name``, ``--http_port`` 8080,
``--grpc_port`` 8081, ``--workers``, ``--max_threads``, ``--enable_grpc true``, ...) so that a
KServe ServingRuntime's ``args`` work unchanged. Every field can also come from the environment
as ``MOORAGE_<FIELD>`` (``MOORAGE_HTTP_PORT=9000``). Unknown flags are kept, not rejected, in
:attr:`ServerSettings.extra_args` (KServe's ``parse_known_args``) so that a runtime can read flags
of its own. Two KServe environment variables are honoured as defaults: ``KSERVE_LOGLEVEL`` and
the sklearn runtime's ``PREDICT_PROBA``.

Precedence: CLI flag > keyword argument > ``MOORAGE_*`` variable > KServe variable > default.

The class is plain Python, not a pydantic model: each field is declared once (annotation,
default, description, bounds) and that one declaration drives the argparse parser
(:meth:`ServerSettings.argument_parser`, which also gives KServe's ``model_server.parser``), the
``MOORAGE_*`` reader, the type conversion and the checks, so ``moorage-server`` starts without
importing pydantic (~75 ms of its cold start). A value the server cannot take raises
:class:`ArgumentsError` (a ``ValueError``) naming the flag, variable or keyword it came from, and
every such value at once.
"""

from __future__ import annotations

import argparse
import copy
import json
import os
import sys
import types
import typing
from collections.abc import Callable, Sequence
from typing import Any, ClassVar, Literal, NoReturn

from moorage.core.config._values import (
    BOOL_WORDS,
    SettingsError,
    check_bounds,
    read_bool,
    read_number,
    read_text,
)

__all__ = [
    "AGENT_BATCHER_FLAGS",
    "AGENT_LOGGER_FLAGS",
    "DEFAULT_MAX_GRPC_MESSAGE_LENGTH",
    "ArgumentsError",
    "ServerSettings",
    "Setting",
]

#: KServe's MAX_GRPC_MESSAGE_LENGTH (8 MiB).
DEFAULT_MAX_GRPC_MESSAGE_LENGTH = 8 * 1024 * 1024

_TRUE = {word for word, value in BOOL_WORDS.items() if value}

PredictorProtocol = Literal["v1", "v2", "grpc-v2"]


def _env_flag(name: str, default: bool = False) -> bool:
    value = os.environ.get(name)
    return default if value is None else value.strip().lower() in _TRUE


def _kserve_log_level() -> str:
    return os.environ.get("KSERVE_LOGLEVEL", "INFO").upper()


class ArgumentsError(SettingsError):
    """Settings the server cannot take: a flag without its value, a value of the wrong type or out
    of range (the message names the flag, ``MOORAGE_*`` variable or keyword, one line each)."""


_UNSET: Any = object()


class Setting:
    """One field of :class:`ServerSettings`: its annotation, default (or default factory),
    description and bounds (``ge``/``gt``/``le``), and the conversion they imply."""

    __slots__ = (
        "annotation",
        "choices",
        "default",
        "default_factory",
        "description",
        "ge",
        "gt",
        "kind",
        "le",
        "name",
        "optional",
    )

    def __init__(
        self,
        default: Any = _UNSET,
        *,
        default_factory: Callable[[], Any] | None = None,
        description: str | None = None,
        ge: float | None = None,
        gt: float | None = None,
        le: float | None = None,
    ) -> None:
        self.default = None if default is _UNSET else default
        self.default_factory = default_factory
        self.description = description
        self.ge, self.gt, self.le = ge, gt, le
        self.name = ""
        self.annotation: Any = None
        self.kind: Any = None
        self.optional = False
        self.choices: tuple[Any, ...] = ()

    def _bind(self, name: str, annotation: Any) -> None:
        self.name, self.annotation = name, annotation
        kind, self.optional = _unwrap(annotation)
        if typing.get_origin(kind) is Literal:
            self.choices = typing.get_args(kind)
            kind = Literal
        elif typing.get_origin(kind) is list:
            kind = list
        if kind not in (str, int, float, bool, list, Literal):
            raise TypeError(f"ServerSettings.{name}: no reader for {annotation!r}")
        self.kind = kind
        if self.default_factory is None:
            self.default = self.convert(self.default, f"default of {name}")

    def get_default(self) -> Any:
        """The default: the factory's value (read when asked), else the declared one."""
        if self.default_factory is not None:
            return self.default_factory()
        return self.default

    def convert(self, value: Any, where: str) -> Any:
        """``value`` as this field's type, checked; :class:`ArgumentsError` naming ``where``."""
        if value is None:
            if self.optional:
                return None
            raise ArgumentsError(f"{where}: may not be null")
        try:
            return self._convert(value, where)
        except SettingsError as exc:
            if isinstance(exc, ArgumentsError):
                raise
            raise ArgumentsError(str(exc)) from None

    def _convert(self, value: Any, where: str) -> Any:
        kind = self.kind
        if kind is bool:
            return read_bool(value, where)
        if kind is list:
            return _to_list(value, where)
        if kind is Literal:
            if value not in self.choices:
                raise ArgumentsError(
                    f"{where}: expected {_alternatives(self.choices)}, got {value!r}"
                )
            return value
        if kind is str:
            return read_text(value, where)
        number = read_number(kind, value, where)
        check_bounds(number, value, where, ge=self.ge, gt=self.gt, le=self.le)
        return number


def _setting(
    default: Any = _UNSET,
    *,
    default_factory: Callable[[], Any] | None = None,
    description: str | None = None,
    ge: float | None = None,
    gt: float | None = None,
    le: float | None = None,
) -> Any:
    """A field declaration in :class:`ServerSettings`'s body (typed ``Any`` so that the
    annotation, not this, is the attribute's type)."""
    return Setting(
        default, default_factory=default_factory, description=description, ge=ge, gt=gt, le=le
    )


def _alternatives(choices: Sequence[Any]) -> str:
    shown = [repr(c) for c in choices]
    return shown[0] if len(shown) == 1 else f"{', '.join(shown[:-1])} or {shown[-1]}"


def _to_list(value: Any, where: str) -> list[str]:
    if isinstance(value, str):
        value = _list_value(value)
    if isinstance(value, (list, tuple)) and all(isinstance(item, str) for item in value):
        return list(value)
    raise ArgumentsError(f"{where}: expected a list of strings, got {value!r}")


class ServerSettings:
    """Settings of one model-server process (and of the workers it forks).

    ``ServerSettings(**values)`` reads the ``MOORAGE_*`` environment under the keyword
    arguments; ``ServerSettings(_cli_parse_args=argv, **values)`` parses ``argv`` (``True``:
    ``sys.argv[1:]``) over both, as :meth:`from_cli` does. Unknown keywords are ignored.
    """

    #: Field name -> its :class:`Setting`, in declaration order.
    model_fields: ClassVar[dict[str, Setting]]
    #: The fields given (keyword, ``MOORAGE_*`` variable or flag) rather than defaulted.
    model_fields_set: set[str]

    # ---- the model
    model_name: str = _setting("model", description="Name the model is served under.")
    model_dir: str = _setting(
        "/mnt/models",
        description="Directory holding the model files, or a storage URI (s3://, gs://, ...) "
        "to download first.",
    )
    model_format: str | None = _setting(
        None,
        description="Runtime to serve model_dir with (sklearn, xgboost, lightgbm or a plugin's "
        "name); detected from the files when unset.",
    )
    model_config_file: str | None = _setting(
        None,
        description="A KServe model-config file to watch (models.json of a multi-model "
        "InferenceService, mounted from its modelconfig ConfigMap at /mnt/configs): each model "
        "it lists is downloaded into model_dir/<name> and loaded; one it drops is unloaded.",
    )
    model_config_poll_seconds: float = _setting(
        1.0, gt=0, description="How often model_config_file is checked for a change."
    )
    model_config_concurrency: int = _setting(
        4, ge=1, description="Models of model_config_file downloaded and loaded at once."
    )
    predict_proba: bool = _setting(
        default_factory=lambda: _env_flag("PREDICT_PROBA"),
        description="sklearn: answer with predict_proba instead of predict (KServe's "
        "PREDICT_PROBA variable).",
    )
    nthread: int = _setting(1, ge=1, description="xgboost/lightgbm: threads per prediction.")

    # ---- listeners
    host: str = _setting("0.0.0.0", description="Address to listen on.")
    http_port: int = _setting(8080, ge=0, le=65535, description="REST port.")
    grpc_port: int = _setting(8081, ge=0, le=65535, description="gRPC port.")
    enable_grpc: bool = _setting(True, description="Serve gRPC as well as REST.")
    enable_docs_url: bool = _setting(False, description="Serve OpenAPI docs at /docs.")
    workers: int = _setting(1, ge=1, description="Server processes sharing the ports.")
    max_threads: int = _setting(4, ge=1, description="Threads for the gRPC server.")
    max_asyncio_workers: int | None = _setting(
        None, ge=1, description="Threads for sync model code; default min(32, cpus + 4)."
    )
    grpc_server: Literal["native", "grpcio"] = _setting(
        "native",
        description="gRPC implementation. native: moorage's HTTP/2 server on the event loop "
        "that serves REST, no thread per call (unary calls, which is every RPC of the "
        "inference service; requests may be gzip/deflate-compressed, responses are not). "
        "grpcio: grpcio's server, threaded when every model is sync, grpc.aio otherwise. "
        "native falls back to grpcio when ModelServer.grpc_interceptors holds interceptors.",
    )
    grpc_max_send_message_length: int = _setting(DEFAULT_MAX_GRPC_MESSAGE_LENGTH, ge=1)
    grpc_max_receive_message_length: int = _setting(
        DEFAULT_MAX_GRPC_MESSAGE_LENGTH,
        ge=1,
        description="Largest request message (grpcio's grpc.max_receive_message_length); a "
        "request body going on past the message its prefix declares is refused as well "
        "(RESOURCE_EXHAUSTED).",
    )

    # ---- budgets: what one client can make the server hold or do (both gRPC servers where
    # grpcio has the knob; see packages/server/README.md "Limits")
    grpc_max_concurrent_streams: int | None = _setting(
        None,
        ge=1,
        description="Calls in progress per gRPC connection (SETTINGS_MAX_CONCURRENT_STREAMS; "
        "grpcio's grpc.max_concurrent_streams). Unset: 100 on the native server, 1000 on "
        "grpcio (which sends its SETTINGS late: a client opening more streams than the limit "
        "on a new connection sees REFUSED_STREAM; with no limit, grpcio runs every call of a "
        "rapid reset).",
    )
    grpc_max_header_list_size: int = _setting(
        16384,
        ge=1024,
        description="Bytes of a call's request headers (SETTINGS_MAX_HEADER_LIST_SIZE; grpcio: "
        "grpc.max_metadata_size). Larger lists are RESOURCE_EXHAUSTED; a header block over "
        "4 times this ends the connection (native).",
    )
    grpc_max_connections: int = _setting(
        10000,
        ge=1,
        description="gRPC connections open at once; more are closed when accepted "
        "(grpcio: grpc.max_allowed_incoming_connections).",
    )
    grpc_max_pings_per_second: int = _setting(
        10,
        ge=0,
        description="native: PINGs a connection may send per second while no response is sent; "
        "past it GOAWAY ENHANCE_YOUR_CALM (too_many_pings). grpcio applies its own ping policy.",
    )
    grpc_max_settings_per_second: int = _setting(
        10, ge=1, description="native: SETTINGS frames per connection per second (GOAWAY past it)."
    )
    grpc_max_resets_per_second: int = _setting(
        200,
        ge=1,
        description="native: RST_STREAMs received (and streams refused) per connection per "
        "second, against rapid reset (CVE-2023-44487); GOAWAY ENHANCE_YOUR_CALM past it.",
    )
    grpc_max_empty_frames_per_second: int = _setting(
        100,
        ge=0,
        description="native: frames that carry nothing (empty DATA/HEADERS/CONTINUATION, "
        "PRIORITY, unknown types, stray ACKs) per connection per second.",
    )
    grpc_max_queued_output_bytes: int = _setting(
        1024 * 1024,
        ge=16384,
        description="native: output queued for a client that does not read; past it the "
        "server stops reading that connection until the client reads.",
    )
    grpc_max_buffered_request_bytes: int = _setting(
        256 * 1024 * 1024,
        ge=1024 * 1024,
        description="native: request bytes one connection may make the server hold at once "
        "(bodies arriving, and those of calls running); the call whose data goes past it is "
        "refused RESOURCE_EXHAUSTED.",
    )
    grpc_handshake_timeout_seconds: float = _setting(
        10.0,
        gt=0,
        description="Seconds for a connection's HTTP/2 preface and first SETTINGS "
        "(grpcio: grpc.server_handshake_timeout_ms).",
    )
    grpc_header_timeout_seconds: float = _setting(
        10.0,
        gt=0,
        description="native: seconds a header block (HEADERS + CONTINUATION) may take.",
    )
    grpc_max_connection_idle_seconds: float = _setting(
        300.0,
        gt=0,
        description="Seconds a gRPC connection may stay without a call in progress before "
        "GOAWAY (grpcio: grpc.max_connection_idle_ms).",
    )
    http_max_connections: int = _setting(
        10000, ge=1, description="REST connections open at once; more are closed when accepted."
    )
    http_header_timeout_seconds: float = _setting(
        10.0,
        gt=0,
        description="Seconds a REST client may take to send a request's headers (from the "
        "connection's start or the request's first byte); then 408 and close.",
    )
    http_body_timeout_seconds: float = _setting(
        60.0,
        gt=0,
        description="Seconds a REST client may take to send a request's body once its headers "
        "are in, however slowly it trickles; then 408 and close.",
    )
    http_max_header_bytes: int = _setting(
        64 * 1024,
        ge=1024,
        description="Bytes a REST request line and headers may take; past it 431 and close.",
    )
    http_keep_alive_timeout_seconds: float = _setting(
        5.0,
        gt=0,
        description="Seconds an idle keep-alive REST connection is kept (uvicorn's "
        "timeout_keep_alive).",
    )

    # ---- production behaviour (moorage's own)
    max_request_body_bytes: int = _setting(
        128 * 1024 * 1024, ge=1, description="Larger REST bodies are refused with 413."
    )
    max_inflight_requests: int = _setting(
        1024,
        ge=1,
        description="Per model: requests admitted at once; more are refused with 503 / "
        "UNAVAILABLE instead of queueing without bound.",
    )
    graceful_shutdown_seconds: float = _setting(
        30.0, ge=0, description="On SIGTERM, how long in-flight requests may take to finish."
    )

    # ---- batcher (KServe's `batcher` spec, in-process; the agent's flags are accepted too)
    enable_batcher: bool = _setting(
        False,
        description="Batch concurrent predict requests of a model into one predict call "
        "(agent --enable-batcher; a bare --enable_batcher means true).",
    )
    max_batchsize: int = _setting(
        32, ge=1, description="Rows in one batch at most (agent --max-batchsize)."
    )
    max_latency: float = _setting(
        5000,
        ge=0,
        description="Milliseconds a request waits for its batch to start at most "
        "(agent --max-latency).",
    )
    batcher_timeout: float | None = _setting(
        None,
        gt=0,
        description="Seconds a request may wait for its batch's result (queue and predict); "
        "then 504 / DEADLINE_EXCEEDED. Unset: no deadline.",
    )
    sync_mode: Literal["auto", "thread", "inline"] = _setting(
        "auto",
        description="How sync model methods run: in a thread, inline on the event loop, or "
        "auto (inline while they measure cheap, in a thread once they do not).",
    )

    # ---- logging
    configure_logging: bool = _setting(True, description="Configure logging at startup.")
    log_config_file: str | None = _setting(None, description="uvicorn log config (yaml/json).")
    access_log_format: str | None = _setting(None, description="Access log format.")
    enable_latency_logging: bool = _setting(True, description="Log per-stage latencies.")
    log_level: str = _setting(default_factory=_kserve_log_level, description="Log level.")
    log_format: Literal["text", "json"] = _setting(
        "text", description="With configure_logging: plain text lines or one JSON object a line."
    )
    enable_access_log: bool = _setting(
        False,
        description="One access log line per REST request / gRPC call (implied by "
        "access_log_format).",
    )

    # ---- metrics
    enable_metrics: bool = _setting(True, description="Record Prometheus metrics, serve /metrics.")
    prometheus_multiproc_dir: str | None = _setting(
        default_factory=lambda: os.environ.get("PROMETHEUS_MULTIPROC_DIR") or None,
        description="prometheus-client multiprocess directory (from PROMETHEUS_MULTIPROC_DIR): "
        "with several workers, /metrics reports the sum over all of them.",
    )

    # ---- inference logger (KServe's `logger` spec; the agent's flags are accepted too)
    logger_url: str | None = _setting(
        None, description="Sink for CloudEvents copies of requests/responses (agent --log-url)."
    )
    logger_mode: Literal["all", "request", "response"] = _setting(
        "all", description="What to log (agent --log-mode)."
    )
    logger_source_uri: str | None = _setting(
        None,
        description="CloudEvent source (agent --source-uri); default http://localhost:<port>/.",
    )
    logger_inference_service: str = _setting("", description="ce-inferenceservicename.")
    logger_namespace: str = _setting("", description="ce-namespace.")
    logger_endpoint: str = _setting("", description="ce-endpoint (default or canary).")
    logger_component: str = _setting("", description="ce-component (predictor, transformer, ...).")
    logger_metadata_headers: list[str] = _setting(
        default_factory=list,
        description="Request headers copied into the ce-metadata extension (comma-separated).",
    )
    logger_ca_cert_file: str = _setting(
        "service-ca.crt",
        description="CA bundle for an https sink; a relative name is looked up in "
        "/etc/tls/logger (where KServe mounts the logger caBundle ConfigMap).",
    )
    logger_tls_skip_verify: bool = _setting(
        False, description="Do not verify the sink's certificate."
    )
    logger_queue_size: int = _setting(
        1000, ge=1, description="Events waiting to be sent; more are dropped (and counted)."
    )
    logger_workers: int = _setting(5, ge=1, description="Concurrent deliveries to the sink.")
    logger_retries: int = _setting(2, ge=0, description="Retries of a failed delivery.")
    logger_timeout_seconds: float = _setting(5.0, gt=0, description="Timeout of one delivery.")

    # ---- transformer mode (forwarding to a predictor)
    predictor_host: str | None = _setting(None, description="Predictor to forward predict to.")
    protocol: PredictorProtocol | None = _setting(
        None, description="Deprecated alias of predictor_protocol."
    )
    predictor_protocol: PredictorProtocol = _setting("v1")
    predictor_use_ssl: bool = _setting(False)
    predictor_request_timeout_seconds: int = _setting(600, ge=1)

    # ---- flags this class does not know, for runtimes to parse
    extra_args: list[str] = _setting(
        default_factory=list,
        description="Flags the server does not know, in order, for runtimes to parse.",
    )

    def __init__(self, *, _cli_parse_args: bool | Sequence[str] | None = None, **values: Any):
        fields = self.model_fields
        given = _environment()
        for name, value in values.items():
            if name in fields:
                given[name] = (value, f"keyword {name}")
        argv = sys.argv[1:] if _cli_parse_args is True else _cli_parse_args
        if argv is not None and argv is not False:
            for name, value in _parse_args(argv).items():
                given[name] = (value, f"--{name}")
        problems = []
        for name, setting in fields.items():
            if name in given:
                value, where = given[name]
            elif setting.default_factory is None:
                # checked when declared; a list is copied, not shared between instances
                self.__dict__[name] = copy.copy(setting.default)
                continue
            else:
                value, where = setting.default_factory(), f"default of {name}"
            try:
                self.__dict__[name] = setting.convert(value, where)
            except ArgumentsError as exc:
                problems.append(str(exc))
        if problems:
            raise ArgumentsError("\n".join(problems))
        self.log_level = self.log_level.upper()
        self.model_fields_set = set(given)

    def model_copy(
        self, *, update: typing.Mapping[str, Any] | None = None, deep: bool = False
    ) -> ServerSettings:
        """A copy with ``update``'s values set as given (not converted), as pydantic's did."""
        result = object.__new__(type(self))
        result.__dict__.update(copy.deepcopy(self.__dict__) if deep else self.__dict__)
        if update:
            result.__dict__.update(update)
            result.model_fields_set = self.model_fields_set | set(update)
        else:
            result.model_fields_set = set(self.model_fields_set)
        return result

    def model_dump(self) -> dict[str, Any]:
        """Field name -> value (lists copied)."""
        return {name: copy.copy(getattr(self, name)) for name in self.model_fields}

    def __eq__(self, other: object) -> bool:
        if type(other) is not type(self):
            return NotImplemented
        return self.model_dump() == typing.cast(ServerSettings, other).model_dump()

    __hash__ = None  # type: ignore[assignment]

    def __repr__(self) -> str:
        shown = ", ".join(f"{name}={getattr(self, name)!r}" for name in self.model_fields)
        return f"{type(self).__name__}({shown})"

    @property
    def effective_predictor_protocol(self) -> PredictorProtocol:
        """``predictor_protocol``, or the deprecated ``protocol`` when only that was given."""
        if self.protocol is not None and "predictor_protocol" not in self.model_fields_set:
            return self.protocol
        return self.predictor_protocol

    @property
    def asyncio_workers(self) -> int:
        """Threads for sync model code (KServe's default for ``--max_asyncio_workers``)."""
        if self.max_asyncio_workers is not None:
            return self.max_asyncio_workers
        return min(32, (os.cpu_count() or 1) + 4)

    @classmethod
    def from_cli(cls, argv: Sequence[str] | None = None) -> ServerSettings:
        """Parse ``argv`` (default ``sys.argv[1:]``) over the environment."""
        args = _agent_flags(sys.argv[1:] if argv is None else argv)
        return cls(_cli_parse_args=args)

    @classmethod
    def argument_parser(cls, *, kserve: bool = False) -> argparse.ArgumentParser:
        """A parser with a ``--<field>`` flag per field, the field's description as its help.

        Default (``moorage-server``'s own): values stay strings for the model to validate, a
        flag not given is absent from the namespace, ``--help`` prints every flag, and a flag
        it cannot take raises :class:`ArgumentsError`. ``kserve=True``: KServe's
        ``model_server.parser`` for runtimes to extend (``add_help=False``, values converted,
        every flag present with its default, list fields left out).
        """
        if kserve:
            result = argparse.ArgumentParser(add_help=False)
        else:
            result = _Parser(
                prog="moorage-server",
                description="Serve the model in --model_dir over KServe's v1/v2 REST and v2 "
                "gRPC protocols. Every flag can be set as MOORAGE_<FLAG> in the environment "
                "too (MOORAGE_HTTP_PORT=9000); unknown flags are left for the runtime.",
                allow_abbrev=False,
            )
        for name, field in cls.model_fields.items():
            if name == "extra_args":
                continue
            annotation, optional = _unwrap(field.annotation)
            listed = typing.get_origin(annotation) is list
            description = (field.description or "").replace("%", "%%")
            if kserve:
                if not listed:
                    result.add_argument(
                        f"--{name}",
                        type=_converter(annotation),
                        default=field.get_default(),
                        help=field.description,
                    )
                continue
            shown = field.get_default()
            shown = "null" if shown is None else str(shown).replace("%", "%%")
            result.add_argument(
                f"--{name}",
                action="append" if listed else "store",
                default=argparse.SUPPRESS,
                metavar=_metavar(annotation, optional),
                help=f"{description} (default: {shown})".lstrip(),
            )
        return result


class _Parser(argparse.ArgumentParser):
    """``moorage-server``'s parser: an error is an exception, for the caller to report."""

    def error(self, message: str) -> NoReturn:
        raise ArgumentsError(message)


def _unwrap(annotation: Any) -> tuple[Any, bool]:
    """``X | None`` -> ``(X, True)``; anything else -> ``(annotation, False)``."""
    if typing.get_origin(annotation) in (typing.Union, types.UnionType):
        args = [a for a in typing.get_args(annotation) if a is not type(None)]
        if len(args) == 1:
            return args[0], True
    return annotation, False


def _metavar(annotation: Any, optional: bool) -> str:
    if typing.get_origin(annotation) is Literal:
        text = "{" + ",".join(str(a) for a in typing.get_args(annotation)) + "}"
    elif typing.get_origin(annotation) is list:
        text = "list[str]"
    else:
        text = getattr(annotation, "__name__", str(annotation))
    return f"{{{text},null}}" if optional else text


def _strtobool(value: str) -> bool:
    return value.strip().lower() in _TRUE


def _converter(annotation: Any) -> Callable[[str], Any]:
    if annotation is bool:
        return _strtobool
    if annotation in (int, float):
        return typing.cast(Callable[[str], Any], annotation)
    return str


def _list_value(value: str) -> Any:
    """A list flag or variable: a JSON array, or comma-separated items."""
    if value.lstrip().startswith("["):
        try:
            return json.loads(value)
        except ValueError:
            return value  # refused by the field's conversion, naming it
    return [item.strip() for item in value.split(",") if item.strip()]


def _environment() -> dict[str, tuple[Any, str]]:
    """``MOORAGE_<FIELD>`` variables (any case) -> (value as a string, the variable's name)."""
    fields = ServerSettings.model_fields
    values: dict[str, tuple[Any, str]] = {}
    for key, value in os.environ.items():
        if key[:8].upper() == "MOORAGE_":
            name = key[8:].lower()
            if name in fields and name != "extra_args":
                values[name] = (value, key)
    return values


def _parse_args(argv: Sequence[str]) -> dict[str, Any]:
    """Known flags -> field values (strings; ``null`` is None for an optional field), unknown
    ones, in order, -> ``extra_args``."""
    namespace, unknown = ServerSettings.argument_parser().parse_known_args(list(argv))
    fields = ServerSettings.model_fields
    values: dict[str, Any] = {}
    for name, value in vars(namespace).items():
        if isinstance(value, list):
            items: list[Any] = []
            for one in value:
                parsed = _list_value(one)
                if not isinstance(parsed, list):
                    items = parsed
                    break
                items.extend(parsed)
            values[name] = items
        elif fields[name].optional and value == "null":
            values[name] = None
        else:
            values[name] = value
    values["extra_args"] = unknown
    return values


#: The KServe agent's logger flags (``--log-url`` ...) -> ours, so the agent's arguments work.
AGENT_LOGGER_FLAGS = {
    "--log-url": "--logger_url",
    "--log-mode": "--logger_mode",
    "--source-uri": "--logger_source_uri",
    "--inference-service": "--logger_inference_service",
    "--namespace": "--logger_namespace",
    "--endpoint": "--logger_endpoint",
    "--component": "--logger_component",
    "--metadata-headers": "--logger_metadata_headers",
    "--logger-ca-cert-file": "--logger_ca_cert_file",
    "--logger-tls-skip-verify": "--logger_tls_skip_verify",
}


#: The KServe agent's batcher flags -> ours.
AGENT_BATCHER_FLAGS = {
    "--enable-batcher": "--enable_batcher",
    "--max-batchsize": "--max_batchsize",
    "--max-latency": "--max_latency",
}

#: Boolean flags that may be given bare (``--enable_batcher``), as the agent's Go flags are.
_BARE_FLAGS = {"--enable_batcher"}


def _agent_flags(argv: Sequence[str]) -> list[str]:
    out = []
    for i, arg in enumerate(argv):
        name, sep, value = arg.partition("=")
        flag = AGENT_LOGGER_FLAGS.get(name) or AGENT_BATCHER_FLAGS.get(name)
        arg = f"{flag}{sep}{value}" if flag is not None else arg
        bare = (flag or name) in _BARE_FLAGS and not sep
        if bare and (i + 1 >= len(argv) or argv[i + 1].strip().lower() not in BOOL_WORDS):
            arg += "=true"
        out.append(arg)
    return out


def _declare(cls: type[ServerSettings]) -> None:
    """Bind each :class:`Setting` of ``cls``'s body to its name and annotation, collect them in
    ``cls.model_fields`` and take them off the class (an instance holds the values)."""
    hints = typing.get_type_hints(cls)
    fields: dict[str, Setting] = {}
    for name, value in list(vars(cls).items()):
        if isinstance(value, Setting):
            value._bind(name, hints[name])
            fields[name] = value
            delattr(cls, name)
    cls.model_fields = fields


_declare(ServerSettings)
