"""A fresh network for a config: AASIST (official variants), voxguard's own SpecNet, or SpecNet with a
Whisper-feature head."""

from __future__ import annotations

from torch import nn

from .aasist import AASIST
from .config import AasistConfig, ModelConfig, SpecWhisperConfig
from .specnet import SpecNet
from .specwhisper import SpecWhisper


def build_model(config: ModelConfig) -> nn.Module:
    """Every kind maps ``(B, 64600)`` waveforms to ``(hidden, logits)``, logit 1 = bona fide."""
    if isinstance(config, AasistConfig):
        return AASIST(config)
    if isinstance(config, SpecWhisperConfig):
        return SpecWhisper(config)
    return SpecNet(config)
