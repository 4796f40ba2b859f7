"""Serving apart from HTTP: from a request's windows to their scores, in one process or split in two.

``service`` (:class:`PredictionService`, what the HTTP layer talks to: decoding pool, deadlines, the
verdict) hands windows to an engine (``engine.Engine``): ``engine.LocalEngine`` holds the detectors and
the ``batching.Batcher`` in this process; ``remote.RemoteEngine`` reaches the same engine in another
process, served there by ``enginehost.EngineHost``, over shared memory (``shm``) and a Unix socket
(``channel``); both ask ``admission`` who may queue. ``errors`` defines every serving error,
``simulated`` stands in for an accelerator in benchmarks, ``telemetry`` holds the Prometheus metrics, and
``wiring`` builds either arrangement. Nothing here imports the HTTP layer (``voxguard.api``) or starts a
process (``voxguard.processes``).
"""
