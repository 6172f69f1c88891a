"""StorageSettings reads the storage initializer's environment as KServe names it."""

from __future__ import annotations

import pytest

from moorage.core.config.storage import StorageSettings


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
