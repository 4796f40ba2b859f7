"""Wire format: every request and response body the API documents, in one file."""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field

LEANING = (
    "INCONCLUSIVE only (null otherwise): the side the model leaned to on too little speech. NOT a verdict: "
    "on this little speech the model is unreliable (docs/evaluation.md measures how often it is wrong)"
)
LEANING_P = "INCONCLUSIVE only: the unreliable fake probability behind `leaning`; null otherwise"


class WindowOut(BaseModel):
    start_s: float = Field(description="window start in the original audio, seconds")
    end_s: float = Field(description="window end, seconds")
    score: float = Field(description="logit[bona fide] - logit[spoof]; positive means human")
    fake_probability: float = Field(ge=0, le=1, description="sigmoid(-score)")


class SegmentOut(BaseModel):
    start_s: float = Field(description="where the synthetic speech starts, seconds")
    end_s: float = Field(description="where it ends, seconds")
    fake_probability: float = Field(
        ge=0, le=1, description="the segment's strength: its best run of windows' weakest fake probability"
    )


class Timing(BaseModel):
    decode_ms: float = Field(description="decoding, resampling and windowing")
    queue_ms: float = Field(description="longest wait of one of its windows before its batch started")
    inference_ms: float = Field(description="forward time of the batches its windows ran in")
    total_ms: float = Field(description="from the request's arrival to the response")


class PredictResponse(BaseModel):
    model_config = ConfigDict(
        json_schema_extra={
            "example": {
                "prediction": "FAKE",
                "is_fake": True,
                "confidence": 0.9991,
                "fake_probability": 0.9991,
                "score": -7.02,
                "reason": None,
                "segments": [{"start_s": 8.0, "end_s": 12.3, "fake_probability": 0.9991}],
                "model": "aasist",
                "duration_s": 12.3,
                "speech_s": 11.9,
                "sample_rate": 44100,
                "windows": [
                    {"start_s": 0.0, "end_s": 4.04, "score": 5.21, "fake_probability": 0.0054},
                    {"start_s": 2.0, "end_s": 6.04, "score": 4.87, "fake_probability": 0.0076},
                    {"start_s": 4.0, "end_s": 8.04, "score": 1.96, "fake_probability": 0.1235},
                    {"start_s": 6.0, "end_s": 10.04, "score": -7.02, "fake_probability": 0.9991},
                    {"start_s": 8.0, "end_s": 12.04, "score": -9.9, "fake_probability": 0.99995},
                    {"start_s": 8.26, "end_s": 12.3, "score": -9.4, "fake_probability": 0.99992},
                ],
                "warnings": [],
                "timing": {"decode_ms": 21.0, "queue_ms": 3.1, "inference_ms": 140.2, "total_ms": 166.0},
                "batch_sizes": [4],
            }
        }
    )

    prediction: Literal["REAL", "FAKE", "INCONCLUSIVE"] = Field(
        description="INCONCLUSIVE: too little speech to judge (see `reason`); the verdict fields are null"
    )
    is_fake: bool | None
    confidence: float | None = Field(ge=0, le=1, description="probability of the predicted class")
    fake_probability: float | None = Field(
        ge=0,
        le=1,
        description="the file's fake probability: the highest level that the FAKE rule's run of consecutive "
        "windows all reach; FAKE exactly when it is at or above the threshold",
    )
    score: float | None = Field(description="fake_probability as a score: -logit(fake_probability)")
    reason: str | None = Field(description="why the prediction is INCONCLUSIVE; null otherwise")
    leaning: Literal["REAL", "FAKE"] | None = Field(default=None, description=LEANING)
    leaning_fake_probability: float | None = Field(default=None, ge=0, le=1, description=LEANING_P)
    segments: list[SegmentOut] = Field(
        description="the stretches judged synthetic, in time order; non-empty exactly when FAKE"
    )
    model: str
    duration_s: float
    speech_s: float = Field(description="seconds from the first to the last speech in the audio")
    sample_rate: int = Field(description="sample rate of the upload before resampling to 16 kHz")
    windows: list[WindowOut]
    warnings: list[str]
    timing: Timing
    batch_sizes: list[int] = Field(description="sizes of the batches this request's windows ran in")


class Verdict(BaseModel):
    """The verdict fields, shared by an upload's result and a live stream's final summary."""

    prediction: Literal["REAL", "FAKE", "INCONCLUSIVE"] | None = Field(
        description="INCONCLUSIVE: too little speech to judge (see `reason`); null: every window was silent"
    )
    is_fake: bool | None = None
    confidence: float | None = Field(default=None, ge=0, le=1)
    fake_probability: float | None = Field(default=None, ge=0, le=1)
    score: float | None = None
    reason: str | None = None
    leaning: Literal["REAL", "FAKE"] | None = Field(default=None, description=LEANING)
    leaning_fake_probability: float | None = Field(default=None, ge=0, le=1, description=LEANING_P)
    segments: list[SegmentOut] = Field(default_factory=list)


# WebSocket /v1/stream (docs/streaming.md): what the server sends, and what the client sends as text.


class StreamWindow(BaseModel):
    """One scored live window, sent as soon as its batch is done."""

    type: Literal["window"] = "window"
    index: int
    start_s: float
    end_s: float
    score: float
    fake_probability: float = Field(ge=0, le=1)
    prediction: Literal["REAL", "FAKE"]
    silent: bool
    batch_size: int


class StreamDone(Verdict):
    """The last message of a stream that ended with ``{"type": "end"}``: the verdict over every window."""

    type: Literal["done"] = "done"
    windows: int = Field(description="windows scored in the whole stream")
    speech_s: float


class StreamError(BaseModel):
    """Sent before the server closes a stream for a reason (the close code says which kind)."""

    type: Literal["error"] = "error"
    code: str
    detail: str


StreamEvent = Annotated[StreamWindow | StreamDone | StreamError, Field(discriminator="type")]


class StreamConfig(BaseModel):
    """The optional first text message; unset fields keep the query string's values."""

    model_config = ConfigDict(extra="forbid")

    format: Literal["s16", "f32"] | None = None
    sample_rate: int | None = None
    hop_s: float | None = None


class StreamEnd(BaseModel):
    type: Literal["end"] = "end"


class ErrorBody(BaseModel):
    code: str = Field(description="stable machine-readable code (README: the codes by status)")
    detail: str = Field(description="what was wrong and what is accepted")
    error_id: str | None = Field(
        default=None,
        exclude_if=lambda v: v is None,  # present on server errors only, as in a plain error response
        description="server errors only: the id in the server log",
    )


class BatchItemOut(BaseModel):
    filename: str | None
    result: PredictResponse | None = None
    error: ErrorBody | None = None


class BatchResponse(BaseModel):
    results: list[BatchItemOut] = Field(description="one entry per uploaded file, in upload order")


class ModelOut(BaseModel):
    name: str
    architecture: str
    parameters: int
    sha256: str
    path: str
    device: str
    engine: str
    cuda_graphs: bool = Field(description="the forward is replayed as a CUDA graph (CUDA only)")
    config: dict
    score_offset: float = Field(
        description="what the verdict rule adds to this model's margins (its own, or VOXGUARD_SCORE_OFFSET)"
    )
    score_scale: float = Field(
        description="what the verdict rule multiplies the offset margin by before scores and probabilities "
        "(its own, or VOXGUARD_SCORE_SCALE)"
    )
    local_margin: float | None = Field(
        default=None,
        description="when set, a file is FAKE on its windows' mean score, or on its best run of windows "
        "only when that run is this much more synthetic (null: on its best run alone)",
    )
    note: str | None = Field(default=None, description="e.g. that the model is simulated (benchmarks only)")


class ModelsResponse(BaseModel):
    models: list[ModelOut]
    default: str


class HealthResponse(BaseModel):
    status: Literal["ok"]
    model_loaded: bool
    device: str
    models: list[str]


class ReadyResponse(BaseModel):
    ready: bool
    detail: str


class SeedPrediction(BaseModel):
    """The shape the original prototype's ``POST /predict`` returned (kept for existing callers)."""

    is_fake: bool
    confidence: float
    prediction: Literal["REAL", "FAKE"]
