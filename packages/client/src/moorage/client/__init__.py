"""moorage-client."""

from moorage.client._version import __version__

__all__ = ["__version__"]
