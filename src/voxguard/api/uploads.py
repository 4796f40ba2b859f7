"""Reading uploads in memory with a hard size limit, and a bounded multipart parser.

Starlette's form parser spools files over 1 MB to a temporary file on disk; uploads here must
never touch the disk, and a body over the limit must be refused while it streams in (413
before it is all read), so the body is read and parsed here instead.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field

from python_multipart.multipart import MultipartParser, parse_options_header
from starlette.requests import ClientDisconnect, Request

from .errors import ApiError, how_to_send

MAX_PARTS = 64


@dataclass
class Part:
    name: str
    filename: str | None
    content_type: str
    data: bytearray = field(default_factory=bytearray)


def _too_large(limit: int) -> ApiError:
    return ApiError(
        413,
        "upload_too_large",
        f"The upload is larger than the limit of {limit / 1e6:g} MB. Send a shorter or more compressed file.",
    )


async def read_body(request: Request, limit: int, timeout_s: float) -> bytes:
    """The whole body, refusing at once when Content-Length or the streamed size passes ``limit``.

    The body must arrive within ``timeout_s`` (the request deadline), so a client that declares a body
    and then stalls (slowloris) cannot hold a connection and its buffer indefinitely.
    """
    declared = request.headers.get("content-length")
    if declared is not None:
        try:
            if int(declared) > limit:
                raise _too_large(limit)
        except ValueError as exc:
            raise ApiError(400, "invalid_request", "The Content-Length header is not a number.") from exc
    body = bytearray()
    try:
        async with asyncio.timeout(timeout_s):
            async for chunk in request.stream():
                body += chunk
                if len(body) > limit:
                    raise _too_large(limit)
    except TimeoutError as exc:
        raise ApiError(
            408, "request_timeout", f"The upload did not arrive within {timeout_s:g} s. Send the whole body."
        ) from exc
    except ClientDisconnect as exc:  # hung up mid-upload: nothing to answer, nothing to compute
        request.state.client_gone = True
        raise ApiError(499, "client_closed_request", "The client closed the connection mid-upload.") from exc
    return bytes(body)


def parse_multipart(body: bytes, content_type: str, field: str = "file") -> list[Part]:
    """Split a multipart/form-data body into parts, at most ``MAX_PARTS`` of them; ``field`` is the
    route's file field, for the error message."""
    _, params = parse_options_header(content_type)
    boundary = params.get(b"boundary")
    if not boundary:
        raise ApiError(400, "invalid_multipart", "The multipart body has no boundary. " + how_to_send(field))
    parts: list[Part] = []
    headers: dict[str, str] = {}
    header_name = bytearray()
    header_value = bytearray()

    def on_part_begin() -> None:
        headers.clear()

    def on_header_field(data: bytes, start: int, end: int) -> None:
        header_name.extend(data[start:end])

    def on_header_value(data: bytes, start: int, end: int) -> None:
        header_value.extend(data[start:end])

    def on_header_end() -> None:
        headers[header_name.decode("latin-1").lower()] = header_value.decode("latin-1")
        header_name.clear()
        header_value.clear()

    def on_headers_finished() -> None:
        if len(parts) >= MAX_PARTS:
            raise ApiError(413, "too_many_parts", f"The form has more than {MAX_PARTS} parts.")
        _, disposition = parse_options_header(headers.get("content-disposition", ""))
        name = disposition.get(b"name", b"").decode("utf-8", "replace")
        raw_filename = disposition.get(b"filename")
        filename = raw_filename.decode("utf-8", "replace") if raw_filename is not None else None
        parts.append(Part(name, filename, headers.get("content-type", "")))

    def on_part_data(data: bytes, start: int, end: int) -> None:
        parts[-1].data.extend(data[start:end])

    parser = MultipartParser(
        boundary,
        {
            "on_part_begin": on_part_begin,
            "on_header_field": on_header_field,
            "on_header_value": on_header_value,
            "on_header_end": on_header_end,
            "on_headers_finished": on_headers_finished,
            "on_part_data": on_part_data,
        },
    )
    try:
        parser.write(body)
        parser.finalize()
    except ApiError:
        raise
    except Exception as exc:  # python-multipart raises several error types for malformed bodies
        raise ApiError(400, "invalid_multipart", f"The multipart body is malformed ({exc}).") from exc
    return parts
