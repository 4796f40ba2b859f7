"""The segment localizer: which 20 ms frames of a recording are synthetic speech.

The detector scores 4.04 s windows on a 2 s grid, so where a synthetic stretch starts and ends is
known only to a window; half windows scored by the detector itself do not flip where the synthetic
speech begins (docs/evaluation.md, "Segment edges"). Two small networks, averaged, are trained for that
question alone, on real speech with synthetic stretches spliced in (``voxguard.training.localizer``):
log-mel frames through a dilated 1-D convolution stack whose view reaches about 0.7 s either side. It runs on
the CPU beside decoding, only for files already called FAKE, and only moves segment edges
(:mod:`voxguard.edges`); the verdict stays the detector's.
"""

from __future__ import annotations

import functools
import hashlib
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from ..setup_errors import SetupError

SAMPLE_RATE = 16_000  # the rate audio/ decodes to (models stand beside audio/, so it is not imported)
FRAME_S = 0.02  # one output per 20 ms
MELS = 64
_HOP = 160  # the mel frames are 10 ms; two are averaged into one output frame

WEIGHTS = Path(__file__).parent / "weights" / "localizer.pt"
WEIGHTS_SHA256 = "ec8e35443ba33ceeacb8cdde03280fabcfef7d9ad511d709ea68809d86eb7f6d"


class LocNet(nn.Module):
    """Log-mel frames ``(B, MELS, T)`` -> one synthetic-speech logit per frame ``(B, T)``."""

    def __init__(self, width: int = 96, dilations: tuple[int, ...] = (1, 2, 4, 8, 16)) -> None:
        super().__init__()
        self.inp = nn.Conv1d(MELS, width, 5, padding=2)
        self.inp_bn = nn.BatchNorm1d(width)
        self.blocks = nn.ModuleList(nn.Conv1d(width, width, 3, padding=d, dilation=d) for d in dilations)
        self.block_bns = nn.ModuleList(nn.BatchNorm1d(width) for _ in dilations)
        self.out = nn.Conv1d(width, 1, 1)

    def forward(self, frames: torch.Tensor) -> torch.Tensor:
        x = F.relu(self.inp_bn(self.inp(frames)))
        for conv, bn in zip(self.blocks, self.block_bns, strict=True):
            x = x + F.relu(bn(conv(x)))
        return self.out(x).squeeze(1)


class LocEnsemble(nn.Module):
    """:class:`LocNet` members trained on different draws of examples, their frame probabilities averaged
    (and returned as a logit, like one member's): one member's slips at voices and rooms it never heard
    are not the others', so the edges hold on more recordings (docs/evaluation.md, "Segment edges")."""

    def __init__(self, members: list[LocNet]) -> None:
        super().__init__()
        self.members = nn.ModuleList(members)

    def forward(self, frames: torch.Tensor) -> torch.Tensor:
        mean = torch.stack([torch.sigmoid(member(frames)) for member in self.members]).mean(0)
        return torch.logit(mean, eps=1e-6)


@functools.cache
def _mel() -> nn.Module:
    import torchaudio

    return torchaudio.transforms.MelSpectrogram(
        SAMPLE_RATE, n_fft=512, win_length=400, hop_length=_HOP, n_mels=MELS
    )


def features(waveform: np.ndarray) -> np.ndarray:
    """``(MELS, T)`` log-mel at 20 ms frames, each band's mean over the recording removed, so a
    channel's colouring and the level matter less than how the spectrum moves."""
    with torch.no_grad():
        mel = _mel()(torch.from_numpy(np.ascontiguousarray(waveform, dtype=np.float32)))
    frames = mel.shape[1] // 2
    logmel = torch.log(mel[:, : 2 * frames].reshape(MELS, frames, 2).mean(-1) + 1e-6)
    return (logmel - logmel.mean(1, keepdim=True)).numpy()


def frame_labels(synthetic: np.ndarray, frames: int) -> np.ndarray:
    """Per output frame, the share of its samples that ``synthetic`` (a 0/1 mask per sample) marks."""
    step = 2 * _HOP
    mask = np.zeros(frames * step, dtype=np.float32)
    mask[: min(len(synthetic), len(mask))] = synthetic[: len(mask)]
    return mask.reshape(frames, step).mean(1)


@dataclass(frozen=True)
class LocalizerSpec:
    """Where the shipped weights are and what they must hash to."""

    path: Path = WEIGHTS
    sha256: str = WEIGHTS_SHA256


class LocalizerMissing(SetupError):
    """The localizer's weights are absent or not the published file."""


class Localizer:
    """The trained :class:`LocEnsemble` on the CPU: a waveform in, each 20 ms frame's synthetic probability
    out."""

    frame_s = FRAME_S

    def __init__(self, net: LocEnsemble, placement: dict[str, float]) -> None:
        self.net = net.eval()
        self.placement = placement  # edges.Placement's numbers, picked with these weights

    @classmethod
    def load(cls, spec: LocalizerSpec = LocalizerSpec()) -> Localizer:
        if not spec.path.is_file():
            raise LocalizerMissing(
                f"segment localizer weights not found: {spec.path}",
                "reinstall voxguard (they ship in the package)",
            )
        digest = hashlib.sha256(spec.path.read_bytes()).hexdigest()
        if digest != spec.sha256:
            raise LocalizerMissing(
                f"segment localizer weights {spec.path} have sha256 {digest}, expected {spec.sha256}",
                "reinstall voxguard, or rebuild them with scripts/localizer_recipe.py",
            )
        saved = torch.load(spec.path, map_location="cpu", weights_only=True)
        shape = (int(saved["width"]), tuple(int(d) for d in saved["dilations"]))
        net = LocEnsemble([LocNet(*shape) for _ in range(int(saved["members"]))])
        net.load_state_dict(saved["state_dict"], strict=True)
        return cls(net, {k: float(v) for k, v in saved["placement"].items()})

    def fake_frames(self, waveform: np.ndarray) -> np.ndarray:
        """Each 20 ms frame's synthetic-speech probability; frame ``i`` starts at ``i * frame_s`` seconds."""
        with torch.no_grad():
            logits = self.net(torch.from_numpy(features(waveform))[None])[0]
        return torch.sigmoid(logits).numpy()
