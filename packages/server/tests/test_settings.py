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
