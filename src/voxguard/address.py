"""Where a running server listens, announced in a file for the container health check.

The port a server really binds can differ from ``VOXGUARD_PORT`` (``serve --port N``), and under host
networking another process may own that port. So once uvicorn listens, the server writes its own pid
and URL here, and ``docker/healthcheck.py`` asks exactly that address.
"""

from __future__ import annotations

import ipaddress
import json
import os
import socket
from pathlib import Path

# Bound to every address: the check connects over loopback of the same family.
_WILDCARD_TO_LOOPBACK = {"0.0.0.0": "127.0.0.1", "::": "::1", "": "127.0.0.1"}


def local_url(sockname: tuple, tls: bool) -> str:
    """The URL a process on the same host uses to reach a socket bound to ``sockname``."""
    host, port = sockname[0], sockname[1]
    host = _WILDCARD_TO_LOOPBACK.get(host, host)
    if isinstance(ipaddress.ip_address(host), ipaddress.IPv6Address):
        host = f"[{host}]"
    return f"{'https' if tls else 'http'}://{host}:{port}"


def write(path: Path, sockets: list[socket.socket], tls: bool) -> None:
    """Replace ``path`` atomically with ``{"pid": ..., "url": ...}`` for the first listening socket."""
    record = {"pid": os.getpid(), "url": local_url(sockets[0].getsockname(), tls)}
    partial = path.with_name(f".{path.name}.{os.getpid()}")
    partial.write_text(json.dumps(record) + "\n")
    partial.replace(path)
