"""Storage URI grammar: every scheme, KServe's messages, and parse/format round trips."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from moorage.core.config.storage import StorageSettings
from moorage.core.errors import InvalidStorageURI, UnsupportedScheme
from moorage.core.storage_uri import (
    GCSURI,
    HDFSURI,
    HFURI,
    HTTPURI,
    OCIURI,
    PVCURI,
    S3URI,
    AzureBlobURI,
    AzureFileURI,
    LocalURI,
    StorageURI,
    check_controller_storage_uri,
    parse_storage_uri,
)


@pytest.mark.parametrize(
    ("uri", "expected"),
    [
        ("s3://bucket/models/iris", S3URI("bucket", "models/iris")),
        ("s3://bucket", S3URI("bucket", "")),
        ("s3://bucket/", S3URI("bucket", "")),
        (
            "gs://kfserving-examples/models/sklearn/1.0/model",
            GCSURI("kfserving-examples", "models/sklearn/1.0/model"),
        ),
        ("pvc://my-claim/models/iris", PVCURI("my-claim", "models/iris")),
        ("pvc://my-claim", PVCURI("my-claim", "")),
        ("file:///mnt/models", LocalURI("/mnt/models")),
        ("/mnt/pvc/model", LocalURI("/mnt/pvc/model")),
        ("relative/dir", LocalURI("relative/dir")),
        ("hf://facebook/opt-125m", HFURI("facebook/opt-125m", None)),
        ("hf://facebook/opt-125m:v1.0", HFURI("facebook/opt-125m", "v1.0")),
        (
            "hf://org/model:0123456789abcdef0123456789abcdef01234567",
            HFURI("org/model", "0123456789abcdef0123456789abcdef01234567"),
        ),
        (
            "oci://registry.example.com/models/iris:1.0",
            OCIURI("registry.example.com", "models/iris", "1.0", None),
        ),
        (
            "oci://127.0.0.1:5000/models/iris",
            OCIURI("127.0.0.1:5000", "models/iris", "latest", None),
        ),
        ("oci://localhost/iris:v2", OCIURI("localhost", "iris", "v2", None)),
        ("oci://ubuntu", OCIURI("docker.io", "library/ubuntu", "latest", None)),
        ("oci://kserve/model:x", OCIURI("docker.io", "kserve/model", "x", None)),
        (
            "oci://quay.io/org/repo@sha256:" + "a" * 64,
            OCIURI("quay.io", "org/repo", None, "sha256:" + "a" * 64),
        ),
        (
            "oci://quay.io/org/repo:1@sha256:" + "b" * 64,
            OCIURI("quay.io", "org/repo", "1", "sha256:" + "b" * 64),
        ),
        ("hdfs://namenode:8020/user/models", HDFSURI("hdfs", "namenode:8020", "/user/models")),
        ("webhdfs://namenode/models", HDFSURI("webhdfs", "namenode", "/models")),
        (
            "https://example.com/models/model.tar.gz",
            HTTPURI("https://example.com/models/model.tar.gz", "example.com", "model.tar.gz"),
        ),
        (
            "http://127.0.0.1:8000/m.zip?sig=x",
            HTTPURI("http://127.0.0.1:8000/m.zip?sig=x", "127.0.0.1", "m.zip"),
        ),
        (
            "https://kfserving.blob.core.windows.net/triton/simple_string/",
            AzureBlobURI(
                "kfserving", "triton", "simple_string/", "https://kfserving.blob.core.windows.net"
            ),
        ),
        (
            "https://acct.z01.blob.storage.azure.net/c/p",
            AzureBlobURI("acct", "c", "p", "https://acct.z01.blob.storage.azure.net"),
        ),
        (
            "https://acct.file.core.windows.net/share/dir/model",
            AzureFileURI("acct", "share", "dir/model", "https://acct.file.core.windows.net"),
        ),
        (
            "https://acct.z12.file.storage.azure.net/share",
            AzureFileURI("acct", "share", "", "https://acct.z12.file.storage.azure.net"),
        ),
    ],
)
def test_parse_each_scheme(uri: str, expected: StorageURI) -> None:
    assert parse_storage_uri(uri) == expected


def test_scheme_property() -> None:
    assert parse_storage_uri("s3://b/k").scheme == "s3"
    assert parse_storage_uri("http://h/x.bin").scheme == "http"
    assert parse_storage_uri("webhdfs://h/x").scheme == "webhdfs"
    assert parse_storage_uri("/x").scheme == "file"
    az = parse_storage_uri(
        "http://127.0.0.1:10000/devstoreaccount1/c/p", azure_blob_hosts=["127.0.0.1:10000"]
    )
    assert az == AzureBlobURI(
        "devstoreaccount1", "c", "p", "http://127.0.0.1:10000/devstoreaccount1"
    )
    assert az.scheme == "http"


def test_azure_path_style_needs_container() -> None:
    with pytest.raises(InvalidStorageURI, match="account"):
        parse_storage_uri(
            "http://127.0.0.1:10000/devstoreaccount1", azure_blob_hosts=["127.0.0.1:10000"]
        )


def test_oci_reference_helpers() -> None:
    ref = parse_storage_uri("oci://127.0.0.1:5000/models/iris:1.0")
    assert isinstance(ref, OCIURI)
    assert ref.reference == "1.0"
    assert ref.image == "127.0.0.1:5000/models/iris:1.0"
    pinned = parse_storage_uri("oci://r.io/a@sha256:" + "c" * 64)
    assert isinstance(pinned, OCIURI) and pinned.reference == "sha256:" + "c" * 64


def test_hf_helpers() -> None:
    ref = parse_storage_uri("hf://org/name:main")
    assert isinstance(ref, HFURI) and (ref.org, ref.name, ref.revision) == ("org", "name", "main")


@pytest.mark.parametrize(
    ("uri", "message"),
    [
        (
            "hf://only-one-part",
            "URI must contain exactly one '/' separating the repo and model name",
        ),
        ("hf://a/b/c", "URI must contain exactly one '/' separating the repo and model name"),
        ("hf:///model", "Repository name cannot be empty"),
        ("hf://org/", "Model name cannot be empty"),
        ("hf://org/:rev", "Model name cannot be empty"),
        ("https://example.com/", "No filename contained in URI: https://example.com/"),
        ("s3:///key", "no bucket"),
        ("gs://", "no bucket"),
        ("pvc:///path", "no claim"),
        ("oci://", "no image reference"),
        ("oci://r.io/Upper/Case:1", "repository is not valid"),
        ("oci://r.io/a@sha256:short", "digest is not valid"),
        ("oci://r.io/a:bad!tag", "tag is not valid"),
        ("", "non-empty"),
        (" s3://b/k", "whitespace"),
    ],
)
def test_invalid_uris(uri: str, message: str) -> None:
    with pytest.raises(InvalidStorageURI) as info:
        parse_storage_uri(uri)
    assert message in str(info.value)
    assert info.value.status == 400


@pytest.mark.parametrize(
    "uri", ["ftp://host/model", "S3://bucket/key", "azure://x/y", "minio://b/k"]
)
def test_unsupported_scheme_has_kserve_message(uri: str) -> None:
    with pytest.raises(UnsupportedScheme) as info:
        parse_storage_uri(uri)
    assert str(info.value) == (
        f"Cannot recognize storage type for {uri}\n"
        "'gs://', 's3://', 'file://', and 'http(s)://' are the current available storage type."
    )


def test_controller_validation() -> None:
    for ok in (
        "s3://b/k",
        "gs://b",
        "pvc://c/p",
        "oci://r/x",
        "/local",
        "rel/path",
        "https://a.blob.core.windows.net/c/p",
        "webhdfs://n/p",
    ):
        check_controller_storage_uri(ok)
    with pytest.raises(InvalidStorageURI) as info:
        check_controller_storage_uri("hf://org/model")
    assert str(info.value) == (
        "storageUri, must be one of: [gs://, s3://, pvc://, file://, https://, http://, hdfs://, "
        "webhdfs://, oci://] or match https://{}.blob.core.windows.net/{}/{} or be an absolute or "
        "relative local path. StorageUri [hf://org/model] is not supported."
    )
    check_controller_storage_uri("hf://org/model", extra_prefixes=["hf://"])


# -- property tests: str(value) parses back to the same value ------------------------------------

_word = st.text(alphabet="abcdefghijklmnopqrstuvwxyz0123456789", min_size=1, max_size=12)
_key = st.lists(
    st.text(alphabet="abcdefghijklmnopqrstuvwxyzABC0123456789._-", min_size=1, max_size=10),
    max_size=4,
).map("/".join)
_hf_part = st.text(
    alphabet="abcdefghijklmnopqrstuvwxyzABCDEFG0123456789._-", min_size=1, max_size=20
)
_repo = st.lists(_word, min_size=1, max_size=3).map("/".join)
_digest = st.text(alphabet="0123456789abcdef", min_size=64, max_size=64).map(
    lambda h: f"sha256:{h}"
)
_tag = st.from_regex(r"\A[a-z0-9][a-zA-Z0-9_.-]{0,20}\Z")

_values = st.one_of(
    st.builds(S3URI, _word, _key),
    st.builds(GCSURI, _word, _key),
    st.builds(PVCURI, _word, _key.map(lambda k: k.strip("/"))),
    st.builds(HFURI, st.tuples(_hf_part, _hf_part).map("/".join), st.none() | _tag),
    st.builds(
        OCIURI,
        st.tuples(_word, st.integers(1, 65535)).map(lambda t: f"{t[0]}.io:{t[1]}"),
        _repo,
        _tag,
        st.none() | _digest,
    ),
    st.builds(LocalURI, _key.filter(bool).map(lambda k: "/" + k)),
)


@given(_values)
def test_round_trip(value: StorageURI) -> None:
    assert parse_storage_uri(str(value)) == value
    assert parse_storage_uri(value.uri) == value


@given(st.text(max_size=60))
def test_parser_never_crashes(text: str) -> None:
    try:
        value = parse_storage_uri(text)
    except (InvalidStorageURI, UnsupportedScheme):
        return
    assert isinstance(value, StorageURI)


# -- StorageSettings ----------------------------------------------------------------------------


def test_settings_kserve_env_names() -> None:
    s = StorageSettings.from_environ(
        {
            "AWS_ACCESS_KEY_ID": "AKID",
            "AWS_SECRET_ACCESS_KEY": "s3cr3t",
            "S3_ENDPOINT": "minio.local:9000",
            "S3_USE_HTTPS": "0",
            "S3_VERIFY_SSL": "0",
            "awsAnonymousCredential": "true",
            "S3_USER_VIRTUAL_BUCKET": "true",
            "AWS_DEFAULT_REGION": "eu-west-1",
            "GOOGLE_APPLICATION_CREDENTIALS": "/var/secrets/gcloud-application-credentials.json",
            "AZ_CLIENT_ID": "cid",
            "AZURE_STORAGE_ACCESS_KEY": "azkey",
            "HF_TOKEN": "hf_abc",
            "HF_ENDPOINT": "http://127.0.0.1:9",
            "models.example.com-headers": '{"Authorization": "Bearer x"}',
            "MOORAGE_STORAGE_CONCURRENCY": "3",
        }
    )
    assert s.s3_endpoint_url == "http://minio.local:9000"
    assert s.s3_verify is False
    assert s.aws_anonymous_credential and s.s3_user_virtual_bucket
    assert s.aws_default_region == "eu-west-1"
    assert s.azure_client_id == "cid"
    assert s.hf_token is not None and s.hf_token.get_secret_value() == "hf_abc"
    assert s.hf_endpoint == "http://127.0.0.1:9"
    assert s.headers_for("models.example.com") == {"Authorization": "Bearer x"}
    assert s.concurrency == 3
    text = repr(s)
    for secret in ("s3cr3t", "azkey", "hf_abc", "Bearer x"):
        assert secret not in text


def test_settings_storage_spec_overrides_env() -> None:
    s = StorageSettings.from_environ(
        {
            "AWS_ENDPOINT_URL": "http://ignored",
            "STORAGE_CONFIG": '{"type": "s3", "endpoint_url": "http://spec:9000",'
            ' "access_key_id": "A", "secret_access_key": "B", "region": "r1",'
            ' "verify_ssl": "0", "anonymous": "false"}',
            "STORAGE_OVERRIDE_CONFIG": '{"region": "r2"}',
        }
    )
    assert s.s3_endpoint_url == "http://spec:9000"
    assert s.aws_default_region == "r2"
    assert s.s3_verify is False
    assert s.aws_secret_access_key is not None and s.aws_secret_access_key.get_secret_value() == "B"
    assert "B'" not in repr(s)


def test_settings_ca_bundle() -> None:
    s = StorageSettings.from_environ({"CA_BUNDLE_CONFIGMAP_NAME": "cm"})
    assert s.s3_verify == "/etc/ssl/custom-certs/cabundle.crt"
    s = StorageSettings.from_environ({"AWS_CA_BUNDLE": "/x/ca.crt"})
    assert s.s3_verify == "/x/ca.crt"
    assert StorageSettings.from_environ({}).s3_verify is True


def test_settings_bad_headers_json() -> None:
    with pytest.raises(ValueError, match="h-headers"):
        StorageSettings.from_environ({"h-headers": "not json"})
