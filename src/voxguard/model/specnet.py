"""SpecNet: voxguard's own small spectro-temporal detector, trained by the recipe in docs/training.md.

Why a second architecture beside AASIST: the official AASIST weights do not see today's neural vocoders
(HiFi-GAN copy-synthesis scores like real speech), and a training step of AASIST-L costs about 0.6 s
per 4 s window on a 2-core CPU. SpecNet's costs about 0.02 s, so it can be trained here, leave-one-
family-out, within a working session (docs/training.md).

Same contract as AASIST: a ``(batch, 64600)`` 16 kHz waveform in, ``(hidden, logits)`` out, logits
index 1 = bona fide. The front end is fixed (no weights): a 25 ms / 10 ms STFT, log energies in
``bands`` linearly spaced bands up to 8 kHz (linear, not mel: vocoder artefacts live in the top band
too), with each band's mean over the window removed, which cancels any fixed channel colouring (a
microphone, a phone line's tilt) so the network has to look at how the spectrum moves. Then a strided
2-D convolutional stem (local time-frequency patterns) and dilated 1-D residual blocks over time, with
mean and standard deviation pooled over time.
"""

from __future__ import annotations

import torch
import torchaudio.functional as taf
from torch import nn

from .config import SAMPLE_RATE, SpecNetConfig


class _Residual(nn.Module):
    def __init__(self, channels: int, dilation: int) -> None:
        super().__init__()
        self.conv = nn.Conv1d(channels, channels, 3, padding=dilation, dilation=dilation, bias=False)
        self.norm = nn.BatchNorm1d(channels)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + torch.relu(self.norm(self.conv(x)))


class SpecNet(nn.Module):
    def __init__(self, config: SpecNetConfig) -> None:
        super().__init__()
        self.config = config
        self.register_buffer("window", torch.hann_window(config.win), persistent=False)
        bins = config.n_fft // 2 + 1
        edges = torch.linspace(0, SAMPLE_RATE / 2, config.bands + 2)
        freqs = torch.linspace(0, SAMPLE_RATE / 2, bins)
        # Triangular bands on a linear scale (the LFCC filter bank, without the cepstrum).
        lower, centre, upper = edges[:-2, None], edges[1:-1, None], edges[2:, None]
        weights = torch.clamp(
            torch.minimum((freqs - lower) / (centre - lower), (upper - freqs) / (upper - centre)), 0
        )
        self.register_buffer("filterbank", weights, persistent=False)
        stem, c_in, layers = config.stem_channels, 1, []
        for c_out, stride in zip(stem, ((2, 2), (2, 1), (2, 2)), strict=True):
            layers += [
                nn.Conv2d(c_in, c_out, 3, stride=stride, padding=1, bias=False),
                nn.BatchNorm2d(c_out),
                nn.ReLU(),
            ]
            c_in = c_out
        self.stem = nn.Sequential(*layers)
        folded = stem[-1] * -(-config.bands // 8)
        self.project = nn.Sequential(
            nn.Conv1d(folded, config.channels, 1, bias=False), nn.BatchNorm1d(config.channels), nn.ReLU()
        )
        self.blocks = nn.Sequential(*(_Residual(config.channels, d) for d in config.dilations))
        self.dropout = nn.Dropout(config.dropout)
        self.out_layer = nn.Linear(2 * config.channels, 2)

    def features(self, x: torch.Tensor) -> torch.Tensor:
        """``(batch, samples)`` -> mean-normalised log band energies ``(batch, bands, frames)``."""
        c = self.config
        spec = taf.spectrogram(x.float(), 0, self.window, c.n_fft, c.hop, c.win, power=2.0, normalized=False)
        energy = torch.log(torch.matmul(self.filterbank, spec) + 1e-8)
        return energy - energy.mean(dim=-1, keepdim=True)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        y = self.stem(self.features(x).unsqueeze(1))
        batch, channels, bands, frames = y.shape
        y = self.blocks(self.project(y.reshape(batch, channels * bands, frames)))
        hidden = torch.cat([y.mean(dim=-1), y.std(dim=-1)], dim=1)
        return hidden, self.out_layer(self.dropout(hidden))
