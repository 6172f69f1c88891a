"""Real-server fixtures for tests (placeholder docstring, completed below)."""

from moorage.storage.testing._process import ComponentUnavailable, ServerProcess, free_port
from moorage.storage.testing._seaweedfs import SeaweedS3, seaweedfs

__all__ = ["ComponentUnavailable", "SeaweedS3", "ServerProcess", "free_port", "seaweedfs"]
