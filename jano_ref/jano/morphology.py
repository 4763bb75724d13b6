"""Generic 2-D grid morphology that Jano's inward diffusion (Eq. 15) is built from: connected components, the
cross dilation and an exact Euclidean distance transform, each equal to the skimage / scipy call the official code
makes (tests compare them with brute force). Nothing here is specific to Jano."""

from __future__ import annotations

import math
from collections import deque

import torch
from torch import Tensor

__all__ = ["connected_components", "dilate_cross", "distance_to_mask"]


def connected_components(mask: Tensor, connectivity: int = 8) -> Tensor:
    """Label the True cells of a 2-D bool mask: [H, W] long, 0 = background, components 1..n in raster order.

    Breadth-first flood fill in plain Python (block grids are at most ~100x100). connectivity 8 (default, as
    skimage ``measure.label`` on a 2-D image) or 4.
    """
    if mask.dim() != 2 or mask.dtype != torch.bool:
        raise ValueError(f"expected a 2-D bool mask, got {mask.dim()}-D {mask.dtype}")
    if connectivity == 8:
        steps = [(di, dj) for di in (-1, 0, 1) for dj in (-1, 0, 1) if (di, dj) != (0, 0)]
    elif connectivity == 4:
        steps = [(-1, 0), (1, 0), (0, -1), (0, 1)]
    else:
        raise ValueError(f"connectivity must be 4 or 8, got {connectivity}")
    h, w = mask.shape
    cells = mask.tolist()
    labels = [[0] * w for _ in range(h)]
    n = 0
    for i in range(h):
        for j in range(w):
            if not cells[i][j] or labels[i][j]:
                continue
            n += 1
            labels[i][j] = n
            queue = deque([(i, j)])
            while queue:
                a, b = queue.popleft()
                for da, db in steps:
                    y, x = a + da, b + db
                    if 0 <= y < h and 0 <= x < w and cells[y][x] and not labels[y][x]:
                        labels[y][x] = n
                        queue.append((y, x))
    return torch.tensor(labels, dtype=torch.long, device=mask.device).reshape(h, w)


def dilate_cross(mask: Tensor) -> Tensor:
    """Binary dilation of a 2-D bool mask by the 3x3 cross (4-neighbours); outside the grid counts as False.

    Same as skimage ``morphology.binary_dilation`` with its default footprint, as used by the official code.
    """
    out = mask.clone()
    out[1:, :] |= mask[:-1, :]
    out[:-1, :] |= mask[1:, :]
    out[:, 1:] |= mask[:, :-1]
    out[:, :-1] |= mask[:, 1:]
    return out


def distance_to_mask(mask: Tensor) -> Tensor:
    """Exact Euclidean distance (in cells) from every cell of a 2-D grid to the nearest True cell; inf if none.

    Equals scipy ``ndimage.distance_transform_edt(~mask)`` (0 on the mask). Separable and exact: first the vertical
    distance g[i, j] to the nearest True cell in column j, then d^2[i, j] = min_j' (g[i, j']^2 + (j - j')^2).
    The squares are integers in float64, so the official thresholds (d <= 1.0, 2.0) compare exactly: whole-number
    distances are set to the integer itself, since torch's float64 sqrt is not correctly rounded on every CPU path
    (other distances may differ from ``math.sqrt`` in the last bit).
    """
    if mask.dim() != 2 or mask.dtype != torch.bool:
        raise ValueError(f"expected a 2-D bool mask, got {mask.dim()}-D {mask.dtype}")
    h, w = mask.shape
    rows = torch.arange(h, dtype=torch.float64, device=mask.device)
    cols = torch.arange(w, dtype=torch.float64, device=mask.device)
    inf = torch.tensor(math.inf, dtype=torch.float64, device=mask.device)
    vertical = (rows[:, None] - rows[None, :]).abs()  # [i, i']
    g = torch.where(mask[None, :, :], vertical[:, :, None], inf).amin(dim=1)  # [i, j]
    horizontal2 = (cols[:, None] - cols[None, :]) ** 2  # [j, j']
    d2 = (g[:, None, :] ** 2 + horizontal2[None, :, :]).amin(dim=-1)  # [i, j]
    d = d2.sqrt()
    whole = d.round()
    return torch.where(whole * whole == d2, whole, d)  # perfect squares: exactly their root
