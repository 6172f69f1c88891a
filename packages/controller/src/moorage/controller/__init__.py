"""moorage-controller."""

from moorage.controller._version import __version__

__all__ = ["__version__"]
