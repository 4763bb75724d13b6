"""Jano hyper-parameters and named presets, each citing where its numbers come from."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

from ..runtime.presets import lookup_preset


@dataclass(frozen=True)
class JanoConfig:
    """Everything Jano needs besides the model and the schedule.

    Thresholds cut the (normalised, enhanced) block score: S <= static_thresh is static, S <= medium_thresh
    moderate, above that active. Intervals are refresh periods in steps (static tokens are recomputed every
    ``static_interval`` steps, moderate ones every ``medium_interval``). ``block_size`` (bt, bh, bw) is in latent
    cells; None means the official Flux rule, 1/16 of each latent side (images only).
    """

    warmup_steps: int
    cooldown_steps: int
    static_thresh: float
    medium_thresh: float
    static_interval: int
    medium_interval: int
    alpha: float  # temporal weight of the score (t_weight); 0 for images
    d_strength: float  # inward-diffusion boost strength
    d_distance: float  # inward-diffusion reach, in blocks
    block_size: tuple[int, int, int] | None = None
    include_noise: bool = False  # analyse the initial noise too (official: only by accident, see analyzer.stack_warmup)
    target_speedup: float | None = None  # if set, thresholds are searched to reach this ideal speedup
    hold_frozen_latents: bool = False  # ablation: frozen tokens keep their latent instead of moving along v
    source: str = ""

    def __post_init__(self) -> None:
        if self.warmup_steps < 2:
            raise ValueError(f"warmup_steps={self.warmup_steps}: the analyzer needs at least 2 warm-up velocities "
                             "(it compares them at lag floor(K/2)); use 2 or more")
        if self.static_thresh > self.medium_thresh:
            raise ValueError(f"static_thresh {self.static_thresh} > medium_thresh {self.medium_thresh}; "
                             "static blocks must score lower than moderate ones")
        if self.static_interval < 1 or self.medium_interval < 1:
            raise ValueError("static_interval and medium_interval are refresh periods in steps and must be >= 1")

    def replace(self, **changes) -> "JanoConfig":
        return dataclasses.replace(self, **changes)


_FLUX_OFFICIAL = JanoConfig(
    warmup_steps=7, cooldown_steps=2, static_thresh=0.2, medium_thresh=0.4, static_interval=12, medium_interval=4,
    alpha=0.0, d_strength=0.8, d_distance=2.0, block_size=None,
    source="official code chen-yy20/Jano run_flux/jano_generate.py (HEAD 7befec0)",
)
_WAN_OFFICIAL = JanoConfig(
    warmup_steps=6, cooldown_steps=4, static_thresh=0.2, medium_thresh=0.4, static_interval=6, medium_interval=3,
    alpha=0.7, d_strength=0.8, d_distance=1.0, block_size=(7, 6, 8),
    source="official code chen-yy20/Jano run_wan/jano_generate.py (paper era 2a964ea; HEAD uses medium_thresh 0.6)",
)


def _appendix_b(base: JanoConfig, model: str, row: int, static: float, s_int: int, medium: float, m_int: int):
    return base.replace(
        static_thresh=static, static_interval=s_int, medium_thresh=medium, medium_interval=m_int,
        source=f"Jano paper Appendix B, {model} row {row} (static thresh, interval, moderate thresh, interval); "
        f"other fields from {base.source}",
    )


PRESETS: dict[str, JanoConfig] = {
    "flux-dev": _FLUX_OFFICIAL,
    "wan": _WAN_OFFICIAL,
    **{f"flux-b{r}": _appendix_b(_FLUX_OFFICIAL, "Flux", r, *v)
       for r, v in enumerate([(0.1, 8, 0.5, 5), (0.2, 10, 0.5, 3), (0.3, 10, 0.6, 3)], start=1)},
    **{f"wan1.3b-b{r}": _appendix_b(_WAN_OFFICIAL, "Wan-1.3B", r, *v)
       for r, v in enumerate([(0.1, 3, 0.3, 2), (0.15, 6, 0.4, 4), (0.4, 6, 0.6, 4)], start=1)},
    **{f"wan14b-b{r}": _appendix_b(_WAN_OFFICIAL, "Wan-14B", r, *v)
       for r, v in enumerate([(0.1, 6, 0.3, 3), (0.15, 6, 0.4, 4), (0.4, 6, 0.6, 4)], start=1)},
    # Matched-compute variants (this project, not the paper): thresholds are searched per generation so that the
    # plan's ideal speedup is 2x (levels.search_thresholds); the official fixed thresholds give very different
    # speedups from prompt to prompt on small latents. Everything else is the official setting above.
    "flux-dev-2x": _FLUX_OFFICIAL.replace(
        target_speedup=2.0, source="jano_ref: official flux-dev settings with thresholds searched for ideal 2x"),
    "wan-2x": _WAN_OFFICIAL.replace(
        target_speedup=2.0, source="jano_ref: official wan settings with thresholds searched for ideal 2x"),
}


def get_preset(name: str | JanoConfig) -> JanoConfig:
    return lookup_preset(name, PRESETS, JanoConfig, "Jano")
