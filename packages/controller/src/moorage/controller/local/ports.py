"""Ports on this machine: is one free, give me a free one, who listens where."""

from __future__ import annotations

import errno
import ipaddress
import os
import socket
from collections.abc import Mapping

from moorage.controller.local.errors import PortInUse

__all__ = [
    "check_ports_free",
    "free_port",
    "listening_addresses",
    "port_holder",
    "port_is_free",
]

#: Binding the wildcard address fails when anything listens on any address of the port: the
#: strictest check, used where the caller does not say which address its server will bind.
_WILDCARD = "0.0.0.0"


def _family(host: str) -> socket.AddressFamily:
    return socket.AF_INET6 if ":" in host else socket.AF_INET


def port_is_free(port: int, *, host: str = _WILDCARD) -> bool:
    """Whether a server could listen on ``host:port`` now (SO_REUSEADDR, as uvicorn sets it)."""
    with socket.socket(_family(host), socket.SOCK_STREAM) as sock:
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
    with socket.socket(_family(host), socket.SOCK_STREAM) as sock:
        sock.bind((host, 0))
        port: int = sock.getsockname()[1]
        return port


def _listening_rows(port: int) -> list[tuple[str, list[str]]]:
    """``(table, fields)`` of the LISTEN rows of ``/proc/net/tcp{,6}`` for ``port`` (Linux)."""
    found: list[tuple[str, list[str]]] = []
    for table in ("tcp", "tcp6"):
        try:
            with open(f"/proc/net/{table}") as f:
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
                found.append((table, fields))
    return found


def _proc_address(hex_address: str) -> str:
    """``/proc/net/tcp``'s address column (host byte order, 32-bit words) as text."""
    raw = bytes.fromhex(hex_address)
    words = b"".join(raw[i : i + 4][::-1] for i in range(0, len(raw), 4))
    if len(words) == 16 and words[:12] == b"\0" * 10 + b"\xff" * 2:
        words = words[12:]  # an IPv4-mapped IPv6 address
    return str(ipaddress.ip_address(words))


def listening_addresses(port: int) -> list[str] | None:
    """The addresses something listens on at ``port`` (``0.0.0.0``/``::`` for every interface),
    sorted; None where this OS does not say (no ``/proc/net``)."""
    if not os.path.exists("/proc/net/tcp"):
        return None
    addresses = {_proc_address(fields[1].rsplit(":", 1)[0]) for _, fields in _listening_rows(port)}
    return sorted(addresses)


def _listening_inodes(port: int) -> set[str]:
    return {fields[9] for _, fields in _listening_rows(port)}


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
