"""HTTP routes: turn requests into service calls and results into the wire models."""

from __future__ import annotations

import asyncio
import hmac
import time
from typing import Any

from fastapi import APIRouter, Depends, Query, Request, Response
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from ..service import Prediction, PredictionService
from .errors import UNSUPPORTED_TYPE, ApiError, error_response, to_api_error
from .protocol import (
    BatchItemOut,
    BatchResponse,
    ErrorBody,
    HealthResponse,
    ModelOut,
    ModelsResponse,
    PredictResponse,
    ReadyResponse,
    SeedPrediction,
    Timing,
)
from .uploads import Part, parse_multipart, read_body

_ERRORS: dict[int | str, dict[str, Any]] = {
    status: {"model": ErrorBody, "description": text}
    for status, text in (
        (400, "bad input (empty, malformed form, unknown model)"),
        (401, "missing or wrong API key"),
        (408, "the upload did not arrive before the request deadline"),
        (413, "upload or audio too large"),
        (415, "not an accepted audio format or content type"),
        (422, "audio too short, invalid samples, no speech, or invalid parameters"),
        (503, "queue full or shutting down; see Retry-After"),
        (504, "not scored before the request deadline"),
    )
}


def _upload_body(many: bool) -> dict[str, Any]:
    field = "files" if many else "file"
    file_schema: dict[str, Any] = {"type": "string", "format": "binary"}
    properties: dict[str, Any] = {
        field: {"type": "array", "items": file_schema} if many else file_schema,
        "model": {"type": "string", "description": "model to use (default: the first loaded)"},
    }
    content: dict[str, Any] = {
        "multipart/form-data": {"schema": {"type": "object", "properties": properties, "required": [field]}}
    }
    if not many:
        content["audio/*"] = {"schema": {"type": "string", "format": "binary"}}
        content["application/octet-stream"] = {"schema": {"type": "string", "format": "binary"}}
    return {"requestBody": {"required": True, "content": content}}


def service_of(request: Request) -> PredictionService:
    return request.app.state.service


def key_matches(supplied: str, keys: list[str]) -> bool:
    """Compare against every key in constant time, with no early exit, so timing reveals nothing."""
    matched = False
    for key in keys:
        matched |= hmac.compare_digest(supplied.encode(), key.encode())
    return matched


async def require_api_key(request: Request) -> None:
    """Accept ``X-API-Key`` or ``Authorization: Bearer``; every key is compared in constant time.

    ``async`` although it never awaits: FastAPI runs a plain ``def`` dependency in a thread pool, a
    thread hand-off on every request for a check that takes microseconds."""
    keys: list[str] = request.app.state.settings.api_keys
    if not keys:
        return
    supplied = request.headers.get("x-api-key", "")
    auth = request.headers.get("authorization", "")
    if not supplied and auth.lower().startswith("bearer "):
        supplied = auth[7:].strip()
    if not key_matches(supplied, keys):
        raise ApiError(
            401,
            "unauthorized",
            "A valid API key is required: send it as `X-API-Key: <key>` or `Authorization: Bearer <key>`.",
            {"WWW-Authenticate": "Bearer"},
        )


async def require_probe_key(request: Request) -> None:
    if request.app.state.settings.protect_probes:
        await require_api_key(request)


api = APIRouter(dependencies=[Depends(require_api_key)])
probes = APIRouter(dependencies=[Depends(require_probe_key)])


async def _audio_parts(request: Request, field: str) -> tuple[list[Part], str | None]:
    """The audio payload(s) and an optional form ``model`` field, from multipart or a raw body."""
    settings = request.app.state.settings
    limit = int(settings.max_upload_mb * 1_000_000)
    body_timeout = max(0.0, request.state.received_at + settings.request_timeout_s - time.monotonic())
    content_type = request.headers.get("content-type", "")
    media = content_type.split(";", 1)[0].strip().lower()
    if media == "multipart/form-data":
        parts = parse_multipart(await read_body(request, limit, body_timeout), content_type)
        names = {field, "file"}  # the batch route also takes repeated `file` fields
        files = [p for p in parts if p.name in names]
        model = next((p.data.decode("utf-8", "replace").strip() for p in parts if p.name == "model"), None)
        if not files:
            found = ", ".join(sorted({p.name or "<unnamed>" for p in parts})) or "none"
            raise ApiError(
                422,
                "missing_file_field",
                f"The form has no `{field}` field (fields found: {found}). Upload the audio as `{field}`.",
            )
        return files, model or None
    if media.startswith("audio/") or media in ("application/octet-stream", "video/webm", "video/mp4"):
        return [Part("file", None, media, bytearray(await read_body(request, limit, body_timeout)))], None
    raise ApiError(
        415, "unsupported_media_type", f"Content type {media or 'none'!r} is not accepted. {UNSUPPORTED_TYPE}"
    )


async def _until_disconnect(request: Request) -> None:
    while (await request.receive())["type"] != "http.disconnect":
        pass


async def _predict_or_abandon(request: Request, data: bytes, model: str | None) -> Prediction:
    """Score, but stop (and drop the queued windows) if the client hangs up first."""
    service = service_of(request)
    work = asyncio.ensure_future(service.predict(data, model, request.state.received_at))
    watcher = asyncio.ensure_future(_until_disconnect(request))
    try:
        await asyncio.wait({work, watcher}, return_when=asyncio.FIRST_COMPLETED)
    finally:
        watcher.cancel()
    if not work.done():
        work.cancel()
        request.state.client_gone = True
        raise ApiError(499, "client_closed_request", "The client closed the connection.")
    return work.result()


def _response(p: Prediction) -> PredictResponse:
    return PredictResponse(
        **p.verdict.record(p.model), timing=Timing(**vars(p.timing)), batch_sizes=p.batch_sizes
    )


def _note(request: Request, p: Prediction) -> None:
    """Record what the request did for its access-log line (see ``app.RequestLog``)."""
    request.state.windows += len(p.verdict.windows)
    request.state.batch_sizes.extend(p.batch_sizes)


@api.post(
    "/v1/predict",
    response_model=PredictResponse,
    responses=_ERRORS,
    openapi_extra=_upload_body(many=False),
    summary="Is this speech real or synthetic?",
)
async def predict(
    request: Request, model: str | None = Query(None, description="model name")
) -> PredictResponse:
    """Upload one audio file (multipart field `file`, or a raw `audio/*` body); get REAL or FAKE."""
    parts, form_model = await _audio_parts(request, "file")
    prediction = await _predict_or_abandon(request, bytes(parts[0].data), model or form_model)
    _note(request, prediction)
    return _response(prediction)


@api.post(
    "/v1/predict/batch",
    response_model=BatchResponse,
    responses=_ERRORS,
    openapi_extra=_upload_body(many=True),
    summary="Several files in one request",
)
async def predict_batch(request: Request, model: str | None = Query(None)) -> BatchResponse:
    """Upload several files as `files`; one result or error per file, in upload order."""
    parts, form_model = await _audio_parts(request, "files")
    service = service_of(request)
    outcomes = await asyncio.gather(
        *(service.predict(bytes(p.data), model or form_model, request.state.received_at) for p in parts),
        return_exceptions=True,
    )
    items = []
    for part, outcome in zip(parts, outcomes, strict=True):
        if isinstance(outcome, BaseException):
            if not isinstance(outcome, Exception):
                raise outcome
            err = to_api_error(outcome)
            items.append(
                BatchItemOut(filename=part.filename, error=ErrorBody(code=err.code, detail=err.detail))
            )
        else:
            _note(request, outcome)
            items.append(BatchItemOut(filename=part.filename, result=_response(outcome)))
    return BatchResponse(results=items)


@api.post(
    "/predict",
    response_model=SeedPrediction,
    responses=_ERRORS,
    openapi_extra=_upload_body(many=False),
    tags=["compatibility"],
)
async def predict_seed(request: Request) -> SeedPrediction:
    """The prototype's endpoint and response shape, kept for existing callers; prefer `/v1/predict`.

    Its three fields keep their types, so audio with too little speech to judge (INCONCLUSIVE on `/v1`)
    is answered 422 `audio_too_short`, as the prototype answered audio below its minimum length."""
    parts, form_model = await _audio_parts(request, "file")
    prediction = await _predict_or_abandon(request, bytes(parts[0].data), form_model)
    _note(request, prediction)
    d = prediction.verdict.decision
    if d.is_fake is None or d.confidence is None:
        raise ApiError(422, "audio_too_short", f"The audio is {d.reason}. Send a longer recording.")
    return SeedPrediction(is_fake=d.is_fake, confidence=d.confidence, prediction=d.prediction)  # type: ignore[arg-type]


@api.get("/v1/models", response_model=ModelsResponse)
async def models(request: Request) -> ModelsResponse:
    """The loaded models, with the sha256 of the checkpoint each was loaded from."""
    service = service_of(request)
    out = []
    for d in service.detectors.values():
        info = d.info
        out.append(
            ModelOut(
                name=info.name,
                architecture=info.architecture,
                parameters=info.parameters,
                sha256=info.sha256,
                path=info.path,
                device=info.device,
                engine=info.engine,
                cuda_graphs=info.cuda_graphs,
                config=info.config.to_dict(),
            )
        )
    return ModelsResponse(models=out, default=service.default_model)


@probes.get("/health", response_model=HealthResponse, tags=["probes"])
async def health(request: Request) -> HealthResponse:
    """Liveness: the process answers. Same fields as the prototype's `/health`."""
    service: PredictionService | None = getattr(request.app.state, "service", None)
    loaded = service is not None
    device = next(iter(service.detectors.values())).info.device if loaded else "none"
    return HealthResponse(
        status="ok", model_loaded=loaded, device=device, models=service.batcher.models if loaded else []
    )


@probes.get("/ready", response_model=ReadyResponse, responses={503: {"model": ErrorBody}}, tags=["probes"])
async def ready(request: Request) -> Response:
    """Readiness: models loaded and warmed up, worker alive, not draining."""
    service: PredictionService | None = getattr(request.app.state, "service", None)
    if service is None:
        reason = "models are loading"
    elif not service.batcher.accepting:
        reason = "shutting down"
    elif not service.ready:
        reason = "the batch worker is restarting" if service.warmed_up else "models are warming up"
    else:
        return Response(
            ReadyResponse(ready=True, detail="ready").model_dump_json(), media_type="application/json"
        )
    return error_response(ApiError(503, "not_ready", f"Not ready: {reason}.", {"Retry-After": "1"}))


@probes.get("/metrics", tags=["probes"], response_class=Response)
async def metrics(request: Request) -> Response:
    """Prometheus metrics."""
    m = request.app.state.metrics
    service: PredictionService | None = getattr(request.app.state, "service", None)
    if service is not None:
        for name in service.batcher.models:
            m.queue_depth(name, service.batcher.depth(name))
    return Response(generate_latest(m.registry), media_type=CONTENT_TYPE_LATEST)
