"""Measurements behind Jano's motivation study (§3), recognition accuracy (Fig. 8) and random-level ablation (§6.5).

Jano §3 claims that regions of a generated image differ in complexity and that complexity predicts how fast a region
converges. It measures, per block of the latent,

* ground-truth complexity: FFT high-frequency energy of the final latent                  ``fft_complexity_map``
* ground-truth convergence: latent change at 5-step intervals from step 10, accumulated    ``convergence_map``

and reports their Spearman rank correlation with its p-value over many prompts (``spearman``). Fig. 8 reports a
"recognition accuracy" of the analyzer against an FFT baseline that the paper's code never defines; ours is
``tercile_accuracy``. §6.5 compares Jano's level map with a random one of the same composition (``shuffled_levels``).

All statistics are computed in float64. No scipy: the Student-t p-value uses the regularised incomplete beta function
of ``jano_ref.runtime.special``; the tests compare it with scipy.
"""

from __future__ import annotations

import math
from typing import Sequence

import torch
from torch import Tensor

from ...jano.analyzer import BlockGrid, minmax_normalize
from ...runtime.special import regularized_incomplete_beta

__all__ = [
    "convergence_map",
    "fft_complexity_map",
    "fft_high_frequency_energy",
    "high_frequency_fraction",
    "rankdata",
    "shuffled_levels",
    "spearman",
    "student_t_two_sided_p",
    "tercile_accuracy",
]

F64 = torch.float64



# ----------------------------------------------------------------------------------------------------------------------
# Ranks and Spearman's rho with its p-value (Jano §3)
# ----------------------------------------------------------------------------------------------------------------------


def rankdata(x: Tensor) -> Tensor:
    """1-based ranks of a 1-D tensor, tied values sharing the average of their ranks, as float64 (Jano §3).

    Example: [10, 30, 20, 20] -> [1.0, 4.0, 2.5, 2.5]. Values are compared in their own dtype (int64 values beyond
    2**53 would not survive a float64 cast). NaN has no rank: it raises ValueError.
    """
    if x.dim() != 1:
        raise ValueError(f"rankdata expects a 1-D tensor, got shape {tuple(x.shape)}; flatten it with x.reshape(-1)")
    if x.dtype == torch.bool:  # rank booleans as 0 < 1 through an integer dtype, which every sort kernel supports
        x = x.to(torch.uint8)
    if x.is_floating_point() and bool(torch.isnan(x).any()):
        raise ValueError("rankdata: the input contains NaN, which has no rank; drop or impute those entries first")
    values, order = torch.sort(x, stable=True)
    _, group, counts = torch.unique_consecutive(values, return_inverse=True, return_counts=True)
    counts = counts.to(F64)
    first = torch.cumsum(counts, 0) - counts + 1  # 1-based rank of the first member of each tie group
    average = first + (counts - 1) / 2  # mean of first, first + 1, ..., first + count - 1
    ranks = torch.empty(x.shape, dtype=F64, device=x.device)
    ranks[order] = average[group]
    return ranks


def spearman(x: Tensor, y: Tensor) -> tuple[float, float]:
    """Spearman's rank correlation rho of x and y with its two-sided p-value (Jano §3: complexity vs convergence).

    x and y must have the same shape; they are flattened, so block maps [nt, nh, nw] can be passed directly.
    rho is the Pearson correlation of the average ranks (``rankdata``), so ties are handled as in
    ``scipy.stats.spearmanr``. The p-value tests rho = 0 with Student's t on n - 2 degrees of freedom,
    t = rho * sqrt((n - 2) / (1 - rho^2)), p = P(|T| >= |t|) (``student_t_two_sided_p``); it is 0 when |rho| = 1.

    Undefined cases return (nan, nan) rather than raising, so a study over many prompts can skip them: fewer than
    3 pairs (no degree of freedom left), or an input with a single distinct value (its ranks have no variance).
    """
    if tuple(x.shape) != tuple(y.shape):
        raise ValueError(
            f"spearman needs paired samples of the same shape, got {tuple(x.shape)} and {tuple(y.shape)}; "
            "pass the two score maps of the same grid"
        )
    n = x.numel()
    if n < 3:
        return math.nan, math.nan
    rx, ry = rankdata(x.reshape(-1)), rankdata(y.reshape(-1))
    rx, ry = rx - rx.mean(), ry - ry.mean()
    sxx, syy = float((rx * rx).sum()), float((ry * ry).sum())
    if sxx == 0.0 or syy == 0.0:
        return math.nan, math.nan
    # One sqrt of the product: for identical (or reversed) rankings it returns sxx exactly, so |rho| is exactly 1
    # (sqrt(sxx) * sqrt(syy) can round to just above sxx).
    rho = float((rx * ry).sum()) / math.sqrt(sxx * syy)
    rho = min(1.0, max(-1.0, rho))  # rounding can step just outside [-1, 1]
    if abs(rho) == 1.0:
        return rho, 0.0
    df = n - 2
    t = rho * math.sqrt(df / ((1.0 - rho) * (1.0 + rho)))  # (1 - rho)(1 + rho): no cancellation near |rho| = 1
    return rho, student_t_two_sided_p(t, df)


def student_t_two_sided_p(t: float, df: float) -> float:
    """P(|T| >= |t|) for Student's t with ``df`` > 0 degrees of freedom: I_{df / (df + t^2)}(df / 2, 1 / 2).

    Both df / (df + t^2) and its complement t^2 / (df + t^2) are formed directly, so tiny p-values (large |t|) keep
    full relative precision. Returns 1 for t = 0 and 0 for infinite t.
    """
    if not df > 0:
        raise ValueError(f"degrees of freedom must be positive, got {df}; spearman uses n - 2 for n pairs")
    if math.isnan(t):
        return math.nan
    if math.isinf(t):
        return 0.0
    t2 = t * t
    return regularized_incomplete_beta(df / (df + t2), df / 2, 0.5, complement=t2 / (df + t2))


# ----------------------------------------------------------------------------------------------------------------------
# Ground-truth block maps (Jano §3, Fig. 8)
# ----------------------------------------------------------------------------------------------------------------------


def convergence_map(states: Tensor, grid: BlockGrid, *, start: int = 10, interval: int = 5) -> Tensor:
    """Ground-truth convergence per block (Jano §3): how much each block still changes after step ``start``.

    ``states`` [S+1, C, T, H, W] is the sampling trajectory: states[k] is the latent before step k (states[0] the
    initial noise, states[S] the final latent). For k = start, start + interval, ... while k + interval <= S, add the
    block mean of |states[k + interval] - states[k]| (over channels and the block's real cells; padding added by the
    grid never enters, so a partial edge block is an average over its real cells only). The sum, min-max normalised
    over all blocks, is returned as float64 [nt, nh, nw]; all zeros if every block changed equally.

    High = still changing late = slow to converge. The paper's convergence study uses start = 10, interval = 5.
    """
    if states.dim() != 5:
        raise ValueError(
            f"states must be a trajectory [S+1, C, T, H, W], got shape {tuple(states.shape)}; "
            "stack the per-step latents with torch.stack, and give images a frame axis with x.unsqueeze(-3)"
        )
    if tuple(states.shape[-3:]) != grid.latent:
        raise ValueError(
            f"the trajectory's latent (T, H, W) = {tuple(states.shape[-3:])} does not match the grid's {grid.latent}; "
            "build the grid for this latent size"
        )
    if start < 0 or interval < 1:
        raise ValueError(f"need start >= 0 and interval >= 1, got start = {start}, interval = {interval}")
    num_steps = states.shape[0] - 1
    if start + interval > num_steps:
        raise ValueError(
            f"a trajectory of {num_steps} steps ({num_steps + 1} states) is too short for one interval from step "
            f"{start} to step {start + interval}; pass all S+1 states of the sampling run, or lower start/interval"
        )
    # Block means are linear and the mask is fixed, so summing |change| over intervals first gives the same result
    # as summing per-interval block means, with one block reduction instead of one per interval.
    total = torch.zeros(states.shape[1:], dtype=F64, device=states.device)
    for k in range(start, num_steps - interval + 1, interval):
        total += (states[k + interval].to(F64) - states[k].to(F64)).abs()
    blocks = grid.to_blocks(total)  # [C, nt, nh, nw, bt, bh*bw]
    valid = grid.valid(states.device)  # [nt, nh, nw, bt, bh*bw]
    summed = torch.where(valid, blocks, torch.zeros_like(blocks)).sum(dim=(0, -2, -1))
    count = valid.sum(dim=(-2, -1)).to(F64) * states.shape[1]  # real cells x channels; >= 1 in every block
    return minmax_normalize(summed / count)


def fft_complexity_map(latent: Tensor, grid: BlockGrid) -> Tensor:
    """Ground-truth complexity per block (Jano §3, Fig. 8): FFT high-frequency energy of the final latent.

    ``latent`` [C, T, H, W] (or [C, H, W] for a grid with T = 1). Computes
    ``fft_high_frequency_energy(latent, grid.block)`` in float64 (one FFT per block over its real cells,
    see ``high_frequency_fraction`` for the exact measure), checks it has the grid's block counts, and
    min-max normalises it over all blocks: float64 [nt, nh, nw]. Also the FFT baseline of Fig. 8 when given an
    early latent.
    """
    given = tuple(latent.shape)
    if latent.dim() == 3:  # image [C, H, W]: one frame
        latent = latent.unsqueeze(1)
    if latent.dim() != 4 or tuple(latent.shape[1:]) != grid.latent:
        raise ValueError(
            f"latent of shape {given} does not match the grid's (T, H, W) = {grid.latent}; expected "
            "[C, T, H, W] (or [C, H, W] when T = 1) for the latent the grid was built for"
        )
    energy = fft_high_frequency_energy(latent.to(F64), grid.block)
    if tuple(energy.shape) != grid.counts:  # both follow BlockGrid's ceil-division; guard against drift
        raise RuntimeError(f"FFT map has shape {tuple(energy.shape)}, expected the grid's counts {grid.counts}")
    return minmax_normalize(energy)


# ----------------------------------------------------------------------------------------------------------------------
# Recognition accuracy (Jano Fig. 8) and random levels (Jano §6.5)
# ----------------------------------------------------------------------------------------------------------------------


def tercile_accuracy(predicted: Tensor, truth: Tensor) -> float:
    """Our definition of Jano Fig. 8's "recognition accuracy" (the paper's code never defines one).

    With n blocks (both maps flattened, same shape) and k = floor(n / 3): take the k highest-scoring and the k
    lowest-scoring blocks by each map, ties broken by block index (a stable sort, so the result is deterministic),
    and return (|top_pred & top_truth| + |bottom_pred & bottom_truth|) / (2k).

    A perfect ranking scores 1 and an exactly reversed one 0. A random predictor scores k / n in expectation (each
    of its k top blocks is in the true top k with probability k / n): 1/3 when 3 divides n, slightly less otherwise.
    Only the order within each map matters, so the two maps need not share a scale.
    """
    if tuple(predicted.shape) != tuple(truth.shape):
        raise ValueError(
            f"predicted and truth must be maps of the same shape, got {tuple(predicted.shape)} and "
            f"{tuple(truth.shape)}; compare scores on the same block grid"
        )
    n = predicted.numel()
    k = n // 3
    if k == 0:
        raise ValueError(f"need at least 3 blocks to form terciles, got {n}")
    for name, m in (("predicted", predicted), ("truth", truth)):
        if m.is_floating_point() and bool(torch.isnan(m).any()):
            raise ValueError(f"{name} contains NaN, which has no place in a ranking; fix the scores first")

    def extremes(scores: Tensor) -> tuple[set[int], set[int]]:
        flat = scores.reshape(-1)
        top = torch.sort(flat, descending=True, stable=True).indices[:k]
        bottom = torch.sort(flat, descending=False, stable=True).indices[:k]
        return set(top.tolist()), set(bottom.tolist())

    top_p, bottom_p = extremes(predicted)
    top_t, bottom_t = extremes(truth)
    return (len(top_p & top_t) + len(bottom_p & bottom_t)) / (2 * k)


def shuffled_levels(levels: Tensor, generator: torch.Generator) -> Tensor:
    """A random permutation of a block-level map of any shape (Jano §6.5, random-level ablation).

    Same number of static / moderate / active blocks as ``levels``, at random places; same shape, dtype and device.
    Deterministic for a given generator state. The permutation is drawn on the generator's device.
    """
    flat = levels.reshape(-1)
    perm = torch.randperm(flat.numel(), generator=generator, device=generator.device)
    return flat[perm.to(levels.device)].reshape(levels.shape)


# ----------------------------------------------------------------------------------------------------------------------
# FFT high-frequency energy (baseline and ground-truth complexity)
# ----------------------------------------------------------------------------------------------------------------------


def high_frequency_fraction(x: Tensor) -> Tensor:
    """[..., h, w] -> [...]: fraction of 2-D spectral energy strictly outside a quarter-radius circle.

    Spectrum: fftshift(fft2(x)) over the last two axes, energy |X|^2, DC at index (h // 2, w // 2). A bin is "high"
    if its distance from the DC bin, in bins, is > min(h, w) / 4. The result is high / total energy (the DC term
    included in the total), so blocks of different sizes and brightness are comparable; 0 where the total is 0.
    The circle is in bin units, so on non-square blocks it is not a circle in cycles/cell; the paper's exact
    definition is not available (notes §11).
    """
    h, w = x.shape[-2:]
    x = x.to(_fft_dtype(x.dtype))
    energy = torch.fft.fftshift(torch.fft.fft2(x), dim=(-2, -1)).abs() ** 2
    rows = torch.arange(h, device=x.device, dtype=x.dtype) - h // 2
    cols = torch.arange(w, device=x.device, dtype=x.dtype) - w // 2
    radius = torch.sqrt(rows[:, None] ** 2 + cols[None, :] ** 2)
    high = radius > min(h, w) / 4
    total = energy.sum(dim=(-2, -1))
    outside = torch.where(high, energy, torch.zeros_like(energy)).sum(dim=(-2, -1))
    safe_total = torch.where(total > 0, total, torch.ones_like(total))  # all-zero input: fraction 0, not nan
    return torch.where(total > 0, outside / safe_total, torch.zeros_like(total))


def fft_high_frequency_energy(latent: Tensor, block_size: Sequence[int] | None = None) -> Tensor:
    """High-frequency energy fraction of a latent [C, T, H, W] (or image [C, H, W]), averaged over channels and frames.

    Without ``block_size``: a 0-d tensor for the whole latent (FFT per channel and frame over H, W). With
    ``block_size`` (bt, bh, bw) (or (bh, bw) for images): a map [nt, nh, nw] in ``BlockGrid`` order, one FFT per
    block over its real cells only (partial edge blocks are not padded, so no zero-padding edges leak into their
    spectrum; their radius uses their real size). Used for the early-latent FFT baseline and the final-latent
    ground-truth complexity (Jano Fig. 8; the official evaluation code is unpublished, see
    ``high_frequency_fraction`` for the exact definition chosen here).
    """
    if latent.dim() == 3:
        latent = latent.unsqueeze(1)
    if latent.dim() != 4:
        raise ValueError(f"expected a latent [C, T, H, W] or [C, H, W], got shape {tuple(latent.shape)}")
    if block_size is None:
        return high_frequency_fraction(latent).mean()
    block_size = tuple(block_size)
    if len(block_size) == 2:
        block_size = (1, *block_size)
    grid = BlockGrid(tuple(latent.shape[1:]), block_size)
    (nt, nh, nw), (bt, bh, bw) = grid.counts, grid.block
    out = torch.empty(grid.counts, dtype=_fft_dtype(latent.dtype), device=latent.device)
    for i in range(nt):
        for j in range(nh):
            for k in range(nw):
                cell = latent[:, i * bt : (i + 1) * bt, j * bh : (j + 1) * bh, k * bw : (k + 1) * bw]
                out[i, j, k] = high_frequency_fraction(cell).mean()
    return out


def _fft_dtype(dtype: torch.dtype) -> torch.dtype:
    """float32 for half/bfloat16/float32 inputs, float64 for float64 (as the analyzer works)."""
    return torch.promote_types(dtype, torch.float32) if dtype.is_floating_point else torch.float32
