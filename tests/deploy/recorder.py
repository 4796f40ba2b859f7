"""An HTTP server on loopback that answers every GET the same way and records what it was asked.

Stands for another process on a port the health check must not trust, or for a package index whose
use by a build must be seen.
"""

from __future__ import annotations

import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

# What voxguard's /health answers: a decoy that looks exactly like it.
VOXGUARD_LIKE_HEALTH = b'{"status":"ok","model_loaded":true,"device":"cpu","models":["aasist"]}'


class RecordingServer:
    """``with RecordingServer(200, body) as server:`` serves on ``server.port``; ``server.paths`` lists
    the paths asked, in order."""

    def __init__(self, status: int, body: bytes, content_type: str = "application/json") -> None:
        self.paths: list[str] = []
        recorder = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                recorder.paths.append(self.path)
                self.send_response(status)
                self.send_header("Content-Type", content_type)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *args: object) -> None:
                """Quiet: the test reads ``paths``."""

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.port = self._server.server_address[1]
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)

    def __enter__(self) -> RecordingServer:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._server.shutdown()
        self._server.server_close()
        self._thread.join(timeout=10)
