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
    # prepend the initial noise to the warm-up stack (official: only in a process's first run, analyzer.stack_warmup)
    include_noise: bool = False
    # Eq. 15 contour threshold mean + 0.3 std: 1 = unbiased std, the official torch.std since 2025-11-19 (2a964ea and
    # 7befec0, the commits the presets follow); 0 = population std, the np.std of earlier commits (analyzer docs)
    contour_std_correction: int = 1
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
        if self.contour_std_correction not in (0, 1):
            raise ValueError(f"contour_std_correction={self.contour_std_correction}: use 1 (unbiased std, the official "
                             "torch.std) or 0 (population std, the np.std of the first official commits)")

    def replace(self, **changes) -> "JanoConfig":
        return dataclasses.replace(self, **changes)


# What the analyzer sees follows the official scripts' runs (notes jano-official-code.md §3): the Flux script times
# generations after two untimed ones, whose process-global step counter keeps the initial noise out, so every timed
# run analyses 7 velocities (include_noise=False); the Wan script makes one generation per process, which always
# analyses the initial noise plus 6 velocities (include_noise=True, K = 7 and lag 3 as there).
_FLUX_OFFICIAL = JanoConfig(
    warmup_steps=7, cooldown_steps=2, static_thresh=0.2, medium_thresh=0.4, static_interval=12, medium_interval=4,
    alpha=0.0, d_strength=0.8, d_distance=2.0, block_size=None, include_noise=False, contour_std_correction=1,
    source="official code chen-yy20/Jano run_flux/jano_generate.py and jano/dynamic_analyzer.py (HEAD 7befec0); "
    "warm-up stack of the timed runs: 7 velocities, no noise",
)
_WAN_OFFICIAL = JanoConfig(
    warmup_steps=6, cooldown_steps=4, static_thresh=0.2, medium_thresh=0.4, static_interval=6, medium_interval=3,
    alpha=0.7, d_strength=0.8, d_distance=1.0, block_size=(7, 6, 8), include_noise=True, contour_std_correction=1,
    source="official code chen-yy20/Jano run_wan/jano_generate.py and jano/dynamic_analyzer.py (paper era 2a964ea; "
    "HEAD uses medium_thresh 0.6); warm-up stack of its one run per process: the initial noise + 6 velocities",
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
    # The official Wan settings on the 6 velocities alone (K = 6, lag 3), the way flux-dev analyses velocities only.
    "wan-no-noise": _WAN_OFFICIAL.replace(
        include_noise=False, source="jano_ref: official wan settings without the initial noise in the warm-up stack"),
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
