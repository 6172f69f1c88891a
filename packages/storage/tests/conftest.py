"""The real-server fixtures of moorage.storage.testing (session-scoped) come from the
repository's root conftest.py, registered once for the whole session."""
