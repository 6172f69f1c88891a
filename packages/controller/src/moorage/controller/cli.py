"""The ``moorage`` command: ``run``, ``validate`` and ``render`` over one parsing path.

::

    moorage run -f isvc.yaml [-f runtimes.yaml] [--host 127.0.0.1] [--port 8080] [--grpc-port 8081]
    moorage run --model-format sklearn --storage-uri ./model [--name iris]
    moorage validate -f isvc.yaml [-f runtimes.yaml] [-o json]
    moorage render -f isvc.yaml [-f runtimes.yaml] [--namespace default]
    moorage operator [--kubeconfig FILE] [--namespace NS]

Exit codes: 0 success (``run``: stopped with Ctrl-C), 1 the input or the run failed (the message
names the file and field path), 2 the command line itself is wrong.

This is an entry point: it alone reads the environment (``MOORAGE_CACHE``, the cache root,
default ``~/.cache/moorage``) and configures logging.
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import TextIO

from moorage.controller._version import __version__
from moorage.core.errors import MoorageError, ValidationError

__all__ = ["build_parser", "main"]

_PROTOCOLS = ("v1", "v2", "grpc-v1", "grpc-v2")


def _port(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a port number: {text!r}") from None
    if not 0 <= value <= 65535:
        raise argparse.ArgumentTypeError(f"port out of range 0-65535: {value}")
    return value


def _files(parser: argparse.ArgumentParser, *, required: bool, help: str) -> None:
    parser.add_argument(
        "-f",
        "--filename",
        dest="files",
        action="append",
        default=[],
        metavar="FILE",
        required=required,
        help=help,
    )
    parser.add_argument("--name", help="the InferenceService to use when the files hold several")
    parser.add_argument(
        "--no-builtin-runtimes",
        dest="builtin",
        action="store_false",
        help="select only among the runtimes in the files, not moorage's built-in ones",
    )


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="moorage",
        description="Serve KServe InferenceServices on this machine, check them, render them.",
    )
    parser.add_argument("--version", action="version", version=f"moorage {__version__}")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    run = sub.add_parser(
        "run",
        help="serve an InferenceService locally until Ctrl-C",
        description="Serve an InferenceService on this machine: no cluster, no containers. "
        "Give -f isvc.yaml, or --model-format and --storage-uri.",
    )
    _files(run, required=False, help="YAML/JSON with the InferenceService and runtimes (repeat)")
    one_off = run.add_argument_group("without a YAML file")
    one_off.add_argument("--model-format", help="model format name, e.g. sklearn")
    one_off.add_argument("--format-version", help="model format version, e.g. 1")
    one_off.add_argument(
        "--storage-uri", help="where the model is: a path, s3://, hf://, oci://..."
    )
    one_off.add_argument("--runtime", help="name of the (Cluster)ServingRuntime to use")
    one_off.add_argument("--protocol-version", choices=_PROTOCOLS, help="predictor protocol")
    run.add_argument(
        "--host",
        default="127.0.0.1",
        help="address the servers listen on (default 127.0.0.1: this machine only; "
        "0.0.0.0 for every interface)",
    )
    run.add_argument(
        "--port", type=_port, default=8080, help="REST port (default 8080; 0 picks a free one)"
    )
    run.add_argument(
        "--grpc-port", type=_port, default=8081, help="gRPC port (default 8081; 0 picks one)"
    )
    run.add_argument(
        "--timeout",
        type=float,
        default=120.0,
        help="seconds to wait for each server to become ready (default 120)",
    )
    run.add_argument(
        "--cache-dir",
        type=Path,
        help="model cache root (default $MOORAGE_CACHE or ~/.cache/moorage)",
    )
    run.add_argument("--refresh", action="store_true", help="fetch the model again")
    run.add_argument("-q", "--quiet", action="store_true", help="do not echo the servers' logs")

    validate = sub.add_parser(
        "validate",
        help="check KServe YAML (every kind, every document) as the cluster would",
        description="Check every document of every file: its kind and schema, KServe's "
        "defaulting and validating webhooks, and (InferenceServices) the runtime selected. "
        "Each error names the file, document, kind/name and field path; exit 1 if any.",
    )
    _files(validate, required=True, help="YAML/JSON files to check (repeat)")
    validate.add_argument(
        "-o",
        "--output",
        choices=("text", "json"),
        default="text",
        help="json: one object per document (file, document, kind, name, valid, errors)",
    )

    render = sub.add_parser(
        "render",
        help="print the Kubernetes objects the controller would create",
        description="Print, as YAML, the Deployments and Services the controller creates for "
        "the InferenceService (RawDeployment mode).",
    )
    _files(render, required=True, help="YAML/JSON with the InferenceService and runtimes")
    render.add_argument("--namespace", help="namespace for objects without one (default: default)")
    render.add_argument(
        "--config",
        type=Path,
        metavar="FILE",
        help="inferenceservice-config ConfigMap (YAML) to render with (default: the one among "
        "the -f files, else KServe's shipped one)",
    )
    from moorage.controller.operator.command import add_parser as add_operator_parser

    add_operator_parser(sub)
    return parser


def _workload(args: argparse.Namespace, parser: argparse.ArgumentParser) -> object:
    from moorage.controller.workload import load_workload, one_off_workload

    if getattr(args, "model_format", None) or getattr(args, "storage_uri", None):
        if not (args.model_format and args.storage_uri):
            parser.error("--model-format and --storage-uri go together")
        return one_off_workload(
            model_format=args.model_format,
            storage_uri=args.storage_uri,
            name=args.name,
            format_version=args.format_version,
            runtime=args.runtime,
            protocol_version=args.protocol_version,
            runtime_files=args.files,
            include_builtin=args.builtin,
        )
    if not args.files:
        parser.error("give -f isvc.yaml, or --model-format and --storage-uri")
    return load_workload(args.files, name=args.name, include_builtin=args.builtin)


def format_error(exc: MoorageError) -> str:
    """``<file>: <field>: <message>`` for each error, one per line."""
    where = exc.details.get("path")
    prefix = f"{where}: " if where else ""
    errors = exc.details.get("errors") if isinstance(exc, ValidationError) else None
    if errors and len(errors) > 1:
        return "\n".join(f"{prefix}{e}" for e in errors)
    return f"{prefix}{exc}"


def _cache_root(args: argparse.Namespace) -> Path:
    if args.cache_dir is not None:
        return Path(args.cache_dir).expanduser()
    env = os.environ.get("MOORAGE_CACHE")
    return Path(env).expanduser() if env else Path.home() / ".cache" / "moorage"


def _run(args: argparse.Namespace, parser: argparse.ArgumentParser, out: TextIO) -> int:
    from moorage.controller.local.plans import load_plan, plan_key, save_plan
    from moorage.controller.local.runner import RunOptions, prepare, replay, serve

    started = time.monotonic()
    options = RunOptions(
        host=args.host,
        http_port=args.port,
        grpc_port=args.grpc_port,
        cache_root=_cache_root(args),
        ready_timeout=args.timeout,
        refresh=args.refresh,
    )
    log = None if args.quiet else sys.stderr
    one_off = bool(args.model_format or args.storage_uri)
    key = None
    if args.files and not one_off and not args.refresh and args.port and args.grpc_port:
        flags = [
            f"name={args.name}",
            f"builtin={args.builtin}",
            f"host={args.host}",
            f"{args.port}",
            f"{args.grpc_port}",
        ]
        key = plan_key(args.files, flags=flags, python=options.python)
    saved = load_plan(options.cache_root, key) if key else None
    if saved is not None:
        try:
            prepared = replay(saved, options, out=out)
        except MoorageError:
            prepared = None  # e.g. the model moved: plan from the files again
        if prepared is not None:
            out.write("moorage: files unchanged since the last run; reusing its plan\n")
            return serve(prepared, options, out=out, log=log, started=started)

    from moorage.controller.workload import Workload

    workload = _workload(args, parser)
    assert isinstance(workload, Workload)
    prepared = prepare(workload, options, out=out)

    def remember(_specs: object) -> None:
        if key is not None:
            save_plan(options.cache_root, key, prepared)

    return serve(prepared, options, out=out, log=log, on_ready=remember, started=started)


def _validate(args: argparse.Namespace, out: TextIO) -> int:
    from moorage.controller.validation import validate_files

    findings = validate_files(args.files, include_builtin=args.builtin, name=args.name)
    failed = any(not f.ok for f in findings)
    if args.output == "json":
        import json

        report = {"valid": not failed, "documents": [f.to_json() for f in findings]}
        out.write(json.dumps(report, indent=2) + "\n")
        return 1 if failed else 0
    for finding in findings:
        for line in finding.lines():
            if finding.ok:
                out.write(line + "\n")
            else:
                sys.stderr.write(f"moorage: error: {line}\n")
    return 1 if failed else 0


def _render_config(args: argparse.Namespace) -> object:
    """The ``--config`` ConfigMap, decoded (None without the flag)."""
    if args.config is None:
        return None
    import yaml

    from moorage.core.config.configmap import InferenceServiceConfig

    try:
        data = yaml.safe_load(Path(args.config).read_text())
    except (OSError, yaml.YAMLError) as exc:
        raise ValidationError(f"cannot read the ConfigMap: {exc}", path=str(args.config)) from None
    if not isinstance(data, dict):
        raise ValidationError("a ConfigMap must be a mapping", path=str(args.config))
    try:
        return InferenceServiceConfig.from_configmap(data)
    except ValidationError as exc:
        raise ValidationError(exc.reason, field=exc.field, path=str(args.config)) from None


def _render(args: argparse.Namespace, out: TextIO) -> int:
    from moorage.controller.reconcile import desired_objects, to_yaml
    from moorage.controller.workload import load_workload
    from moorage.core.config.configmap import InferenceServiceConfig

    config = _render_config(args)
    assert config is None or isinstance(config, InferenceServiceConfig)
    workload = load_workload(
        args.files, name=args.name, include_builtin=args.builtin, config=config
    )
    out.write(to_yaml(desired_objects(workload, namespace=args.namespace, config=workload.config)))
    _warn_local_uri(workload)
    return 0


def _warn_local_uri(workload: object) -> None:
    from moorage.controller.runtime_selection import predictor_model
    from moorage.controller.workload import Workload
    from moorage.core.storage_uri import LocalURI, parse_storage_uri

    assert isinstance(workload, Workload)
    model = predictor_model(workload.isvc)
    uri = model.spec.storage_uri if model is not None else None
    if uri and isinstance(parse_storage_uri(uri), LocalURI):
        sys.stderr.write(
            f"moorage: warning: storageUri {uri} is a path on this machine; a cluster's "
            "storage-initializer cannot read it (use s3://, gs://, hf://, oci://, pvc://...)\n"
        )


def main(argv: Sequence[str] | None = None, *, out: TextIO | None = None) -> int:
    """Run the ``moorage`` command; returns the exit code."""
    out = out or sys.stdout
    parser = build_parser()
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    try:
        if args.command == "run":
            return _run(args, parser, out)
        if args.command == "validate":
            return _validate(args, out)
        if args.command == "operator":
            from moorage.controller.operator.command import run as run_operator

            return run_operator(args)
        return _render(args, out)
    except MoorageError as exc:
        sys.stderr.write(f"moorage: error: {format_error(exc)}\n")
        return 1
    except KeyboardInterrupt:
        sys.stderr.write("moorage: interrupted\n")
        return 130
