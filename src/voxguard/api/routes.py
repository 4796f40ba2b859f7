"""HTTP routes: turn requests into service calls and results into the wire models."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable
from typing import Any, TypeVar

from fastapi import APIRouter, Request, Response
from fastapi.responses import JSONResponse
from prometheus_client import CONTENT_TYPE_LATEST

from ..serving.service import Prediction, PredictionService
from .errors import ApiError, error_response, how_to_send, to_api_error
from .openapi import ERROR_EXAMPLES, error_responses, upload_body
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
)
from .uploads import Part, parse_multipart, read_body

T = TypeVar("T")
_ERRORS = error_responses(*ERROR_EXAMPLES)  # an upload route can answer every documented error


def _service(request: Request) -> PredictionService:
    """The app's prediction service (``create_app`` takes one ready-made, which is how tests put a
    simulated engine behind the real routes)."""
    return request.app.state.service


def _service_if_loaded(request: Request) -> PredictionService | None:
    """The service, or None while it is still loading (the probes answer then too)."""
    return getattr(request.app.state, "service", None)


def query_model(request: Request, accepted: tuple[str, ...] = ("model",)) -> str | None:
    """The ``model`` query parameter; a parameter the route does not take is refused, not dropped
    (``?threshold=0.9`` would otherwise look as if it took effect). Read here rather than declared as
    a FastAPI ``Query``: the upload routes run per request on a fast device, and the declaration is
    in their OpenAPI (``openapi.MODEL_PARAMETER``)."""
    unknown = sorted(set(request.query_params) - set(accepted))
    if unknown:
        names = ", ".join(f"`{name}`" for name in unknown)
        takes = ", ".join(f"`{name}`" for name in accepted) or "no query parameters"
        raise ApiError(
            400,
            "unknown_parameter",
            f"Unknown query parameter {names}: {request.url.path} accepts {takes}. Server settings such "
            "as the threshold are VOXGUARD_* variables of the server, not request parameters.",
        )
    return request.query_params.get("model") or None


# API keys are checked before routing (auth.ApiKeyGuard, installed by app.create_app for these routers).
api = APIRouter()
probes = APIRouter()


async def _audio_parts(request: Request, field: str) -> tuple[list[Part], str | None]:
    """The audio payload(s) and an optional form ``model`` field, from multipart or a raw body.

    ``field`` is ``file`` (one file: a second one is refused, not dropped) or ``files`` (several; the
    batch route also takes repeated ``file`` fields). Form fields other than these and ``model`` are
    refused, like unknown query parameters.
    """
    http = request.app.state.http
    limit = int(http.max_upload_mb * 1_000_000)
    body_timeout = max(0.0, request.state.received_at + http.request_timeout_s - time.monotonic())
    content_type = request.headers.get("content-type", "")
    media = content_type.split(";", 1)[0].strip().lower()
    if media == "multipart/form-data":
        parts = parse_multipart(await read_body(request, limit, body_timeout), content_type, field)
        names = {field, "file"}
        files = [p for p in parts if p.name in names]
        model = next((p.data.decode("utf-8", "replace").strip() for p in parts if p.name == "model"), None)
        if not files:
            found = ", ".join(sorted({p.name or "<unnamed>" for p in parts})) or "none"
            raise ApiError(
                422,
                "missing_file_field",
                f"The form has no `{field}` field (fields found: {found}). Upload the audio as `{field}`.",
            )
        unknown = sorted({p.name for p in parts} - names - {"model"})
        if unknown:
            raise ApiError(
                400,
                "unknown_field",
                f"Unknown form field {', '.join(f'`{n}`' for n in unknown)}: {request.url.path} accepts "
                f"`{field}` and `model`.",
            )
        if field == "file" and len(files) > 1:
            raise ApiError(
                400,
                "too_many_files",
                f"The form has {len(files)} `file` parts; {request.url.path} scores one. Send several files "
                "to /v1/predict/batch, one `files` part each.",
            )
        return files, model or None
    if media.startswith("audio/") or media in ("application/octet-stream", "video/webm", "video/mp4"):
        return [Part("file", None, media, bytearray(await read_body(request, limit, body_timeout)))], None
    problem = f"Content type {media!r} is not accepted." if media else "No Content-Type header."
    raise ApiError(415, "unsupported_media_type", f"{problem} {how_to_send(field)}")


async def _uploads(
    request: Request, field: str, accepted: tuple[str, ...] = ("model",)
) -> tuple[list[Part], str | None]:
    """The audio parts and the model the request asks for, in the query or the form (not two different
    ones); None: the default."""
    query = query_model(request, accepted)
    parts, form = await _audio_parts(request, field)
    if query and form and query != form:
        raise ApiError(
            400,
            "conflicting_model",
            f"The query asks for model {query!r} but the form for {form!r}. Send one of them.",
        )
    return parts, query or form


async def _until_disconnect(request: Request) -> None:
    while (await request.receive())["type"] != "http.disconnect":
        pass


async def _unless_abandoned(request: Request, work: Awaitable[T]) -> T:
    """Await ``work``, but stop (and drop its queued windows) if the client hangs up first.

    A watcher reads the connection; a disconnect cancels this task, and the cancellation reaches the
    batcher, which drops the windows still queued. One extra task per request, no ``asyncio.wait``."""
    task = asyncio.current_task()
    finished = False

    def on_disconnect(watcher: asyncio.Task[None]) -> None:
        if not finished and not watcher.cancelled() and task is not None:
            task.cancel()

    watcher = asyncio.ensure_future(_until_disconnect(request))
    watcher.add_done_callback(on_disconnect)
    try:
        return await work
    except asyncio.CancelledError:
        if not watcher.done() or watcher.cancelled() or task is None:
            raise  # cancelled for another reason (shutdown): let it through
        task.uncancel()
        request.state.client_gone = True
        raise ApiError(499, "client_closed_request", "The client closed the connection.") from None
    finally:
        finished = True
        watcher.cancel()


def _result(p: Prediction) -> dict[str, Any]:
    """A prediction as ``PredictResponse`` publishes it (``Verdict.record`` decides the shape)."""
    return {**p.verdict.record(p.model), "timing": vars(p.timing), "batch_sizes": p.batch_sizes}


def _note(request: Request, p: Prediction) -> None:
    """Record what the request did for its access-log line (see ``app.RequestLog``)."""
    request.state.windows += len(p.verdict.windows)
    request.state.batch_sizes.extend(p.batch_sizes)


def _upload_route(
    path: str, response: type, *, many: bool = False, model_query: bool = True, **more: Any
) -> Any:
    """An upload route's decorator: its answer, every error it may give, and its body in the OpenAPI."""
    extra = upload_body(many=many, model_query=model_query)
    return api.post(path, response_model=response, responses=_ERRORS, openapi_extra=extra, **more)


@_upload_route("/v1/predict", PredictResponse, summary="Is this speech real or synthetic?")
async def predict(request: Request) -> Response:
    """Upload one audio file (multipart field `file`, or a raw `audio/*` body); get REAL or FAKE, or
    INCONCLUSIVE when it holds too little speech to judge."""
    parts, model = await _uploads(request, "file")
    work = _service(request).predict(bytes(parts[0].data), model, request.state.received_at)
    prediction = await _unless_abandoned(request, work)
    _note(request, prediction)
    # Serialised as built: FastAPI would validate the model again against response_model, a cost per
    # request that buys nothing here (tests/test_contract.py checks every answer against the schema).
    return JSONResponse(_result(prediction))


@_upload_route("/v1/predict/batch", BatchResponse, many=True, summary="Several files in one request")
async def predict_batch(request: Request) -> BatchResponse:
    """Upload several files as `files`; one result or error per file, in upload order."""
    parts, model = await _uploads(request, "files")
    work = _service(request).predict_batch([bytes(p.data) for p in parts], model, request.state.received_at)
    outcomes = await _unless_abandoned(request, work)
    items = []
    for part, outcome in zip(parts, outcomes, strict=True):
        if isinstance(outcome, Exception):
            err = to_api_error(outcome)
            error = ErrorBody(code=err.code, detail=err.detail, error_id=err.error_id)
            items.append(BatchItemOut(filename=part.filename, error=error))
        else:
            _note(request, outcome)
            items.append(BatchItemOut(filename=part.filename, result=PredictResponse(**_result(outcome))))
    return BatchResponse(results=items)


@_upload_route(
    "/predict",
    SeedPrediction,
    model_query=False,
    tags=["compatibility"],
    summary="Legacy prototype endpoint (prefer /v1/predict)",
)
async def predict_seed(request: Request) -> SeedPrediction:
    """The prototype's endpoint and response shape, kept for existing callers; prefer `/v1/predict`.

    Its three fields keep their types, so audio with too little speech to judge (INCONCLUSIVE on `/v1`)
    is answered 422 `audio_too_short`, as the prototype answered audio below its minimum length."""
    parts, model = await _uploads(request, "file", accepted=())
    work = _service(request).predict(bytes(parts[0].data), model, request.state.received_at)
    prediction = await _unless_abandoned(request, work)
    _note(request, prediction)
    d = prediction.verdict.decision
    if d.is_fake is None or d.confidence is None:
        raise ApiError(422, "audio_too_short", f"The audio is {d.reason}. Send a longer recording.")
    return SeedPrediction(is_fake=d.is_fake, confidence=d.confidence, prediction=d.prediction)  # type: ignore[arg-type]


@api.get("/v1/models", response_model=ModelsResponse, responses=error_responses(401))
async def models(request: Request) -> ModelsResponse:
    """The loaded models, with the sha256 of the checkpoint each was loaded from."""
    query_model(request, accepted=())
    service = _service(request)
    # ModelInfo's fields, with the configuration as a dict and the offset and scale the verdict rule
    # really applies.
    out = [
        ModelOut(
            **{
                **vars(info),
                "config": info.config.to_dict(),
                "score_offset": service.pipelines[info.name].rule.offset,
                "score_scale": service.pipelines[info.name].rule.scale,
            }
        )
        for info in service.models.values()
    ]
    return ModelsResponse(models=out, default=service.default_model)


@probes.get("/health", response_model=HealthResponse, tags=["probes"])
async def health(request: Request) -> HealthResponse:
    """Liveness: the process answers. Same fields as the prototype's `/health`."""
    service = _service_if_loaded(request)
    if service is None:
        return HealthResponse(status="ok", model_loaded=False, device="none", models=[])
    device = service.models[service.default_model].device
    return HealthResponse(status="ok", model_loaded=True, device=device, models=list(service.models))


@probes.get("/ready", response_model=ReadyResponse, responses={503: {"model": ErrorBody}}, tags=["probes"])
async def ready(request: Request) -> Response:
    """Readiness: models loaded and warmed up, worker alive, not draining."""
    service = _service_if_loaded(request)
    reason = "models are loading" if service is None else service.not_ready_reason()
    if reason is None:
        return Response(
            ReadyResponse(ready=True, detail="ready").model_dump_json(), media_type="application/json"
        )
    return error_response(ApiError(503, "not_ready", f"Not ready: {reason}.", {"Retry-After": "1"}))


@probes.get("/metrics", tags=["probes"], response_class=Response)
async def metrics(request: Request) -> Response:
    """Prometheus metrics."""
    service = _service_if_loaded(request)
    if service is not None:
        service.publish_metrics()
    return Response(request.app.state.metrics.exposition(), media_type=CONTENT_TYPE_LATEST)
