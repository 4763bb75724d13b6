"""The per-level diffusion KV cache (official ``process_kv_sequence``; notes ``jano-official-code.md`` §8).

Keys and values are cached inside every self-attention, after QK-norm and RoPE, per layer and per
level. A token that is not computed this step still serves as a key/value with what it had at its
last refresh, so the computed queries keep full-attention context. Once RoPE has been applied a key
carries its position, and softmax attention does not depend on key order, so cached entries are simply
appended: keys are [fresh, cached moderate, cached static].

One ``LevelKVCache`` holds one guidance branch (Wan's cond and uncond passes see different inputs, so
they each need their own). ``at(step_level)`` returns the hook the model calls for that step.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch
from torch import Tensor

from .plan import ACTIVE_STEP, FULL, MODERATE_STEP, REFRESH


@dataclass
class LevelKVCache:
    """Cached K/V of the static and the moderate tokens, per self-attention layer.

    Stored in the dtype the model produced them in (the official Wan code silently promoted to fp32).
    """

    token_levels: Tensor  # [L] in {1, 2, 3}, in the model's token order
    static: dict[int, tuple[Tensor, Tensor]] = field(default_factory=dict)
    moderate: dict[int, tuple[Tensor, Tensor]] = field(default_factory=dict)

    def __post_init__(self) -> None:
        lv = self.token_levels
        self._static_idx = torch.nonzero(lv == 1).flatten()
        self._moderate_idx = torch.nonzero(lv == 2).flatten()
        # positions of the moderate tokens inside a level-2 step's computed set (levels >= 2, ascending)
        self._moderate_in_step2 = torch.nonzero(lv[lv >= 2] == 2).flatten()

    def at(self, level: int) -> "_StepHook | None":
        """The KVCache hook for a step of ``level``; None for full steps that need no cache."""
        return None if level == FULL else _StepHook(self, level)

    def nbytes(self) -> int:
        return sum(t.numel() * t.element_size() for kv in (*self.static.values(), *self.moderate.values()) for t in kv)


@dataclass
class _StepHook:
    cache: LevelKVCache
    level: int

    def extend_kv(self, layer: int, k: Tensor, v: Tensor) -> tuple[Tensor, Tensor]:
        c = self.cache
        if self.level == REFRESH:  # all tokens computed in token order: store both frozen levels
            c.static[layer] = (k[:, :, c._static_idx], v[:, :, c._static_idx])
            c.moderate[layer] = (k[:, :, c._moderate_idx], v[:, :, c._moderate_idx])
            return k, v
        if layer not in c.static:
            raise RuntimeError(f"layer {layer}: no cached K/V; a refresh step (level 3) must run before level {self.level}")
        static_k, static_v = c.static[layer]
        if self.level == MODERATE_STEP:  # moderate + active computed: refresh the moderate cache
            c.moderate[layer] = (k[:, :, c._moderate_in_step2], v[:, :, c._moderate_in_step2])
            return torch.cat([k, static_k], dim=2), torch.cat([v, static_v], dim=2)
        if self.level == ACTIVE_STEP:
            moderate_k, moderate_v = c.moderate[layer]
            return torch.cat([k, moderate_k, static_k], dim=2), torch.cat([v, moderate_v, static_v], dim=2)
        raise ValueError(f"unknown step level {self.level}; expected 1, 2 or 3")
