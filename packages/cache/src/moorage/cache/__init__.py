"""moorage-cache."""

from moorage.cache._version import __version__

__all__ = ["__version__"]
