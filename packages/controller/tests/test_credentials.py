"""Storage credentials from a ServiceAccount's Secrets, as KServe's webhook builds them."""

from __future__ import annotations

from typing import Any

import pytest
import yaml

from moorage.controller.credentials import storage_credentials
from moorage.core.config.configmap import InferenceServiceConfig
from moorage.core.resources import Resource, load_resources

CONFIG = InferenceServiceConfig.default()


def objects(*docs: dict[str, Any]) -> list[Resource]:
    return load_resources(yaml.safe_dump_all(docs))


def secret(name: str, keys: dict[str, str], **annotations: str) -> dict[str, Any]:
    meta: dict[str, Any] = {"name": name}
    if annotations:
        meta["annotations"] = annotations
    return {"apiVersion": "v1", "kind": "Secret", "metadata": meta, "stringData": keys}


def account(name: str, *secrets: str, **annotations: str) -> dict[str, Any]:
    meta: dict[str, Any] = {"name": name}
    if annotations:
        meta["annotations"] = annotations
    return {
        "apiVersion": "v1",
        "kind": "ServiceAccount",
        "metadata": meta,
        "secrets": [{"name": s} for s in secrets],
    }


def creds(resources: list[Resource], sa: str | None = "sa", **annotations: str) -> Any:
    return storage_credentials(
        service_account=sa,
        namespace="ml",
        annotations=annotations,
        resources=resources,
        config=CONFIG,
    )


def env_of(found: Any) -> dict[str, Any]:
    return {e["name"]: e.get("value", e.get("valueFrom")) for e in found.env}


def test_s3_keys_and_annotations() -> None:
    s3 = secret(
        "s3creds",
        {"AWS_ACCESS_KEY_ID": "id", "AWS_SECRET_ACCESS_KEY": "key"},
        **{
            "serving.kserve.io/s3-endpoint": "minio.ml:9000",
            "serving.kserve.io/s3-usehttps": "0",
            "serving.kserve.io/s3-verifyssl": "0",
            "serving.kserve.io/s3-region": "eu-west-1",
        },
    )
    env = env_of(creds(objects(s3, account("sa", "s3creds"))))
    assert env["AWS_ACCESS_KEY_ID"] == {
        "secretKeyRef": {"name": "s3creds", "key": "AWS_ACCESS_KEY_ID"}
    }
    assert env["AWS_SECRET_ACCESS_KEY"]["secretKeyRef"]["key"] == "AWS_SECRET_ACCESS_KEY"
    assert env["S3_ENDPOINT"] == "minio.ml:9000"
    assert env["AWS_ENDPOINT_URL"] == "http://minio.ml:9000"  # s3-usehttps "0"
    assert env["S3_USE_HTTPS"] == "0" and env["S3_VERIFY_SSL"] == "0"
    assert env["AWS_DEFAULT_REGION"] == "eu-west-1"


def test_s3_settings_fall_back_to_the_config() -> None:
    config = InferenceServiceConfig.from_configmap(
        {
            "credentials": '{"s3": {"s3Endpoint": "s3.example.com", "s3Region": "us-east-1"}}',
            "ingress": '{"ingressGateway": "g"}',
        }
    )
    found = storage_credentials(
        service_account="sa",
        namespace="ml",
        annotations={},
        resources=objects(
            secret("s", {"AWS_ACCESS_KEY_ID": "i", "AWS_SECRET_ACCESS_KEY": "k"}),
            account("sa", "s"),
        ),
        config=config,
    )
    env = env_of(found)
    assert env["AWS_ENDPOINT_URL"] == "https://s3.example.com"
    assert env["AWS_DEFAULT_REGION"] == "us-east-1"


@pytest.mark.parametrize(
    ("keys", "env", "volume"),
    [
        (
            {"gcloud-application-credentials.json": "{}"},
            {"GOOGLE_APPLICATION_CREDENTIALS": "/var/secrets/gcloud-application-credentials.json"},
            ("user-gcp-sa", "/var/secrets/"),
        ),
        (
            {"AZURE_CLIENT_ID": "c", "AZURE_CLIENT_SECRET": "s", "AZURE_TENANT_ID": "t"},
            {"AZURE_CLIENT_ID": None, "AZURE_CLIENT_SECRET": None, "AZURE_TENANT_ID": None},
            None,
        ),
        ({"AZ_CLIENT_ID": "c"}, {"AZ_CLIENT_ID": None}, None),
        ({"AZURE_STORAGE_ACCESS_KEY": "k"}, {"AZURE_STORAGE_ACCESS_KEY": None}, None),
        (
            {"https-host": "models.example.com", "headers": '{"Authorization": "Bearer x"}'},
            {"models.example.com-headers": '{"Authorization": "Bearer x"}'},
            None,
        ),
        ({"HDFS_NAMENODE": "nn:8020"}, {}, ("hdfs-secrets", "/var/secrets/kserve-hdfscreds")),
        ({"HF_TOKEN": "hf_x"}, {"HF_TOKEN": None}, None),
    ],
    ids=["gcs", "azure", "azure-legacy", "azure-key", "https-headers", "hdfs", "hf"],
)
def test_each_kind_of_secret(
    keys: dict[str, str], env: dict[str, Any], volume: tuple[str, str] | None
) -> None:
    found = creds(objects(secret("cred", keys), account("sa", "cred")))
    got = env_of(found)
    assert set(got) == set(env)
    for name, value in env.items():
        if value is None:
            assert got[name]["secretKeyRef"] == {"name": "cred", "key": name}
        else:
            assert got[name] == value
    if volume is None:
        assert found.volumes == [] and found.mounts == []
    else:
        assert found.volumes == [{"name": volume[0], "secret": {"secretName": "cred"}}]
        assert found.mounts == [{"name": volume[0], "mountPath": volume[1], "readOnly": True}]


def test_named_secret_annotation_wins_and_missing_pieces_give_nothing() -> None:
    resources = objects(
        secret("a", {"HF_TOKEN": "x"}),
        secret("b", {"AZURE_STORAGE_ACCESS_KEY": "k"}),
        account("sa", "a"),
        account("default", "b"),
    )
    assert set(env_of(creds(resources))) == {"HF_TOKEN"}
    chosen = creds(resources, **{"serving.kserve.io/storageSecretName": "b"})
    assert set(env_of(chosen)) == {"AZURE_STORAGE_ACCESS_KEY"}
    assert set(env_of(creds(resources, sa=None))) == {"AZURE_STORAGE_ACCESS_KEY"}  # "default"
    assert not creds(resources, sa="nobody")
    assert not creds(objects(account("sa", "not-in-the-files")))


def test_irsa_service_account_brings_its_s3_settings() -> None:
    sa = account(
        "sa",
        **{
            "eks.amazonaws.com/role-arn": "arn:aws:iam::1:role/models",
            "serving.kserve.io/s3-region": "us-west-2",
        },
    )
    assert env_of(creds(objects(sa))) == {"AWS_DEFAULT_REGION": "us-west-2"}
