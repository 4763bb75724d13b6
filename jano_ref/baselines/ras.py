"""RAS, Region-Adaptive Sampling (Liu et al., arXiv 2502.10389; code microsoft/RAS): at each "RAS step" only a
subset of the tokens goes through the DiT, and the others reuse their last velocity.

    dense     the first ``start_step`` steps, the error-reset steps and every step from ``end_step`` on: every token
              is computed; a dense step right before a RAS step also refills every layer's K/V cache
    select    after step s, if step s+1 is a RAS step: score every token from the scaled velocity (sigma_{s+1} -
              sigma_s) * v_s, multiply by exp(starvation_scale * drop_count), sort ascending and drop K tokens from
              the two ends (``high_ratio`` of them from the top); the dropped tokens' counts go up by one
    RAS step  the kept tokens go through the model; in every self-attention their fresh K/V overwrite their rows of
              the per-layer cache and their queries attend over the whole cache (fresh rows + stale rows)
    Euler     over the whole latent: a dropped token keeps moving with its last velocity, it is not frozen

Sources (microsoft/RAS, the snapshot of notes ``peers.md`` §0):
``src/ras/schedulers/ras_scheduling_flow_match_euler_discrete.py`` (``ras_selection``, ``step``),
``src/ras/modules/attention_processor.py`` (``k_cache`` / ``v_cache``), ``src/ras/utils/ras_manager.py`` (schedule,
defaults), ``src/ras/utils/ras_argparser.py``, README "Customize Hyperparameters"; notes ``peers.md`` §4.

Choices, and how they differ from the published code
-----------------------------------------------------
*Metric.* RAS takes, per latent pixel, the std (default) or the L2 norm of the scaled velocity over the latent
channels, and averages it over the pixels of each 2x2 patch. Our tokens are those patches (Flux 2x2 packing, Wan
(1, 2, 2) patches), so the token's score is exactly that: ``token_scores`` unpacks the tokens with the field's
``to_latent`` (Flux packs channel-first and Wan channel-last, so the raw token vector is not used), takes the
statistic over channels per pixel and averages over the token's patch. The dt factor is the same for all tokens of
a step, so it never changes a ranking; it is kept to match the published quantity.

*high_ratio.* Scores are sorted ascending; of the K tokens to drop, ``floor(K * (1 - high_ratio))`` come from the
bottom and the rest from the top, and the middle band is computed. The published code takes ``int(K * high_ratio)``
from the top, so it can drop one token fewer than K when K * high_ratio is fractional, and at ``high_ratio = 0`` its
slice ``indices[-0:]`` drops every token (no token is computed). We drop exactly K, so ``sample_ratio`` is the
computed fraction, and ``high_ratio = 0`` drops the K lowest. Our default is the published default, 1.0
(``ras_argparser.py``; the README calls high_ratio "the ratio of the high value chosen to be cached", default 1.0):
the K *highest*-scoring tokens reuse their velocity and the low-score band is computed. Under the std metric this
means RAS computes the tokens whose velocity varies least across channels, which is not "the tokens that change
most" (Jano's intuition; ``high_ratio=0`` with ``metric="l2norm"`` is that variant). A baseline should run what its
authors ship, so we keep 1.0; the SD3 script's 0.3 is the ``ras-sd3`` preset.

*Starvation.* score * exp(starvation_scale * drop_count), with drop_count incremented for every dropped token at
every selection and never reset during a generation. The published counter starts at -(number of sigmas); that is
one factor shared by all tokens and cannot change a ranking, so ours starts at 0. The factor raises often-dropped
tokens, so it pulls bottom-dropped tokens back into the computed band but pushes top-dropped ones further out: it
only fights starvation in the low tail, and with ``high_ratio = 1`` it makes the dropped set sticky. We reproduce
it as published. The effective scale in the published code is always 0.1: ``ras_manager.set_parameters`` never
reads ``--starvation_scale`` (the SD3 script's 1 is ignored), so both presets use 0.1.

*Schedule.* RAS writes absolute steps for one step count (argparse/Lumina: 30 steps, RAS from step 4, dense resets
at 12 and 22, ``scheduler_end_step`` 30; SD3 script: 28 steps, 4, 12/20, 28). We keep those numbers with the step
count they were written for (``schedule_steps``) and map each to ``floor(step * N / schedule_steps + 1/2)`` for an
N-step run (the start at least 1, since the first RAS step needs a velocity). So a run with the written step count
is identical, and the dense fraction of the sigma range stays the same at other counts: the ``ras`` preset at
50 steps is dense at 0-6, 20 and 37 (start 4/30 -> 7, resets 12/30 -> 20 and 22/30 -> 37). Final steps: the
published end step equals the step count, so the last steps are RAS steps; we keep that (``end_step`` makes a
dense tail possible, every step from it on; the published code tests ``<`` in one place and ``<=`` in another,
which only matters when the end step is below the step count). The K/V cache is refilled by the dense step that
precedes a RAS step (the published code refills at ``scheduler_start_step - 1`` and at the reset steps, the same
steps for these schedules).

*Token count.* K = floor((1 - sample_ratio) * L) per RAS step (``ras_manager.generate_skip_token_list``), with a
1e-9 guard so that (1 - 0.9) * 10 counts as 1. The published dynamic ratio (``skip_num_step`` /
``skip_num_step_length``, used by the Lumina script: 256 tokens every 4 steps, in multiples of 64) is not
reproduced; both presets are static.

*Guidance.* Each guidance branch has its own K/V cache (SD3's CFG batch of 2 keeps one cache row per branch in the
published code); the token selection comes from the guided velocity and is shared by both branches, as published.

*Cost.* The report meters ``token_cost().forward_flops(computed, L)`` per branch, the proxy Jano uses: linear
layers scale with the computed tokens, attention with computed queries times all L keys (the cached ones too).
The selection itself (a sort per step) is not metered; ``step_seconds`` includes it.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass, field
from typing import Any, Callable

import torch
from torch import Tensor

from .common import BaselineReport

METRICS = ("std", "l2norm")


@dataclass(frozen=True)
class RASConfig:
    """RAS hyper-parameters. Steps are absolute for a run of ``schedule_steps`` steps and rescaled for other step
    counts (``RASConfig.steps_for``); ``fractions`` gives them as fractions of the step count."""

    sample_ratio: float = 0.5  # fraction of the tokens computed at a RAS step
    high_ratio: float = 1.0  # share of the dropped tokens taken from the top of the ascending score order
    metric: str = "std"  # per-pixel statistic over latent channels: "std" or "l2norm"
    starvation_scale: float = 0.1  # score *= exp(starvation_scale * drop_count)
    start_step: int = 4  # steps before it are dense
    reset_steps: tuple[int, ...] = (12, 22)  # dense steps inside the RAS range (error reset)
    end_step: int = 30  # steps from it on are dense
    schedule_steps: int = 30  # the step count the three steps above are written for
    source: str = ""

    def __post_init__(self) -> None:
        if not 0.0 < self.sample_ratio <= 1.0:
            raise ValueError(f"sample_ratio={self.sample_ratio}: expected a fraction of tokens in (0, 1]; "
                             "1 computes every token at every step (plain Euler)")
        if not 0.0 <= self.high_ratio <= 1.0:
            raise ValueError(f"high_ratio={self.high_ratio}: expected a share of the dropped tokens in [0, 1] "
                             "(1 drops the highest scores, 0 the lowest)")
        if self.metric not in METRICS:
            raise ValueError(f"metric={self.metric!r}: expected one of {', '.join(METRICS)}")
        if self.schedule_steps < 1 or not 1 <= self.start_step <= self.schedule_steps:
            raise ValueError(f"start_step={self.start_step}, schedule_steps={self.schedule_steps}: expected "
                             "1 <= start_step <= schedule_steps (a RAS step needs the velocity of a dense step)")
        if any(not 0 <= r < self.schedule_steps for r in self.reset_steps):
            raise ValueError(f"reset_steps={self.reset_steps}: expected steps in [0, schedule_steps="
                             f"{self.schedule_steps}); they are written for a run of schedule_steps steps")
        if not self.start_step <= self.end_step <= self.schedule_steps:
            raise ValueError(f"end_step={self.end_step}: expected start_step ({self.start_step}) <= end_step <= "
                             f"schedule_steps ({self.schedule_steps}); set end_step=schedule_steps for no dense tail")

    @property
    def fractions(self) -> tuple[float, tuple[float, ...], float]:
        """(start, resets, end) as fractions of the step count (``ras``: 0.133, (0.4, 0.733), 1.0)."""
        n = self.schedule_steps
        return self.start_step / n, tuple(r / n for r in self.reset_steps), self.end_step / n

    def steps_for(self, num_steps: int) -> tuple[int, tuple[int, ...], int]:
        """(start, resets, end) for a run of ``num_steps`` steps."""
        def scale(step: int) -> int:
            return scale_step(step, self.schedule_steps, num_steps)
        return max(1, scale(self.start_step)), tuple(scale(r) for r in self.reset_steps), scale(self.end_step)


PRESETS: dict[str, RASConfig] = {
    "ras": RASConfig(source=(
        "microsoft/RAS src/ras/utils/ras_argparser.py defaults (30 steps, sample_ratio 0.5, start 4, resets 12,22, "
        "end 30, std, high_ratio 1); the same schedule as scripts/Lumina_Next_T2I_example.sh, whose dynamic ratio "
        "(skip_num_step 256 / 4) is not reproduced; starvation 0.1 = src/ras/utils/ras_manager.py")),
    "ras-sd3": RASConfig(high_ratio=0.3, reset_steps=(12, 20), end_step=28, schedule_steps=28, source=(
        "microsoft/RAS scripts/Stable_Diffusion_3_example.sh (28 steps, sample_ratio 0.5, start 4, resets 12,20, "
        "end 28, std, high_ratio 0.3); its --starvation_scale 1 is never read by ras_manager.set_parameters, so "
        "the effective 0.1 is used")),
}
KNOB = "sample_ratio"
# 0.5 is the published default and 0.25 the ratio of the blog's Table 1 (docs/blog/static/images/exp_table.png)
SWEEP = (0.75, 0.6, 0.5, 0.4, 0.25, 0.15, 0.1)


# ---- schedule ---------------------------------------------------------------------------------------------------


def scale_step(step: int, schedule_steps: int, num_steps: int) -> int:
    """A step written for ``schedule_steps`` steps, moved to ``num_steps`` at the same fraction (round half up).
    Identity when the counts agree; RAS itself only has absolute steps (``ras_argparser.py``)."""
    return math.floor(step * num_steps / schedule_steps + 0.5)


def tokens_to_drop(sample_ratio: float, num_tokens: int) -> int:
    """K = floor((1 - sample_ratio) * L), at most L - 1 (``ras_manager.generate_skip_token_list``, static case).
    The 1e-9 keeps float error from losing a token (1 - 0.9 = 0.0999...)."""
    return min(num_tokens - 1, math.floor((1.0 - sample_ratio) * num_tokens + 1e-9))


def drop_schedule(config: RASConfig, num_steps: int, num_tokens: int) -> list[int]:
    """Tokens to drop at every step; 0 marks a dense step (``ras_manager.skip_token_num_list``): the first
    ``start`` steps, the reset steps and the steps from ``end`` on."""
    start, resets, end = config.steps_for(num_steps)
    k = tokens_to_drop(config.sample_ratio, num_tokens)
    return [0 if i < start or i >= end or i in resets else k for i in range(num_steps)]


# ---- selection --------------------------------------------------------------------------------------------------


def token_scores(delta: Tensor, patch: tuple[int, int, int], metric: str = "std") -> Tensor:
    """[C, T, H, W] scaled velocity -> [L] score per token in row-major (T', H', W') token order.

    Per latent pixel the std (unbiased, as ``torch.std``) or L2 norm over channels, averaged over the pixels of
    the token's (pt, ph, pw) patch (``ras_selection``: per-pixel statistic, mean over each 2x2 patch)."""
    delta = delta.to(torch.promote_types(delta.dtype, torch.float32))  # bf16 statistics would blur the ranking
    if metric == "std":
        per_pixel = delta.std(dim=0)
    elif metric == "l2norm":
        per_pixel = delta.norm(dim=0)
    else:
        raise ValueError(f"metric={metric!r}: expected one of {', '.join(METRICS)}")
    pt, ph, pw = patch
    t, h, w = per_pixel.shape
    cells = per_pixel.reshape(t // pt, pt, h // ph, ph, w // pw, pw)
    return cells.mean(dim=(1, 3, 5)).reshape(-1)


def starved_scores(scores: Tensor, drop_count: Tensor, starvation_scale: float) -> Tensor:
    """score * exp(starvation_scale * drop_count) (``ras_selection``'s anti-starvation term)."""
    return scores * torch.exp(starvation_scale * drop_count.to(scores.dtype))


def split_drops(num_drop: int, high_ratio: float) -> tuple[int, int]:
    """(from the bottom, from the top) of the ascending order: floor(K (1 - high_ratio)) and the rest, so exactly
    K are dropped (``ras_selection`` takes int(K high_ratio) from the top; see the module docstring)."""
    low = math.floor(num_drop * (1.0 - high_ratio) + 1e-9)
    return low, num_drop - low


def select_band(scores: Tensor, num_drop: int, high_ratio: float) -> tuple[Tensor, Tensor]:
    """(computed, dropped) token indices, each ascending: sort scores ascending (stable, so ties keep token order),
    drop ``split_drops`` tokens from the two ends, compute the middle band (``ras_selection``)."""
    order = torch.sort(scores, stable=True).indices
    low, high = split_drops(num_drop, high_ratio)
    n = order.numel()
    computed = order[low:n - high]
    dropped = torch.cat([order[:low], order[n - high:]])
    return computed.sort().values, dropped.sort().values


def next_selection(scores: Tensor, drop_count: Tensor, num_drop: int, config: RASConfig
                   ) -> tuple[Tensor, Tensor, Tensor]:
    """(computed, dropped, new drop_count) for the next step: starvation-scaled scores, the band, and one more drop
    for every dropped token (``ras_selection``: ``drop_cnt[cached] += 1``)."""
    computed, dropped = select_band(starved_scores(scores, drop_count, config.starvation_scale), num_drop,
                                    config.high_ratio)
    return computed, dropped, drop_count.index_add(0, dropped, torch.ones_like(dropped, dtype=drop_count.dtype))


# ---- K/V cache --------------------------------------------------------------------------------------------------


@dataclass
class RASKVCache:
    """The full-sequence keys and values of every self-attention layer, for one guidance branch
    (``attention_processor.py`` ``k_cache`` / ``v_cache``); after QK-norm and RoPE, [B, heads, L, head_dim], in
    the model's dtype. Flux passes only image tokens through the hook; its text tokens are always computed."""

    keys: dict[int, Tensor] = field(default_factory=dict)
    values: dict[int, Tensor] = field(default_factory=dict)

    def refresh(self) -> "_Refresh":
        """The hook for a dense step: store every layer's K/V whole."""
        return _Refresh(self)

    def overwrite(self, index: Tensor) -> "_Overwrite":
        """The hook for a RAS step computing the tokens ``index``."""
        return _Overwrite(self, index)

    def nbytes(self) -> int:
        return sum(t.numel() * t.element_size() for d in (self.keys, self.values) for t in d.values())


@dataclass
class _Refresh:
    cache: RASKVCache

    def extend_kv(self, layer: int, k: Tensor, v: Tensor) -> tuple[Tensor, Tensor]:
        # copies: later RAS steps write into them in place
        self.cache.keys[layer], self.cache.values[layer] = k.clone(), v.clone()
        return k, v


@dataclass
class _Overwrite:
    cache: RASKVCache
    index: Tensor

    def extend_kv(self, layer: int, k: Tensor, v: Tensor) -> tuple[Tensor, Tensor]:
        """Fresh K/V overwrite their rows; the queries attend over all L rows (order matches the tokens, though
        attention would not care)."""
        c = self.cache
        if layer not in c.keys:
            raise RuntimeError(f"layer {layer}: no cached K/V; a dense step with RASKVCache.refresh() must run "
                               "before a RAS step")
        keys, values = c.keys[layer], c.values[layer]
        if k.shape[2] != self.index.numel() or k.shape[:2] != keys.shape[:2]:
            raise ValueError(f"layer {layer}: got K/V for {k.shape[2]} tokens of shape {tuple(k.shape)}, expected "
                             f"{self.index.numel()} tokens (the selection) against a cache of {tuple(keys.shape)}")
        keys.index_copy_(2, self.index, k.to(keys.dtype))
        values.index_copy_(2, self.index, v.to(values.dtype))
        return keys, values


def new_caches(branches: tuple[str, ...]) -> dict[str, RASKVCache]:
    """One cache per guidance branch: cond and uncond see different inputs, so they must never share K/V."""
    return {b: RASKVCache() for b in branches}


# ---- sampler ----------------------------------------------------------------------------------------------------


@dataclass
class RASState:
    """Everything RAS carries between steps, for one generation."""

    drop_count: Tensor  # [L] times each token was dropped
    caches: dict[str, RASKVCache]  # per guidance branch
    velocity: Tensor | None = None  # [1, L, D] the last velocity of every token
    computed: Tensor | None = None  # tokens the next RAS step computes (chosen after the previous step)


def sample_ras(field_: Callable[..., Tensor], x: Tensor, sigmas: Tensor, config: RASConfig, *,
               callback: Callable[[dict[str, Any]], None] | None = None) -> tuple[Tensor, BaselineReport]:
    """Euler sampling with RAS; returns (tokens, BaselineReport).

    ``field_(x, sigma, token_index=..., kv_caches=...)`` is a token velocity field (``pipeline.FluxVelocity`` /
    ``WanVelocity``) with ``branches``, ``token_cost()``, ``to_latent`` and ``patch``; ``x`` [1, L, D]. With
    ``sample_ratio=1`` this is bit-identical to ``sampling.sample_euler``. ``callback`` gets
    ``dict(i, x, sigma, sigma_next, velocity, computed)`` before each update (``computed`` None on dense steps).
    ``report.decisions`` is "dense" or "ras n/L" per step."""
    if x.shape[0] != 1:
        raise ValueError(f"RAS selects tokens per sample; got a batch of {x.shape[0]}. Generate one sample at a time.")
    num_steps, num_tokens = len(sigmas) - 1, x.shape[1]
    sigmas = sigmas.to(x.device)
    branches = tuple(getattr(field_, "branches", ("cond",)))
    cost = field_.token_cost()
    drops = drop_schedule(config, num_steps, num_tokens)
    report = BaselineReport("ras", config, num_tokens, cost.forward_flops(num_tokens, num_tokens) * len(branches))
    state = RASState(torch.zeros(num_tokens, device=x.device), new_caches(branches))
    latent = x.to(torch.promote_types(x.dtype, torch.float32))  # as in sample_euler: no bf16 accumulation

    for i in range(num_steps):
        sigma, sigma_next = sigmas[i], sigmas[i + 1]
        next_is_ras = i + 1 < num_steps and drops[i + 1] > 0
        x_in = latent.to(x.dtype)
        start = time.perf_counter()
        if drops[i] > 0:  # RAS step: the selected tokens through the cache, the others keep their velocity
            index = state.computed
            fresh = field_(x_in, sigma, token_index=index,
                           kv_caches={b: state.caches[b].overwrite(index) for b in branches})
            v = state.velocity.clone()
            v[:, index] = fresh.to(v.dtype)
        else:  # dense step; refill the caches only if a RAS step reads them next
            kv = {b: state.caches[b].refresh() for b in branches} if next_is_ras else None
            v = field_(x_in, sigma, kv_caches=kv) if kv is not None else field_(x_in, sigma)
            index = None
        seconds = time.perf_counter() - start
        if callback is not None:
            callback(dict(i=i, x=x_in, sigma=sigma, sigma_next=sigma_next, velocity=v, computed=index))
        start = time.perf_counter()
        delta = (sigma_next - sigma).to(latent.dtype) * v.to(latent.dtype)
        latent = latent + delta
        state.velocity = v
        if next_is_ras:
            scores = token_scores(field_.to_latent(delta)[0], field_.patch, config.metric)
            state.computed, _, state.drop_count = next_selection(scores, state.drop_count, drops[i + 1], config)
        report.step_seconds.append(seconds + time.perf_counter() - start)  # the callback's time left out
        n = num_tokens if index is None else int(index.numel())
        report.step_flops.append(cost.forward_flops(n, num_tokens) * len(branches))
        report.decisions.append("dense" if index is None else f"ras {n}/{num_tokens}")

    return latent.to(x.dtype), report
