"""``/openapi.json``, Swagger UI (``/docs``) and ReDoc (``/redoc``): what they document, and that a newcomer
can use them, in headless Chromium against a real server on loopback, with nothing fetched from outside."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from openapi_spec_validator import validate

from browser import CHROMIUM, CHROMIUM_ARGS
from servers import live_server

WAIT_MS = 60_000
PROTECTED = {"/v1/predict", "/v1/predict/batch", "/predict", "/v1/models"}
PROBES = {"/health", "/ready", "/metrics"}


@pytest.fixture(scope="module")
def detectors(detector_factory) -> dict:
    return {"aasist": detector_factory("aasist", "fast")}


def operations(spec: dict) -> Iterator[tuple[str, dict]]:
    for path, item in spec["paths"].items():
        for operation in item.values():
            yield path, operation


def test_openapi_has_key_schemes_exactly_where_keys_are_enforced(detectors):
    with live_server(detectors, api_keys=["k"]) as srv:
        spec = httpx.get(f"{srv.url}/openapi.json").json()
    validate(spec)
    schemes = spec["components"]["securitySchemes"]
    assert schemes["ApiKey"] == {
        "type": "apiKey",
        "in": "header",
        "name": "X-API-Key",
        "description": "One of the server's VOXGUARD_API_KEYS.",
    }
    assert schemes["Bearer"]["type"] == "http" and schemes["Bearer"]["scheme"] == "bearer"
    for path, operation in operations(spec):
        want = [{"ApiKey": []}, {"Bearer": []}] if path in PROTECTED else None
        assert operation.get("security") == want, path
    with live_server(detectors, api_keys=["k"], protect_probes=True) as srv:
        spec = httpx.get(f"{srv.url}/openapi.json").json()
    assert all(op.get("security") for path, op in operations(spec) if path in PROBES | PROTECTED)
    with live_server(detectors) as srv:  # no keys: nothing asks for one
        spec = httpx.get(f"{srv.url}/openapi.json").json()
    assert "securitySchemes" not in spec.get("components", {})
    assert not [path for path, op in operations(spec) if "security" in op]


def test_error_examples_carry_the_codes_of_their_status(detectors):
    with live_server(detectors) as srv:
        spec = httpx.get(f"{srv.url}/openapi.json").json()
    responses = spec["paths"]["/v1/predict"]["post"]["responses"]
    codes = {
        status: sorted(e["value"]["code"] for e in r["content"]["application/json"]["examples"].values())
        for status, r in responses.items()
        if status not in ("200",)
    }
    assert codes["401"] == ["unauthorized"]
    assert codes["503"] == ["engine_unavailable", "overloaded", "queue_full", "shutting_down"]
    assert codes["504"] == ["deadline_exceeded"]
    assert codes["500"] == ["inference_failed"]
    assert "unknown_model" in codes["400"] and "too_many_files" in codes["400"]
    assert [s for s, c in codes.items() if "undecodable_audio" in c] == ["415"]
    for response in responses.values():
        for example in response.get("content", {}).get("application/json", {}).get("examples", {}).values():
            assert example["summary"] == example["value"]["code"]
    assert "examples" not in spec["components"]["schemas"]["ErrorBody"]["properties"]["code"]
    assert spec["paths"]["/predict"]["post"]["summary"] == "Legacy prototype endpoint (prefer /v1/predict)"
    form = spec["paths"]["/v1/predict"]["post"]["requestBody"]["content"]["multipart/form-data"]["schema"]
    assert form["properties"]["model"]["example"] == ""  # Swagger UI would pre-fill "string" otherwise


# ---------------------------------------------------------------- in the browser


@pytest.fixture(scope="module")
def browser() -> Iterator:
    if not Path(CHROMIUM).exists():
        pytest.fail(f"{CHROMIUM} is missing: apt-get install chromium (see .ci/run)")
    from playwright.sync_api import sync_playwright

    with sync_playwright() as pw:
        chromium = pw.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        yield chromium
        chromium.close()


@pytest.fixture
def open_docs(browser):
    """``open_docs(server, path)`` -> a page on which every request leaving the server is recorded and
    refused, and every page error is collected; both must stay empty."""
    opened = []

    def open_(server, path: str):
        page = browser.new_page(viewport={"width": 1200, "height": 900})
        page.set_default_timeout(WAIT_MS)
        outside: list[str] = []
        errors: list[str] = []

        def refuse(route) -> None:
            outside.append(route.request.url)
            route.abort()

        page.route(lambda url: not url.startswith(server.url), refuse)
        page.on("pageerror", lambda exc: errors.append(str(exc)))
        page.goto(f"{server.url}{path}", wait_until="networkidle")
        opened.append((page, outside, errors))
        return page

    yield open_
    for page, outside, errors in opened:
        page.close()
        assert not outside, f"fetched from outside the server: {outside}"
        assert not errors, errors


def try_predict(page, sample: Path) -> dict:
    """In Swagger UI: open POST /v1/predict, Try it out, choose only the file, Execute; the response."""
    operation = page.locator("#operations-default-predict_v1_predict_post")
    operation.locator(".opblock-summary").click()
    operation.locator("button.try-out__btn").click()
    assert operation.locator("input[type=text]").evaluate_all("inputs => inputs.map(i => i.value)") == [
        "",
        "",
    ]
    operation.locator("input[type=file]").set_input_files(sample)
    operation.locator("button.execute").click()
    status = operation.locator(".live-responses-table tbody .response-col_status").first
    status.wait_for()
    body = operation.locator(".live-responses-table tbody .response-col_description pre").first.inner_text()
    return {"status": status.inner_text().strip(), "body": body}


@pytest.mark.slow
def test_swagger_try_it_out_with_only_a_file_gives_a_verdict(detectors, open_docs, samples_dir):
    with live_server(detectors) as srv:
        page = open_docs(srv, "/docs")
        assert page.locator(".btn.authorize").count() == 0  # no keys: nothing to authorise
        answer = try_predict(page, samples_dir / "p225_002_mic2.flac")
    assert answer["status"] == "200", answer
    assert '"prediction": "REAL"' in answer["body"]


@pytest.mark.slow
def test_swagger_authorize_then_try_it_out(detectors, open_docs, samples_dir):
    with live_server(detectors, api_keys=["s3cret"]) as srv:
        page = open_docs(srv, "/docs")
        page.locator(".btn.authorize").first.click()
        dialog = page.locator(".dialog-ux")
        key_scheme = dialog.locator(".auth-container").filter(has=page.locator("#api_key_value"))
        key_scheme.locator("#api_key_value").fill("s3cret")
        key_scheme.locator("button.authorize").click()
        dialog.get_by_text("Authorized", exact=True).wait_for()
        dialog.locator("button.close-modal").click()
        answer = try_predict(page, samples_dir / "p225_002_mic2.flac")
    assert answer["status"] == "200", answer
    assert '"prediction": "REAL"' in answer["body"]


@pytest.mark.slow
def test_redoc_renders_without_fetching_anything_from_outside(detectors, open_docs):
    with live_server(detectors) as srv:
        page = open_docs(srv, "/redoc")
        page.get_by_text("Is this speech real or synthetic?").first.wait_for()
        assert page.locator("h1").first.inner_text().startswith("voxguard")
        csp = httpx.get(f"{srv.url}/redoc").headers["content-security-policy"]
    assert "img-src 'self' data:" in csp and "default-src 'self'" in csp
