"""AASIST architecture hyper-parameters and the two published variants."""

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


VARIANTS: dict[str, AasistConfig] = {
    "aasist": AasistConfig(),
    "aasist-l": AasistConfig(
        filts=(70, (1, 32), (32, 32), (32, 24), (24, 24)),
        gat_dims=(24, 32),
        pool_ratios=(0.4, 0.5, 0.7, 0.5),
    ),
}
