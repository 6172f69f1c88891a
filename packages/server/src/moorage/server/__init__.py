"""moorage-server."""

from moorage.server._version import __version__

__all__ = ["__version__"]
