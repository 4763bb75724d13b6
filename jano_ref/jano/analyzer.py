"""Jano early-stage complexity recognition: which latent blocks are still changing after a few warm-up steps.

Pipeline (official ``jano/dynamic_analyzer.py``; notes ``jano-official-code.md`` §5), read top to bottom in ``analyze``:

    warm-up velocities [K, C, T, H, W]
      -> blocks (bt, bh, bw), zero-padded with an explicit validity mask        ``BlockGrid``
      -> L2 distances between channel vectors inside each block                Eq. 10 (temporal), Eq. 11 (spatial)
      -> |D_k - D_{k-lag}| averaged over k and over real pairs                  Eq. 12 (TD), Eq. 13 (SD)
      -> S = alpha TD + (1 - alpha) SD, min-max normalised once over all blocks  Eq. 14
      -> "inward diffusion": boost low-score regions enclosed by high scores     Eq. 15

Equation numbers: the paper text (arXiv 2603.00519) could not be checked; the numbers are matched to the official
code by meaning (notes ``jano-official-code.md`` §5). Where a docstring cites "Jano Eq. N", read it as "the step of
``DynamicAnalyzer._compute_dynamics`` / ``_enhance_combined_score`` that Eq. N most likely denotes".

Deliberate differences from the official code (each one is explained where it happens):

* Padding is masked out of every mean (official v2 averages zero-padded positions in; v1 dropped them but still
  divided by the padded count). With the official block sizes nothing is padded, so results agree there.
* Distances are computed from explicit differences (``torch.cdist`` direct mode), not with the Gram trick, so equal
  vectors are exactly 0 apart at any magnitude.
* Whether the initial noise is part of the warm-up stack is the caller's explicit choice (``stack_warmup``); the
  official code decided it through a process-global step counter.
* Everything is computed in float32 (float64 for float64 inputs) on the input's device; the official code moved the
  enhancement to numpy on the CPU.

The FFT measure that Jano Fig. 8 compares against (baseline and ground truth) is in ``jano_ref.lab.eval.study``.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from types import MappingProxyType
from typing import Sequence

import torch
import torch.nn.functional as F
from torch import Tensor

from .morphology import connected_components, dilate_cross, distance_to_mask

__all__ = [
    "BlockGrid",
    "ComplexityReport",
    "FLUX_SETTINGS",
    "WAN_BLOCK",
    "WAN_SETTINGS",
    "analyze",
    "block_average",
    "default_lag",
    "enclosed_regions",
    "enhance_inward_diffusion",
    "flux_block_grid",
    "lagged_change",
    "minmax_normalize",
    "mix_scores",
    "pairwise_l2",
    "spatial_distances",
    "spatial_pair_mask",
    "stack_warmup",
    "temporal_distances",
    "temporal_pair_mask",
]

# Official hyperparameters (notes §7). "alpha" is the official t_weight; spatial weight = 1 - alpha.
# Read-only mappings, for analyze(..., **FLUX_SETTINGS); override with FLUX_SETTINGS | dict(alpha=...).
FLUX_SETTINGS = MappingProxyType(dict(alpha=0.0, d_strength=0.8, d_distance=2.0))
WAN_SETTINGS = MappingProxyType(dict(alpha=0.7, d_strength=0.8, d_distance=1.0))
WAN_BLOCK = (7, 6, 8)  # (bt, bh, bw) in latent cells, Wan2.1 1.3B and 14B

# Fixed constants of the official inward diffusion (``_enhance_combined_score``); not exposed as settings there.
CONTOUR_STD_FACTOR = 0.3  # contour: S > mean + 0.3 std
RING_NEAR_DISTANCE = 2.0  # a ring cell is "near" a contour within this Euclidean distance (in blocks)
RING_NEAR_FRACTION = 0.3  # enclosed: at least this fraction of the ring is near a contour
MIN_REGION_BLOCKS = 2  # single-block components are never enclosed


def _work_dtype(dtype: torch.dtype) -> torch.dtype:
    """float32 for half/bfloat16/float32 inputs, float64 for float64: distances of bf16 vectors lose too much."""
    return torch.promote_types(dtype, torch.float32) if dtype.is_floating_point else torch.float32


def _triple(value: Sequence[int], name: str) -> tuple[int, int, int]:
    values = tuple(int(v) for v in value)
    if len(values) != 3 or any(v < 1 for v in values):
        raise ValueError(f"{name} must be three positive ints (T, H, W order), got {tuple(value)!r}")
    return values  # type: ignore[return-value]


# ----------------------------------------------------------------------------------------------------------------------
# Warm-up stack and block partition
# ----------------------------------------------------------------------------------------------------------------------


def stack_warmup(velocities: Tensor | Sequence[Tensor], initial_noise: Tensor | None = None) -> Tensor:
    """Stack warm-up velocity predictions [C, T, H, W] (or a ready [K, C, T, H, W] tensor) into [K, C, T, H, W].

    ``initial_noise`` [C, T, H, W], if given, is prepended as feature 0. The official pipelines also call the
    analyzer with the initial noise, but it was stored only while a process-global step counter was still at its
    initial value, i.e. only for the first generation in a process (notes §3, §12.1): Wan (one run per process) used
    [eps, v_1..v_6] (K = 7), while every timed Flux run used [v_1..v_7] (K = 7, no noise) and only the untimed first
    one used K = 8. Here the caller decides, explicitly and identically for every generation.
    """
    if isinstance(velocities, Tensor):
        if velocities.dim() != 5:
            raise ValueError(
                f"velocities must be [K, C, T, H, W] or a list of [C, T, H, W], got shape {tuple(velocities.shape)}; "
                "for images add a frame axis with x.unsqueeze(-3)"
            )
        frames = list(velocities.unbind(0))
    else:
        frames = list(velocities)
    if initial_noise is not None:
        frames = [initial_noise] + frames
    if not frames:
        raise ValueError("no warm-up features given: pass at least two velocity predictions")
    shape = tuple(frames[0].shape)
    for i, f in enumerate(frames):
        if f.dim() != 4 or tuple(f.shape) != shape:
            raise ValueError(
                f"warm-up feature {i} has shape {tuple(f.shape)}, expected [C, T, H, W] = {shape} like feature 0 "
                "(the initial noise, if given, counts as feature 0)"
            )
    return torch.stack(frames, dim=0)


@dataclass(frozen=True)
class BlockGrid:
    """A partition of a (T, H, W) latent into blocks of (bt, bh, bw) cells, in row-major (nt, nh, nw) block order.

    The latent is zero-padded at the end of each axis up to a multiple of the block size (official
    ``block_manager.py``), and ``valid`` marks the real cells so that padding never enters an average.
    """

    latent: tuple[int, int, int]  # (T, H, W)
    block: tuple[int, int, int]  # (bt, bh, bw)

    def __post_init__(self) -> None:
        object.__setattr__(self, "latent", _triple(self.latent, "latent"))
        object.__setattr__(self, "block", _triple(self.block, "block"))

    @property
    def counts(self) -> tuple[int, int, int]:
        """(nt, nh, nw): blocks per axis, a partial last block included."""
        return tuple(-(-n // b) for n, b in zip(self.latent, self.block))  # type: ignore[return-value]

    @property
    def padded(self) -> tuple[int, int, int]:
        return tuple(n * b for n, b in zip(self.counts, self.block))  # type: ignore[return-value]

    @property
    def padding(self) -> tuple[int, int, int]:
        return tuple(p - n for p, n in zip(self.padded, self.latent))  # type: ignore[return-value]

    @property
    def num_blocks(self) -> int:
        return math.prod(self.counts)

    def to_blocks(self, x: Tensor) -> Tensor:
        """[..., T, H, W] -> [..., nt, nh, nw, bt, bh*bw], zero-padded; cells within a block in (t, h, w) order."""
        if tuple(x.shape[-3:]) != self.latent:
            raise ValueError(f"expected a tensor ending in (T, H, W) = {self.latent}, got shape {tuple(x.shape)}")
        pt, ph, pw = self.padding
        if pt or ph or pw:
            if x.dtype == torch.bool:  # F.pad has no bool kernel
                return self._blocks_of_padded(F.pad(x.to(torch.uint8), (0, pw, 0, ph, 0, pt)).bool())
            x = F.pad(x, (0, pw, 0, ph, 0, pt))
        return self._blocks_of_padded(x)

    def _blocks_of_padded(self, x: Tensor) -> Tensor:
        (nt, nh, nw), (bt, bh, bw) = self.counts, self.block
        lead = x.shape[:-3]
        x = x.reshape(*lead, nt, bt, nh, bh, nw, bw)
        d = len(lead)
        x = x.permute(*range(d), d, d + 2, d + 4, d + 1, d + 3, d + 5)  # [..., nt, nh, nw, bt, bh, bw]
        return x.reshape(*lead, nt, nh, nw, bt, bh * bw)

    def valid(self, device: torch.device | str | None = None) -> Tensor:
        """[nt, nh, nw, bt, bh*bw] bool: True on real latent cells, False on padding."""
        return self.to_blocks(torch.ones(self.latent, dtype=torch.bool, device=device))

    def expand(self, block_values: Tensor) -> Tensor:
        """[nt, nh, nw] per-block values -> [T, H, W]: each cell takes its block's value, padding cropped."""
        if tuple(block_values.shape) != self.counts:
            raise ValueError(f"expected per-block values of shape {self.counts}, got {tuple(block_values.shape)}")
        x = block_values
        for axis, b in enumerate(self.block):
            x = x.repeat_interleave(b, dim=axis)
        t, h, w = self.latent
        return x[:t, :h, :w]


def flux_block_grid(height: int, width: int) -> BlockGrid:
    """Official Flux partition of a (height, width) latent: blocks of (1, height // 16, width // 16) cells.

    ``run_flux/jano_generate.py`` sets ``ANALYZE_BLOCK_SIZE = (1, HEIGHT // 128, WIDTH // 128)`` in pixels, i.e. 1/16
    of each latent side (the AE downsamples 8x): a 1024^2 image (128x128 latent) gets (1, 8, 8) blocks, 64x64 pixels
    each, in a 16x16 grid. The grid is exactly 16x16 when the latent sides are multiples of 16 (pixel sides multiples
    of 128); otherwise the last block row/column is partial and padded.
    """
    if height < 16 or width < 16:
        raise ValueError(f"the Flux block is 1/16 of each latent side; latent {height}x{width} is smaller than 16x16")
    return BlockGrid((1, height, width), (1, height // 16, width // 16))


# ----------------------------------------------------------------------------------------------------------------------
# Distances and their change over the warm-up steps (Eqs. 10-13)
# ----------------------------------------------------------------------------------------------------------------------


def pairwise_l2(x: Tensor) -> Tensor:
    """[..., N, C] -> [..., N, N] Euclidean distances between the N channel vectors (distance of Jano Eqs. 10-11).

    Uses ``torch.cdist`` in direct mode (sums of squared differences), not the Gram expansion |a|^2 + |b|^2 - 2ab
    used by the official v2 analyzer: the Gram form cancels catastrophically, so equal vectors of norm ~100 come out
    ~1e-2 apart in float32 (or as the sqrt of a clamped negative). Here equal vectors are exactly 0 apart.
    """
    lead, (n, c) = x.shape[:-2], x.shape[-2:]
    flat = x.reshape(-1, n, c)
    d = torch.cdist(flat, flat, p=2.0, compute_mode="donot_use_mm_for_euclid_dist")
    return d.reshape(*lead, n, n)


def temporal_distances(blocks: Tensor) -> Tensor:
    """Jano Eq. 10 (inferred): D^T_k(b, s)[tau, tau'] = |f_k(b, tau, s) - f_k(b, tau', s)|_2.

    blocks [K, nt, nh, nw, bt, S, C] -> [K, nt, nh, nw, S, bt, bt]: distances across the bt frames of a block, at
    each of its S = bh*bw spatial positions.
    """
    return pairwise_l2(blocks.transpose(-3, -2))


def spatial_distances(blocks: Tensor) -> Tensor:
    """Jano Eq. 11 (inferred): D^S_k(b, tau)[s, s'] = |f_k(b, tau, s) - f_k(b, tau, s')|_2.

    blocks [K, nt, nh, nw, bt, S, C] -> [K, nt, nh, nw, bt, S, S]: distances between all S = bh*bw positions of a
    block (all pairs, not only neighbours), within each frame.
    """
    return pairwise_l2(blocks)


def temporal_pair_mask(valid: Tensor) -> Tensor:
    """valid [..., bt, S] -> [..., S, bt, bt]: True where both frames of a temporal pair are real cells."""
    v = valid.transpose(-2, -1)
    return v[..., :, None] & v[..., None, :]


def spatial_pair_mask(valid: Tensor) -> Tensor:
    """valid [..., bt, S] -> [..., bt, S, S]: True where both positions of a spatial pair are real cells."""
    return valid[..., :, None] & valid[..., None, :]


def default_lag(num_steps: int) -> int:
    """Official lag ("interval") Delta = floor(K / 2), fixed by the number K of stored features (K = 7 -> 3)."""
    if num_steps < 2:
        raise ValueError(f"need at least 2 warm-up features to measure change, got K = {num_steps}")
    return num_steps // 2


def lagged_change(distances: Tensor, lag: int) -> Tensor:
    """Jano Eq. 12-13 (inferred), inner part: mean over k in [lag, K-1] of |D_k - D_{k-lag}|, per pair.

    distances [K, ...] -> [...]. A distance matrix that stays the same over the warm-up steps gives exactly 0.
    """
    num_steps = distances.shape[0]
    if not 1 <= lag <= num_steps - 1:
        raise ValueError(f"lag must be in [1, K-1] = [1, {num_steps - 1}] for K = {num_steps} features, got {lag}")
    return (distances[lag:] - distances[:-lag]).abs().mean(dim=0)


def block_average(change: Tensor, pair_valid: Tensor) -> Tensor:
    """Jano Eq. 12 (TD) / Eq. 13 (SD) (inferred): average the per-pair change over a block's real pairs.

    change and pair_valid [nt, nh, nw, a, n, n] -> [nt, nh, nw]. The official score is a mean over positions
    (or frames) of a mean over all ordered pairs, the zero-distance diagonal included; padding removes whole frames
    or whole positions, so every real position has the same number of real pairs and the flat mean over real pairs
    below equals that nested mean. A full block's score is therefore the same whether or not other blocks are padded.
    """
    total = torch.where(pair_valid, change, torch.zeros_like(change)).sum(dim=(-3, -2, -1))
    count = pair_valid.sum(dim=(-3, -2, -1))
    return total / count.to(total.dtype)  # every block has >= 1 real cell, so count >= 1


# ----------------------------------------------------------------------------------------------------------------------
# Mixing and normalisation (Eq. 14)
# ----------------------------------------------------------------------------------------------------------------------


def mix_scores(temporal: Tensor, spatial: Tensor, alpha: float) -> Tensor:
    """Jano Eq. 14 (inferred), first part: S = alpha * TD + (1 - alpha) * SD on the raw (unnormalised) scores."""
    if not 0.0 <= alpha <= 1.0:
        raise ValueError(f"alpha (temporal weight) must be in [0, 1], got {alpha}; official: Flux 0.0, Wan 0.7")
    return alpha * temporal + (1.0 - alpha) * spatial


def minmax_normalize(scores: Tensor) -> Tensor:
    """Jano Eq. 14 (inferred), second part: (S - min S) / (max S - min S) once over all blocks; 0 if max == min."""
    lo, hi = scores.min(), scores.max()
    if hi == lo:
        return torch.zeros_like(scores)
    return (scores - lo) / (hi - lo)


# ----------------------------------------------------------------------------------------------------------------------
# Inward diffusion (Eq. 15): the official rules, over the grid helpers of ``morphology``
# ----------------------------------------------------------------------------------------------------------------------


def enclosed_regions(layer: Tensor, *, std_correction: int = 1) -> tuple[Tensor, Tensor, Tensor]:
    """The official region rules of the inward diffusion on one temporal slice [nh, nw] of normalised scores.

    Returns (contour [nh, nw] bool, enclosed [nh, nw] bool, distance [nh, nw] float64 to the nearest contour block):

    1. mu, sigma of the slice; contour blocks S > mu + 0.3 sigma; candidate interior S < mu, never in the outermost
       block rows and columns. If there is no contour block or no block below the mean, nothing is enclosed.
    2. 8-connected components of the candidates; each one's ring = cross dilation minus the component.
    3. A component is enclosed if it has >= 2 blocks and >= 30 % of its ring cells lie within distance 2.0 of a
       contour block (contour blocks in the ring count, at distance 0).

    ``std_correction``: 1 (default) is the unbiased std, ``torch.std`` in the official ``_enhance_combined_score``
    since 2025-11-19 (``68e78d4``), so at the paper-era ``2a964ea`` and at HEAD ``7befec0`` that the presets cite; 0
    is the population std of the first commits' ``np.std`` (``3c5efea`` .. ``7a9c349``). The unbiased std is
    sqrt(n / (n - 1)) times the population one (1.002 on a 16 x 16 slice): a small shift of the threshold, but enough
    to move a block across it now and then, and with it a whole region's boost (``JanoConfig.contour_std_correction``).
    """
    if layer.dim() != 2:
        raise ValueError(f"expected a 2-D slice [nh, nw], got shape {tuple(layer.shape)}")
    nh, nw = layer.shape
    no = torch.zeros_like(layer, dtype=torch.bool)
    contour, below = no.clone(), no.clone()
    if layer.numel() > std_correction:  # a std needs more cells than the correction
        mu, sigma = layer.mean(), layer.std(correction=std_correction)
        contour = layer > mu + CONTOUR_STD_FACTOR * sigma
        below = layer < mu
    distance = distance_to_mask(contour)
    if not contour.any() or not below.any() or nh < 3 or nw < 3:  # (no interior cells on a grid thinner than 3)
        return contour, no, distance
    candidates = below.clone()
    candidates[0, :] = candidates[-1, :] = False
    candidates[:, 0] = candidates[:, -1] = False
    labels = connected_components(candidates, connectivity=8)
    near = distance <= RING_NEAR_DISTANCE
    enclosed = no.clone()
    for label in range(1, int(labels.max()) + 1):
        region = labels == label
        ring = dilate_cross(region) & ~region  # never empty: the region stays off the grid border
        if int(region.sum()) >= MIN_REGION_BLOCKS and near[ring].double().mean() >= RING_NEAR_FRACTION:
            enclosed |= region
    return contour, enclosed, distance


def enhance_inward_diffusion(
    scores: Tensor, d_strength: float, d_distance: float, *, std_correction: int = 1
) -> Tensor:
    """Jano Eq. 15 (inferred): boost low-score blocks enclosed by high-score contours, per temporal slice.

    scores [nt, nh, nw] (normalised) -> enhanced [nt, nh, nw]. In each slice, every enclosed block (see
    ``enclosed_regions``) at distance d <= d_distance from the nearest contour block gets

        S += exp(-d / (d_distance / 2)) * mean(S over the slice's contour blocks) * d_strength.

    Slices are independent, and the result is not renormalised (official), so scores can exceed 1. Official
    settings: Flux d_strength 0.8, d_distance 2; Wan 0.8, 1 (only 4-neighbours of a contour, +0.108 * mean contour).
    ``std_correction`` of the contour threshold: see ``enclosed_regions``.
    """
    if scores.dim() != 3:
        raise ValueError(f"expected block scores [nt, nh, nw], got shape {tuple(scores.shape)}")
    if not d_distance > 0:
        raise ValueError(f"d_distance must be > 0 (it sets the decay length d_distance / 2), got {d_distance}")
    out = []
    for layer in scores.unbind(0):
        contour, enclosed, distance = enclosed_regions(layer, std_correction=std_correction)
        boosted = enclosed & (distance <= d_distance)
        if boosted.any():
            weight = torch.exp(-distance / (d_distance / 2)).to(layer.dtype)
            boost = weight * layer[contour].mean() * d_strength
            layer = layer + torch.where(boosted, boost, torch.zeros_like(boost))
        out.append(layer)
    return torch.stack(out, dim=0)


# ----------------------------------------------------------------------------------------------------------------------
# The whole analysis
# ----------------------------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class ComplexityReport:
    """Output of ``analyze``. All maps are [nt, nh, nw] in block order (see ``BlockGrid``), float32 or float64."""

    temporal: Tensor  # TD, raw (Eq. 12)
    spatial: Tensor  # SD, raw (Eq. 13)
    combined: Tensor  # alpha TD + (1 - alpha) SD, min-max normalised (Eq. 14); before enhancement
    enhanced: Tensor  # after inward diffusion (Eq. 15): the score the level thresholds apply to
    lag: int
    num_steps: int  # K, number of warm-up features analysed
    grid: BlockGrid


def analyze(
    warmup: Tensor | Sequence[Tensor],
    block_size: Sequence[int] | BlockGrid,
    *,
    alpha: float,
    d_strength: float,
    d_distance: float,
    lag: int | None = None,
    std_correction: int = 1,
) -> ComplexityReport:
    """Block complexity scores from warm-up velocity predictions [K, C, T, H, W] (or a list of [C, T, H, W]).

    ``block_size`` (bt, bh, bw) or a ``BlockGrid`` for the latent (T, H, W); ``lag`` defaults to floor(K / 2).
    Official settings: ``FLUX_SETTINGS`` with ``flux_block_grid(H, W)``; ``WAN_SETTINGS`` with ``WAN_BLOCK``.
    Images have T = 1 (the temporal score is then 0). ``std_correction`` of the Eq. 15 contour threshold: 1 (the
    official unbiased std) or 0 (population std); see ``enclosed_regions``.
    """
    x = stack_warmup(warmup)
    num_steps, t, h, w = x.shape[0], *x.shape[-3:]
    grid = block_size if isinstance(block_size, BlockGrid) else BlockGrid((t, h, w), tuple(block_size))
    lag = default_lag(num_steps) if lag is None else lag
    x = x.to(_work_dtype(x.dtype))
    blocks = grid.to_blocks(x).movedim(1, -1)  # [K, nt, nh, nw, bt, S, C]
    valid = grid.valid(x.device)  # [nt, nh, nw, bt, S]
    temporal = block_average(lagged_change(temporal_distances(blocks), lag), temporal_pair_mask(valid))
    spatial = block_average(lagged_change(spatial_distances(blocks), lag), spatial_pair_mask(valid))
    combined = minmax_normalize(mix_scores(temporal, spatial, alpha))
    enhanced = enhance_inward_diffusion(combined, d_strength, d_distance, std_correction=std_correction)
    return ComplexityReport(temporal, spatial, combined, enhanced, lag, num_steps, grid)
