"""``CacheSettings``: the knobs of ``moorage-cache controller`` and ``moorage-cache agent``.

The command line is ``moorage-cache {controller,agent} [--kubeconfig K] [--node-name N]
[--root DIR] ...``; every field can also come from the environment as ``MOORAGE_CACHE_<FIELD>``
(``MOORAGE_CACHE_MAX_CONCURRENT_DOWNLOADS=4``). Three variables a Kubernetes manifest sets are
read under their usual names: ``KUBECONFIG``, ``POD_NAMESPACE`` (where ``inferenceservice-config``
lives, KServe's ``kserve`` by default) and ``NODE_NAME`` (the agent's node, from the downward API).

What KServe keeps in the ``localModel`` key of ``inferenceservice-config`` (``enabled``,
``reconcilationFrequencyInSecs``, ...) is read from the ConfigMap, not from here: these are
moorage's own knobs, with defaults that suit a cluster.

Precedence: CLI flag > environment variable > default.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Literal

from pydantic import AliasChoices, Field, model_validator
from pydantic_settings import BaseSettings, CliPositionalArg, SettingsConfigDict

__all__ = ["CacheSettings", "kubernetes_service"]


class CacheSettings(BaseSettings):
    """Settings of the cache controller and of the node agent (one process each)."""

    model_config = SettingsConfigDict(
        env_prefix="MOORAGE_CACHE_",
        env_nested_delimiter="__",
        extra="ignore",
        populate_by_name=True,
        cli_prog_name="moorage-cache",
        cli_kebab_case=True,
        cli_implicit_flags=False,
    )

    command: CliPositionalArg[Literal["controller", "agent"]] = Field(
        description="controller: the LocalModelCache controller (one per cluster); agent: the "
        "node agent (one per node, a DaemonSet)."
    )
    kubeconfig: str | None = Field(
        None,
        validation_alias=AliasChoices("kubeconfig", "KUBECONFIG"),
        description="kubeconfig file; in-cluster service account credentials when unset.",
    )
    pod_namespace: str = Field(
        "kserve",
        validation_alias=AliasChoices("pod_namespace", "POD_NAMESPACE"),
        description="Namespace of the inferenceservice-config ConfigMap.",
    )
    log_level: str = Field("INFO", description="Log level.")
    log_format: Literal["text", "json"] = Field(
        "text", description="Plain text lines or one JSON object a line."
    )

    # ---- controller: the validating admission webhook (KServe refuses at admission too)
    webhook_port: int | None = Field(
        None,
        ge=1,
        le=65535,
        description="controller: serve the validating webhook for LocalModelCaches on this port "
        "(a second cache with the same sourceModelUri, deleting a cache in use); off when unset.",
    )
    webhook_host: str | None = Field(
        None, description="controller: the name the API server reaches the webhook at."
    )
    webhook_cert: Path | None = Field(None, description="controller: webhook TLS certificate.")
    webhook_key: Path | None = Field(None, description="controller: webhook TLS private key.")
    webhook_insecure: bool = Field(
        False, description="controller: serve the webhook over plain HTTP (tests only)."
    )
    webhook_configuration: str | None = Field(
        None,
        description="controller: name of the ValidatingWebhookConfiguration to keep up to date "
        "(needs RBAC for it); unset: install it yourself.",
    )

    # ---- agent
    node_name: str | None = Field(
        None,
        validation_alias=AliasChoices("node_name", "NODE_NAME"),
        description="agent: the Kubernetes node this agent serves (its LocalModelNode's name).",
    )
    root: Path | None = Field(
        None,
        description="agent: model root on this node (models in <root>/models/<name>); default: "
        "the local (or hostPath) path of the node group's PersistentVolume spec.",
    )
    max_concurrent_downloads: int = Field(
        2, ge=1, le=64, description="agent: models downloaded at once."
    )
    download_attempts: int = Field(
        4, ge=1, description="agent: tries of one download before it reports ModelDownloadError."
    )
    retry_initial_seconds: float = Field(
        2.0, ge=0, description="agent: first wait before a retry (doubles, with jitter)."
    )
    retry_max_seconds: float = Field(60.0, ge=0, description="agent: longest wait between tries.")
    retry_failed_after_seconds: float = Field(
        600.0,
        gt=0,
        description="agent: a model in ModelDownloadError is tried again after this long (a fixed "
        "bucket or secret then heals without a restart).",
    )
    verify: Literal["hash", "size"] = Field(
        "hash",
        description="agent: at start-up, check models on disk against the hashes their source "
        "published (hash) or only against the file list and sizes (size).",
    )
    status_interval_seconds: float = Field(
        1.0, gt=0, description="agent: at most one status write per this many seconds."
    )

    # ---- both
    resync_seconds: float | None = Field(
        None,
        gt=0,
        description="Full re-read of the cluster state this often, besides watch events; "
        "default: localModel.reconcilationFrequencyInSecs (60).",
    )

    @model_validator(mode="after")
    def _agent_only(self) -> CacheSettings:
        if self.command == "controller" and self.root is not None:
            raise ValueError("--root applies to the agent only")
        tls = self.webhook_cert is not None and self.webhook_key is not None
        if self.webhook_port is not None and not self.webhook_insecure and not tls:
            raise ValueError("--webhook-port needs --webhook-cert and --webhook-key")
        return self

    @classmethod
    def from_cli(cls, argv: Sequence[str] | None = None) -> CacheSettings:
        """Parse ``argv`` (default ``sys.argv[1:]``) over the environment."""
        return cls(_cli_parse_args=list(sys.argv[1:] if argv is None else argv))


def kubernetes_service() -> tuple[str | None, str | None]:
    """``KUBERNETES_SERVICE_HOST`` and ``KUBERNETES_SERVICE_PORT``: the API server's address
    that every pod gets (the in-cluster configuration), or ``None`` outside a cluster."""
    return os.environ.get("KUBERNETES_SERVICE_HOST"), os.environ.get("KUBERNETES_SERVICE_PORT")
