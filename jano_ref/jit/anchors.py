"""Which tokens JiT computes: the initial anchor set (§3.1) and its growth by local velocity variance (ITA, §3.2)."""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor

Grid = tuple[int, int, int]  # (T, H, W) token grid; T = 1 for images


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


VARIANCE_PADDINGS = ("valid", "zeros")


def initial_anchor_order(grid: Grid, budget: int, generator: torch.Generator) -> Tensor:
    """Omega_K (§3.1) in the order the code stores it: the lattice + border in token order, then the random top-up
    to exactly ``budget`` in the order drawn (or, when the pattern alone exceeds the budget, a random subset of it in
    drawn order, as the code does). Random choices come from ``generator`` (a CPU ``torch.Generator``; the code's
    are unseeded). CPU LongTensor; the order only matters for ``JiTConfig.tie_order="stored"``."""
    n = math.prod(grid)
    if budget >= n:
        return torch.arange(n)
    base = lattice_and_border(grid)
    chosen, rest = base.nonzero().flatten(), (~base).nonzero().flatten()
    if len(chosen) > budget:
        return chosen[torch.randperm(len(chosen), generator=generator)[:budget]]
    return torch.cat([chosen, rest[torch.randperm(len(rest), generator=generator)[: budget - len(chosen)]]])


def initial_anchors(grid: Grid, budget: int, generator: torch.Generator) -> Tensor:
    """Omega_K (§3.1) as a sorted CPU LongTensor: ``initial_anchor_order`` (same draws), sorted."""
    return initial_anchor_order(grid, budget, generator).sort().values


def local_variance(
    v: Tensor, grid: Grid, window: tuple[int, int, int] = (3, 3, 3), padding: str = "valid"
) -> Tensor:
    """ITA importance (§3.2): I = E_W[u * u] - E_W[u] * E_W[u] over a local window W of the last lifted
    velocity u [1, N, D], averaged over channels -> [N] (code ``_compute_importance_map``).

    ``padding`` says what a window beyond the grid's rows and columns holds:

    * ``"valid"`` (default): nothing; the means are over the in-grid neighbours, so an axis of size 1 acts as
      window 1 (images: 3 x 3) and every token gets the local variance of the paper's formula.
    * ``"zeros"``: the code's ``F.avg_pool2d(..., padding=1)`` with its default ``count_include_pad=True``: zeros
      beyond the rows and columns count in the means. A border window with a fraction f of real cells then gives
      f var + f (1 - f) mean^2 instead of var, so border tokens with a large local mean velocity look important.

    Along frames (video; the code has none) windows hold the in-grid frames only in both modes: zero frames would
    make every token of the first and last frame look important.
    """
    if padding not in VARIANCE_PADDINGS:
        raise ValueError(f"padding must be one of {VARIANCE_PADDINGS}, got {padding!r}")
    d = v.shape[-1]
    u = v[0].to(torch.promote_types(v.dtype, torch.float32)).T.reshape(1, d, *grid)
    pad = [p for k in reversed(window) for p in (k // 2, k // 2)]
    ones = torch.ones_like(u[:, :1])
    if padding == "zeros":  # the share of the window's frames inside the grid: every row/column cell counts
        counts = F.avg_pool3d(F.pad(ones, [0, 0, 0, 0] + pad[4:]), (window[0], 1, 1), stride=1)
    else:  # the share of the window inside the grid
        counts = F.avg_pool3d(F.pad(ones, pad), window, stride=1)

    def window_mean(a: Tensor) -> Tensor:
        return F.avg_pool3d(F.pad(a, pad), window, stride=1) / counts

    mean = window_mean(u)
    return (window_mean(u * u) - mean * mean).mean(dim=1).flatten()


def by_importance(tokens: Tensor, importance: Tensor) -> Tensor:
    """``tokens`` by descending importance, ties to the lowest token index: the order in which ``grow_anchors``
    picks them, and in which the code appends them to its anchor list (its ``topk`` order)."""
    scores = importance.detach().to("cpu", torch.float64)[tokens.cpu()]
    return tokens.cpu()[torch.sort(scores, descending=True, stable=True).indices]


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
