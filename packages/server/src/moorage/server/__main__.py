"""``moorage-server`` / ``python -m moorage.server``: serve the model in ``--model_dir``."""

from __future__ import annotations

import logging
import logging.config
import sys
from collections.abc import Sequence

from moorage.core.config.server import ArgumentsError, ServerSettings
from moorage.core.errors import MoorageError

__all__ = ["main"]

logger = logging.getLogger("moorage.server")


def configure_logging(settings: ServerSettings) -> None:
    """Logging for the entry point: uvicorn's config file when given, else text or JSON lines
    (``--log_format``) carrying the request id."""
    if not settings.configure_logging:
        return
    if settings.log_config_file:
        import orjson

        path = settings.log_config_file
        with open(path, "rb") as f:
            raw = f.read()
        if path.endswith((".yaml", ".yml")):
            import yaml

            config = yaml.safe_load(raw)
        else:
            config = orjson.loads(raw)
        logging.config.dictConfig(config)
        return
    from moorage.server.logs import install_handler

    install_handler(level=settings.log_level, json=settings.log_format == "json")


def main(argv: Sequence[str] | None = None) -> None:
    try:
        settings = ServerSettings.from_cli(argv)
    except ArgumentsError as exc:
        print(f"moorage-server: invalid arguments:\n{exc}", file=sys.stderr)
        sys.exit(2)
    configure_logging(settings)
    if settings.extra_args:
        logger.info("ignoring unknown arguments: %s", " ".join(settings.extra_args))

    from moorage.server._loading import build_models, repository_loader, resolve_model_dir
    from moorage.server.repository import ModelRepository
    from moorage.server.server import ModelServer

    try:
        model_dir = resolve_model_dir(settings.model_dir)
        settings = settings.model_copy(update={"model_dir": str(model_dir)})
        repository = ModelRepository(
            settings.model_dir, sync_mode=settings.sync_mode, loader=repository_loader(settings)
        )
        server = ModelServer(settings, registered_models=repository)
        if settings.model_config_file:
            # The watcher loads what the model-config file lists; nothing else is served.
            server.start([])
        elif settings.workers > 1:
            # Each worker loads its own copy: frameworks with thread pools are not fork-safe.
            server.start(lambda: build_models(settings))
        else:
            server.start(build_models(settings))
    except MoorageError as exc:
        logger.error("%s", exc.message)
        sys.exit(1)


if __name__ == "__main__":
    main()
