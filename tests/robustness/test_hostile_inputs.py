"""Hostile and broken input against a real uvicorn server: every answer is a 4xx JSON error with a
stable code or a valid 200 verdict; never a 5xx, never a hang, never a file on disk, no memory creep.

The per-case outcomes go to ``test-artifacts/hostile-inputs.json`` for the evidence doc.
"""

from __future__ import annotations

import gc
import json
import os
import re
import tempfile
import time
from pathlib import Path

import httpx
import pytest
from hostile import Case, build_cases

from servers import live_server

REPO = Path(__file__).resolve().parents[2]
ARTIFACT = REPO / "test-artifacts" / "hostile-inputs.json"
MAX_UPLOAD_MB = 5
LIMIT_BYTES = MAX_UPLOAD_MB * 1_000_000
CLIENT_TIMEOUT_S = 30.0
REPEATS = 3
# VmRSS growth allowed between the end of the warm-up pass and the end of three more passes.
# Measured on a 2-core CPU box: 850.2 -> 850.6 MB (+0.4 MB; +0.2 MB on another run; see the artifact's
# "memory" entry). 150 MB is headroom for allocator noise while still catching a per-request leak:
# each pass sends ~20 MB of bodies (two 5 MB over-limit uploads, a chunked stream of ~8 MB) and decodes
# 1400 s of bomb audio, so keeping any of it per request would grow RSS by well over 150 MB in 3 passes.
RSS_GROWTH_LIMIT_MB = 150.0
CODE = re.compile(r"^[a-z][a-z0-9]*(_[a-z0-9]+)*$")
# Cases where the server may legitimately drop the connection instead of answering.
MAY_CLOSE = {"content_length_larger_than_body"}

CASES = build_cases(
    Path(os.environ.get("VOXGUARD_SAMPLES_DIR", REPO.parent / "shared" / "samples")), LIMIT_BYTES
)
BY_ID = {c.id: c for c in CASES}
# Cases expected to fail because of a known server bug (strict: they must start passing once fixed).
# The three found by this suite (unknown WAV codec -> 500, truncated FLAC refused) are fixed.
XFAIL: dict[str, str] = {}


@pytest.fixture(scope="module")
def private_tmp(tmp_path_factory):
    """Point ``tempfile`` (for every thread, the server's included) at an empty private directory, so a
    spooled upload would show up there and other processes' files in /tmp cannot confuse the check."""
    path = tmp_path_factory.mktemp("hostile-tmp")
    previous = tempfile.tempdir
    tempfile.tempdir = str(path)
    try:
        yield path
    finally:
        tempfile.tempdir = previous


@pytest.fixture(scope="module")
def srv(detector_factory, private_tmp, serving_mode):
    detectors = {"aasist": detector_factory("aasist", "fast")}
    with live_server(detectors, max_upload_mb=MAX_UPLOAD_MB, max_duration_s=600) as server:
        yield server


@pytest.fixture(scope="module")
def client(srv):
    # A fresh connection per request, so one case's fate cannot leak into the next.
    no_reuse = httpx.Limits(max_keepalive_connections=0)
    with httpx.Client(base_url=srv.url, timeout=CLIENT_TIMEOUT_S, limits=no_reuse) as c:
        yield c


FIRST_PASS: dict[str, dict] = {}


def send(client: httpx.Client, port: int, case: Case) -> dict:
    """Send one case; the outcome as a row: status (None when closed or hung), code, body, timing."""
    started = time.monotonic()
    status: int | None = None
    body: object = None
    sent = len(case.body)
    outcome = None
    try:
        if case.kind == "socket":
            assert case.send is not None
            sent, reply = case.send(port)
            if reply:
                head, _, raw = reply.partition(b"\r\n\r\n")
                status = int(head.split(b" ", 2)[1])
                body = _json(raw)
            else:
                outcome = "closed"
        else:
            if case.kind == "multipart":
                request = client.build_request("POST", case.path, files=case.files or None, data=case.data)
            else:
                headers = {"content-type": case.content_type} if case.content_type else {}
                request = client.build_request("POST", case.path, content=case.body, headers=headers)
                if not case.content_type:
                    request.headers.pop("content-type", None)
            sent = len(request.read())
            response = client.send(request)
            status, body = response.status_code, _json(response.content)
    except (httpx.TimeoutException, TimeoutError):
        outcome = "hang"
    except (httpx.RemoteProtocolError, httpx.ReadError, ConnectionError):
        outcome = "closed"
    if outcome is None:
        outcome = f"{status // 100}xx" if status else "closed"
    code = body.get("code") if isinstance(body, dict) else None
    return {
        "id": case.id,
        "bytes_sent": sent,
        "status": status,
        "code": code,
        "outcome": outcome,
        "elapsed_ms": round((time.monotonic() - started) * 1000, 1),
        "body": body,
    }


def _json(raw: bytes) -> object:
    try:
        return json.loads(raw)
    except ValueError:
        return raw[:200].decode("latin-1")


def assert_verdict(body: dict) -> None:
    """A well-formed result: a verdict with its probability, or INCONCLUSIVE with a reason and none."""
    assert body["windows"], body
    if body["prediction"] == "INCONCLUSIVE":
        assert body["reason"] and body["fake_probability"] is None and body["is_fake"] is None, body
    else:
        assert body["prediction"] in ("REAL", "FAKE") and 0.0 <= body["fake_probability"] <= 1.0, body


def check(case: Case, row: dict) -> None:
    """The contract every hostile input must meet (plus the expected status and code where defined)."""
    status, body = row["status"], row["body"]
    assert row["outcome"] != "hang", f"{case.id}: no answer within {CLIENT_TIMEOUT_S} s"
    if row["outcome"] == "closed":
        assert case.id in MAY_CLOSE, f"{case.id}: connection closed without an answer"
        return
    assert status < 500, f"{case.id}: {status} {body}"
    if case.max_bytes_sent is not None:
        assert row["bytes_sent"] < case.max_bytes_sent, f"{case.id}: answered only after the whole body"
    if case.expect_status is not None:
        assert status == case.expect_status, f"{case.id}: {status} {body}"
    if status == 200:
        if case.path.startswith("/v1/predict/batch"):
            for item in body["results"]:
                assert (item.get("result") is None) != (item.get("error") is None), item
                if item.get("error"):
                    assert CODE.match(item["error"]["code"]) and item["error"]["detail"], item
                else:
                    assert_verdict(item["result"])
        else:
            assert_verdict(body)
        return
    assert 400 <= status < 500, f"{case.id}: {status} {body}"
    assert isinstance(body, dict) and set(body) >= {"code", "detail"}, f"{case.id}: {status} {body!r}"
    assert isinstance(body["code"], str) and CODE.match(body["code"]), body
    assert isinstance(body["detail"], str) and body["detail"].strip(), body
    if case.expect_code is not None:
        assert body["code"] == case.expect_code, f"{case.id}: {status} {body}"


@pytest.mark.parametrize(
    "case_id",
    [
        pytest.param(c.id, id=c.id, marks=[pytest.mark.xfail(strict=True, reason=XFAIL[c.id])])
        if c.id in XFAIL
        else pytest.param(c.id, id=c.id)
        for c in CASES
    ],
)
def test_hostile_input(srv, client, case_id):
    case = BY_ID[case_id]
    row = send(client, srv.port, case)
    FIRST_PASS[case_id] = row
    check(case, row)


def rss_mb() -> float:
    gc.collect()
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    raise AssertionError("no VmRSS in /proc/self/status")


def server_5xx(client: httpx.Client) -> float:
    text = client.get("/metrics").text
    return sum(
        float(m.group(1))
        for m in re.finditer(r'^voxguard_requests_total\{[^}]*status="5\d\d"[^}]*\} (\S+)$', text, re.M)
    )


def test_server_survives_every_input_repeated(srv, client, samples_dir, private_tmp):
    """Run last: one warm-up pass, three more passes, then the server must be whole and unbloated."""
    # The parametrised cases above are the warm-up pass; whatever of them did not run is sent now.
    warmup = [FIRST_PASS.get(c.id) or send(client, srv.port, c) for c in CASES]
    rss_warm = rss_mb()
    repeated: list[dict] = []
    for _ in range(REPEATS):
        repeated += [send(client, srv.port, c) for c in CASES]
    rss_after = rss_mb()

    rows = warmup
    every = warmup + repeated
    totals = {k: sum(r["outcome"] == k for r in rows) for k in ("2xx", "4xx", "5xx", "hang", "closed")}
    all_totals = {k: sum(r["outcome"] == k for r in every) for k in ("2xx", "4xx", "5xx", "hang", "closed")}
    assert tempfile.gettempdir() == str(private_tmp)  # the snapshot below covers the server's temp dir
    spilled = sorted(p.name for p in private_tmp.iterdir())  # empty before the first request
    growth = rss_after - rss_warm
    ARTIFACT.parent.mkdir(parents=True, exist_ok=True)
    ARTIFACT.write_text(
        json.dumps(
            {
                "server": {"max_upload_mb": MAX_UPLOAD_MB, "max_duration_s": 600, "model": "aasist/fast"},
                "cases": [
                    {k: r[k] for k in ("id", "bytes_sent", "status", "code", "elapsed_ms")} for r in rows
                ],
                "totals": totals,
                "totals_all_passes": {**all_totals, "requests": len(every)},
                "memory": {
                    "rss_after_warmup_mb": round(rss_warm, 1),
                    "rss_after_repeats_mb": round(rss_after, 1),
                    "growth_mb": round(growth, 1),
                    "limit_mb": RSS_GROWTH_LIMIT_MB,
                    "repeats": REPEATS,
                },
                "temp_files_written": spilled,
            },
            indent=2,
        )
        + "\n"
    )

    for case, row in zip(CASES * (REPEATS + 1), warmup + repeated, strict=True):
        if case.id not in XFAIL:
            check(case, row)
    assert srv.service.not_ready_reason() is None
    assert client.get("/ready").status_code == 200
    normal = client.post(
        "/v1/predict", files={"file": ("p225.flac", (samples_dir / "p225_002_mic2.flac").read_bytes())}
    )
    assert normal.status_code == 200 and normal.json()["prediction"] == "REAL", normal.text
    assert growth < RSS_GROWTH_LIMIT_MB, f"RSS grew {growth:.1f} MB ({rss_warm:.1f} -> {rss_after:.1f})"
    assert spilled == [], f"uploads reached the disk: {spilled}"
    # 5xx the clients never saw (e.g. counted for a connection the client dropped) are failures too.
    seen_5xx = sum(r["outcome"] == "5xx" for r in every)
    assert server_5xx(client) == seen_5xx, "the server counted 5xx responses no client received (/metrics)"
