"""A fresh network for a config: AASIST (official variants) or voxguard's own SpecNet."""

from __future__ import annotations

from torch import nn

from .aasist import AASIST
from .config import AasistConfig, ModelConfig
from .specnet import SpecNet


def build_model(config: ModelConfig) -> nn.Module:
    """Both kinds map ``(B, 64600)`` waveforms to ``(hidden, logits)``, logit 1 = bona fide."""
    return AASIST(config) if isinstance(config, AasistConfig) else SpecNet(config)
