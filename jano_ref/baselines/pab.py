"""PAB, Pyramid Attention Broadcast (Zhao et al., "Real-Time Video Generation with Pyramid Attention Broadcast",
ICLR'25, arXiv 2408.12588; code NUS-HPC-AI-Lab/VideoSys, ported to diffusers): reuse ("broadcast") attention
outputs from one step to the next few, only in the middle of the trajectory.

For every block and attention kind, per guidance branch: inside the kind's timestep window the attention runs on
steps whose index is a multiple of the kind's range and the other steps return its last output; outside the window
it always runs. Cross-attention, the most stable kind, gets the longest range, spatial self-attention the shortest.
``self_range=1, cross_range=1`` never reuses.

Sources: VideoSys ``videosys/core/pab_mgr.py`` (``if_broadcast_spatial`` / ``if_broadcast_cross``: broadcast when
``count % range != 0`` and ``lo < timestep < hi``, count = the module's call index), diffusers
``src/diffusers/hooks/pyramid_attention_broadcast.py`` (same rule, the state's ``iteration`` is the call index);
notes ``peers.md`` §1 and §3.3.

Choices
-------
*Timesteps.* Both codes compare the transformer's timestep, in [0, 1000], with the window. Our fields take sigma in
[0, 1]; Wan's model gets ``1000 * sigma`` (``WanVelocity``), Flux embeds sigma with a time factor of 1000, and
diffusers' ``FlowMatchEulerDiscreteScheduler`` hands Flux and Wan ``timesteps = 1000 * sigmas``. So t = 1000 * sigma:
the window (100, 800) is 0.1 < sigma < 0.8, both ends open as in both codes. The step index is the sampler's step,
per branch: it equals the per-module call counter of VideoSys and diffusers, since every module is called once per
step and branch.

*Attention kinds.* Flux has one joint attention per block (text and image tokens together) and Wan2.1 one full 3-D
self-attention plus one cross-attention to the text; both are kind "self" / "cross" of ``models.layers.Hooks``.
Neither model has a separate temporal attention, so PAB's temporal range has nothing to act on and is not a field
here (the presets list the published value only in their source). Flux never calls a cross-attention, so
``cross_range`` does not change Flux. PAB's optional MLP broadcast (VideoSys ``mlp_*_broadcast_config``, absent from
diffusers) is not reproduced. The reused tensor is the attention output as the hook sees it (Wan: the module output,
as both codes store; Flux: before the per-stream output projections, which then rerun on it and give the stored
projected output of diffusers' Flux attention again).
"""

from __future__ import annotations

from dataclasses import dataclass

from torch import Tensor

from .common import CacheHooks, sample_with_hooks


@dataclass(frozen=True)
class PABConfig:
    self_range: int  # self-attention runs every self_range steps inside self_window (1 never reuses)
    cross_range: int = 1  # cross-attention (Wan only) runs every cross_range steps inside cross_window
    self_window: tuple[float, float] = (100.0, 800.0)  # open interval of t = 1000 * sigma where reuse may happen
    cross_window: tuple[float, float] = (100.0, 800.0)
    source: str = ""

    def __post_init__(self) -> None:
        for name in ("self_range", "cross_range"):
            value = getattr(self, name)
            if not isinstance(value, int) or value < 1:
                raise ValueError(f"{name} must be an integer >= 1 (the attention runs every {name} steps; 1 never "
                                 f"reuses), got {value!r}")
        for name in ("self_window", "cross_window"):
            window = getattr(self, name)
            if len(window) != 2 or not window[0] < window[1]:
                raise ValueError(f"{name} must be (lo, hi) with lo < hi, timesteps t = 1000 * sigma in [0, 1000] "
                                 f"(e.g. (100, 800)), got {window!r}")


PRESETS: dict[str, PABConfig] = {
    "pab": PABConfig(
        2, 5, (100.0, 800.0), (100.0, 900.0),
        "VideoSys docs/pab.md example config: spatial range 2 in [100, 800], cross range 5 in [100, 900] "
        "(temporal range 3 has no counterpart in Flux / Wan)"),
    "pab-latte": PABConfig(
        2, 6, (100.0, 800.0), (100.0, 800.0),
        "VideoSys videosys/pipelines/latte/pipeline_latte.py LattePABConfig defaults (spatial 2, cross 6, both "
        "[100, 800]; temporal 3 n/a); VideoSys pipelines/flux/pipeline_flux_pab.py FluxPABConfig has the same numbers"),
    "pab-opensora": PABConfig(
        2, 6, (450.0, 930.0), (450.0, 930.0),
        "VideoSys videosys/pipelines/open_sora/pipeline_open_sora.py OpenSoraPABConfig defaults (spatial 2, cross 6, "
        "both [450, 930]; temporal 4 n/a)"),
    "pab-diffusers": PABConfig(
        2, 1, (100.0, 800.0), (100.0, 800.0),
        "diffusers hooks/pyramid_attention_broadcast.py: the apply_pyramid_attention_broadcast docstring example "
        "(spatial_attention_block_skip_range=2, timestep range (100, 800)); cross skip range unset = never reused"),
}
KNOB = "self_range"
SWEEP = (1, 2, 3, 4, 6, 8)


def broadcasts(step: int, sigma: float, every: int, window: tuple[float, float]) -> bool:
    """True if this step reuses the attention: inside the open window lo < 1000 * sigma < hi, on every step whose
    index is not a multiple of ``every`` (VideoSys core/pab_mgr.py ``if_broadcast_spatial``; diffusers
    hooks/pyramid_attention_broadcast.py ``skip_callback``)."""
    return every > 1 and step % every != 0 and window[0] < 1000.0 * sigma < window[1]


class PABHooks(CacheHooks):
    """One guidance branch's PAB state: the last output of every (layer, kind) attention."""

    def __init__(self, costs, config: PABConfig) -> None:
        super().__init__(costs)
        self.config = config
        self.cache: dict[tuple[int, str], Tensor] = {}
        self.reused: set[str] = set()  # kinds reused during the current step

    def begin_step(self, i: int, num_steps: int, sigma: float) -> None:
        super().begin_step(i, num_steps, sigma)
        self.reused = set()

    def attention(self, layer, kind, run):
        every, window = ((self.config.self_range, self.config.self_window) if kind == "self"
                         else (self.config.cross_range, self.config.cross_window))
        key = (layer, kind)
        if key in self.cache and self.reusable and broadcasts(self.step, self.sigma, every, window):
            self.reused.add(kind)
            return self.cache[key]
        out = super().attention(layer, kind, run)
        self.cache[key] = self.keep(out)
        return out

    def describe(self) -> str:
        return "reuse " + "+".join(sorted(self.reused, reverse=True)) if self.reused else "compute"


def sample_pab(field, x: Tensor, sigmas: Tensor, config: PABConfig, *, callback=None):
    """Euler sampling with pyramid attention broadcast per guidance branch; returns (tokens, BaselineReport).
    ``decisions`` name, per step, the kinds the cond branch reused ("reuse self+cross", "reuse self", "compute")."""
    costs = field.block_costs()
    return sample_with_hooks(field, x, sigmas, lambda: PABHooks(costs, config), method="pab", config=config,
                             callback=callback, describe=PABHooks.describe)
