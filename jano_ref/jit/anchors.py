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
