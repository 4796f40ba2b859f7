"""Container health check: exit 0 when this container's voxguard answers ``GET /health``, else 1.

Standard library only (the image has no curl). The address is not guessed from ``VOXGUARD_PORT``: the
server writes its pid and URL to ``VOXGUARD_ADDRESS_FILE`` once it listens, so ``serve --port N``,
``--certfile`` and host networking (where another process may own port 8000) are all checked at the
right place. The answer must be voxguard's own (its JSON shape), not just any 200. TLS certificates
name the public host, not 127.0.0.1, so they are not verified here; the first of ``VOXGUARD_API_KEYS``
is sent when probes are protected. ``python healthcheck.py /ready`` checks readiness instead.
"""

from __future__ import annotations

import json
import os
import ssl
import sys
import urllib.request

# What voxguard's own answer looks like, per path.
_EXPECTED = {
    "/health": lambda body: body.get("status") == "ok" and "model_loaded" in body and "models" in body,
    "/ready": lambda body: body.get("ready") is True,
}


def _server_url() -> str:
    """The URL from the address file, if the process that wrote it still runs."""
    path = os.environ.get("VOXGUARD_ADDRESS_FILE")
    if not path:
        raise LookupError("VOXGUARD_ADDRESS_FILE is not set (the image sets it)")
    try:
        with open(path) as f:
            record = json.load(f)
    except FileNotFoundError:
        raise LookupError(f"{path} does not exist: the server is not listening (yet)") from None
    try:
        os.kill(record["pid"], 0)
    except ProcessLookupError:
        raise LookupError(f"{path} names pid {record['pid']}, which has exited") from None
    except PermissionError:
        pass  # it runs, as another user
    return record["url"]


def main(argv: list[str]) -> int:
    path = argv[1] if len(argv) > 1 else "/health"
    if path not in _EXPECTED:
        print(f"usage: healthcheck.py [{' | '.join(_EXPECTED)}]", file=sys.stderr)
        return 2
    try:
        url = _server_url() + path
    except (LookupError, OSError, ValueError, KeyError) as exc:
        print(f"unhealthy: {exc}", file=sys.stderr)
        return 1
    request = urllib.request.Request(url)
    keys = [key.strip() for key in os.environ.get("VOXGUARD_API_KEYS", "").split(",") if key.strip()]
    if keys:
        request.add_header("X-API-Key", keys[0])
    context = ssl._create_unverified_context() if url.startswith("https:") else None
    try:
        with urllib.request.urlopen(request, timeout=4, context=context) as response:
            body = json.load(response)
    except (OSError, ValueError) as exc:  # refused, timed out, TLS, HTTPError (4xx/5xx), not JSON
        print(f"unhealthy: {url}: {exc}", file=sys.stderr)
        return 1
    if not isinstance(body, dict) or not _EXPECTED[path](body):
        print(f"unhealthy: {url} did not answer as voxguard does: {body!r}"[:500], file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
