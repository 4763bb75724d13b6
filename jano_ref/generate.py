"""One entry point for every method: ``generate(field, noise, sigmas, method=...)``."""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any, Callable

import torch
from torch import Tensor

from .baselines import BASELINES, BaselineReport, sample_baseline
from .combined import COMBINATIONS, CombinedConfig, sample_combined
from .combined import resolve as resolve_combined
from .jano.cache import CacheOptions
from .jano.config import JanoConfig, get_preset
from .jano.sampler import JanoReport, sample_jano
from .jit import JiTReport, get_jit_preset, sample_jit
from .runtime.sampling import SOLVERS, sample_euler, sample_unipc

METHODS = ("full", "jano", *COMBINATIONS, "jit", *BASELINES)
JANO_METHODS = ("jano", *COMBINATIONS)  # the methods that run Jano's plan and KV cache


@dataclass
class FullReport:
    """Report of a full-compute run: every step computes every token."""

    step_seconds: list[float]
    token_counts: list[int]
    ideal_speedup: float = 1.0


@dataclass
class Generation:
    tokens: Tensor  # final token latents [B, L, D]
    report: FullReport | JanoReport | JiTReport | BaselineReport
    seconds: float  # wall time of the denoising loop


def cost_against_full(report: FullReport | JanoReport | JiTReport | BaselineReport, full_steps: int,
                      num_tokens: int) -> tuple[float, float]:
    """(ideal speedup, token fraction) of a run against full compute with ``full_steps`` steps over ``num_tokens``
    tokens: token FLOPs for Jano (same steps) and JiT (its own steps; the paper's "7x" is this ratio), the step
    ratio for full compute with fewer steps, metered block FLOPs for the caching baselines; the fraction is token
    evaluations over full's (for the baselines: spent FLOPs over full's)."""
    fraction = sum(report.token_counts) / (full_steps * num_tokens)
    if isinstance(report, JiTReport):
        return report.speedup_vs(full_steps), fraction
    if isinstance(report, BaselineReport):
        return report.ideal_speedup, 1 / report.ideal_speedup
    if isinstance(report, FullReport):
        return full_steps / len(report.token_counts), fraction
    return report.ideal_speedup, fraction


def generate(
    field: Callable[..., Tensor],
    noise: Tensor,
    sigmas: Tensor | None,
    *,
    method: str = "jano",
    config: str | JanoConfig | Any = "flux-dev",
    layout=None,
    callback: Callable[[dict[str, Any]], None] | None = None,
    log: Callable[[str], None] | None = None,
    level_map: Callable[[Tensor], Tensor] | None = None,
    solver: str = "euler",
    cache: CacheOptions | None = None,
) -> Generation:
    """Sample token latents from ``noise`` [B, L, D] over ``sigmas`` with ``method``.

    ``field`` is a token velocity field (``pipeline.FluxVelocity`` / ``WanVelocity``, or ``sampling.EpsToVelocity``
    over one, with ``layout`` the field that knows the token grid). ``config`` is a Jano preset name or a
    ``JanoConfig`` for ``method="jano"``, a baseline preset or config for the caching baselines
    (``jano_ref.baselines``), a JiT preset name or ``JiTConfig`` for ``method="jit"`` (whose sigmas must
    have ``num_steps + 1`` entries, or be None for the preset's own Beta-warped steps, ``jit.beta_sigmas``); ``level_map`` replaces Jano's block levels (ablations). The report has the level map, per-step token counts, ideal speedup and per-step timings.
    The combinations ``jano+teacache``, ``jano+fbcache``, ``jano+pab`` (``jano_ref.combined``) take a
    ``CombinedConfig`` or a label ``JANO_PRESET@STEP_CACHE_PRESET`` / ``JANO_PRESET@KNOB=VALUE``.

    ``solver`` is "euler" (the default, Flux's) or "unipc" (Wan2.1's; give it ``sampling.wan_unipc_sigmas``) for
    full compute, Jano and JiT; the caching baselines step with Euler only.
    ``cache`` (``jano.cache.CacheOptions``: storage mode, offload, memory budget) is Jano's KV cache; other methods
    refuse it.
    """
    if method not in METHODS:
        raise ValueError(f"unknown method {method!r}; choose one of {', '.join(METHODS)}")
    if solver not in SOLVERS:
        raise ValueError(f"unknown solver {solver!r}; choose one of {', '.join(SOLVERS)}")
    if solver != "euler" and method in BASELINES:
        raise ValueError(f"the caching baselines ({method}) run with the Euler solver only; use solver='euler', or "
                         f"method 'full', 'jano' or 'jit' for solver={solver!r}")
    if cache is not None and cache != CacheOptions() and method not in JANO_METHODS:
        raise ValueError(f"cache options {cache} are for Jano's KV cache; method {method!r} has none. Drop them "
                         "(or --kv-offload / --kv-cache-mode / --max-cache-mb) or use method='jano'")
    with torch.inference_mode():  # sampling never needs gradients
        return _generate(field, noise, sigmas, method, config, layout, callback, log, level_map, solver, cache)


def _generate(field, noise, sigmas, method, config, layout, callback, log, level_map, solver, cache) -> Generation:
    start = time.perf_counter()
    if method in BASELINES:
        tokens, report = sample_baseline(field, noise, sigmas, method, config, callback=callback)
    elif method == "jit":
        tokens, report = sample_jit(field, noise, sigmas, get_jit_preset(config), layout=layout, callback=callback,
                                    solver=solver)
    elif method == "jano":
        tokens, report = sample_jano(field, noise, sigmas, get_preset(config), layout=layout, callback=callback, log=log,
                                     level_map=level_map, solver=solver, cache=cache)
    elif method in COMBINATIONS:
        if not isinstance(config, CombinedConfig):
            config = resolve_combined(method, config, None, "flux-dev")[1]
        tokens, report = sample_combined(field, noise, sigmas, method, config, layout=layout, callback=callback,
                                         log=log, level_map=level_map, solver=solver, cache=cache)
    else:
        steps: list[float] = []
        last = [time.perf_counter()]

        def timed(info: dict[str, Any]) -> None:
            now = time.perf_counter()
            steps.append(now - last[0])
            last[0] = now
            if callback is not None:
                callback(info)

        sample = sample_unipc if solver == "unipc" else sample_euler
        tokens = sample(field, noise, sigmas, callback=timed)
        report = FullReport(steps, [noise.shape[1]] * (len(sigmas) - 1))
    return Generation(tokens, report, time.perf_counter() - start)
