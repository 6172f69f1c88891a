"""StorageSettings reads the storage initializer's environment as KServe names it."""

from __future__ import annotations

import pytest

from moorage.core.config.storage import _FIELDS, SecretStr, SettingsError, StorageSettings


def test_kserve_names_prefixed_knobs_json_and_host_headers() -> None:
    settings = StorageSettings.from_environ(
        {
            "AWS_ACCESS_KEY_ID": "id",
            "AWS_SECRET_ACCESS_KEY": "s3cr3t-value",
            "awsAnonymousCredential": "true",  # KServe's spelling, matched case-insensitively
            "S3_ENDPOINT": "s3.local:8333",
            "S3_USE_HTTPS": "0",
            "MOORAGE_STORAGE_CONCURRENCY": "4",
            "moorage_storage_verify_hashes": "false",
            "MOORAGE_STORAGE_AZURE_BLOB_HOSTS": '["127.0.0.1:10000"]',
            "MOORAGE_STORAGE_PVC_CLAIM_ROOTS": '{"claim": "/data"}',
            "models.example.com-headers": '{"Authorization": "Bearer t"}',
        }
    )
    assert settings.aws_access_key_id is not None
    assert settings.aws_access_key_id.get_secret_value() == "id"
    assert "s3cr3t-value" not in repr(settings)
    assert settings.aws_anonymous_credential is True
    assert settings.s3_endpoint_url == "http://s3.local:8333"
    assert settings.concurrency == 4
    assert settings.verify_hashes is False
    assert settings.azure_blob_hosts == ["127.0.0.1:10000"]
    assert settings.pvc_claim_roots == {"claim": "/data"}
    assert settings.headers_for("models.example.com") == {"Authorization": "Bearer t"}


def test_first_alias_wins_and_keywords_win_over_the_environment() -> None:
    settings = StorageSettings.from_environ(
        {
            "AWS_DEFAULT_REGION": "eu-west-1",
            "AWS_REGION": "us-east-2",
            "MOORAGE_STORAGE_RETRIES": "9",
        },
        retries=1,
    )
    assert settings.aws_default_region == "eu-west-1"
    assert settings.retries == 1


def test_storage_spec_overrides_plain_variables() -> None:
    settings = StorageSettings.from_environ(
        {
            "AWS_DEFAULT_REGION": "eu-west-1",
            "STORAGE_CONFIG": '{"type": "s3", "region": "ap-south-1", "verify_ssl": "0"}',
            "STORAGE_OVERRIDE_CONFIG": "",
        }
    )
    assert settings.aws_default_region == "ap-south-1"
    assert settings.s3_verify is False


@pytest.mark.parametrize(
    ("environ", "names"),
    [
        ({"MOORAGE_STORAGE_AZURE_BLOB_HOSTS": "[not json"}, "MOORAGE_STORAGE_AZURE_BLOB_HOSTS"),
        ({"example.com-headers": "[1]"}, "example.com-headers"),
        ({"MOORAGE_STORAGE_CONCURRENCY": "0"}, "concurrency"),
    ],
)
def test_bad_values_name_what_is_wrong(environ: dict[str, str], names: str) -> None:
    with pytest.raises(ValueError, match=names):
        StorageSettings.from_environ(environ)


def test_os_environ_is_read_by_default(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HF_ENDPOINT", "http://127.0.0.1:1")
    assert StorageSettings().hf_endpoint == "http://127.0.0.1:1"


def test_keywords_are_checked_like_variables_and_unknown_ones_ignored() -> None:
    settings = StorageSettings.from_environ(
        {}, concurrency="12", verify_hashes="off", progress="log", not_a_setting=1
    )
    assert (settings.concurrency, settings.verify_hashes, settings.progress) == (12, False, "log")
    assert not hasattr(settings, "not_a_setting")
    with pytest.raises(SettingsError, match=r"progress: must be one of auto, bar, log, off"):
        StorageSettings.from_environ({}, progress="loud")
    with pytest.raises(SettingsError, match=r"part_size: must be >= 1048576"):
        StorageSettings.from_environ({}, part_size=1)


def test_every_bad_value_is_named_at_once() -> None:
    with pytest.raises(SettingsError) as caught:
        StorageSettings.from_environ(
            {
                "MOORAGE_STORAGE_RETRIES": "many",
                "MOORAGE_STORAGE_VERIFY_HASHES": "perhaps",
                "MOORAGE_STORAGE_READ_TIMEOUT_S": "0",
            }
        )
    message = str(caught.value)
    assert message.startswith("3 invalid storage settings")
    for name in ("RETRIES", "VERIFY_HASHES", "READ_TIMEOUT_S"):
        assert f"environment variable MOORAGE_STORAGE_{name} ({name.lower()})" in message


def test_secrets_never_show_and_compare_by_value() -> None:
    settings = StorageSettings.from_environ(
        {"AWS_SECRET_ACCESS_KEY": "s3cr3t", "HF_TOKEN": "hf_x", "AZURE_CLIENT_SECRET": "az"}
    )
    for text in (repr(settings), str(settings), f"{settings.hf_token}"):
        assert "s3cr3t" not in text and "hf_x" not in text and "az'" not in text
    assert repr(settings.aws_secret_access_key) == "SecretStr('**********')"
    assert settings.aws_secret_access_key == SecretStr("s3cr3t")
    assert settings == StorageSettings.from_environ(
        {"AWS_SECRET_ACCESS_KEY": "s3cr3t", "HF_TOKEN": "hf_x", "AZURE_CLIENT_SECRET": "az"}
    )


def test_every_declared_setting_has_a_reader() -> None:
    declared = {name for name in StorageSettings.__annotations__ if not name.startswith("_")}
    assert declared == set(_FIELDS)
    assert set(vars(StorageSettings.from_environ({}))) == declared
