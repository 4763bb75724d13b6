"""JiT: "Just-in-Time: Training-Free Spatial Acceleration for Diffusion Transformers" (Sun, Li, Liu; arXiv
2603.10744, CVPR 2026), on our token velocity fields.

Section numbers (§) and equations refer to the project notes ``shared/notes/jit.md``, which reconstruct the paper
from secondary sources and the official code (github.com/Wenhao-Sun77/Just-in-Time @ 818ed8d, "the code").

    schedule   Beta-warped sigmas; stages as fractions of the step index; a token budget per stage     (§3.3)
    anchors    Omega_K = stride-2 lattice + border, topped up to the first budget (seeded)            (§3.1)
    step       DiT on the anchors only (a sparse sequence); lift its velocity to every token           (§2)
               (nearest-anchor fill -> density-scaled Gaussian blur -> exact anchor values), Euler
    transition grow the set by local velocity variance (ITA, §3.2), then move the new tokens onto
               their statistically correct state with the micro-flow (DMF, §4)
    last stage every token is active: a plain Euler step of the full model

Time runs as in ``sampling``: sigma 1 = noise -> 0 = data, v = eps - x0, the paper's t = 1 - sigma.
The paper numbers stages K (sparsest) .. 0 (dense); here stage s is ``config.token_fractions[s]``, 0 = first.

The sparse sequence (verified in ``models``, tested in ``tests/test_jit.py``)
-------------------------------------------------------------------------
``field(x, sigma, token_index=anchors, kv_caches=None)`` gathers the anchor tokens and their true positions
(Flux: ``img[:, token_index]``, ``img_ids[:, token_index]``; Wan: ``tokens[:, token_index]``,
``positions[token_index]``) and, with no KV cache, self-attention runs over those tokens only (plus Flux's text
tokens; Wan's cross-attention to the text is unchanged). So the DiT sees exactly the m_k-token sequence with
its 2-D / 3-D RoPE positions, which is what the code feeds the transformer (gathered hidden states, gathered
``img_ids``). Non-anchor tokens cannot influence the output (Wan's patch embedding is a conv with kernel =
stride = patch, i.e. per token). A KV cache would instead let the anchors attend to stale non-anchor keys:
that is Jano, not JiT.

Video (tiny-wan, Wan): the paper has no video recipe (HunyuanVideo appears only as a figure, §5.4). Choices:

* initial set: the 2-D lattice + border of every frame (not a 3-D stride-2 lattice, whose 1/8 density is far
  below every preset budget and would leave the set mostly random). Every frame then has anchors at spacing 2.
* nearest-anchor fill: Euclidean distance on (frame, row, column) token coordinates, ties to the lowest token
  index; with anchors in every frame this is in-frame except where growth or drops leave a frame region bare.
* blur: per frame, spatial only. The width rule sigma = c / sqrt(rho) measures the spacing of a 2-D anchor set;
  along time the anchors are dense (every frame has them), so no temporal smoothing is needed, and none of a
  4x-compressed latent frame's motion is smeared into its neighbours.
* ITA window: 3 x 3 x 3 (frames x rows x columns), so tokens where the velocity changes between frames (motion)
  rank high, as do spatial edges. Windows use in-grid neighbours only (``count_include_pad=False``): zero padding
  would make every token of the first and last frame look important. For images (one frame) the window is 3 x 3.

Paper vs code (§4.2, §7) -- what this module follows:

* micro-flow: ``"exact"`` (default, the paper's finite-time hitting ODE: new tokens land on the target) or
  ``"blend"`` (the code: one 1/n Euler sub-step of that ODE, n = 3). The ``-code`` presets use the blend.
* randomness: the code's top-up (np.random) and DMF noise (torch.randn) are unseeded; here both come from
  ``torch.Generator``s seeded by ``config.seed``, so a run is reproducible bit for bit.
* Beta warp: the paper/README beta = 0.42 in the ``jit-*`` presets; the code's 0.425 in ``jit-*-code``.
* ITA: the code's min-max normalisation and division by the sum do not change a top-k and are left out; ties
  go to the lowest token index (stable sort).
* blur: the code's reflect-padded Gaussian (7 x 7 at the preset densities) as two small matrix products
  (same numbers up to rounding; a depthwise conv is slow on CPU).
* everything else (NN + blur lifter, blur width rule, lattice + border init with random top-up or drop,
  stage boundaries int(T * r), budgets int(N * rho) (floors guarded against float error: 0.35 * 360 is
  125.99999999999999 in floats), x0 estimate, DMF target, DMF at every transition) follows the code.
"""

from __future__ import annotations

import dataclasses
import math
import time
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any, Callable, Mapping

import torch
import torch.nn.functional as F
from torch import Tensor

from ..runtime.cost import TokenCost
from ..runtime.presets import lookup_preset
from ..lab.eval.study import regularized_incomplete_beta
from ..runtime.timing import synchronize

Grid = tuple[int, int, int]  # (T, H, W) token grid; T = 1 for images

MICRO_FLOW_MODES = ("exact", "blend")
_NOISE_SEED_OFFSET = 0x4A6954  # "JiT": the DMF noise stream differs from the anchor stream of the same seed


# ----------------------------------------------------------------------------------------------------------------------
# Configuration and presets
# ----------------------------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class JiTConfig:
    """Everything JiT needs besides the model (§7).

    ``token_fractions[s]`` is the active-token fraction of stage s (sparse -> dense, ending at 1.0);
    ``stage_ends[s]`` the end of stage s as a fraction of the step index (ending at 1.0): stage s runs steps
    [int(T * stage_ends[s-1]), int(T * stage_ends[s])). ``beta_alpha``/``beta_beta`` shape the Beta timestep warp;
    the lifter blur is sigma = clip(blur_c / sqrt(density), *blur_sigma_range). ``micro_flow`` is "exact" (paper)
    or "blend" (code: weight 1 / ``micro_flow_steps``). ``variance_window`` is the ITA window (frames, rows, cols),
    over in-grid neighbours (so it is 3 x 3 on images). ``seed`` seeds the anchor top-up and the DMF noise.
    """

    num_steps: int
    token_fractions: tuple[float, ...]
    stage_ends: tuple[float, ...] = (0.4, 0.65, 1.0)
    beta_alpha: float = 1.4
    beta_beta: float = 0.42
    blur_c: float = 0.4
    blur_sigma_range: tuple[float, float] = (1.0, 10.0)
    micro_flow: str = "exact"
    micro_flow_steps: int = 3
    variance_window: tuple[int, int, int] = (3, 3, 3)
    seed: int = 0
    source: str = ""

    def __post_init__(self) -> None:
        fr, ends = tuple(self.token_fractions), tuple(self.stage_ends)
        if self.num_steps < 1:
            raise ValueError(f"num_steps must be >= 1, got {self.num_steps}")
        if len(fr) != len(ends) or not fr:
            raise ValueError(f"one stage end per token fraction: got {len(fr)} fractions and {len(ends)} ends")
        if not all(0 < a <= b for a, b in zip(fr, fr[1:] + (1.0,))) or fr[-1] != 1.0:
            raise ValueError(f"token_fractions {fr} must be in (0, 1], non-decreasing (nested sets), ending at 1.0")
        if not all(0 < a < b for a, b in zip(ends, ends[1:])) or ends[-1] != 1.0:
            raise ValueError(f"stage_ends {ends} must increase strictly in (0, 1] and end at 1.0")
        if self.micro_flow not in MICRO_FLOW_MODES:
            raise ValueError(f"micro_flow must be one of {MICRO_FLOW_MODES}, got {self.micro_flow!r}")
        if self.micro_flow_steps < 1:
            raise ValueError(f"micro_flow_steps must be >= 1, got {self.micro_flow_steps}")
        if any(w < 1 or w % 2 == 0 for w in self.variance_window):
            raise ValueError(f"variance_window {self.variance_window} must be odd and positive")
        if not (self.beta_alpha > 0 and self.beta_beta > 0):
            raise ValueError("the Beta warp needs beta_alpha > 0 and beta_beta > 0")

    def replace(self, **changes) -> "JiTConfig":
        return dataclasses.replace(self, **changes)


_PAPER = ("JiT paper as reported (notes §3.3: 18 NFE 35%->62%->100%, 11 NFE 32%->60%->100%; Beta(1.4, 0.42) from "
          "the README; exact DMF hitting ODE, §4.1); stage ends, blur c and ITA window from the official code "
          "Wenhao-Sun77/Just-in-Time@818ed8d flux/pipeline_flux_JiT.py set_params (notes §7)")
_CODE = ("official code Wenhao-Sun77/Just-in-Time@818ed8d flux/pipeline_flux_JiT.py set_params preset {name} "
         "(notes §7: beta 0.425, microflow_relax_steps 3 as a single 1/3 blend, §4.2)")

PRESETS: Mapping[str, JiTConfig] = MappingProxyType({
    "jit-4x": JiTConfig(18, (0.35, 0.62, 1.0), source=_PAPER),
    "jit-7x": JiTConfig(11, (0.32, 0.60, 1.0), source=_PAPER),
    "jit-4x-code": JiTConfig(18, (0.35, 0.62, 1.0), beta_beta=0.425, micro_flow="blend",
                             source=_CODE.format(name="default_4x")),
    "jit-7x-code": JiTConfig(11, (0.32, 0.60, 1.0), beta_beta=0.425, micro_flow="blend",
                             source=_CODE.format(name="default_7x")),
})  # read-only: no module-level mutable state


def get_jit_preset(name: str | JiTConfig) -> JiTConfig:
    return lookup_preset(name, PRESETS, JiTConfig, "JiT")


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


# ----------------------------------------------------------------------------------------------------------------------
# Anchors: initial set (§3.1) and growth by importance (ITA, §3.2)
# ----------------------------------------------------------------------------------------------------------------------


def lattice_and_border(grid: Grid) -> Tensor:
    """Bool mask [N] of the initial pattern (§3.1, code ``_create_sparse_grid``, checkerboard init): rows and
    columns both even, plus the first/last row and column; for video, in every frame (see module docstring)."""
    t, h, w = grid
    rows = torch.arange(h).view(1, h, 1)
    cols = torch.arange(w).view(1, 1, w)
    mask = ((rows % 2 == 0) & (cols % 2 == 0)) | (rows == 0) | (rows == h - 1) | (cols == 0) | (cols == w - 1)
    return mask.expand(t, h, w).reshape(-1)


def initial_anchors(grid: Grid, budget: int, generator: torch.Generator) -> Tensor:
    """Omega_K (§3.1): the lattice + border, topped up with random other tokens to exactly ``budget`` (or, when
    the pattern alone exceeds the budget, a random subset of it, as the code does). Random choices come from
    ``generator`` (a CPU ``torch.Generator``; the code's are unseeded). Sorted CPU LongTensor."""
    n = math.prod(grid)
    if budget >= n:
        return torch.arange(n)
    base = lattice_and_border(grid)
    chosen, rest = base.nonzero().flatten(), (~base).nonzero().flatten()
    if len(chosen) > budget:
        chosen = chosen[torch.randperm(len(chosen), generator=generator)[:budget]]
    else:
        chosen = torch.cat([chosen, rest[torch.randperm(len(rest), generator=generator)[: budget - len(chosen)]]])
    return chosen.sort().values


def local_variance(v: Tensor, grid: Grid, window: tuple[int, int, int] = (3, 3, 3)) -> Tensor:
    """ITA importance (§3.2): I = E_W[u * u] - E_W[u] * E_W[u] over a local window W of the last lifted
    velocity u [1, N, D], averaged over channels -> [N] (code ``_compute_importance_map``). Windows hold the
    in-grid neighbours only (sums over a zero-padded grid divided by in-grid counts), so an axis of size 1 acts
    as window 1 (images: 3 x 3) and grid borders are not inflated by padding."""
    d = v.shape[-1]
    u = v[0].to(torch.promote_types(v.dtype, torch.float32)).T.reshape(1, d, *grid)
    pad = [p for k in reversed(window) for p in (k // 2, k // 2)]
    counts = F.avg_pool3d(F.pad(torch.ones_like(u[:, :1]), pad), window, stride=1)

    def window_mean(a: Tensor) -> Tensor:
        return F.avg_pool3d(F.pad(a, pad), window, stride=1) / counts

    mean = window_mean(u)
    return (window_mean(u * u) - mean * mean).mean(dim=1).flatten()


def grow_anchors(anchors: Tensor, importance: Tensor, budget: int) -> tuple[Tensor, Tensor]:
    """Omega_{k-1} = Omega_k u R_k with R_k the budget - m_k inactive tokens of highest importance (ITA, §3.2;
    code ``_adaptive_densify``). Ties go to the lowest token index. Returns (new set, R_k), both sorted, on CPU;
    the sets are nested by construction."""
    importance = importance.detach().to("cpu", torch.float64)
    active = torch.zeros(len(importance), dtype=torch.bool)
    active[anchors.cpu()] = True
    scores = importance.masked_fill(active, -math.inf)
    order = torch.sort(scores, descending=True, stable=True).indices
    added = order[: max(0, min(budget, len(importance)) - len(anchors))].sort().values
    return torch.cat([anchors.cpu(), added]).sort().values, added


# ----------------------------------------------------------------------------------------------------------------------
# The lifter Pi_k u = S_k u + I_k(u) (SAG-ODE, §2)
# ----------------------------------------------------------------------------------------------------------------------


def grid_coordinates(grid: Grid, device=None) -> Tensor:
    """(frame, row, column) of every token in token order, [N, 3] int64 (Flux: row-major; Wan: (f h w))."""
    axes = [torch.arange(n, device=device) for n in grid]
    return torch.stack(torch.meshgrid(*axes, indexing="ij"), dim=-1).reshape(-1, 3)


def nearest_anchor(grid: Grid, anchors: Tensor, *, chunk_elements: int = 1 << 22) -> Tensor:
    """For every token, the position in ``anchors`` of its nearest anchor (§2, I_k step 1; code: cdist + argmin),
    in exact integer squared distance on (frame, row, column); ties go to the first anchor (lowest index).
    Chunked so memory stays ~``chunk_elements`` pairs. [N] int64 on ``anchors``' device."""
    coords = grid_coordinates(grid, anchors.device)
    anchor_coords = coords[anchors]
    step = max(1, chunk_elements // max(1, len(anchors)))
    parts = [((coords[s : s + step, None] - anchor_coords[None]) ** 2).sum(-1).argmin(1)
             for s in range(0, len(coords), step)]
    return torch.cat(parts)


def blur_width(density: float, c: float = 0.4, sigma_range: tuple[float, float] = (1.0, 10.0)) -> float:
    """Gaussian width of the lifter (§2, code ``_calculate_blur_params``): anchor spacing L = 1 / sqrt(rho),
    sigma = clip(c * L, lo, hi); rho outside (0, 1) gives lo (the code's fallback). Kernel radius ceil(3 sigma)."""
    lo, hi = sigma_range
    if not 0.0 < density < 1.0:
        return lo
    return min(max(c / math.sqrt(density), lo), hi)


def blur_matrix(size: int, sigma: float, *, dtype=torch.float32, device=None) -> Tensor:
    """[size, size] matrix of a 1-D Gaussian blur with reflect padding (code: torchvision ``gaussian_blur``,
    kernel 2 ceil(3 sigma) + 1, padding mode "reflect"): row i holds the kernel taps of output i, each tap folded
    back onto the grid by reflection (-1 -> 1, size -> size - 2). On an axis shorter than the kernel the radius
    is cut to size - 1 (reflection needs it) and the kernel renormalised."""
    r = min(math.ceil(3 * sigma), size - 1)
    taps = torch.arange(-r, r + 1, device=device)
    kernel = torch.exp(-0.5 * (taps.to(torch.float64) / sigma) ** 2)
    kernel = (kernel / kernel.sum()).to(dtype)
    src = (torch.arange(size, device=device)[:, None] + taps).abs()
    src = torch.where(src > size - 1, 2 * (size - 1) - src, src)
    return torch.zeros(size, size, dtype=dtype, device=device).scatter_add_(1, src, kernel.expand(size, -1))


def gaussian_blur_frames(values: Tensor, sigma: float) -> Tensor:
    """Separable Gaussian blur of ``values`` [B, T, H, W, D] over the rows and columns of each frame (§2, I_k
    step 2), as two small matrix products with ``blur_matrix`` (a depthwise conv is slow on CPU)."""
    _, _, h, w, _ = values.shape
    rows = blur_matrix(h, sigma, dtype=values.dtype, device=values.device)
    cols = blur_matrix(w, sigma, dtype=values.dtype, device=values.device)
    return torch.einsum("ik,btkwd,jw->btijd", rows, values, cols)


@dataclass(frozen=True, eq=False)
class Lifter:
    """Pi_k for one anchor set (§2): built once per stage by ``make_lifter``, applied once per step.

    Called on the anchor outputs u [B, m, D]: (1) nearest-anchor fill, (2) Gaussian blur of that map,
    (3) masked composition: anchors keep u exactly, every other token takes the blurred value. So
    S_k^T Pi_k u = u (§2, consistency), bit for bit. With every token active it is the identity (scatter)."""

    grid: Grid
    anchors: Tensor  # [m] sorted token indices, on the working device
    nearest: Tensor  # [N] position in ``anchors`` of each token's nearest anchor
    sigma: float

    @property
    def dense(self) -> bool:
        return len(self.anchors) == math.prod(self.grid)

    def __call__(self, u: Tensor) -> Tensor:
        filled = u[:, self.nearest]
        if self.dense:
            return filled  # nearest = identity: Pi_0 u = S_0 u
        blurred = gaussian_blur_frames(filled.unflatten(1, self.grid), self.sigma).flatten(1, 3)
        return blurred.index_copy(1, self.anchors, u)


def make_lifter(grid: Grid, anchors: Tensor, config: JiTConfig, device=None) -> Lifter:
    """The lifter of an anchor set; the blur width follows its density m / N (§2)."""
    anchors = anchors.to(device)
    sigma = blur_width(len(anchors) / math.prod(grid), config.blur_c, config.blur_sigma_range)
    return Lifter(grid, anchors, nearest_anchor(grid, anchors), sigma)


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
) -> tuple[Tensor, JiTReport]:
    """Euler sampling with JiT (§6, Algorithm 1) over a token velocity field ``field_(x, sigma, token_index=...,
    kv_caches=None)`` (``pipeline.FluxVelocity`` / ``WanVelocity``). ``layout`` gives ``token_grid``, ``branches``
    and ``token_cost`` (defaults to ``field_``). ``x`` [1, N, D] noise tokens.

    Call as ``sample_jit(field, x, config)`` (sigmas from the config's Beta warp, ``beta_sigmas``) or
    ``sample_jit(field, x, sigmas, config)`` with ``len(sigmas) == config.num_steps + 1`` (sigmas None = the
    warp). ``config`` is a ``JiTConfig`` or a ``PRESETS`` name. ``callback`` gets ``dict(i, x, sigma,
    sigma_next, velocity, computed, stage)`` once per step before the update; ``velocity`` is the lifted
    [1, N, D] velocity, ``computed`` the anchor indices (None when all tokens are active).
    Returns the final tokens (x's dtype) and a ``JiTReport``."""
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
    anchors = initial_anchors(grid, budgets[stage_of_step(0, bounds)], torch.Generator().manual_seed(config.seed))
    lifter = make_lifter(grid, anchors, config, x.device)
    report.anchor_sets.append(anchors)
    noise = None
    y_prev = v_prev = None

    for i in range(config.num_steps):
        sigma, sigma_next = sigmas[i], sigmas[i + 1]
        stage = stage_of_step(i, bounds)
        synchronize(x.device)
        start = time.perf_counter()
        if budgets[stage] > len(anchors):  # transition: ITA, then DMF (never at i = 0: the first set fits)
            anchors, new = grow_anchors(anchors, local_variance(v_prev, grid, config.variance_window), budgets[stage])
            noise = transition_noise(x.shape, config.seed, state_dtype, x.device) if noise is None else noise
            new = new.to(x.device)
            target = micro_flow_target(clean_estimate(y_prev, v_prev, sigmas[i - 1]), lifter, new, sigma, noise)
            state = micro_flow(state, new, target, config.micro_flow, config.micro_flow_steps)
            lifter = make_lifter(grid, anchors, config, x.device)
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
        state = state + (sigma_next - sigma).to(state_dtype) * v.to(state_dtype)
        report.token_counts.append(len(anchors))
        report.flops += step_flops(cost, len(anchors), branches)
    return state.to(x.dtype), report
