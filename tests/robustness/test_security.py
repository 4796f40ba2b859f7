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
