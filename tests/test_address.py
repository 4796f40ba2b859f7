"""The address a server announces for its health check (voxguard.address)."""

from __future__ import annotations

import json
import os
import socket

import pytest

from voxguard import address


@pytest.mark.parametrize(
    ("sockname", "tls", "url"),
    [
        (("0.0.0.0", 8000), False, "http://127.0.0.1:8000"),
        (("::", 8000, 0, 0), False, "http://[::1]:8000"),
        (("10.1.2.3", 8443), True, "https://10.1.2.3:8443"),
        (("fe80::1", 9000, 0, 0), False, "http://[fe80::1]:9000"),
    ],
)
def test_local_url_reaches_the_socket_from_the_same_host(sockname, tls, url):
    assert address.local_url(sockname, tls) == url


def test_write_replaces_the_file_with_the_bound_port(tmp_path):
    path = tmp_path / "address.json"
    path.write_text("stale")
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        address.write(path, [sock], tls=False)
        port = sock.getsockname()[1]
    assert json.loads(path.read_text()) == {"pid": os.getpid(), "url": f"http://127.0.0.1:{port}"}
    assert [p.name for p in tmp_path.iterdir()] == ["address.json"], "no partial file left"
