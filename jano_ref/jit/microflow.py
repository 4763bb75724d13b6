"""The deterministic micro-flow (DMF, §4): at a stage transition, move newly activated tokens onto their
statistically correct state."""

from __future__ import annotations

import torch
from torch import Tensor

from .config import MICRO_FLOW_MODES
from .lift import Lifter

_NOISE_SEED_OFFSET = 0x4A6954  # "JiT": the DMF noise stream differs from the anchor stream of the same seed


# ----------------------------------------------------------------------------------------------------------------------
# Micro-flow at a stage transition (DMF, §4)
# ----------------------------------------------------------------------------------------------------------------------


def clean_estimate(y_prev: Tensor, v_prev: Tensor, sigma_prev: Tensor) -> Tensor:
    """x0_hat = y_{i-1} - sigma_{i-1} v_{i-1} (§4.1 step 1, the rectified-flow Tweedie identity
    y(1) = y_t + (1 - t) v in paper time; code ``_predict_x0_latent``)."""
    return y_prev - sigma_prev.to(y_prev.dtype) * v_prev.to(y_prev.dtype)


def micro_flow_target(x0_hat: Tensor, old_lifter: Lifter, new: Tensor, sigma: Tensor, noise: Tensor) -> Tensor:
    """y*_k = Q_k((1 - sigma) Phi_k(S_k^T x0_hat) + sigma eps) (§4.1 step 2, code L788-816): the clean estimate
    on the old anchors, lifted by the old stage's lifter Phi_k, re-noised to the current level sigma_i with the
    transition noise eps; only the new tokens R_k (``new``). Returns [B, |R_k|, D]."""
    lifted = old_lifter(x0_hat[:, old_lifter.anchors])
    s = sigma.to(x0_hat.dtype)
    return (1 - s) * lifted[:, new] + s * noise[:, new].to(x0_hat.dtype)


def hitting_flow(start: Tensor, target: Tensor, s: float) -> Tensor:
    """Closed-form solution of the DMF hitting ODE (§4.1 step 3) at elapsed fraction s in [0, 1].

    On [T_k - delta, T_k] (paper time), Q_k y' = (y* - Q_k y) / (T_k - t) with P_k y' = 0. Put
    e(t) = Q_k y(t) - y*: then e' = -e / (T_k - t), so e(t) = e(T_k - delta) (T_k - t) / delta, i.e.

        Q_k y = (1 - s) y_start + s y*,    s = (t - T_k + delta) / delta,

    a straight line that reaches y* exactly at s = 1 whatever y_start and delta. Because the solution is linear
    in t, n equal Euler sub-steps are exact: after j of them s = j / n. The code takes only the first
    (s = 1/3, ``microflow_relax_steps`` = 3, §4.2)."""
    return (1 - s) * start + s * target


def micro_flow(state: Tensor, new: Tensor, target: Tensor, mode: str = "exact", steps: int = 3) -> Tensor:
    """Apply the DMF at a transition (§4): the new tokens R_k move along the hitting ODE, everything else is
    frozen (P_k y' = 0 for anchors; still-inactive tokens are untouched, as in the code). ``"exact"``: the
    paper's ODE run to its end, so new tokens land exactly on ``target``; ``"blend"``: the code's single
    1/``steps`` blend. δ is not taken from the time grid (the code does not advance time). Returns a new state."""
    out = state.clone()
    if mode == "exact":
        out[:, new] = target.to(state.dtype)
    elif mode == "blend":
        out[:, new] = hitting_flow(state[:, new], target.to(state.dtype), 1.0 / steps)
    else:
        raise ValueError(f"micro_flow mode must be one of {MICRO_FLOW_MODES}, got {mode!r}")
    return out


def transition_noise(shape: torch.Size, seed: int, dtype: torch.dtype, device=None) -> Tensor:
    """eps of the DMF target (§4.2): one tensor for the whole generation, so each token, activated once, gets
    its own draw. Drawn on the CPU from ``seed`` + a fixed offset (the code uses an unseeded global randn)."""
    g = torch.Generator().manual_seed(seed + _NOISE_SEED_OFFSET)
    return torch.randn(shape, generator=g, dtype=dtype).to(device)
