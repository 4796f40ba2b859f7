"""Every knob, read from ``VOXGUARD_*`` environment variables (CLI flags override them), and the
sections each part is handed.

People set flat variables (``VOXGUARD_MAX_BATCH_SIZE``) or the flags generated from them; the parts
get :class:`Settings` in sections, small frozen values holding only what one part reads:

- ``settings.audio`` (``audio.options.AudioOptions``) and ``settings.rule`` (``scoring.RuleOptions``;
  ``.for_loaded(model_info)`` is a model's ``Rule``): the pipeline's, for uploads and
  live windows alike;
- ``settings.loading`` (:class:`ModelLoading`, its ``detector`` an ``inference.LoadOptions``): the
  models the engine loads and how (the CLI's commands load theirs the same way);
- ``settings.batching`` (:class:`BatchingSettings`): the engine and its batcher, in either wiring;
- ``settings.service`` (:class:`ServiceSettings`): ``PredictionService``;
- ``settings.http`` (:class:`HttpSettings`): the FastAPI app, the live stream and the uvicorn process.

Only the assembly sees all of :class:`Settings`: ``serving/wiring.py``, ``processes/`` and the CLI's
commands. The sections of the layers below this one (audio, scoring, inference) are their own types,
so those never import this module; the serving and HTTP sections are declared here.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, fields
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Literal, TypeVar

from pydantic import AfterValidator, Field, ValidationError, field_validator
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict

from .setup_errors import SetupError

if TYPE_CHECKING:  # audio and inference import torch; the CLI's --help must not wait for it
    from .audio.options import AudioOptions
    from .inference import LoadOptions
    from .scoring import RuleOptions

_Section = TypeVar("_Section")


def _split(value: object) -> object:
    if isinstance(value, str):
        return [item.strip() for item in value.split(",") if item.strip()]
    return value


def _device_name(value: str) -> str:
    """The form of a device name; whether the machine has that device is checked when models load."""
    if not re.fullmatch(r"auto|cpu|cuda(:\d+)?", value):
        raise ValueError("expected auto, cpu, cuda or cuda:N")
    return value


Device = Annotated[str, AfterValidator(_device_name)]


class Settings(BaseSettings):
    """Service and CLI settings. Lists take commas: ``VOXGUARD_MODELS=aasist,aasist-l``."""

    model_config = SettingsConfigDict(env_prefix="VOXGUARD_", extra="ignore")

    # Models and inference
    models: Annotated[list[str], NoDecode] = Field(
        default=["aasist"],
        description="comma-separated models to load, e.g. aasist,aasist-l; the first is the default",
    )
    checkpoint: Path | None = Field(default=None, description="explicit checkpoint file (one model only)")
    checkpoint_dir: Path | None = Field(
        default=None,
        description="folder holding the official weights; unset: checkpoints/ of the current directory, "
        "then the repository's checkpoints/ and ../shared/aasist beside it (model/locate.py)",
    )
    device: Device = Field(
        default="auto", description="auto | cpu | cuda | cuda:N; auto picks CUDA where present"
    )
    engine: Literal["eager", "fast", "bf16", "simulated"] = Field(
        default="fast",
        description="eager: the model as written; fast: the same numbers, faster; bf16: bfloat16 encoder; "
        "simulated: a stand-in accelerator for benchmarks (see simulated_ms)",
    )
    simulated_ms: Annotated[tuple[float, float], NoDecode] = Field(
        default=(0.9, 0.68),
        description="simulated engine: a forward of n windows takes A,B = A + B x bucket(n) ms (H200 bf16)",
    )
    compile: bool = Field(default=False, description="torch.compile the fast/bf16 engines")
    cuda_graphs: bool = Field(
        default=True, description="on CUDA, replay the forward as a graph per batch size"
    )
    allocator_tuning: bool = Field(default=True, description="keep large CPU buffers mapped (glibc)")
    threads: int = Field(default=0, ge=0, description="torch intra-op threads; 0 = all cores")
    threshold: float = Field(
        default=0.5, ge=0.0, le=1.0, description="a window counts as fake when its fake_probability >= this"
    )
    min_fake_windows: int = Field(
        default=1, ge=1, description="consecutive fake windows that make a file FAKE (docs/evaluation.md)"
    )
    score_offset: float | None = Field(
        default=None,
        description="added to the model's logit margin before scores and probabilities; default: the "
        "model's own (6 for the official AASIST weights, 0 for specnet)",
    )
    score_scale: float | None = Field(
        default=None,
        gt=0.0,
        description="multiplies the offset margin: how sure a score may say the model is; default: the "
        "model's own (fitted on held-out speech for the official weights, 1 for specnet, whose "
        "calibration is in its weights); 1 gives the network's raw confidence",
    )
    min_reliable_s: float = Field(
        default=2.0, ge=0.0, description="less speech than this (seconds) gets INCONCLUSIVE, not a verdict"
    )

    # Audio
    preprocess: Literal["robust", "reference"] = Field(
        default="robust",
        description="robust: each window levelled (the level attack); reference: raw samples",
    )
    hop: int = Field(default=32000, ge=1600, description="samples between window starts (16 kHz)")
    target_rms_dbfs: float = Field(
        default=-24.0, description="robust: the level every window is set to, dBFS"
    )
    max_gain_db: float = Field(default=40.0, ge=0.0, description="robust: the most a window is amplified, dB")
    silence_floor_dbfs: float = Field(
        default=-60.0, description="windows quieter than this are silent: reported, not counted"
    )
    min_duration_s: float = Field(default=0.25, gt=0.0, description="shorter audio is refused (seconds)")
    max_duration_s: float = Field(default=600.0, gt=0.0, description="longer audio is refused (seconds)")

    # Service
    host: str = Field(default="127.0.0.1", description="address to listen on; 0.0.0.0 for every interface")
    port: int = Field(default=8000, ge=0, le=65535, description="TCP port")
    frontends: int = Field(
        default=0,
        ge=0,
        description="HTTP front-end processes; above 1, one engine process scores for all of them; "
        "0 = what measured faster: 1 on the CPU, 2 on an accelerator (docs/scaling.md)",
    )
    max_batch_size: int = Field(
        default=0, ge=0, description="windows per forward; 0 = 16 on CPU, 64 otherwise"
    )
    max_wait_ms: float = Field(
        default=5.0, ge=0.0, description="how long a batch waits for more windows after its first (ms)"
    )
    queue_size: int = Field(default=1024, ge=1, description="windows waiting per model before 503 queue_full")
    request_timeout_s: float = Field(
        default=30.0, gt=0.0, description="request deadline, plus twice the device time of its windows"
    )
    max_upload_mb: float = Field(default=100.0, gt=0.0, description="largest upload (MB)")
    decode_workers: int = Field(default=0, ge=0, description="decoding threads; 0 = cores")
    api_keys: Annotated[list[str], NoDecode] = Field(
        default=[], description="comma-separated accepted API keys; empty = open"
    )
    protect_probes: bool = Field(default=False, description="require a key for /health, /ready, /metrics")
    cors_origins: Annotated[list[str], NoDecode] = Field(
        default=[], description="comma-separated browser origins allowed to call the API"
    )
    opentelemetry: bool = Field(
        default=False,
        description="FastAPI's OpenTelemetry spans, metrics and logs for each request, to the SDK the "
        "process has configured; off, the check alone costs ~7% of a front-end's time per request",
    )
    stream_hop_s: float = Field(
        default=1.0, ge=0.1, le=4.0, description="live stream: seconds between windows"
    )
    stream_max_pending: int = Field(
        default=8, ge=1, description="live stream: windows waiting per connection"
    )
    stream_idle_s: float = Field(
        default=10.0, gt=0.0, description="live stream: seconds without a message before it is closed"
    )
    certfile: Path | None = Field(default=None, description="TLS certificate, PEM (with keyfile: HTTPS)")
    keyfile: Path | None = Field(default=None, description="TLS private key, PEM")
    address_file: Path | None = Field(
        default=None, description="write {pid, url} here once listening (container health check)"
    )

    _split_lists = field_validator("models", "api_keys", "cors_origins", "simulated_ms", mode="before")(
        _split
    )

    @field_validator("simulated_ms")
    @classmethod
    def _non_negative_times(cls, value: tuple[float, float]) -> tuple[float, float]:
        if min(value) < 0:
            raise ValueError("expected two non-negative numbers A,B (milliseconds)")
        return value

    @field_validator("models")
    @classmethod
    def _at_least_one_model(cls, value: list[str]) -> list[str]:
        if not value:
            raise ValueError("at least one model is needed")
        return value

    def _section(self, section: type[_Section], **given: object) -> _Section:
        """``section`` with each field the setting of the same name, but for those ``given``."""
        values = {f.name: getattr(self, f.name) for f in fields(section) if f.name not in given}  # type: ignore[arg-type]
        return section(**values, **given)

    @property
    def audio(self) -> AudioOptions:
        """How audio is decoded, cut and levelled (the pipeline's)."""
        from .audio.options import AudioOptions

        return self._section(AudioOptions)

    @property
    def rule(self) -> RuleOptions:
        """The verdict rule; ``.for_loaded(ModelInfo)`` is one model's ``scoring.Rule`` (``score_offset``
        and ``score_scale``, when set, override every model's own; ``local_margin`` is always the
        model's)."""
        from .scoring import RuleOptions

        return RuleOptions(
            threshold=self.threshold,
            min_windows=self.min_fake_windows,
            min_reliable_s=self.min_reliable_s,
            offset=self.score_offset,
            scale=self.score_scale,
        )

    @property
    def loading(self) -> ModelLoading:
        """The models the engine loads, and how each is built."""
        from .inference import LoadOptions

        return ModelLoading(
            models=tuple(self.models),
            checkpoint=self.checkpoint if len(self.models) == 1 else None,
            detector=self._section(LoadOptions, compile_model=self.compile),
            simulated_ms=self.simulated_ms if self.engine == "simulated" else None,
            threads=self.threads,
        )

    @property
    def batching(self) -> BatchingSettings:
        return self._section(BatchingSettings)

    @property
    def service(self) -> ServiceSettings:
        return self._section(ServiceSettings, audio=self.audio, rule=self.rule)

    @property
    def http(self) -> HttpSettings:
        return self._section(
            HttpSettings, api_keys=tuple(self.api_keys), cors_origins=tuple(self.cors_origins)
        )


@dataclass(frozen=True)
class ModelLoading:
    """What the engine loads (``LocalEngine.load``): the models, each built as ``detector`` says, or
    simulated stand-ins for them."""

    models: tuple[str, ...]
    checkpoint: Path | None  # the one model's file; None with several models
    detector: LoadOptions
    simulated_ms: tuple[float, float] | None  # the simulated engine's A, B; None: load the real models
    threads: int  # torch intra-op threads; 0 = all cores


@dataclass(frozen=True)
class BatchingSettings:
    """The batcher's: how many windows a forward takes, how long a batch waits for more, how many may
    wait (the engine, in either wiring)."""

    max_batch_size: int  # 0: by device, see batch_size_for
    max_wait_ms: float
    queue_size: int

    def batch_size_for(self, device_type: str) -> int:
        """The batch limit of the device the server really runs on (a simulated one is an accelerator)."""
        if self.max_batch_size:
            return self.max_batch_size
        return 16 if device_type == "cpu" else 64


@dataclass(frozen=True)
class ServiceSettings:
    """``PredictionService``'s: how audio is cut and judged, the request deadline, the decoding threads,
    and how many windows the engine's queue holds."""

    audio: AudioOptions
    rule: RuleOptions
    request_timeout_s: float
    decode_workers: int  # 0 = cores
    queue_size: int


@dataclass(frozen=True)
class HttpSettings:
    """The HTTP side's: where and how to listen, who may call, the limits of a request, the live stream
    (the FastAPI app, and the uvicorn process that serves it)."""

    host: str
    port: int
    certfile: Path | None
    keyfile: Path | None
    address_file: Path | None
    api_keys: tuple[str, ...]
    protect_probes: bool
    cors_origins: tuple[str, ...]
    opentelemetry: bool
    max_upload_mb: float
    request_timeout_s: float
    stream_hop_s: float
    stream_max_pending: int
    stream_idle_s: float


def settings_from_environment() -> Settings:
    """``Settings()``, with a value that does not validate reported as the variable that holds it."""
    try:
        return Settings()
    except ValidationError as exc:
        raise settings_problem(exc) from None


def settings_problem(exc: ValidationError) -> SetupError:
    """One sentence per invalid ``VOXGUARD_*`` variable: its name, its value and what is accepted."""
    problems = []
    for error in exc.errors():
        field = str(error["loc"][0]) if error["loc"] else "?"
        reason = error["msg"].removeprefix("Value error, ")
        problems.append(f"VOXGUARD_{field.upper()}={error.get('input')!r} is not valid: {reason}")
    names = ", ".join(f"VOXGUARD_{str(e['loc'][0]).upper()}" for e in exc.errors() if e["loc"])
    return SetupError(
        "; ".join(problems) + ".",
        f"fix or unset {names} (every setting: `voxguard serve --help` and the README's settings table)",
    )
