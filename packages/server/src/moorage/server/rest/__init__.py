"""REST transport: OIP v1 and v2 over FastAPI/Starlette."""

from moorage.server.rest.app import create_app

__all__ = ["create_app"]
