"""When JiT steps and how many tokens each stage computes (§3.3): the Beta-warped timesteps, the stage
boundaries and the per-stage token budgets."""

from __future__ import annotations

import math

import torch
from torch import Tensor

from ..runtime.special import regularized_incomplete_beta

# ----------------------------------------------------------------------------------------------------------------------
# Timesteps (§3.3)
# ----------------------------------------------------------------------------------------------------------------------


def beta_ppf(q: float, a: float, b: float) -> float:
    """Inverse of the Beta(a, b) CDF I_x(a, b) (§3.3, t_i = F^{-1}(s_i; alpha, beta)), by bisection in float64.

    I_x is strictly increasing on [0, 1], so bisection converges to the last representable bracket."""
    if q <= 0.0:
        return 0.0
    if q >= 1.0:
        return 1.0
    lo, hi = 0.0, 1.0
    for _ in range(2000):
        mid = 0.5 * (lo + hi)
        if mid <= lo or mid >= hi:
            break
        if regularized_incomplete_beta(mid, a, b) < q:
            lo = mid
        else:
            hi = mid
    return 0.5 * (lo + hi)


def beta_sigmas(num_steps: int, alpha: float = 1.4, beta: float = 0.42, *, device=None) -> Tensor:
    """The Beta timestep warp (§3.3) as the code computes it (diffusers ``_convert_to_beta`` on
    linspace(1, 1/T, T)): sigma_i = s_min + (1 - s_min) F^{-1}(1 - i / (T - 1); alpha, beta) for i < T with
    s_min = 1/T, then sigma_T = 0. Starts at exactly 1, decreases strictly, ends at 0; more steps at high noise.
    FLUX's resolution shift is not applied (as in the code). Returns T + 1 float32 sigmas."""
    s_min = 1.0 / num_steps
    quantiles = [1.0 - i / (num_steps - 1) if num_steps > 1 else 1.0 for i in range(num_steps)]
    sigmas = [s_min + (1.0 - s_min) * beta_ppf(q, alpha, beta) for q in quantiles] + [0.0]
    return torch.tensor(sigmas, dtype=torch.float64).to(device=device, dtype=torch.float32)


# ----------------------------------------------------------------------------------------------------------------------
# Stage schedule (§3.3)
# ----------------------------------------------------------------------------------------------------------------------


def _floor(value: float) -> int:
    """The code's int() of a non-negative product, guarded against float error (0.35 * 360 = 125.99999999999999)."""
    return math.floor(value + 1e-9)


def stage_bounds(num_steps: int, stage_ends: tuple[float, ...]) -> list[int]:
    """End step (exclusive) of every stage: [int(T * r) for r in stage_ends[:-1]] + [T] (code ``stage_steps``,
    §3.3). A stage may be empty on short schedules."""
    return [_floor(num_steps * r) for r in stage_ends[:-1]] + [num_steps]


def stage_budgets(n_tokens: int, token_fractions: tuple[float, ...]) -> list[int]:
    """Active tokens m_s = int(N * rho_s) of every stage (code ``target_count``, §3.3), at least 1."""
    return [max(1, _floor(n_tokens * rho)) for rho in token_fractions]


def stage_of_step(i: int, bounds: list[int]) -> int:
    """Index of the stage step ``i`` belongs to (the first stage whose end exceeds i)."""
    return next(s for s, end in enumerate(bounds) if i < end)
