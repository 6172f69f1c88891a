"""Ports on this machine: is one free, and give me a free one."""

from __future__ import annotations

import errno
import os
import socket
from collections.abc import Mapping

from moorage.controller.local.errors import PortInUse

__all__ = ["check_ports_free", "free_port", "port_holder", "port_is_free"]

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


def _listening_inodes(port: int) -> set[str]:
    inodes: set[str] = set()
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        try:
            with open(table) as f:
                rows = f.read().splitlines()[1:]
        except OSError:
            continue
        for row in rows:
            fields = row.split()
            if (
                len(fields) > 9
                and fields[3] == "0A"
                and int(fields[1].rsplit(":", 1)[1], 16) == port
            ):
                inodes.add(fields[9])
    return inodes


def port_holder(port: int) -> str | None:
    """``"<command> (pid N)"`` of the process listening on ``port``, when this OS tells us."""
    wanted = {f"socket:[{inode}]" for inode in _listening_inodes(port)}
    if not wanted:
        return None
    for pid in (p for p in os.listdir("/proc") if p.isdigit()):
        try:
            fds = os.listdir(f"/proc/{pid}/fd")
            if not any(os.readlink(f"/proc/{pid}/fd/{fd}") in wanted for fd in fds):
                continue
            with open(f"/proc/{pid}/cmdline", "rb") as f:
                argv = f.read().split(b"\0")
        except OSError:
            continue
        command = " ".join(" ".join(a.decode(errors="replace").split()) for a in argv[:4] if a)
        return f"{command[:80]} (pid {pid})"
    return "another user's process"


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
    holders = []
    for port in taken.values():
        holder = port_holder(port)
        if holder:
            holders.append(f"{port}: {holder}" if len(taken) > 1 else holder)
    by = f" (held by {'; '.join(holders)})" if holders else ""
    raise PortInUse(
        f"{noun} {listed} already in use on this machine{by}; nothing was started. "
        f"Stop what listens there or choose another, e.g. {first_flag} {spare}",
        port=first_port,
        ports=dict(taken),
    )
