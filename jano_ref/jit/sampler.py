"""``sample_jit``: JiT's sampler (§6, Algorithm 1) over the pieces of this package; see the package docstring
for what it follows of the paper and of the official code."""

from __future__ import annotations

import math
import time
from dataclasses import dataclass, field
from typing import Any, Callable

import torch
from torch import Tensor

from ..runtime.cost import TokenCost
from ..runtime.sampling import make_solver
from ..runtime.timing import synchronize
from .anchors import Grid, by_importance, grow_anchors, initial_anchor_order, local_variance
from .config import JiTConfig, get_jit_preset
from .lift import make_lifter
from .microflow import clean_estimate, micro_flow, micro_flow_target, transition_noise
from .schedule import beta_sigmas, stage_bounds, stage_budgets, stage_of_step

# ----------------------------------------------------------------------------------------------------------------------
# Sampler (§6, Algorithm 1)
# ----------------------------------------------------------------------------------------------------------------------


@dataclass
class JiTReport:
    """What a JiT generation did. FLOPs come from ``layout.token_cost()`` times the guidance branches:
    ``flops`` is the whole JiT run, ``full_step_flops`` one dense step. ``ideal_speedup`` compares with a full run
    of the *same* number of steps; ``speedup_vs(50)`` with a 50-step full run (the paper's "speed", §5.1)."""

    config: JiTConfig
    sigmas: Tensor
    token_grid: Grid
    stage_ends: list[int]  # end step (exclusive) of every stage
    token_counts: list[int] = field(default_factory=list)  # anchors (computed tokens) per step
    anchor_sets: list[Tensor] = field(default_factory=list)  # every distinct anchor set, sparse -> dense (CPU)
    transition_steps: list[int] = field(default_factory=list)  # steps at whose start the set grew
    flops: float = 0.0
    full_step_flops: float = 0.0
    step_seconds: list[float] = field(default_factory=list)

    @property
    def num_tokens(self) -> int:
        return math.prod(self.token_grid)

    @property
    def ideal_speedup(self) -> float:
        return self.full_step_flops * len(self.token_counts) / self.flops if self.flops else 1.0

    def speedup_vs(self, full_steps: int) -> float:
        """FLOPs of a full run with ``full_steps`` steps over this run's FLOPs."""
        return self.full_step_flops * full_steps / self.flops if self.flops else math.inf


def step_flops(cost: TokenCost, n_active: int, branches: int) -> float:
    """FLOPs of one JiT step: the DiT on the m_k anchors alone, so m_k queries over m_k keys (§2, §3.3)."""
    return branches * cost.forward_flops(n_active, n_active)


def _resolve(sigmas_or_config, config) -> tuple[Tensor | None, JiTConfig]:
    if isinstance(sigmas_or_config, (JiTConfig, str)):
        if config is not None:
            raise ValueError("give the config once: sample_jit(field, x, config) or "
                             "sample_jit(field, x, sigmas, config)")
        return None, get_jit_preset(sigmas_or_config)
    if config is None:
        raise ValueError("sample_jit(field, x, sigmas, config): a JiTConfig or preset name is needed")
    return sigmas_or_config, get_jit_preset(config)


def sample_jit(
    field_: Callable[..., Tensor],
    x: Tensor,
    sigmas_or_config: Tensor | JiTConfig | str | None,
    config: JiTConfig | str | None = None,
    *,
    layout=None,
    callback: Callable[[dict[str, Any]], None] | None = None,
    solver: str = "euler",
) -> tuple[Tensor, JiTReport]:
    """Sampling with JiT (§6, Algorithm 1) over a token velocity field ``field_(x, sigma, token_index=...,
    kv_caches=None)`` (``pipeline.FluxVelocity`` / ``WanVelocity``). ``layout`` gives ``token_grid``, ``branches``
    and ``token_cost`` (defaults to ``field_``). ``x`` [1, N, D] noise tokens.

    Call as ``sample_jit(field, x, config)`` (sigmas from the config's Beta warp, ``beta_sigmas``) or
    ``sample_jit(field, x, sigmas, config)`` with ``len(sigmas) == config.num_steps + 1`` (sigmas None = the
    warp). ``config`` is a ``JiTConfig`` or a ``PRESETS`` name. ``callback`` gets ``dict(i, x, sigma,
    sigma_next, velocity, computed, stage)`` once per step before the update; ``velocity`` is the lifted
    [1, N, D] velocity, ``computed`` the anchor indices (None when all tokens are active).
    ``solver`` ("euler", the paper's, | "unipc") steps every token along that velocity, in every stage; it restarts
    at each transition (package docstring, "Solver"). Returns the final tokens (x's dtype) and a ``JiTReport``."""
    sigmas, config = _resolve(sigmas_or_config, config)
    layout = layout if layout is not None else field_
    if x.shape[0] != 1:
        raise ValueError(f"JiT picks one anchor set per sample (the official code shares the first sample's set "
                         f"across a batch); got a batch of {x.shape[0]}. Generate one sample at a time.")
    grid = tuple(layout.token_grid)
    n = math.prod(grid)
    if x.shape[1] != n:
        raise ValueError(f"x has {x.shape[1]} tokens but the token grid {grid} has {n}")
    if sigmas is None:
        sigmas = beta_sigmas(config.num_steps, config.beta_alpha, config.beta_beta)
    if len(sigmas) != config.num_steps + 1:
        raise ValueError(f"{len(sigmas) - 1} steps of sigmas for a {config.num_steps}-step config; "
                         f"use config.replace(num_steps={len(sigmas) - 1}) or sigmas=None (Beta warp)")
    sigmas = sigmas.to(x.device)
    bounds = stage_bounds(config.num_steps, config.stage_ends)
    budgets = stage_budgets(n, config.token_fractions)
    cost, branches = layout.token_cost(), len(layout.branches)

    report = JiTReport(config, sigmas, grid, bounds)
    report.full_step_flops = step_flops(cost, n, branches)
    state_dtype = torch.promote_types(x.dtype, torch.float32)  # as sample_euler: no bf16 accumulation
    state = x.to(state_dtype)
    stepper = make_solver(solver, sigmas)
    order = initial_anchor_order(grid, budgets[stage_of_step(0, bounds)], torch.Generator().manual_seed(config.seed))
    anchors = order.sort().values  # ``order``: as added, for config.tie_order == "stored"
    lifter = make_lifter(grid, anchors, config, x.device, order=order)
    report.anchor_sets.append(anchors)
    noise = None
    y_prev = v_prev = None

    for i in range(config.num_steps):
        sigma, sigma_next = sigmas[i], sigmas[i + 1]
        stage = stage_of_step(i, bounds)
        synchronize(x.device)
        start = time.perf_counter()
        if budgets[stage] > len(anchors):  # transition: ITA, then DMF (never at i = 0: the first set fits)
            importance = local_variance(v_prev, grid, config.variance_window, config.variance_padding)
            anchors, new = grow_anchors(anchors, importance, budgets[stage])
            order = torch.cat([order, by_importance(new, importance)])
            noise = transition_noise(x.shape, config.seed, state_dtype, x.device) if noise is None else noise
            new = new.to(x.device)
            target = micro_flow_target(clean_estimate(y_prev, v_prev, sigmas[i - 1]), lifter, new, sigma, noise)
            state = micro_flow(state, new, target, config.micro_flow, config.micro_flow_steps)
            lifter = make_lifter(grid, anchors, config, x.device, order=order)
            stepper.restart()  # the micro-flow moved the state outside the solver: no multistep across it
            report.anchor_sets.append(anchors)
            report.transition_steps.append(i)

        index = None if lifter.dense else lifter.anchors
        x_in = state.to(x.dtype)
        u = field_(x_in, sigma, token_index=index, kv_caches=None)
        v = u if index is None else lifter(u.to(state_dtype))
        synchronize(x.device)
        report.step_seconds.append(time.perf_counter() - start)  # transition + forward + lift
        if callback is not None:
            callback(dict(i=i, x=x_in, sigma=sigma, sigma_next=sigma_next, velocity=v, computed=index, stage=stage))
        y_prev, v_prev = state, v
        state = stepper.step(i, state, v)
        report.token_counts.append(len(anchors))
        report.flops += step_flops(cost, len(anchors), branches)
    return state.to(x.dtype), report
