"""Overload and mid-upload disconnects against a real uvicorn server on loopback (bounded loops)."""

from __future__ import annotations

import asyncio
import ctypes
import gc
import json
import re
import socket
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest

from servers import live_server

QUEUE_SIZE = 8
TIMEOUT_S = 10.0
ARTIFACTS = Path(__file__).resolve().parents[2] / "test-artifacts"
# What the quieter of rounds 2 and 3 may add to live memory, per request in it. Measured on a 2-core
# box in both wirings: at most 0.3 KB of heap and 4 Python blocks per request (the other round once
# added 31 KB and 7 blocks per request, a one-off). Keeping a request's upload (67 KB here), its decoded
# audio or one window (258 KB) exceeds the heap bound; keeping a dict of 30 strings per request (33
# blocks) exceeds the block bound, and a Request, Response or log record is far larger than that.
LEAK_BYTES_PER_REQUEST = 32 * 1024
LEAK_BLOCKS_PER_REQUEST = 20


class _MallInfo2(ctypes.Structure):
    _fields_ = [
        (name, ctypes.c_size_t)
        for name in (
            "arena",
            "ordblks",
            "smblks",
            "hblks",
            "hblkhd",
            "usmblks",
            "fsmblks",
            "uordblks",
            "fordblks",
            "keepcost",
        )
    ]


@dataclass(frozen=True)
class LiveMemory:
    """What the process (test client and server alike) still references after a full collection.

    Not RSS: the tuned allocator (``runtime.tune_allocator``) keeps freed heap mapped, so RSS is a
    high-water mark that a heap fragmented by earlier tests can raise round after round with nothing
    leaked. CI saw RSS grow 77 and then 51 MB in rounds 2 and 3; locally, after the same earlier tests,
    the heap's mapped size grew 42 MB between two runs of this test while its bytes in use stayed put.
    """

    heap_bytes: int  # glibc's bytes in use: tensors, arrays, Python objects over 512 bytes
    python_blocks: int  # Python's small objects, which live in arenas of its own

    def minus(self, before: LiveMemory) -> LiveMemory:
        return LiveMemory(self.heap_bytes - before.heap_bytes, self.python_blocks - before.python_blocks)


def live_memory() -> LiveMemory:
    gc.collect()
    libc = ctypes.CDLL("libc.so.6")
    libc.mallinfo2.restype = _MallInfo2
    info = libc.mallinfo2()
    return LiveMemory(info.uordblks + info.hblkhd, sys.getallocatedblocks())


def rss_mb() -> float:
    status = Path("/proc/self/status").read_text()
    return int(re.search(r"VmRSS:\s+(\d+) kB", status).group(1)) / 1024


def metric(text: str, name: str) -> float:
    return sum(float(m.group(1)) for m in re.finditer(rf"^{name}(?:{{[^}}]*}})? (\S+)$", text, re.M))


@dataclass(frozen=True)
class Outcome:
    """What the test keeps of a response: holding the responses would itself grow live memory each round."""

    status: int
    retry_after: str
    code: str | None
    total_ms: float | None

    @classmethod
    def of(cls, response: httpx.Response) -> Outcome:
        body = response.json()
        total_ms = body["timing"]["total_ms"] if response.status_code == 200 else None
        return cls(response.status_code, response.headers.get("retry-after", ""), body.get("code"), total_ms)


@pytest.fixture(scope="module")
def clip(samples_dir) -> tuple[str, bytes]:
    return ("p225_002_mic1.flac", (samples_dir / "p225_002_mic1.flac").read_bytes())


async def _overload(
    client: httpx.AsyncClient, clip: tuple[str, bytes], rps: float, seconds: float
) -> tuple[list[Outcome], list[float]]:
    """Open-loop arrivals at ``rps`` for ``seconds`` (they do not wait for answers), queue depth sampled."""
    depths: list[float] = []

    async def watch_queue() -> None:
        while True:
            depths.append(metric((await client.get("/metrics")).text, "voxguard_queue_depth"))
            await asyncio.sleep(0.1)

    async def ask() -> Outcome:
        return Outcome.of(await client.post("/v1/predict", files={"file": clip}))

    watcher = asyncio.ensure_future(watch_queue())
    began = time.perf_counter()
    tasks = []
    for i in range(int(rps * seconds)):
        tasks.append(asyncio.ensure_future(ask()))
        await asyncio.sleep(max(0.0, began + (i + 1) / rps - time.perf_counter()))
    outcomes = await asyncio.gather(*tasks)
    watcher.cancel()
    return outcomes, depths


@pytest.mark.slow
async def test_four_times_capacity_gets_only_200_or_503_within_bounds(detector_factory, clip):
    detectors = {"aasist": detector_factory("aasist", "fast")}
    with live_server(detectors, max_batch_size=4, queue_size=QUEUE_SIZE, request_timeout_s=TIMEOUT_S) as srv:
        async with httpx.AsyncClient(base_url=srv.url, timeout=60) as client:
            start = time.perf_counter()
            for _ in range(3):  # capacity: one request at a time, no batching
                assert (await client.post("/v1/predict", files={"file": clip})).status_code == 200
            capacity_rps = 3 / (time.perf_counter() - start)
            offered_rps = 4 * capacity_rps
            # Round 1 warms every batch size and buffer. A leak grows live memory every round; a one-off
            # cache does not repeat. So one of two further identical rounds must add (almost) nothing.
            first, depths1 = await _overload(client, clip, offered_rps, 6.0)
            live, rss = [live_memory()], [rss_mb()]
            second, depths2 = await _overload(client, clip, offered_rps, 6.0)
            live.append(live_memory())
            rss.append(rss_mb())
            third, depths3 = await _overload(client, clip, offered_rps, 6.0)
            live.append(live_memory())
            rss.append(rss_mb())
    outcomes, depths = first + second + third, depths1 + depths2 + depths3
    served = [o for o in outcomes if o.status == 200]
    refused = [o for o in outcomes if o.status == 503]
    assert {o.status for o in outcomes} <= {200, 503}
    assert served and refused
    assert all(o.retry_after.isdigit() for o in refused)
    assert all(o.code == "queue_full" for o in refused)
    assert max(o.total_ms for o in served) <= TIMEOUT_S * 1000
    assert max(depths) <= QUEUE_SIZE
    growth = [live[1].minus(live[0]), live[2].minus(live[1])]
    per_request = [
        (g.heap_bytes / len(r), g.python_blocks / len(r))
        for g, r in zip(growth, (second, third), strict=True)
    ]
    assert min(b for b, _ in per_request) < LEAK_BYTES_PER_REQUEST, (live, per_request)
    assert min(k for _, k in per_request) < LEAK_BLOCKS_PER_REQUEST, (live, per_request)
    ARTIFACTS.mkdir(exist_ok=True)
    (ARTIFACTS / "overload.json").write_text(
        json.dumps(
            {
                "capacity_rps": round(capacity_rps, 2),
                "offered_rps": round(offered_rps, 2),
                "requests": len(outcomes),
                "served": len(served),
                "refused_503": len(refused),
                "other": len(outcomes) - len(served) - len(refused),
                "max_total_ms_served": round(max(o.total_ms for o in served), 1),
                "max_queue_depth": max(depths),
                "queue_bound": QUEUE_SIZE,
                "requests_in_rounds_2_3": [len(second), len(third)],
                "live_heap_mb_after_rounds": [round(m.heap_bytes / 2**20, 2) for m in live],
                "python_blocks_after_rounds": [m.python_blocks for m in live],
                "leak_bound_per_request": {
                    "heap_bytes": LEAK_BYTES_PER_REQUEST,
                    "python_blocks": LEAK_BLOCKS_PER_REQUEST,
                },
                "rss_mb_after_rounds": [round(v, 1) for v in rss],
            },
            indent=1,
        )
    )


@pytest.mark.slow
def test_clients_hanging_up_mid_upload_cost_nothing(detector_factory, clip):
    detectors = {"aasist": detector_factory("aasist", "fast")}
    with live_server(detectors) as srv:
        body = b"x" * 50_000
        for _ in range(5):
            with socket.create_connection(("127.0.0.1", srv.port), timeout=5) as s:
                s.sendall(
                    b"POST /v1/predict HTTP/1.1\r\nHost: localhost\r\nContent-Type: audio/wav\r\n"
                    + f"Content-Length: {len(body) * 4}\r\n\r\n".encode()
                    + body
                )
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            metrics = httpx.get(f"{srv.url}/metrics").text
            if metric(metrics, 'voxguard_requests_total{route="/v1/predict",status="499"}') >= 5:
                break
            time.sleep(0.1)
        assert 'route="/v1/predict",status="499"} 5.0' in metrics
        assert metric(metrics, "voxguard_batch_size_count") == 0  # nothing reached the model
        assert 'status="500"' not in metrics
        ok = httpx.post(f"{srv.url}/v1/predict", files={"file": clip}, timeout=60)
        assert ok.status_code == 200
