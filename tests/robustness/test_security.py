"""Security properties of the real server: keys on every protected route, CORS allow-list."""

from __future__ import annotations

import httpx
import pytest

from servers import live_server

PROTECTED = [
    ("POST", "/v1/predict"),
    ("POST", "/v1/predict/batch"),
    ("POST", "/predict"),
    ("GET", "/v1/models"),
]
PROBES = [("GET", "/health"), ("GET", "/ready"), ("GET", "/metrics")]
WRONG_KEYS = ({}, {"X-API-Key": "secret-kez"}, {"Authorization": "Bearer wrong"}, {"X-API-Key": ""})


@pytest.fixture(scope="module")
def detectors(detector_factory) -> dict:
    return {"aasist": detector_factory("aasist", "fast")}


def test_every_protected_route_needs_the_key_and_probes_follow_the_setting(detectors):
    with live_server(detectors, api_keys=["secret-key"]) as srv:
        for method, path in PROTECTED:
            for headers in WRONG_KEYS:
                r = httpx.request(method, srv.url + path, headers=headers, content=b"", timeout=30)
                assert r.status_code == 401 and r.json()["code"] == "unauthorized", (path, headers)
            ok = httpx.request(
                method, srv.url + path, headers={"X-API-Key": "secret-key"}, content=b"", timeout=30
            )
            assert ok.status_code != 401, path
        for method, path in PROBES:
            assert httpx.request(method, srv.url + path).status_code == 200, path
    with live_server(detectors, api_keys=["secret-key"], protect_probes=True) as srv:
        for method, path in PROBES:
            assert httpx.request(method, srv.url + path).status_code == 401, path


def test_cors_allows_only_the_listed_origins(detectors):
    with live_server(detectors, cors_origins=["https://app.example"]) as srv:
        preflight = {"Access-Control-Request-Method": "POST", "Access-Control-Request-Headers": "x-api-key"}
        allowed = httpx.options(
            f"{srv.url}/v1/predict", headers={"Origin": "https://app.example", **preflight}
        )
        assert allowed.status_code == 200
        assert allowed.headers["access-control-allow-origin"] == "https://app.example"
        denied = httpx.options(
            f"{srv.url}/v1/predict", headers={"Origin": "https://evil.example", **preflight}
        )
        assert denied.status_code == 400 and "access-control-allow-origin" not in denied.headers
        simple = httpx.get(f"{srv.url}/health", headers={"Origin": "https://evil.example"})
        assert "access-control-allow-origin" not in simple.headers
    with live_server(detectors) as srv:  # no origins configured: no CORS headers at all
        r = httpx.get(f"{srv.url}/health", headers={"Origin": "https://app.example"})
        assert "access-control-allow-origin" not in r.headers


def test_a_stalled_upload_is_cut_off_at_the_request_deadline(detectors):
    """Slowloris: declare a body, send part of it, stall. The deadline covers reading the body too."""
    import socket
    import time

    with live_server(detectors, request_timeout_s=1.0) as srv:
        with socket.create_connection(("127.0.0.1", srv.port), timeout=10) as s:
            started = time.monotonic()
            s.sendall(
                b"POST /v1/predict HTTP/1.1\r\nHost: localhost\r\nContent-Type: audio/wav\r\n"
                b"Content-Length: 100000\r\n\r\n" + bytes(1000)
            )
            reply = s.recv(65536)
            waited = time.monotonic() - started
        assert reply.startswith(b"HTTP/1.1 408") and b"request_timeout" in reply
        assert waited < 5
        assert httpx.get(f"{srv.url}/ready").status_code == 200
