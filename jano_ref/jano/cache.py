"""The per-level diffusion KV cache (official ``process_kv_sequence``; notes ``jano-official-code.md`` §8-§10).

Keys and values are cached inside every self-attention, after QK-norm and RoPE, per layer and per
level. A token that is not computed this step still serves as a key/value with what it had at its
last refresh, so the computed queries keep full-attention context. Once RoPE has been applied a key
carries its position, and softmax attention does not depend on key order, so cached entries are simply
appended: keys are [fresh, cached moderate, cached static].

One ``LevelKVCache`` holds one guidance branch (Wan's cond and uncond passes see different inputs, so
they each need their own). ``at(step_level)`` returns the hook the model calls for that step.

How entries are kept (``CacheOptions``):

* ``mode="exact"`` (default): K and V as the model produced them.
* ``mode="bf16"``: K and V stored in bfloat16 and cast back at use; half the bytes of a float32 cache, and lossy
  (no saving for a model that already runs in 16 bits).
* ``mode="hidden"``: each frozen token's attention input (one tensor of width heads x head_dim instead of two), its
  K/V recomputed at every use through the model's projection (K/V linear, QK-norm, RoPE at the token's position;
  ``models.layers.cached_kv``); the official "memory_efficient_cache" (notes §9). Half the bytes for the price of
  projecting the frozen rows at every step. The projection then runs on another set of rows than at the refresh, so
  results match the exact cache to float rounding (matrix products of other shapes), not bit for bit.
* ``offload="cpu"``: entries live in host memory and come back one layer ahead of use (``offload.py``); the values
  are the same bits.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch
from torch import Tensor

from models.layers import Projection

from .offload import DeviceEntries, OffloadedEntries, offloads
from .plan import ACTIVE_STEP, FULL, MODERATE_STEP, REFRESH

CACHE_MODES = ("exact", "hidden", "bf16")
LEVELS = ("static", "moderate")


@dataclass(frozen=True)
class CacheOptions:
    """How Jano's KV cache stores frozen tokens (module docstring), and the memory it may use.

    ``max_cache_mb``: the most the cache may hold on the compute device, in MiB (2**20 bytes); the plan is fitted to it
    (``memory.fit_to_budget``), and a budget no plan can meet is an error before the first step.
    """

    mode: str = "exact"
    offload: str | None = None  # a device to keep the cache on between uses ("cpu"); None keeps it where computed
    max_cache_mb: float | None = None

    def __post_init__(self) -> None:
        if self.mode not in CACHE_MODES:
            raise ValueError(f"unknown cache mode {self.mode!r}; choose one of {', '.join(CACHE_MODES)}")
        if self.offload is not None and torch.device(self.offload).type != "cpu":
            raise ValueError(f"offload={self.offload!r}: the cache can be offloaded to 'cpu' (host memory) only")
        if self.max_cache_mb is not None and not self.max_cache_mb >= 0:
            raise ValueError(f"max_cache_mb={self.max_cache_mb}: a memory budget is a number of MiB >= 0")


@dataclass
class LevelKVCache:
    """Cached K/V (or attention inputs, ``mode="hidden"``) of the static and the moderate tokens, per self-attention
    layer, for one guidance branch.

    Stored in the dtype the model produced them in (the official Wan code silently promoted to fp32), unless
    ``mode="bf16"``. ``report()`` gives the bytes per level and per layer.
    """

    token_levels: Tensor  # [L] in {1, 2, 3}, in the model's token order
    options: CacheOptions = field(default_factory=CacheOptions)

    def __post_init__(self) -> None:
        lv = self.token_levels
        self._static_idx = torch.nonzero(lv == 1).flatten()
        self._moderate_idx = torch.nonzero(lv == 2).flatten()
        # positions of the moderate tokens inside a level-2 step's computed set (levels >= 2, ascending)
        self._moderate_in_step2 = torch.nonzero(lv[lv >= 2] == 2).flatten()
        offload = self.options.offload
        self.entries = OffloadedEntries(offload, lv.device) if offload is not None else DeviceEntries()

    def at(self, level: int) -> "_StepHook | _RowsStepHook | None":
        """The KVCache hook for a step of ``level``; None for full steps and when no token is frozen (there is nothing
        to cache, and a step cache may then skip the refresh steps: ``sample_jano(step_cache=...)``)."""
        if level == FULL or self._static_idx.numel() + self._moderate_idx.numel() == 0:
            return None
        return _RowsStepHook(self, level) if self.options.mode == "hidden" else _StepHook(self, level)

    @property
    def static(self) -> dict[int, tuple[Tensor, ...]]:
        return {layer: e for (level, layer), e in self.entries.items() if level == "static"}

    @property
    def moderate(self) -> dict[int, tuple[Tensor, ...]]:
        return {layer: e for (level, layer), e in self.entries.items() if level == "moderate"}

    def nbytes(self) -> int:
        return sum(self.report().values())

    def report(self) -> dict[tuple[str, int], int]:
        """Bytes per (level, layer)."""
        return {key: sum(t.numel() * t.element_size() for t in e) for key, e in self.entries.items()}

    # storing and reading entries; ``axis`` is the token axis of what is stored (K/V [B, H, n, D]: 2; rows [B, n, C]: 1)
    def _store(self, level: str, layer: int, fresh: tuple[Tensor, ...], index: Tensor, axis: int) -> None:
        bf16 = self.options.mode == "bf16"
        self.entries.put(level, layer, tuple(
            (t[:, :, index] if axis == 2 else t[:, index]).to(torch.bfloat16 if bf16 else t.dtype) for t in fresh))

    def _check(self, layer: int, level: int) -> None:
        if level not in (REFRESH, MODERATE_STEP, ACTIVE_STEP):
            raise ValueError(f"unknown step level {level}; expected 1, 2 or 3")
        if level != REFRESH and not self.entries.has("static", layer):
            raise RuntimeError(f"layer {layer}: no cached K/V; a refresh step (level 3) must run before level {level}")

    def _fetch(self, levels: tuple[str, ...], layer: int, dtype: torch.dtype) -> list[tuple[Tensor, ...]]:
        return [tuple(t.to(dtype) for t in e) for e in self.entries.get(levels, layer)]


@dataclass
class _StepHook:
    """``models.layers.KVCache`` for one step of one branch: keeps K and V (modes exact and bf16)."""

    cache: LevelKVCache
    level: int

    def extend_kv(self, layer: int, k: Tensor, v: Tensor) -> tuple[Tensor, Tensor]:
        c = self.cache
        c._check(layer, self.level)
        if self.level == REFRESH:  # all tokens computed in token order: store both frozen levels
            c._store("static", layer, (k, v), c._static_idx, 2)
            c._store("moderate", layer, (k, v), c._moderate_idx, 2)
            return k, v
        if self.level == MODERATE_STEP:  # moderate + active computed: refresh the moderate cache
            c._store("moderate", layer, (k, v), c._moderate_in_step2, 2)
            ((static_k, static_v),) = c._fetch(("static",), layer, k.dtype)
            return torch.cat([k, static_k], dim=2), torch.cat([v, static_v], dim=2)
        (moderate_k, moderate_v), (static_k, static_v) = c._fetch(LEVELS[::-1], layer, k.dtype)  # ACTIVE_STEP
        return torch.cat([k, moderate_k, static_k], dim=2), torch.cat([v, moderate_v, static_v], dim=2)


@dataclass
class _RowsStepHook(_StepHook):
    """The hook of ``mode="hidden"``: keeps attention inputs and projects them back to K/V at use."""

    def extend_kv(self, layer: int, k: Tensor, v: Tensor) -> tuple[Tensor, Tensor]:
        raise TypeError("mode='hidden' caches attention inputs, so the model must call extend_kv_rows "
                        "(models.layers.cached_kv); this caller only offers extend_kv: use mode='exact'")

    def extend_kv_rows(self, layer: int, k: Tensor, v: Tensor, rows: Tensor, project: Projection
                       ) -> tuple[Tensor, Tensor]:
        c = self.cache
        c._check(layer, self.level)
        if self.level == REFRESH:
            c._store("static", layer, (rows,), c._static_idx, 1)
            c._store("moderate", layer, (rows,), c._moderate_idx, 1)
            return k, v
        if self.level == MODERATE_STEP:
            c._store("moderate", layer, (rows,), c._moderate_in_step2, 1)
            ((static,),) = c._fetch(("static",), layer, rows.dtype)
            cached_k, cached_v = project(static, c._static_idx)
        else:  # ACTIVE_STEP: one projection for both levels
            (moderate,), (static,) = c._fetch(LEVELS[::-1], layer, rows.dtype)
            cached_k, cached_v = project(torch.cat([moderate, static], dim=1), torch.cat([c._moderate_idx, c._static_idx]))
        return torch.cat([k, cached_k], dim=2), torch.cat([v, cached_v], dim=2)


@dataclass(frozen=True)
class CacheReport:
    """The bytes Jano's caches hold after a generation, over every guidance branch.

    total = T x layers x cached tokens x heads x head_dim x bytes per element x branches, where T = 2 (K and V) in
    modes "exact" and "bf16" and 1 in mode "hidden" (the attention input, heads x head_dim wide), the cached tokens
    are the static plus the moderate ones (Flux: image tokens only, text is always computed), and the bytes per
    element are the model's dtype's (2 in mode "bf16"). ``memory.CacheGeometry.total_bytes`` is the same formula
    before anything runs. ``resident`` is the most the compute device holds: the total, or with offload two layers of
    one branch (the layer in use and the next, prefetched).
    """

    by_level: dict[str, int]
    by_layer: dict[int, int]
    by_branch: dict[str, int]
    resident: int
    mode: str = "exact"
    offloaded: bool = False

    @classmethod
    def of(cls, caches: dict[str, LevelKVCache], device: torch.device | str) -> "CacheReport":
        by_level, by_layer, by_branch, window = dict.fromkeys(LEVELS, 0), {}, {}, 0
        for branch, cache in caches.items():
            per_layer: dict[int, int] = {}
            for (level, layer), n in cache.report().items():
                by_level[level] += n
                by_layer[layer] = by_layer.get(layer, 0) + n
                per_layer[layer] = per_layer.get(layer, 0) + n
            by_branch[branch] = sum(per_layer.values())
            window = max(window, sum(sorted(per_layer.values())[-2:]))
        options = next(iter(caches.values())).options if caches else CacheOptions()
        moved = offloads(options.offload, device)
        total = sum(by_branch.values())
        return cls(by_level, by_layer, by_branch, window if moved else total, options.mode, moved)

    @property
    def total(self) -> int:
        return sum(self.by_branch.values())

    @property
    def mb(self) -> float:
        return self.total / 2**20

    def describe(self) -> str:
        levels = ", ".join(f"{level} {n / 2**20:.2f}" for level, n in self.by_level.items())
        line = (f"KV cache ({self.mode}): {self.mb:.2f} MiB = {levels} MiB; {len(self.by_branch)} branch(es) x "
                f"{len(self.by_layer)} layers")
        if self.offloaded:
            line += f"; offloaded to host memory, at most {self.resident / 2**20:.2f} MiB on the device at a time"
        return line
