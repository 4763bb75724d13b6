"""Jano sampling: analyzer -> levels -> plan -> cached forward -> solver (Euler; UniPC as in the official Wan runs).

    warm-up   full steps; keep each velocity prediction
    analyze   block complexity from those velocities            (analyzer.analyze, Jano Eqs. 10-15)
    levels    blocks -> static / moderate / active -> tokens    (levels.classify, levels.token_levels)
    plan      which tokens every later step computes            (plan.JanoPlan)
    sample    one solver step over the whole latent; computed tokens get a fresh velocity, frozen ones keep
              their last one, and self-attention reads frozen tokens' K/V from a per-level cache
              (cache.LevelKVCache)

The solver (``solver="euler"`` | ``"unipc"``, ``runtime.sampling.make_solver``) sees the assembled velocity, fresh
and stale rows alike, as the official code's schedulers do: Flux's Euler moves frozen tokens along their last
velocity, and Wan's UniPC turns it into x0 = x - sigma v with the current x and sigma, so a frozen token's x0
prediction still changes, and puts that in its multistep history (notes: jano-official-code.md, section 8).

``cache`` (``cache.CacheOptions``) says how the cache stores frozen tokens (exact, hidden, bf16; offloaded or not) and
how much device memory it may use; a budget is checked before the first step and the plan fitted to it after the
analysis (``memory``).

``step_cache`` adds a step-level cache (TeaCache, first-block cache, PAB: hooks from ``jano_ref.baselines``, one per
guidance branch) on top of the plan, as the official ``jano_teacache_forward`` does: a step may be reused only if it
computes the active tokens alone (a level-1 step; it refreshes no frozen token), and then the step cache decides
whether its blocks run; every other step computes its tokens and the step cache keeps what it needs from the active
ones. A reused step still runs the head on the active tokens (with the cached residual); frozen tokens keep their last
velocity and the KV cache is neither read nor written.

All state (warm-up velocities, caches, last velocity) lives in local variables and in the returned
report, so two generations in one process behave like two processes.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any, Callable

import torch
from torch import Tensor

from .analyzer import BlockGrid, ComplexityReport, analyze, flux_block_grid, stack_warmup
from .cache import CacheOptions, CacheReport, LevelKVCache
from .config import JanoConfig
from .levels import classify, search_thresholds, token_levels
from .memory import cached_token_budget, fit_to_budget, geometry_of_layout
from .offload import offloads
from ..runtime.cost import TokenCost
from ..runtime.sampling import make_solver
from .plan import FULL, JanoPlan


@dataclass
class JanoReport:
    """What a Jano generation decided and measured."""

    config: JanoConfig
    complexity: ComplexityReport | None = None
    block_levels: Tensor | None = None  # [nt, nh, nw]
    token_levels: Tensor | None = None  # [L]
    plan: JanoPlan | None = None
    ideal_speedup: float | None = None
    thresholds: tuple[float, float] | None = None  # the ones used (searched if config.target_speedup)
    step_seconds: list[float] = field(default_factory=list)
    analysis_seconds: float = 0.0
    cache_bytes: int = 0
    cache: CacheReport | None = None  # bytes per level, layer and branch (None if no plan was made)
    promoted_blocks: int = 0  # frozen blocks made active to fit CacheOptions.max_cache_mb
    # with a step cache: per step, the share of its block FLOPs each guidance branch spent, and what the cond branch did
    step_shares: list[list[float]] = field(default_factory=list)
    decisions: list[str] = field(default_factory=list)

    @property
    def token_counts(self) -> list[int]:
        """Tokens computed per step; with a step cache, times the share of the step's block FLOPs spent (a step whose
        blocks were all skipped computed no token)."""
        if self.plan is None:
            return []
        counts = self.plan.token_counts()
        if not self.step_shares:
            return counts
        return [round(n * sum(shares) / len(shares)) for n, shares in zip(counts, self.step_shares)]


def block_grid_for(layout, config: JanoConfig) -> BlockGrid:
    """The analysis partition of the layout's latent (T, H, W)."""
    t, h, w = (n * p for n, p in zip(layout.token_grid, layout.patch))
    if config.block_size is None:
        if t != 1:
            raise ValueError("block_size=None means the Flux rule (1/16 of each side) and only applies to images; "
                             "set block_size=(bt, bh, bw) for video (the official Wan block is (7, 6, 8))")
        return flux_block_grid(h, w)
    return BlockGrid((t, h, w), config.block_size)


def decide_levels(
    warmup: Tensor, layout, config: JanoConfig, num_steps: int, cost: TokenCost,
    level_map: Callable[[Tensor], Tensor] | None = None, max_cached_tokens: int | None = None,
) -> tuple[ComplexityReport, Tensor, Tensor, JanoPlan, tuple[float, float], int]:
    """Warm-up velocities [K, C, T, H, W] -> complexity, block levels, token levels, the step plan, the thresholds and
    the number of blocks promoted to fit ``max_cached_tokens``.

    ``level_map`` replaces the analyzer's block levels before planning (ablations, e.g. Jano §6.5's random maps
    with the same level fractions: ``study.shuffled_levels``); ``max_cached_tokens`` (``memory.fit_to_budget``) then
    bounds the frozen tokens."""
    grid = block_grid_for(layout, config)
    complexity = analyze(warmup, grid, alpha=config.alpha, d_strength=config.d_strength, d_distance=config.d_distance,
                         std_correction=config.contour_std_correction)

    def plan_for(block_levels: Tensor) -> JanoPlan:
        return JanoPlan.build(
            token_levels(block_levels, grid, layout.patch), num_steps, warmup=config.warmup_steps,
            cooldown=config.cooldown_steps, static_interval=config.static_interval,
            medium_interval=config.medium_interval,
        )

    if config.target_speedup is None:
        thresholds = (config.static_thresh, config.medium_thresh)
        block_levels = classify(complexity.enhanced, *thresholds)
    else:
        choice = search_thresholds(complexity.enhanced, lambda bl: plan_for(bl).ideal_speedup(cost), config.target_speedup)
        thresholds, block_levels = (choice.static_thresh, choice.medium_thresh), choice.levels
    if level_map is not None:
        block_levels = level_map(block_levels)
    promoted = 0
    if max_cached_tokens is not None:
        block_levels, promoted = fit_to_budget(block_levels, complexity.enhanced,
                                               lambda bl: token_levels(bl, grid, layout.patch), max_cached_tokens)
    plan = plan_for(block_levels)
    return complexity, block_levels, plan.token_levels, plan, thresholds, promoted


def cache_budget(layout, config: JanoConfig, cache: CacheOptions, device: torch.device | str) -> int | None:
    """How many frozen tokens ``cache.max_cache_mb`` admits on ``device`` (None without a budget); ValueError if it
    cannot hold even the smallest plan's cache (``memory.cached_token_budget``). Needs no step: callers that run other
    work first (a CLI timing full compute) can check it before anything."""
    if cache.max_cache_mb is None:
        return None
    return cached_token_budget(cache.max_cache_mb, geometry_of_layout(layout), cache.mode,
                               offloads(cache.offload, device), block_grid_for(layout, config), layout.patch)


def _cached_levels(token_levels: Tensor, layout) -> Tensor:
    """The levels of the tokens this process caches: all of them, or the layout's ``token_shard`` (start, stop) when
    a field splits the sequence over processes (``runtime.parallel.SequenceParallel``: each rank caches its shard)."""
    shard = getattr(layout, "token_shard", None)
    return token_levels if shard is None else token_levels[shard[0]:shard[1]]


def sample_jano(
    field_: Callable[..., Tensor],
    x: Tensor,
    sigmas: Tensor,
    config: JanoConfig,
    *,
    layout=None,
    callback: Callable[[dict[str, Any]], None] | None = None,
    log: Callable[[str], None] | None = None,
    level_map: Callable[[Tensor], Tensor] | None = None,
    solver: str = "euler",
    cache: CacheOptions | None = None,
    step_cache: Callable[[], Any] | None = None,
    describe: Callable[[Any], str] | None = None,
) -> tuple[Tensor, JanoReport]:
    """Sampling with Jano. ``field_(x, sigma, token_index=..., kv_caches=...)`` is a token velocity field
    (``pipeline.FluxVelocity`` / ``WanVelocity``, or ``sampling.EpsToVelocity`` over one); ``layout`` gives the
    token grid, ``to_latent``, ``branches`` and ``token_cost`` (defaults to ``field_`` itself).
    ``x`` [1, L, D] token latents; ``log`` receives the plan once it is known, before the accelerated steps;
    ``level_map`` (see ``decide_levels``) overrides the block levels; ``cache`` (``CacheOptions``) sets how the KV cache
    stores frozen tokens and its memory budget (checked here, before the first step). ``solver`` ("euler" |
    "unipc") steps the whole latent (module docstring). The same levels give the same plan and ideal speedup with
    either solver; the levels themselves come from the warm-up velocities, which follow the solver's trajectory. A
    layout with ``token_shard`` gets caches for its shard's tokens only.

    ``step_cache()`` makes one guidance branch's step-cache hooks (``baselines.common.CacheHooks``: ``begin_step``,
    ``restrict``, ``spent_share``; module docstring), passed to ``field_`` as ``hooks``; ``describe(hooks)`` names
    what the cond branch's did at each step (``JanoReport.decisions``). The ideal speedup then counts each step's
    token FLOPs times the share of its block FLOPs the hooks spent (``combined_ideal_speedup``)."""
    layout = layout if layout is not None else field_
    if x.shape[0] != 1:
        raise ValueError(f"Jano decides levels per sample; got a batch of {x.shape[0]}. Generate one sample at a time.")
    cache = cache if cache is not None else CacheOptions()
    max_cached_tokens = cache_budget(layout, config, cache, x.device)
    num_steps = len(sigmas) - 1
    sigmas = sigmas.to(x.device)
    cost = layout.token_cost()
    report = JanoReport(config)
    state = x.to(torch.promote_types(x.dtype, torch.float32))  # as in sample_euler: no bf16 accumulation
    stepper = make_solver(solver, sigmas)
    warmup = [layout.to_latent(x)[0]] if config.include_noise else []
    plan: JanoPlan | None = None
    caches: dict[str, LevelKVCache] = {}
    v_last: Tensor | None = None
    step_hooks = None if step_cache is None else {b: step_cache() for b in layout.branches}
    hooks_arg = {} if step_hooks is None else {"hooks": step_hooks}

    for i in range(num_steps):
        sigma, sigma_next = sigmas[i], sigmas[i + 1]
        level = FULL if plan is None else plan.step_levels[i]
        index = None if plan is None else plan.computed(i)
        x_in = state.to(x.dtype)
        start = time.perf_counter()
        if step_hooks is not None:
            _begin_step_cache(step_hooks, i, num_steps, float(sigma), plan, index, x.shape[1], layout)
        if index is not None and index.numel() == 0:
            v = v_last  # nothing to compute (no active tokens): every token keeps its last velocity
        else:
            kv = None if level == FULL else {b: caches[b].at(level) for b in layout.branches}
            fresh = field_(x_in, sigma, token_index=index, kv_caches=kv, **hooks_arg)
            # computed tokens get their fresh velocity, frozen ones keep their last (a new tensor: v_last stays intact)
            v = fresh if index is None else v_last.index_copy(1, index, fresh.to(v_last.dtype))
        report.step_seconds.append(time.perf_counter() - start)
        if step_hooks is not None:
            report.step_shares.append([h.spent_share for h in step_hooks.values()])
            if describe is not None:
                computed_any = index is None or index.numel() > 0
                report.decisions.append(describe(step_hooks[layout.branches[0]]) if computed_any else "no tokens")
        if callback is not None:
            callback(dict(i=i, x=x_in, sigma=sigma, sigma_next=sigma_next, velocity=v, level=level, computed=index))

        moved = stepper.step(i, state, v)  # frozen tokens move along their last velocity (official)
        if config.hold_frozen_latents and index is not None:
            moved = state.index_copy(1, index, moved[:, index])  # ablation: only computed tokens move
        state, v_last = moved, v

        if plan is None and i < config.warmup_steps:
            warmup.append(layout.to_latent(v)[0])
            if len(warmup) - config.include_noise == config.warmup_steps:
                start = time.perf_counter()
                complexity, block_levels, tok_levels, plan, thresholds, report.promoted_blocks = decide_levels(
                    stack_warmup(warmup), layout, config, num_steps, cost, level_map, max_cached_tokens
                )
                report.analysis_seconds = time.perf_counter() - start
                caches = {b: LevelKVCache(_cached_levels(tok_levels, layout).to(x.device), cache)
                          for b in layout.branches}
                report.complexity, report.block_levels, report.token_levels = complexity, block_levels, tok_levels
                report.plan, report.thresholds = plan, thresholds
                report.ideal_speedup = plan.ideal_speedup(cost)
                warmup.clear()  # the velocities are no longer needed
                if log is not None:
                    log(plan.describe(cost))
                    if max_cached_tokens is not None:
                        log(f"max_cache_mb {cache.max_cache_mb:g}: {report.promoted_blocks} frozen block(s) made "
                            f"active; {int((tok_levels < 3).sum())} frozen tokens (the budget admits {max_cached_tokens})")

    if plan is None:  # fewer steps than warm-up: everything ran in full
        report.ideal_speedup = 1.0
    if step_hooks is not None:
        counts = plan.token_counts() if plan is not None else [x.shape[1]] * num_steps
        report.ideal_speedup = combined_ideal_speedup(counts, report.step_shares, x.shape[1], cost)
    report.cache_bytes = sum(c.nbytes() for c in caches.values())
    if caches:
        report.cache = CacheReport.of(caches, x.device)
    return state.to(x.dtype), report


def _begin_step_cache(hooks: dict, i: int, num_steps: int, sigma: float, plan: JanoPlan | None, index: Tensor | None,
                      num_tokens: int, layout) -> None:
    """Start step ``i`` on every branch's step-cache hooks. Before the plan (warm-up) every token is computed and no
    step may be reused: the analyzer needs the model's own velocities (the official code reuses on level-1 steps only).
    After it, a step may be reused when it computes the active tokens alone, and the hooks keep the active tokens'
    rows of every step (``JanoPlan.active_among_computed``)."""
    kept = None if plan is None else plan.active_among_computed(i)
    computed = num_tokens if index is None else int(index.numel())
    costs = layout.block_costs(None if index is None else computed)
    for h in hooks.values():
        h.begin_step(i, num_steps, sigma)
        h.restrict(computed, kept, plan is not None and kept is None, costs)


def combined_ideal_speedup(token_counts: list[int], shares: list[list[float]], num_tokens: int, cost: TokenCost
                           ) -> float:
    """Ideal speedup of Jano with a step cache: full compute's token FLOPs over the spent ones, where a step spends
    its token FLOPs (``TokenCost`` at its computed tokens, per guidance branch) times the share of its block FLOPs each
    branch's hooks spent (``CacheHooks.spent_share``: 0 for a TeaCache skip, block 0's share for a first-block-cache
    skip, 1 for a computed step). With every share 1 it is the plan's ``ideal_speedup``; with every token computed
    it is the step cache's own (``BaselineReport.ideal_speedup``: block FLOPs spent over block FLOPs)."""
    full = cost.forward_flops(num_tokens, num_tokens)
    spent = sum(cost.forward_flops(n, num_tokens) * sum(s) / len(s) for n, s in zip(token_counts, shares))
    return full * len(token_counts) / spent if spent else float("inf")
