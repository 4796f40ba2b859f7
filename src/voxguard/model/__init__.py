"""The detector networks: AASIST (official weights) and voxguard's own SpecNet."""

from __future__ import annotations

from torch import nn

from .aasist import AASIST
from .config import AasistConfig, ModelConfig
from .specnet import SpecNet


def build_model(config: ModelConfig) -> nn.Module:
    """A fresh network for ``config``; both kinds map ``(B, 64600)`` to ``(hidden, logits)``."""
    return AASIST(config) if isinstance(config, AasistConfig) else SpecNet(config)
