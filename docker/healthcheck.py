"""Container health check: exit 0 when the local voxguard answers ``GET /health`` with 200, else 1.

Standard library only (the image has no curl). It reads the server's own ``VOXGUARD_*`` variables, so
it keeps working when the port changes, TLS is on (the certificate names the public host, not
127.0.0.1, so it is not verified here) or probes need an API key (``VOXGUARD_PROTECT_PROBES``).
``python healthcheck.py /ready`` checks readiness instead.
"""

from __future__ import annotations

import os
import ssl
import sys
import urllib.request


def main(argv: list[str]) -> int:
    path = argv[1] if len(argv) > 1 else "/health"
    tls = bool(os.environ.get("VOXGUARD_CERTFILE"))
    url = f"{'https' if tls else 'http'}://127.0.0.1:{os.environ.get('VOXGUARD_PORT', '8000')}{path}"
    request = urllib.request.Request(url)
    keys = [key.strip() for key in os.environ.get("VOXGUARD_API_KEYS", "").split(",") if key.strip()]
    if keys:
        request.add_header("X-API-Key", keys[0])
    context = ssl._create_unverified_context() if tls else None
    try:
        with urllib.request.urlopen(request, timeout=4, context=context) as response:
            status = response.status
    except OSError as exc:  # refused, timed out, TLS failure, or an HTTPError (4xx/5xx)
        print(f"unhealthy: {url}: {exc}", file=sys.stderr)
        return 1
    return 0 if status == 200 else 1


if __name__ == "__main__":
    sys.exit(main(sys.argv))
