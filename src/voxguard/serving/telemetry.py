"""Prometheus metrics, one registry per app so several apps (tests) can live in one process.

With several processes (``VOXGUARD_FRONTENDS`` > 1) every process writes its samples to files in
``PROMETHEUS_MULTIPROC_DIR`` and any front-end's ``/metrics`` sums them (prometheus_client's
multi-process mode): counters and histograms add up, gauges show the newest value of a live process.
"""

from __future__ import annotations

import os

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest, multiprocess

_LATENCY_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0)
_BATCH_BUCKETS = (1, 2, 4, 8, 12, 16, 24, 32, 48, 64, 96, 128, 192, 256)


class Metrics:
    """What users of batching servers rely on: queue depth, real batch sizes, waits, drops and why."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        r = self.registry
        self.requests = Counter(
            "voxguard_requests", "HTTP requests by route and status", ["route", "status"], registry=r
        )
        self.request_latency = Histogram(
            "voxguard_request_seconds",
            "HTTP request latency",
            ["route"],
            buckets=_LATENCY_BUCKETS,
            registry=r,
        )
        self.queue_depth_gauge = Gauge(
            "voxguard_queue_depth",
            "windows waiting",
            ["model"],
            registry=r,
            multiprocess_mode="livemostrecent",
        )
        self.batch_size = Histogram(
            "voxguard_batch_size", "windows per forward", ["model"], buckets=_BATCH_BUCKETS, registry=r
        )
        self.batch_utilisation = Histogram(
            "voxguard_batch_utilisation",
            "batch size / max batch size",
            ["model"],
            buckets=(0.1, 0.25, 0.5, 0.75, 0.9, 1.0),
            registry=r,
        )
        self.queue_wait = Histogram(
            "voxguard_window_queue_wait_seconds",
            "time from enqueue to the start of its forward",
            ["model"],
            buckets=_LATENCY_BUCKETS,
            registry=r,
        )
        self.inference = Histogram(
            "voxguard_inference_seconds",
            "forward time per batch",
            ["model"],
            buckets=_LATENCY_BUCKETS,
            registry=r,
        )
        self.dropped_cancelled = Counter(
            "voxguard_dropped_cancelled", "windows dropped because the client had gone", ["model"], registry=r
        )
        self.dropped_expired = Counter(
            "voxguard_dropped_expired", "windows dropped because their deadline passed", ["model"], registry=r
        )
        self.window_seconds = Gauge(
            "voxguard_window_seconds",
            "measured device time per window: the basis of each request's deadline allowance",
            registry=r,
            multiprocess_mode="livemostrecent",
        )
        self.rejected_counter = Counter(
            "voxguard_rejected",
            "requests refused before queueing (queue_full, overloaded, shutting_down, too_long, ...)",
            ["reason"],
            registry=r,
        )
        self.max_batch_size = 1

    def exposition(self) -> bytes:
        """What ``/metrics`` answers: this process's samples, or all processes' when there are several."""
        folder = os.environ.get("PROMETHEUS_MULTIPROC_DIR")
        if not folder:
            return generate_latest(self.registry)
        combined = CollectorRegistry()
        multiprocess.MultiProcessCollector(combined, path=folder)
        return generate_latest(combined)

    # BatchObserver protocol (voxguard.serving.batching)
    def batch(self, model: str, size: int, queue_wait_s: list[float], inference_s: float) -> None:
        self.batch_size.labels(model).observe(size)
        self.batch_utilisation.labels(model).observe(size / self.max_batch_size)
        self.inference.labels(model).observe(inference_s)
        wait = self.queue_wait.labels(model)
        for seconds in queue_wait_s:
            wait.observe(seconds)

    def dropped(self, model: str, reason: str, count: int) -> None:
        counter = self.dropped_cancelled if reason == "cancelled" else self.dropped_expired
        counter.labels(model).inc(count)

    def queue_depth(self, model: str, depth: int) -> None:
        self.queue_depth_gauge.labels(model).set(depth)

    def rejected(self, reason: str) -> None:
        self.rejected_counter.labels(reason).inc()
