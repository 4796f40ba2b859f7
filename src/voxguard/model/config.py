"""Architecture hyper-parameters: AASIST (the two published variants), voxguard's own SpecNet, and
SpecNet with a Whisper-feature head."""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

NB_SAMP = 64600
SAMPLE_RATE = 16000


@dataclass(frozen=True)
class AasistConfig:
    """The upstream ``model_config`` block; field names follow the official config files."""

    first_conv: int = 128
    filts: tuple[Any, ...] = (70, (1, 32), (32, 32), (32, 64), (64, 64))
    gat_dims: tuple[int, int] = (64, 32)
    pool_ratios: tuple[float, float, float, float] = (0.5, 0.7, 0.5, 0.5)
    temperatures: tuple[float, float, float, float] = (2.0, 2.0, 100.0, 100.0)
    nb_samp: int = NB_SAMP
    architecture: str = "AASIST"

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> AasistConfig:
        """Accept an upstream-style dict (lists instead of tuples, extra keys ignored)."""
        filts = data["filts"]
        return cls(
            first_conv=int(data["first_conv"]),
            filts=(int(filts[0]), *(tuple(int(v) for v in f) for f in filts[1:])),
            gat_dims=tuple(int(v) for v in data["gat_dims"]),  # type: ignore[arg-type]
            pool_ratios=tuple(float(v) for v in data["pool_ratios"]),  # type: ignore[arg-type]
            temperatures=tuple(float(v) for v in data["temperatures"]),  # type: ignore[arg-type]
            nb_samp=int(data.get("nb_samp", NB_SAMP)),
            architecture=str(data.get("architecture", "AASIST")),
        )

    def to_dict(self) -> dict[str, Any]:
        data = asdict(self)
        data["filts"] = [self.filts[0], *[list(f) for f in self.filts[1:]]]
        for key in ("gat_dims", "pool_ratios", "temperatures"):
            data[key] = list(data[key])
        return data


@dataclass(frozen=True)
class SpecNetConfig:
    """Architecture hyper-parameters; stored in every SpecNet checkpoint."""

    architecture: str = "SpecNet"
    nb_samp: int = NB_SAMP
    n_fft: int = 512
    win: int = 400
    hop: int = 160
    bands: int = 80
    stem_channels: tuple[int, int, int] = (16, 32, 32)
    channels: int = 128
    dilations: tuple[int, ...] = (2, 3, 4)
    dropout: float = 0.3

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> SpecNetConfig:
        known = {k: data[k] for k in cls.__dataclass_fields__ if k in data}
        for key in ("stem_channels", "dilations"):
            if key in known:
                known[key] = tuple(int(v) for v in known[key])
        return cls(**known)

    def to_dict(self) -> dict[str, Any]:
        data = asdict(self)
        data["stem_channels"], data["dilations"] = list(self.stem_channels), list(self.dilations)
        return data


@dataclass(frozen=True)
class SpecWhisperConfig:
    """``members`` SpecNets (one recipe, different training seeds; their margins averaged) plus a linear
    head on the frozen Whisper tiny.en encoder (``width`` values pooled)."""

    architecture: str = "SpecWhisper"
    specnet: SpecNetConfig = SpecNetConfig()
    width: int = 384
    members: int = 1

    def __post_init__(self) -> None:
        if self.members < 1:
            raise ValueError(f"SpecWhisper needs at least one SpecNet member, got {self.members}")

    @property
    def nb_samp(self) -> int:
        return self.specnet.nb_samp

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> SpecWhisperConfig:
        return cls(
            specnet=SpecNetConfig.from_dict(data["specnet"]),
            width=int(data.get("width", 384)),
            members=int(data.get("members", 1)),
        )

    def to_dict(self) -> dict[str, Any]:
        return {
            "architecture": self.architecture,
            "specnet": self.specnet.to_dict(),
            "width": self.width,
            "members": self.members,
        }


ModelConfig = AasistConfig | SpecNetConfig | SpecWhisperConfig


def config_from_dict(data: dict[str, Any]) -> ModelConfig:
    """A stored config, by its ``architecture`` (files written before SpecNet existed say AASIST)."""
    architecture = data.get("architecture", "AASIST")
    if architecture == "SpecNet":
        return SpecNetConfig.from_dict(data)
    if architecture == "SpecWhisper":
        return SpecWhisperConfig.from_dict(data)
    return AasistConfig.from_dict(data)


# The published AASIST variants (the official weights `voxguard weights` fetches).
VARIANTS: dict[str, AasistConfig] = {
    "aasist": AasistConfig(),
    "aasist-l": AasistConfig(
        filts=(70, (1, 32), (32, 32), (32, 24), (24, 24)),
        gat_dims=(24, 32),
        pool_ratios=(0.4, 0.5, 0.7, 0.5),
    ),
}
# Every architecture `voxguard train --model` builds.
ARCHITECTURES: dict[str, ModelConfig] = {**VARIANTS, "specnet": SpecNetConfig()}
