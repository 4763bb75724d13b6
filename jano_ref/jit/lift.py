"""The SAG-ODE lifter (§2): extend the anchors' velocity to every token (nearest-anchor fill, density-scaled
Gaussian blur, exact anchor values)."""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import Tensor

from .anchors import Grid
from .config import JiTConfig

# ----------------------------------------------------------------------------------------------------------------------
# The lifter Pi_k u = S_k u + I_k(u) (SAG-ODE, §2)
# ----------------------------------------------------------------------------------------------------------------------


def grid_coordinates(grid: Grid, device=None) -> Tensor:
    """(frame, row, column) of every token in token order, [N, 3] int64 (Flux: row-major; Wan: (f h w))."""
    axes = [torch.arange(n, device=device) for n in grid]
    return torch.stack(torch.meshgrid(*axes, indexing="ij"), dim=-1).reshape(-1, 3)


def nearest_anchor(grid: Grid, anchors: Tensor, *, rank: Tensor | None = None, chunk_elements: int = 1 << 22) -> Tensor:
    """For every token, the position in ``anchors`` of its nearest anchor (§2, I_k step 1; code: cdist + argmin),
    in exact integer squared distance on (frame, row, column). Among equally near anchors the one of lowest
    ``rank`` [m] wins (a permutation of 0..m-1; default: the position in ``anchors``, so the lowest token index
    when they are sorted). Chunked so memory stays ~``chunk_elements`` pairs. [N] int64 on ``anchors``' device."""
    coords = grid_coordinates(grid, anchors.device)
    anchor_coords = coords[anchors]
    m = len(anchors)
    rank = torch.arange(m, device=anchors.device) if rank is None else rank.to(anchors.device)
    step = max(1, chunk_elements // max(1, m))
    # distance first, then rank: one exact integer key, so argmin breaks ties by rank
    parts = [(((coords[s : s + step, None] - anchor_coords[None]) ** 2).sum(-1) * m + rank).argmin(1)
             for s in range(0, len(coords), step)]
    return torch.cat(parts)


def stored_rank(anchors: Tensor, order: Tensor) -> Tensor:
    """[m] rank of each of the sorted ``anchors`` in ``order`` (the same tokens in the code's stored order)."""
    if len(order) != len(anchors) or not torch.equal(order.sort().values, anchors.to(order.device)):
        raise ValueError(f"order must hold exactly the {len(anchors)} anchors, in the order they were added")
    rank = torch.empty_like(order)
    rank[torch.searchsorted(anchors.to(order.device), order)] = torch.arange(len(order), device=order.device)
    return rank


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


def make_lifter(grid: Grid, anchors: Tensor, config: JiTConfig, device=None, *, order: Tensor | None = None) -> Lifter:
    """The lifter of a sorted anchor set; the blur width follows its density m / N (§2). Nearest-anchor ties follow
    ``config.tie_order``: "index" (lowest token index) or "stored" (first in ``order``, the anchors in the order
    they were added: lattice + border, top-up as drawn, then each growth by descending importance; the code's
    ``cdist(...).argmin`` over its anchor list)."""
    if config.tie_order == "stored" and order is None:
        raise ValueError('tie_order="stored" needs the anchors in the order they were added: pass order=...')
    anchors = anchors.to(device)
    rank = stored_rank(anchors, order.to(device)) if config.tie_order == "stored" else None
    sigma = blur_width(len(anchors) / math.prod(grid), config.blur_c, config.blur_sigma_range)
    return Lifter(grid, anchors, nearest_anchor(grid, anchors, rank=rank), sigma)
