"""Storage providers, one per module; see :mod:`moorage.storage.providers.base`."""

from moorage.storage.providers.base import Provider, get_provider, register_provider, require

__all__ = ["Provider", "get_provider", "register_provider", "require"]
