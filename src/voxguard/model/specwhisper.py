"""SpecWhisper: SpecNet's margin plus a linear head on the frozen Whisper tiny.en encoder, recalibrated.

Why: held out of training, every synthetic family measured ranked better with the Whisper head's
opinion added than with SpecNet alone, on every training seed (docs/evaluation.md). Both margins are
log-odds, so they are added; a Platt fit on the dev split (``calibration``) then makes the sum's
confidence mean what it says. SpecNet's margin is the mean of ``members`` SpecNets trained alike with
different seeds: one seed's draw moved a held-out family by up to 7.5 points, and the mean does not
depend on the draw.

Same contract as AASIST and SpecNet: ``(batch, 64600)`` in, ``(hidden, logits)`` out, logit 1 = bona
fide; ``hidden`` is the members' embeddings side by side. Only the SpecNets, the head and the
calibration are voxguard's weights, saved in its file; the encoder's are loaded from
``voxguard[whisper]`` (``EXTERNAL``), never copied into a voxguard checkpoint.
"""

from __future__ import annotations

import torch
from torch import nn

from .config import SpecWhisperConfig
from .specnet import SpecNet
from .whisper import WhisperEncoder, published_state


class SpecWhisper(nn.Module):
    EXTERNAL = ("encoder.",)

    def __init__(self, config: SpecWhisperConfig) -> None:
        super().__init__()
        self.config = config
        self.specnets = nn.ModuleList(SpecNet(config.specnet) for _ in range(config.members))
        self.encoder = WhisperEncoder().requires_grad_(False)
        self.head = nn.Linear(config.width, 1)
        self.calibration = nn.Linear(1, 1)

    def load_external(self) -> None:
        """The encoder's published weights (sha256 checked), from the installed ``voxguard[whisper]``."""
        self.encoder.load_state_dict(published_state(), strict=True)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        hidden, logits = zip(*(specnet(x) for specnet in self.specnets), strict=True)
        specnet = torch.stack([out[:, 1] - out[:, 0] for out in logits]).mean(dim=0)
        margin = specnet + self.head(self.encoder.pooled(x)).squeeze(-1)
        margin = self.calibration(margin.unsqueeze(-1)).squeeze(-1)
        return torch.cat(hidden, dim=1), torch.stack([-0.5 * margin, 0.5 * margin], dim=1)
