"""``ServerSettings``: KServe's flags, environment variables, unknown flags kept."""

from __future__ import annotations

import pytest

from moorage.core.config.server import ServerSettings


def test_defaults_match_kserve(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("PREDICT_PROBA", raising=False)
    monkeypatch.delenv("KSERVE_LOGLEVEL", raising=False)
    s = ServerSettings.from_cli([])
    assert (s.http_port, s.grpc_port, s.workers, s.max_threads) == (8080, 8081, 1, 4)
    assert s.model_name == "model" and s.model_dir == "/mnt/models"
    assert s.enable_grpc and not s.enable_docs_url and s.configure_logging
    assert s.grpc_max_send_message_length == s.grpc_max_receive_message_length == 8388608
    assert s.predictor_protocol == "v1" and s.predictor_request_timeout_seconds == 600
    assert not s.predict_proba and s.log_level == "INFO"
    assert s.extra_args == []


def test_kserve_flags_and_unknown_ones() -> None:
    s = ServerSettings.from_cli(
        [
            "--model_name", "iris", "--model_dir", "/tmp/m", "--http_port", "9000",
            "--grpc_port=9001", "--workers", "2", "--enable_grpc", "false",
            "--enable_docs_url", "True", "--max_asyncio_workers", "3",
            "--predictor_host", "p:80", "--protocol", "v2", "--runtime_flag", "x",
        ]
    )  # fmt: skip
    assert (s.model_name, s.model_dir, s.http_port, s.grpc_port) == ("iris", "/tmp/m", 9000, 9001)
    assert s.workers == 2 and s.enable_grpc is False and s.enable_docs_url is True
    assert s.asyncio_workers == 3
    assert s.effective_predictor_protocol == "v2"
    assert s.extra_args == ["--runtime_flag", "x"]


def test_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MOORAGE_HTTP_PORT", "7000")
    monkeypatch.setenv("MOORAGE_ENABLE_GRPC", "0")
    monkeypatch.setenv("PREDICT_PROBA", "true")
    monkeypatch.setenv("KSERVE_LOGLEVEL", "debug")
    s = ServerSettings.from_cli(["--grpc_port", "7001"])
    assert (s.http_port, s.grpc_port, s.enable_grpc) == (7000, 7001, False)
    assert s.predict_proba and s.log_level == "DEBUG"
    assert ServerSettings.from_cli(["--http_port", "1"]).http_port == 1  # CLI beats env


def test_bad_values_are_refused() -> None:
    with pytest.raises(ValueError, match="sync_mode"):
        ServerSettings.from_cli(["--sync_mode", "sometimes"])
    with pytest.raises(ValueError, match="http_port"):
        ServerSettings.from_cli(["--http_port", "70000"])


def test_cli_reports_bad_values(capsys: pytest.CaptureFixture[str]) -> None:
    from moorage.server.__main__ import main

    with pytest.raises(SystemExit) as info:
        main(["--http_port", "x"])
    assert info.value.code == 2
    assert "http_port" in capsys.readouterr().err


def test_precedence_cli_keyword_env_kserve(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("KSERVE_LOGLEVEL", "warning")
    assert ServerSettings(_cli_parse_args=False).log_level == "WARNING"  # KServe var > default
    monkeypatch.setenv("moorage_log_level", "error")  # any case, as before
    assert ServerSettings().log_level == "ERROR"  # MOORAGE_* > KServe var
    monkeypatch.setenv("MOORAGE_HTTP_PORT", "7000")
    assert ServerSettings(http_port=7001).http_port == 7001  # keyword > MOORAGE_*
    s = ServerSettings(_cli_parse_args=["--http_port", "7002"], http_port=7001)
    assert s.http_port == 7002 and s.extra_args == []  # CLI > keyword
    assert ServerSettings(_cli_parse_args=False).extra_args == []


def test_bools_nulls_lists_and_unknown_flags(monkeypatch: pytest.MonkeyPatch) -> None:
    for word, value in [("true", True), ("1", True), ("Yes", True), ("off", False), ("F", False)]:
        assert ServerSettings.from_cli(["--enable_grpc", word]).enable_grpc is value
    with pytest.raises(ValueError, match="enable_grpc"):
        ServerSettings.from_cli(["--enable_grpc", "maybe"])
    s = ServerSettings.from_cli(["--max_asyncio_workers", "null", "--model_format=null"])
    assert s.max_asyncio_workers is None and s.model_format is None
    s = ServerSettings.from_cli(
        ["--logger_metadata_headers", "a, b", "--x=1", "--logger_metadata_headers", '["c"]', "y"]
    )
    assert s.logger_metadata_headers == ["a", "b", "c"]
    assert s.extra_args == ["--x=1", "y"]
    monkeypatch.setenv("MOORAGE_LOGGER_METADATA_HEADERS", '["x-a", "x-b"]')
    assert ServerSettings().logger_metadata_headers == ["x-a", "x-b"]
    monkeypatch.setenv("MOORAGE_LOGGER_METADATA_HEADERS", "x-a,x-b")
    assert ServerSettings().logger_metadata_headers == ["x-a", "x-b"]
    # No abbreviations: a runtime's flag that begins like one of ours stays the runtime's.
    assert ServerSettings.from_cli(["--model", "m"]).extra_args == ["--model", "m"]


def test_model_copy_and_fields() -> None:
    s = ServerSettings.from_cli(["--protocol", "v2"])
    t = s.model_copy(update={"model_dir": "/m"})
    assert t.model_dir == "/m" and t.effective_predictor_protocol == "v2"
    assert "http_port" in ServerSettings.model_fields


def test_kserve_parser_and_help(capsys: pytest.CaptureFixture[str]) -> None:
    from moorage.server import model_server

    args, rest = model_server.build_parser().parse_known_args(["--enable_grpc", "no", "--z"])
    assert args.enable_grpc is False and args.http_port == 8080 and rest == ["--z"]
    assert args.max_asyncio_workers is None and args.grpc_server == "native"
    with pytest.raises(SystemExit) as info:
        ServerSettings.from_cli(["--help"])
    assert info.value.code == 0
    out = capsys.readouterr().out
    assert out.startswith("usage: moorage-server")
    assert "--grpc_server {native,grpcio}" in out and "Serve gRPC as well as REST." in out
    assert "--logger_url {str,null}" in out and "(default: 8080)" in out


def test_cli_reports_a_flag_without_its_value(capsys: pytest.CaptureFixture[str]) -> None:
    from moorage.server.__main__ import main

    with pytest.raises(SystemExit) as info:
        main(["--sync_mode", "sometimes", "--http_port", "1"])
    assert info.value.code == 2
    err = capsys.readouterr().err
    assert err.startswith("moorage-server: invalid arguments:")
    assert "'auto', 'thread' or 'inline'" in err
    with pytest.raises(SystemExit) as info:
        main(["--http_port"])
    assert info.value.code == 2
    assert "argument --http_port: expected one argument" in capsys.readouterr().err


def test_every_bad_value_is_named_by_its_source(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MOORAGE_WORKERS", "0")
    with pytest.raises(ValueError) as info:
        ServerSettings(_cli_parse_args=["--grpc_port", "-1"], max_batchsize="many", host=3)
    lines = str(info.value).splitlines()
    assert lines == [
        "keyword host: expected a string, got int",
        "--grpc_port: must be >= 0, got '-1'",
        "MOORAGE_WORKERS: must be >= 1, got '0'",
        "keyword max_batchsize: expected an integer, got 'many'",
    ]  # in the order the fields are declared
    monkeypatch.delenv("MOORAGE_WORKERS")
    with pytest.raises(ValueError, match="--batcher_timeout: must be > 0"):
        ServerSettings.from_cli(["--batcher_timeout", "0"])
    with pytest.raises(ValueError, match="--logger_metadata_headers: expected a list"):
        ServerSettings.from_cli(["--logger_metadata_headers", "[1, 2]"])
    with pytest.raises(ValueError, match="keyword model_name: may not be null"):
        ServerSettings(model_name=None)


def test_values_are_converted_and_instances_independent() -> None:
    s = ServerSettings(_cli_parse_args=False, http_port=" 9000", max_latency="2.5", nthread=4.0)
    assert (s.http_port, s.max_latency, s.nthread) == (9000, 2.5, 4)
    assert type(s.http_port) is int and type(s.max_latency) is float
    assert ServerSettings(_cli_parse_args=False, unknown_keyword=1) == ServerSettings(
        _cli_parse_args=False
    )
    s.logger_metadata_headers.append("x-a")
    assert ServerSettings(_cli_parse_args=False).logger_metadata_headers == []
    t = s.model_copy(update={"http_port": 1})
    assert t.http_port == 1 and s.http_port == 9000 and "http_port" in t.model_fields_set
    assert t != s and "http_port=1" in repr(t)
    assert t.model_dump()["max_latency"] == 2.5
