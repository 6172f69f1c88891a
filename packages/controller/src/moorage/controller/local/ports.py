"""Ports on this machine: is one free, and give me a free one."""

from __future__ import annotations

import errno
import socket
from collections.abc import Mapping

from moorage.controller.local.errors import PortInUse

__all__ = ["check_ports_free", "free_port", "port_is_free"]

#: The model server binds every interface (KServe's uvicorn host is 0.0.0.0), so a listener on
#: any address of the port makes it unusable; binding the wildcard address detects all of them.
_WILDCARD = "0.0.0.0"


def port_is_free(port: int, *, host: str = _WILDCARD) -> bool:
    """Whether a server could listen on ``port`` now (SO_REUSEADDR, as uvicorn sets it)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind((host, port))
        except OSError as exc:
            if exc.errno in (errno.EADDRINUSE, errno.EACCES):
                return False
            raise
    return True


def free_port(*, host: str = _WILDCARD) -> int:
    """A port nobody listens on right now (the kernel's choice)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((host, 0))
        port: int = sock.getsockname()[1]
        return port


def check_ports_free(ports: Mapping[str, int], *, host: str = _WILDCARD) -> None:
    """Raise :class:`PortInUse` naming every taken port and the flag that moves it.

    ``ports`` maps a flag (``--port``) to the port it asks for.
    """
    seen: dict[int, str] = {}
    for flag, port in ports.items():
        if port in seen:
            raise PortInUse(
                f"{flag} and {seen[port]} both ask for port {port}; give them different ports",
                port=port,
            )
        seen[port] = flag
    taken = {flag: port for flag, port in ports.items() if not port_is_free(port, host=host)}
    if not taken:
        return
    first_flag, first_port = next(iter(taken.items()))
    spare = free_port(host=host)
    listed = ", ".join(f"{port} ({flag})" for flag, port in taken.items())
    noun = "port" if len(taken) == 1 else "ports"
    raise PortInUse(
        f"{noun} {listed} already in use on this machine; nothing was started. "
        f"Stop what listens there or choose another, e.g. {first_flag} {spare}",
        port=first_port,
        ports=dict(taken),
    )
