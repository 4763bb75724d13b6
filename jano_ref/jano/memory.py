"""How much memory Jano's KV cache needs, known before anything runs, and fitting a plan into a budget.

The cache of a generation holds, per guidance branch and per self-attention layer, one or two tensors per frozen
(static or moderate) token: ``CacheGeometry.total_bytes`` is the formula of ``cache.CacheReport``, from a model's
parameters alone, so the same numbers come out for a model too large to run here (``planned_cache``; the table in
the README, ``python -m jano_ref.benchmarks memory``).

A budget (``CacheOptions.max_cache_mb``) bounds what the compute device holds. Before the first step,
``cached_token_budget`` turns it into a number of frozen tokens, and refuses a budget smaller than the cache of the
smallest possible plan (one frozen block); after the analysis, ``fit_to_budget`` promotes frozen blocks to active,
highest score first (the ones closest to active, whose stale K/V cost the most quality), until the plan fits.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Callable, Sequence

import torch
from torch import Tensor

import models
from models.flux import FluxParams, latent_size
from models.wan import WanParams
from models.wan_vae import WanVAEParams

from .analyzer import BlockGrid

MiB = 2**20
OFFICIAL_MODELS = ("flux-dev", "flux-schnell", "wan2.1-1.3b", "wan2.1-14b")  # the presets with official autoencoders


@dataclass(frozen=True)
class CacheGeometry:
    """What a cache's size depends on besides the token levels."""

    layers: int
    heads: int
    head_dim: int
    dtype: torch.dtype  # what the model computes K/V in
    branches: int = 1  # guidance branches with their own cache (2 with classifier-free guidance)

    def bytes_per_token(self, mode: str = "exact") -> int:
        """Bytes one cached token costs in one layer of one branch: K and V, or its attention input (hidden)."""
        tensors = 1 if mode == "hidden" else 2
        element = 2 if mode == "bf16" else self.dtype.itemsize
        return tensors * self.heads * self.head_dim * element

    def total_bytes(self, cached_tokens: int, mode: str = "exact") -> int:
        """(2 or 1) x layers x cached tokens x heads x head_dim x bytes per element x branches."""
        return self.layers * self.branches * cached_tokens * self.bytes_per_token(mode)

    def resident_bytes(self, cached_tokens: int, mode: str = "exact", offloaded: bool = False) -> int:
        """What the compute device holds: everything, or with offload two layers of one branch."""
        if offloaded:
            return min(2, self.layers) * cached_tokens * self.bytes_per_token(mode)
        return self.total_bytes(cached_tokens, mode)


def geometry_of(params: FluxParams | WanParams, dtype: torch.dtype = torch.bfloat16, branches: int = 1
                ) -> CacheGeometry:
    """The cache geometry of a model's parameters (a ``models.PRESETS`` entry or ``model.params``)."""
    if isinstance(params, FluxParams):
        layers, heads, dim = params.depth + params.depth_single_blocks, params.num_heads, params.hidden_size
    elif isinstance(params, WanParams):
        layers, heads, dim = params.num_layers, params.num_heads, params.dim
    else:
        raise TypeError(f"no cache geometry for {type(params).__name__}; expected FluxParams or WanParams")
    return CacheGeometry(layers, heads, dim // heads, dtype, branches)


def geometry_of_layout(layout) -> CacheGeometry:
    """The geometry of a velocity field (``runtime.fields.FluxVelocity`` / ``WanVelocity``): its model and branches."""
    model = getattr(layout, "model", None)
    if model is None:
        raise ValueError(f"a memory budget needs the model's attention shape, but {type(layout).__name__} has no "
                         "`.model`; pass layout= a FluxVelocity or WanVelocity")
    return geometry_of(model.params, next(model.parameters()).dtype, len(layout.branches))


def official_tokens(model: str, height: int, width: int, frames: int = 1) -> int:
    """Tokens of an official model's latent at a pixel size: Flux packs 2x2 latent cells of its 8x autoencoder; Wan2.1
    patches (1, 2, 2) cells of its VAE's (4, 8, 8) latent (frames 4n + 1 -> n + 1 latent frames)."""
    if model not in OFFICIAL_MODELS:
        raise ValueError(f"{model!r}: the planner knows the official autoencoders only ({', '.join(OFFICIAL_MODELS)}); "
                         "for the tiny models, `jano generate` prints the cache it filled")
    params = models.PRESETS[model]
    if isinstance(params, FluxParams):
        h, w = latent_size(height, width)
        return (h // 2) * (w // 2)
    vae = WanVAEParams()
    cells = (1 + (frames - 1) // vae.temporal_stride, height // vae.spatial_stride, width // vae.spatial_stride)
    return math.prod(n // p for n, p in zip(cells, params.patch_size))


@dataclass(frozen=True)
class PlannedCache:
    model: str
    size: str  # "1024x1024" or "832x480x81" (width x height x frames)
    tokens: int
    cached_tokens: int
    geometry: CacheGeometry

    def total_mb(self, mode: str = "exact") -> float:
        return self.geometry.total_bytes(self.cached_tokens, mode) / MiB

    def offloaded_mb(self, mode: str = "exact") -> float:
        return self.geometry.resident_bytes(self.cached_tokens, mode, offloaded=True) / MiB


def planned_cache(model: str, height: int, width: int, frames: int = 1, *, frozen: float = 1.0,
                  dtype: torch.dtype = torch.bfloat16, branches: int | None = None) -> PlannedCache:
    """The cache of ``model`` (a ``models.PRESETS`` name) at a pixel size, with a share ``frozen`` of its tokens static
    or moderate (1.0, the default, is the worst case of any preset: no active token). ``branches`` defaults to 2 for
    Wan (classifier-free guidance) and 1 for Flux (dev distils guidance into an embedding)."""
    if not 0 <= frozen <= 1:
        raise ValueError(f"frozen={frozen}: the share of static + moderate tokens is between 0 and 1")
    params = models.PRESETS[model]
    flux = isinstance(params, FluxParams)
    branches = branches if branches is not None else (1 if flux else 2)
    tokens = official_tokens(model, height, width, frames)
    size = f"{width}x{height}" + ("" if flux else f"x{frames}")
    return PlannedCache(model, size, tokens, round(frozen * tokens), geometry_of(params, dtype, branches))


# ---- the budget ---------------------------------------------------------------------------------------------------


def block_token_counts(grid: BlockGrid, patch: Sequence[int]) -> Tensor:
    """[num_blocks] how many tokens each block freezes when it is the only frozen block: the tokens with more than half
    of their latent cells in it (``levels.patch_majority`` sends ties to the higher level)."""
    ids = grid.expand(torch.arange(grid.num_blocks).reshape(grid.counts))  # [T, H, W] block of each cell
    pt, ph, pw = patch
    t, h, w = ids.shape
    cells = ids.reshape(t // pt, pt, h // ph, ph, w // pw, pw).permute(0, 2, 4, 1, 3, 5).reshape(-1, pt * ph * pw)
    block, _ = cells.mode(dim=-1)
    owned = 2 * (cells == block[:, None]).sum(-1) > cells.shape[-1]
    return torch.bincount(block[owned], minlength=grid.num_blocks)


def cached_token_budget(max_cache_mb: float, geometry: CacheGeometry, mode: str, offloaded: bool, grid: BlockGrid,
                        patch: Sequence[int]) -> int:
    """The most frozen tokens a budget of ``max_cache_mb`` MiB on the compute device admits. Raises ValueError, with
    what would fit, when it admits less than the smallest block: no plan with a frozen block could meet it."""
    per_token = geometry.resident_bytes(1, mode, offloaded)
    tokens = int(max_cache_mb * MiB // per_token)
    counts = block_token_counts(grid, patch)
    smallest = int(counts[counts > 0].min()) if bool((counts > 0).any()) else 0
    if tokens < smallest:
        need = smallest * per_token / MiB
        hints = [f"--kv-cache-mode hidden needs {need / 2:.3g} MiB" if mode == "exact" else None,
                 "--kv-offload cpu keeps two layers on the GPU instead of all" if not offloaded else None]
        raise ValueError(
            f"max_cache_mb={max_cache_mb:g}: the smallest cache of any Jano plan here (one frozen block of {smallest} "
            f"tokens, {geometry.layers} layers, {geometry.branches} branch(es), mode {mode}"
            f"{', offloaded' if offloaded else ''}) needs {need:.3g} MiB on the device. Raise the budget to at least "
            f"{need:.3g}" + "".join(f"; or {h}" for h in hints if h) + ".")
    return tokens


def fit_to_budget(block_levels: Tensor, scores: Tensor, to_tokens: Callable[[Tensor], Tensor], max_tokens: int
                  ) -> tuple[Tensor, int]:
    """Promote frozen blocks to active, highest score first, until at most ``max_tokens`` tokens stay frozen.

    ``to_tokens(block_levels)`` maps block levels to token levels (``levels.token_levels``). Promoting a block never
    freezes a token, so the number kept is found by bisection. Returns (block levels, blocks promoted)."""
    flat, flat_scores = block_levels.flatten(), scores.flatten()
    frozen = torch.nonzero(flat < 3).flatten()
    order = frozen[torch.argsort(flat_scores[frozen], descending=True, stable=True)]

    def promoted(k: int) -> Tensor:
        out = flat.clone()
        out[order[:k]] = 3
        return out.reshape(block_levels.shape)

    def fits(k: int) -> bool:
        return int((to_tokens(promoted(k)) < 3).sum()) <= max_tokens

    lo, hi = 0, len(order)  # promoting every frozen block freezes nothing, which always fits
    while lo < hi:
        mid = (lo + hi) // 2
        lo, hi = (lo, mid) if fits(mid) else (mid + 1, hi)
    return promoted(lo), lo

