"""Noise schedules, the Euler and UniPC samplers and a DDIM epsilon-to-velocity adapter, as plain functions over a
model callable.

Convention (BFL flux ``sampling.py``, Wan2.1 ``utils/fm_solvers.py``): rectified flow with sigma = 1 pure noise and
sigma = 0 data,

    x_sigma = (1 - sigma) * x0 + sigma * eps,

and a *model* is a callable ``model(x, sigma) -> v`` that returns the velocity v = eps - x0 = dx/dsigma, with sigma a
0-d tensor. Samplers are functions over such callables, in the style of k-diffusion's ``sampling.py``, so a caching
or analysis wrapper around the model needs no sampler changes. Their update rules are also one-step solver objects
(``make_solver``: ``EulerSolver``, ``UniPCSolver``) for samplers that assemble the velocity themselves (Jano, JiT).

Coordinate change (Jano paper, Appendix A; Song et al. 2021, DDIM Eq. 12)
----------------------------------------------------------------------
A VP epsilon model (Latte, DDPM betas) sees x_t = a x0 + b eps with a = sqrt(abar_t), b = sqrt(1 - abar_t). Put

    s = b / (a + b),    z = x_t / (a + b)    =>    z = (1 - s) x0 + s eps,

so (z, s) is a rectified-flow state. With eps_hat = eps_model(x_t, t) and x0_hat = (x_t - b eps_hat) / a we have
x_t = a x0_hat + b eps_hat, hence z = (1 - s) x0_hat + s eps_hat, and the velocity is v = eps_hat - x0_hat.
Deterministic DDIM (eta = 0) steps to x_t' = a' x0_hat + b' eps_hat; dividing by (a' + b'),

    z' = (1 - s') x0_hat + s' eps_hat = z + (s' - s) (eps_hat - x0_hat),

which is exactly one Euler step in (z, s). So ``sample_euler(EpsToVelocity(...), z_T, ddim_sigmas(...)[0])``
reproduces a DDIM chain, and anything that reads velocities works on an epsilon model unchanged.
"""

from __future__ import annotations

import itertools
import math
from dataclasses import dataclass
from typing import Any, Callable

import torch
from torch import Tensor

Model = Callable[[Tensor, Tensor], Tensor]

__all__ = [
    "SOLVERS",
    "EpsToVelocity",
    "EulerSolver",
    "UniPCSolver",
    "alpha_bar_to_timestep",
    "classifier_free_guidance",
    "ddim_sigmas",
    "flow_to_vp",
    "flow_to_vp_state",
    "flux_mu",
    "flux_schedule",
    "guidance_mix",
    "linear_beta_alphas_cumprod",
    "make_solver",
    "sample_euler",
    "sample_unipc",
    "time_shift",
    "vp_to_flow",
    "vp_to_flow_state",
    "wan_schedule",
    "wan_unipc_sigmas",
]


# ----------------------------------------------------------------------------------------------------------------------
# Flow schedules (each: num_steps + 1 float32 sigmas from 1 down to 0)
# ----------------------------------------------------------------------------------------------------------------------


def time_shift(mu: float, sigma: float, t: Tensor | float) -> Tensor:
    """Resolution-dependent timestep shift exp(mu) / (exp(mu) + (1/t - 1)**sigma) (BFL flux ``sampling.time_shift``).

    t = 0 maps to exactly 0 and t = 1 to exactly 1; the dtype of a tensor ``t`` is kept (Python floats: float64).
    """
    t = t if isinstance(t, Tensor) else torch.tensor(t, dtype=torch.float64)
    # 1/t - 1 is +inf at t = 0; evaluate on a safe value and select, so the result is exactly 0 and never nan.
    positive = t > 0
    safe_t = torch.where(positive, t, torch.ones_like(t))
    shifted = math.exp(mu) / (math.exp(mu) + (1 / safe_t - 1) ** sigma)
    return torch.where(positive, shifted, torch.zeros_like(shifted))


def flux_mu(
    image_seq_len: int,
    base_seq_len: int = 256,
    max_seq_len: int = 4096,
    base_shift: float = 0.5,
    max_shift: float = 1.15,
) -> float:
    """Shift mu as a linear function of the image token count (BFL flux ``sampling.get_lin_function``).

    0.5 at 256 tokens (256x256 px), 1.15 at 4096 tokens (1024x1024 px); diffusers ``calculate_shift`` is the same map.
    """
    slope = (max_shift - base_shift) / (max_seq_len - base_seq_len)
    return base_shift + slope * (image_seq_len - base_seq_len)


def flux_schedule(
    num_steps: int,
    image_seq_len: int,
    *,
    shift: bool = True,
    base_shift: float = 0.5,
    max_shift: float = 1.15,
    device: torch.device | str | None = None,
) -> Tensor:
    """Flux sigmas: linspace(1, 0, N + 1), time-shifted with mu = flux_mu(image_seq_len) (BFL flux ``get_schedule``).

    dev uses ``shift=True``; schnell uses ``shift=False`` (plain linear sigmas). Computed in float64 and returned as
    float32 (BFL computes in float32; the two differ by at most ~1 ulp).
    """
    sigmas = torch.linspace(1.0, 0.0, num_steps + 1, dtype=torch.float64)
    if shift:
        mu = flux_mu(image_seq_len, base_shift=base_shift, max_shift=max_shift)
        sigmas = time_shift(mu, 1.0, sigmas)
    return sigmas.to(device=device, dtype=torch.float32)


def wan_schedule(num_steps: int, shift: float = 5.0, *, device: torch.device | str | None = None) -> Tensor:
    """Wan2.1 sigmas: linspace(1, 0, N + 1) mapped by sigma -> shift * sigma / (1 + (shift - 1) * sigma).

    Wan2.1 ``utils/fm_solvers.get_sampling_sigmas`` (the dpm++ path; ``generate.py`` default sample_shift 5.0 for
    T2V). The map multiplies the odds sigma / (1 - sigma) by ``shift``, spending more steps at high noise.
    Wan's default UniPC solver starts from 0.999 instead of 1 (``wan_unipc_sigmas``); this is the grid for a plain
    Euler sampler.
    """
    sigmas = torch.linspace(1.0, 0.0, num_steps + 1, dtype=torch.float64)
    sigmas = shift * sigmas / (1 + (shift - 1) * sigmas)
    return sigmas.to(device=device, dtype=torch.float32)


def wan_unipc_sigmas(num_steps: int, shift: float = 5.0, *, device: torch.device | str | None = None) -> Tensor:
    """Wan2.1's UniPC sigmas: linspace(0.999, 0, N + 1)[:-1] mapped by the shift of ``wan_schedule``, then a final 0.

    Wan2.1 ``utils/fm_solvers_unipc.FlowUniPCMultistepScheduler`` (built with shift 1, then ``set_timesteps(N,
    shift=5.0)``, solver "unipc", the T2V default): its training table 1 - linspace(1, 1/1000, 1000) runs from 0.999
    to 0 and is stored in float32, so the grid starts at float32(0.999) (0.99900001...). Shifted in float64 and
    returned as float32, as there. The official model timestep is int64(sigma * 1000) (999, 995, 991, ... for 50
    steps at shift 5), truncated; a velocity field here gets sigma itself.

    diffusers' ``UniPCMultistepScheduler`` (``use_flow_sigmas=True``, the Wan2.1-Diffusers scheduler) called with
    ``set_timesteps(N)`` uses another grid, linspace(1, 1/1000, N + 1)[:-1] with the first entry moved to 1 - 1e-6;
    ``set_timesteps(sigmas=...)`` with this function's first N entries unshifted gives this grid exactly.
    """
    top = float(torch.tensor(0.999, dtype=torch.float32))  # the official sigma table is float32
    sigmas = torch.linspace(top, 0.0, num_steps + 1, dtype=torch.float64)[:-1]
    sigmas = shift * sigmas / (1 + (shift - 1) * sigmas)
    return torch.cat([sigmas, sigmas.new_zeros(1)]).to(device=device, dtype=torch.float32)


# ----------------------------------------------------------------------------------------------------------------------
# Sampler and guidance
# ----------------------------------------------------------------------------------------------------------------------


def sample_euler(
    model: Model,
    x: Tensor,
    sigmas: Tensor,
    *,
    callback: Callable[[dict[str, Any]], None] | None = None,
) -> Tensor:
    """Plain Euler in sigma: x <- x + (sigma_next - sigma) * model(x, sigma) (BFL flux ``sampling.denoise``).

    ``model`` receives x in the dtype of the input and ``sigmas[i]`` as a 0-d tensor (dtype of ``sigmas`` kept,
    moved to x's device). The running state is held in at least float32 and only cast to x's dtype for each model
    call and at the end, so bf16 runs do not accumulate one bf16 rounding per step; for float32/float64 inputs this
    is bit-identical to the naive loop. ``callback``, if given, gets ``dict(i, x, sigma, sigma_next, velocity)``
    once per step, before the update (``x`` is the model input, ``velocity`` the raw model output).
    """
    sigmas = sigmas.to(x.device)
    state_dtype = torch.promote_types(x.dtype, torch.float32)
    state = x.to(state_dtype)
    for i in range(len(sigmas) - 1):
        sigma, sigma_next = sigmas[i], sigmas[i + 1]
        x_in = state.to(x.dtype)
        v = model(x_in, sigma)
        if callback is not None:
            callback(dict(i=i, x=x_in, sigma=sigma, sigma_next=sigma_next, velocity=v))
        state = state + (sigma_next - sigma).to(state_dtype) * v.to(state_dtype)
    return state.to(x.dtype)


def guidance_mix(v_cond: Tensor, v_uncond: Tensor, scale: float) -> Tensor:
    """Classifier-free guidance: uncond + scale * (cond - uncond) (Ho & Salimans 2022; Wan2.1 ``text2video.py``)."""
    return v_uncond + scale * (v_cond - v_uncond)


def classifier_free_guidance(model_cond: Model, model_uncond: Model, scale: float) -> Model:
    """Model callable returning uncond + scale * (cond - uncond) (Ho & Salimans 2022; Wan2.1 ``text2video.py``).

    Two model passes per step, conditional first as in Wan (order matters only for stateful models). Wan's default
    scale is 5.0 (Latte 7.5). Because the eps -> velocity map of ``EpsToVelocity`` is affine in eps and the CFG
    weights sum to 1, guiding two adapted models equals guiding in eps space and then adapting.
    """

    def guided(x: Tensor, sigma: Tensor) -> Tensor:
        v_cond = model_cond(x, sigma)
        return guidance_mix(v_cond, model_uncond(x, sigma), scale)

    return guided


# ----------------------------------------------------------------------------------------------------------------------
# UniPC multistep (Wan2.1's default solver), and one-step solvers that Jano and JiT share
# ----------------------------------------------------------------------------------------------------------------------
#
# UniPC (Zhao et al. 2023, "UniPC: A Unified Predictor-Corrector Framework for Fast Sampling of Diffusion Models",
# arXiv 2302.04867; reference code github.com/wl-zhao/UniPC) in data prediction (x0 = x - sigma v), with the
# paper's B(h) = e^h - 1 ("bh2"), on flow matching: alpha = 1 - sigma, log-SNR lambda = log((1 - sigma) / sigma).
# The paper's equation numbers are not cited: the formulas were checked against diffusers, not against the PDF.
# Every update, predictor or corrector, from sigma_s to sigma_t has the same shape (diffusers
# ``multistep_uni_p_bh_update`` / ``multistep_uni_c_bh_update``, using alpha_t (1 - e^{-h}) = 1 - sigma_t / sigma_s,
# which holds on flow matching):
#
#     x_t = (sigma_t / sigma_s) x_s + (1 - sigma_t / sigma_s) (m_0 + sum_k rho_k D_k [+ rho_t (m_t - m_0)])
#
# m_0 the x0 prediction at sigma_s, m_k the k-th older one, D_k = (m_k - m_0) / r_k with r_k = (lambda_{s_k} -
# lambda_s) / h and h = lambda_t - lambda_s; m_t (corrector only) the prediction at the predicted x_t. With no
# history this is x_t = x_s + (sigma_t - sigma_s) v: first-order UniP is exactly an Euler step on flow matching.


SOLVERS = ("euler", "unipc")


@dataclass(frozen=True)
class UniPCUpdate:
    """Coefficients of one UniPC update (see the section comment): ``ratio`` = sigma_t / sigma_s, ``r`` the r_k of
    the older predictions m_1, m_2, ... (newest first), ``rho`` their weights; a corrector has one more weight,
    rho_t, for m_t - m_0."""

    ratio: float
    r: tuple[float, ...] = ()
    rho: tuple[float, ...] = ()


def _log_snr(sigma: float) -> float:
    """lambda = log((1 - sigma) / sigma) (alpha = 1 - sigma). It is -inf at sigma = 1 and enters only through r_k:
    there sigma is taken as 1 - 1e-6, as diffusers moves a first sigma of 1 (``set_timesteps``)."""
    sigma = min(sigma, 1 - 1e-6)
    return math.log1p(-sigma) - math.log(sigma) if sigma > 0 else math.inf


def _unipc_system(r: tuple[float, ...], h: float) -> tuple[Tensor, Tensor]:
    """The order conditions R rho = b of UniPC-p, p = len(r) + 1 (Zhao et al. 2023; diffusers builds the same R and b
    in ``multistep_uni_{p,c}_bh_update``): R[j, k] = r_k^j (j = 0 .. p-1) with r_p = 1, and, with hh = -h (the
    update runs on x0 predictions), b_j = j! hh phi_{j+1}(hh) / B(hh), B(hh) = e^hh - 1, where phi_1(z) =
    (e^z - 1) / z and phi_{k+1}(z) = (phi_k(z) - 1/k!) / z. Float64."""
    hh = -h
    rks = torch.tensor([*r, 1.0], dtype=torch.float64)
    R = torch.stack([rks**j for j in range(len(rks))])
    b, phi, factorial = [], math.expm1(hh) / hh - 1, 1  # phi = hh * phi_2(hh)
    for j in range(1, len(rks) + 1):
        b.append(phi * factorial / math.expm1(hh))
        factorial *= j + 1
        phi = phi / hh - 1 / factorial
    return R, torch.tensor(b, dtype=torch.float64)


def unipc_predictor(sigmas: list[float], i: int, order: int) -> UniPCUpdate:
    """UniP-``order`` (the predictor) from sigmas[i] to sigmas[i + 1] over the predictions at steps i, i-1, ...,
    i-order+1 (Zhao et al. 2023, data prediction; checked against diffusers ``multistep_uni_p_bh_update``).

    Order 1 is Euler; order 2 takes rho_1 = 1/2, as the paper's and diffusers' UniP-2 do (not the solve); higher
    orders solve the order conditions without the last row and column."""
    s, t = sigmas[i], sigmas[i + 1]
    if order == 1:
        return UniPCUpdate(t / s)
    lam_s = _log_snr(s)
    h = _log_snr(t) - lam_s
    r = tuple((_log_snr(sigmas[i - k]) - lam_s) / h for k in range(1, order))
    if order == 2:
        return UniPCUpdate(t / s, r, (0.5,))
    R, b = _unipc_system(r, h)
    return UniPCUpdate(t / s, r, tuple(torch.linalg.solve(R[:-1, :-1], b[:-1]).tolist()))


def unipc_corrector(sigmas: list[float], i: int, order: int) -> UniPCUpdate:
    """UniC-``order`` (the corrector) of the step sigmas[i - 1] -> sigmas[i] (Zhao et al. 2023, data prediction;
    checked against diffusers ``multistep_uni_c_bh_update``): the same update again, now also using m_t, the
    prediction made at the predicted x_i, so it costs no model call. Its accuracy order is ``order`` + 1.

    Order 1 takes rho_t = 1/2 (diffusers' simplification); higher orders solve the full order conditions."""
    s, t = sigmas[i - 1], sigmas[i]
    if order == 1:
        return UniPCUpdate(t / s, (), (0.5,))
    lam_s = _log_snr(s)
    h = _log_snr(t) - lam_s
    r = tuple((_log_snr(sigmas[i - 1 - k]) - lam_s) / h for k in range(1, order))
    R, b = _unipc_system(r, h)
    return UniPCUpdate(t / s, r, tuple(torch.linalg.solve(R, b).tolist()))


def apply_unipc(update: UniPCUpdate, x: Tensor, history: list[Tensor], x0_t: Tensor | None = None) -> Tensor:
    """x_t of ``update`` from x_s = ``x``; ``history`` holds the x0 predictions oldest first (m_0 last); ``x0_t``
    is m_t for a corrector."""
    m0 = history[-1]
    target = m0
    for k, (r_k, rho_k) in enumerate(zip(update.r, update.rho), start=1):
        target = target + (rho_k / r_k) * (history[-1 - k] - m0)
    if x0_t is not None:
        target = target + update.rho[-1] * (x0_t - m0)
    return update.ratio * x + (1 - update.ratio) * target


class EulerSolver:
    """One Euler step at a time, x <- x + (sigma_next - sigma) v: ``sample_euler``'s update, bit for bit."""

    def __init__(self, sigmas: Tensor):
        self.sigmas = sigmas

    def step(self, i: int, x: Tensor, v: Tensor) -> Tensor:
        return x + (self.sigmas[i + 1] - self.sigmas[i]).to(x.dtype) * v.to(x.dtype)

    def restart(self) -> None:
        """Nothing to forget: Euler has no history."""


class UniPCSolver:
    """UniPC multistep, one step at a time, with its history held here (one object per sampling run).

    ``step(i, x, v)`` takes the state x the model saw at sigmas[i] and its velocity v, and returns the state at
    sigmas[i + 1] (the next model input), as diffusers ``UniPCMultistepScheduler.step`` with the Wan2.1 settings
    (``solver_order=order``, bh2, ``predict_x0``, ``lower_order_final``, no disabled corrector):

        x0 = x - sigma_i v                      the prediction this step adds to the history
        x  = UniC(x_base, history, x0)           if there is a previous step: correct x with x0 (no model call)
        x_base = x;  history += [x0]
        return UniP(x, history)                  order min(order, steps since start or restart, steps left)

    The prediction stays the one made at the uncorrected x, as in diffusers and the official Wan solver. Steps must
    come in order, i, i + 1, ...; ``restart()`` forgets the history when the state was changed outside the
    solver (JiT's micro-flow), so the next step is first order, without corrector, like the first one.
    The state is updated in x's dtype; the coefficients are computed in float64 from the sigmas.
    """

    def __init__(self, sigmas: Tensor, order: int = 2):
        if order < 1:
            raise ValueError(f"UniPC order must be >= 1 (Wan2.1 uses 2), got {order}")
        values = sigmas.detach().to("cpu", torch.float64).tolist()
        if any(not 0 < s <= 1 for s in values[:-1]) or not 0 <= values[-1] < 1 or any(
                a <= b for a, b in itertools.pairwise(values)):
            raise ValueError("UniPC needs sigmas strictly decreasing in (0, 1], ending at or above 0 (e.g. "
                             f"wan_unipc_sigmas(steps)); got {[round(s, 4) for s in values[:4]]}...")
        self.sigmas, self.order = values, order
        self.history: list[Tensor] = []  # x0 predictions since the start or the last restart, oldest first
        self.base: Tensor | None = None  # the (corrected) state the last predictor started from
        self.last: tuple[int, int] | None = None  # (step, predictor order) of the last step

    def restart(self) -> None:
        self.history, self.base, self.last = [], None, None

    def step(self, i: int, x: Tensor, v: Tensor) -> Tensor:
        if self.last is not None and i != self.last[0] + 1:
            raise ValueError(f"UniPC steps must come in order: step {i} after step {self.last[0]}; "
                             "call restart() to begin again")
        x0 = x - self.sigmas[i] * v.to(x.dtype)
        if self.last is not None:
            x = apply_unipc(unipc_corrector(self.sigmas, i, self.last[1]), self.base, self.history, x0)
        self.history = (self.history + [x0])[-self.order:]
        self.base = x
        order = min(self.order, len(self.history), len(self.sigmas) - 1 - i)  # lower order at the start and end
        self.last = (i, order)
        return apply_unipc(unipc_predictor(self.sigmas, i, order), x, self.history)


def make_solver(name: str, sigmas: Tensor) -> EulerSolver | UniPCSolver:
    """A fresh one-step solver for one sampling run over ``sigmas``: "euler" or "unipc" (order 2, Wan2.1's)."""
    if name == "euler":
        return EulerSolver(sigmas)
    if name == "unipc":
        return UniPCSolver(sigmas)
    raise ValueError(f"unknown solver {name!r}; choose one of {', '.join(SOLVERS)}")


def sample_unipc(
    model: Model,
    x: Tensor,
    sigmas: Tensor,
    *,
    order: int = 2,
    callback: Callable[[dict[str, Any]], None] | None = None,
) -> Tensor:
    """UniPC multistep sampling (``UniPCSolver``; Wan2.1's default solver with ``wan_unipc_sigmas`` and order 2).

    One model call per step, as ``sample_euler``, and the same conventions: ``model`` gets x in the input's dtype
    and ``sigmas[i]`` as a 0-d tensor; the state is held in at least float32; ``callback`` gets ``dict(i, x, sigma,
    sigma_next, velocity)`` once per step, before the update (``x`` is the model input, i.e. the predictor's
    output before its correction). ``sigmas`` must lie in (0, 1] and decrease; the last may be 0.
    """
    sigmas = sigmas.to(x.device)
    solver = UniPCSolver(sigmas, order)
    state = x.to(torch.promote_types(x.dtype, torch.float32))
    for i in range(len(sigmas) - 1):
        sigma, sigma_next = sigmas[i], sigmas[i + 1]
        x_in = state.to(x.dtype)
        v = model(x_in, sigma)
        if callback is not None:
            callback(dict(i=i, x=x_in, sigma=sigma, sigma_next=sigma_next, velocity=v))
        state = solver.step(i, state, v)
    return state.to(x.dtype)


# ----------------------------------------------------------------------------------------------------------------------
# DDIM (VP, epsilon prediction) as a flow: see "Coordinate change" in the module docstring
# ----------------------------------------------------------------------------------------------------------------------


def linear_beta_alphas_cumprod(
    beta_start: float = 1e-4, beta_end: float = 0.02, num_train_timesteps: int = 1000
) -> Tensor:
    """abar_t = prod_{i <= t} (1 - beta_i) for linearly spaced betas (Ho et al. 2020 DDPM; Latte ``t2v_sample.yaml``).

    Computed and returned in float64: the flow-time inversion in ``alpha_bar_to_timestep`` divides by table
    differences as small as ~1e-4 * abar, which float32 would blur. diffusers ``DDIMScheduler`` builds the same table
    in float32, which differs from this one by float32 rounding of the cumulative product; pass
    ``scheduler.alphas_cumprod`` instead where bit-level parity with diffusers matters.
    """
    betas = torch.linspace(beta_start, beta_end, num_train_timesteps, dtype=torch.float64)
    return torch.cumprod(1.0 - betas, dim=0)


def _flow_coefficients(s: Tensor) -> tuple[Tensor, Tensor]:
    """(a, b) = (sqrt(abar), sqrt(1 - abar)) of flow time s: a = (1 - s) / r, b = s / r, r = sqrt((1-s)^2 + s^2)."""
    r = torch.sqrt((1 - s) ** 2 + s**2)
    return (1 - s) / r, s / r


def _as_float64(value: Tensor | float, device: torch.device | None = None) -> Tensor:
    # torch.as_tensor(python_float) would round to float32 first, so build float64 directly.
    if isinstance(value, Tensor):
        return value.to(device=device, dtype=torch.float64)
    return torch.tensor(value, dtype=torch.float64, device=device)


def vp_to_flow(alpha_bar: Tensor | float) -> Tensor:
    """Flow time s = b / (a + b) of a VP noise level, a = sqrt(abar), b = sqrt(1 - abar) (Jano paper, Appendix A).

    Computed and returned in float64 (see ``ddim_sigmas`` for why).
    """
    alpha_bar = _as_float64(alpha_bar)
    a, b = alpha_bar.sqrt(), (1 - alpha_bar).sqrt()
    return b / (a + b)


def vp_to_flow_state(x_t: Tensor, alpha_bar: Tensor | float) -> Tensor:
    """Flow state z = x_t / (a + b) of a VP state, e.g. the initial DDIM noise x_T (Jano paper, Appendix A)."""
    alpha_bar = _as_float64(alpha_bar, x_t.device)
    scale = 1 / (alpha_bar.sqrt() + (1 - alpha_bar).sqrt())
    x_t = x_t.to(torch.promote_types(x_t.dtype, torch.float32))
    return x_t * scale.to(x_t.dtype)


def flow_to_vp_state(z: Tensor, s: Tensor | float) -> Tensor:
    """VP state x_t = z * (a + b) = z / sqrt((1-s)^2 + s^2) of a flow state; at s = 0 this is z itself.

    Use it on the final state of a DDIM-grid run (s = 0 with ``set_alpha_to_one``, else s(abar_0)). Returned in at
    least float32.
    """
    a, b = _flow_coefficients(_as_float64(s, z.device))
    z = z.to(torch.promote_types(z.dtype, torch.float32))
    return z * (a + b).to(z.dtype)


def flow_to_vp(z: Tensor, s: Tensor | float) -> tuple[Tensor, Tensor]:
    """Inverse of the coordinate change: (x_t, abar) with abar = (1-s)^2 / ((1-s)^2 + s^2) (Jano paper, Appendix A).

    abar is a float64 tensor on z's device; x_t is in at least float32.
    """
    a, _ = _flow_coefficients(_as_float64(s, z.device))
    return flow_to_vp_state(z, s), a**2


def alpha_bar_to_timestep(alpha_bar: Tensor | float, alphas_cumprod: Tensor) -> Tensor:
    """Fractional timestep t with abar(t) = alpha_bar, abar(t) linear in t between table entries (float64).

    ``alphas_cumprod`` must be strictly decreasing. Values outside the table clamp to t = 0 (abar > abar_0, e.g. the
    data end s = 0) or t = T - 1. Done in float64 so a sigma that came from an integer timestep maps back to it.
    """
    alpha_bar = _as_float64(alpha_bar)
    table = alphas_cumprod.to(device=alpha_bar.device, dtype=torch.float64).flip(0)  # increasing: index j = T-1-t
    last = len(table) - 1
    values = alpha_bar.reshape(-1)
    hi = torch.searchsorted(table, values).clamp(1, last)
    lo_value, hi_value = table[hi - 1], table[hi]
    frac = ((values - lo_value) / (hi_value - lo_value)).clamp(0, 1)
    return (last - (hi - 1 + frac)).reshape(alpha_bar.shape)


@dataclass(frozen=True, eq=False)
class EpsToVelocity:
    """A VP epsilon model as a rectified-flow velocity model ``v = model(z, s)`` (Jano paper, Appendix A).

    x_t, abar = flow_to_vp(z, s); t = alpha_bar_to_timestep(abar); eps_hat = eps_model(x_t, t)[:, :eps_channels];
    x0_hat = (x_t - b eps_hat) / a; v = eps_hat - x0_hat. a and b come from s itself, so s = 0 (a = 1, b = 0) is
    safe; s = 1 (abar = 0) is outside any VP table and is not supported.

    ``eps_model(x_t, t)`` gets x_t in z's dtype and t as a 0-d float tensor (float64 for float64 z, else float32),
    fractional in general and an integer to ~1e-9 on a ``ddim_sigmas`` grid. ``eps_channels`` keeps the first C
    output channels (dim 1), for models such as Latte that output eps || learned variance. The velocity is returned
    in at least float32.
    """

    eps_model: Model
    alphas_cumprod: Tensor
    eps_channels: int | None = None

    def __call__(self, z: Tensor, s: Tensor | float, *, token_index: Tensor | None = None, **model_kwargs) -> Tensor:
        """``token_index`` and any other keyword (e.g. ``kv_caches``) go to ``eps_model`` unchanged. With a
        ``token_index`` the model works on token sequences [B, L, D] and returns eps for those tokens only;
        the velocity is returned for the same tokens (the map is per token, so nothing else is needed)."""
        s = _as_float64(s, z.device)
        x_t, alpha_bar = flow_to_vp(z, s)
        t = alpha_bar_to_timestep(alpha_bar, self.alphas_cumprod)
        if token_index is not None:
            model_kwargs["token_index"] = token_index
        eps_hat = self.eps_model(x_t.to(z.dtype), t.to(torch.promote_types(z.dtype, torch.float32)), **model_kwargs)
        if self.eps_channels is not None:
            eps_hat = eps_hat[:, : self.eps_channels]
        eps_hat = eps_hat.to(x_t.dtype)
        if token_index is not None:
            x_t = x_t[:, token_index]
        a, b = (c.to(x_t.dtype) for c in _flow_coefficients(s))
        x0_hat = (x_t - b * eps_hat) / a
        return eps_hat - x0_hat


def _ddim_timesteps(num_train_timesteps: int, num_inference_steps: int, spacing: str, steps_offset: int) -> Tensor:
    """Integer DDIM timesteps, descending (diffusers ``DDIMScheduler.set_timesteps``; Lin et al. 2023, Table 2)."""
    T, N = num_train_timesteps, num_inference_steps
    if spacing == "linspace":
        return torch.linspace(0, T - 1, N, dtype=torch.float64).round().flip(0).long()
    if spacing == "leading":
        # diffusers adds steps_offset only for "leading".
        return torch.arange(N, dtype=torch.int64).flip(0) * (T // N) + steps_offset
    if spacing == "trailing":
        return torch.arange(T, 0, -T / N, dtype=torch.float64).round().long() - 1
    raise ValueError(f"unknown timestep_spacing {spacing!r}; expected 'leading', 'trailing' or 'linspace'")


def ddim_sigmas(
    alphas_cumprod: Tensor,
    num_inference_steps: int,
    *,
    timestep_spacing: str = "leading",
    steps_offset: int = 0,
    set_alpha_to_one: bool = True,
    device: torch.device | str | None = None,
) -> tuple[Tensor, Tensor]:
    """Flow sigmas of the DDIM timestep grid and the integer timesteps (diffusers ``DDIMScheduler`` conventions).

    Returns (sigmas, timesteps): N + 1 float64 sigmas s(abar_t) for the N descending timesteps, then the final
    target s = 0 (``set_alpha_to_one``: abar_prev = 1) or s(abar_0). float64 because float32 sigmas near s = 1
    would move the recovered timestep by ~1e-3. Each Euler step targets the next grid timestep, as in Song et al.
    DDIM. diffusers' ``DDIMScheduler.step`` instead targets t - T // N, which is the same point for "leading"
    (any offset) and for "trailing" when N divides T, but not for "linspace" or other "trailing" grids.
    """
    table = alphas_cumprod.to(dtype=torch.float64)
    T = len(table)
    if not 0 < num_inference_steps <= T:
        raise ValueError(f"num_inference_steps must be in [1, {T}], got {num_inference_steps}")
    timesteps = _ddim_timesteps(T, num_inference_steps, timestep_spacing, steps_offset).to(table.device)
    if timesteps.min() < 0 or timesteps.max() >= T:  # e.g. "leading", N = T, steps_offset = 1
        raise ValueError(f"DDIM timesteps {timesteps.tolist()[:3]}... fall outside the table [0, {T - 1}]")
    final_alpha_bar = torch.ones_like(table[0]) if set_alpha_to_one else table[0]
    sigmas = vp_to_flow(torch.cat([table[timesteps], final_alpha_bar[None]]))
    return sigmas.to(device), timesteps.to(device)
