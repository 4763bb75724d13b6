"""The step plan: which tokens each denoising step computes, and what that costs.

Source: the official code's ``update_step_level`` (notes ``jano-official-code.md`` §7; the paper's own
section could not be checked).

Step levels (official ``update_step_level``, identical for Flux and Wan):

* 0 -- full compute, no cache: the warm-up steps and the cool-down steps;
* 3 -- full compute that refreshes every cache (the first step after warm-up, then every
  ``static_interval`` steps);
* 2 -- compute moderate and active tokens, refresh the moderate cache (every ``medium_interval`` steps);
* 1 -- compute active tokens only.

Step level s computes exactly the tokens whose level is >= 4 - s, so static tokens are recomputed
every ``static_interval`` steps, moderate ones every ``medium_interval`` steps, active ones every step.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import cached_property

import torch
from torch import Tensor

from ..runtime.cost import TokenCost

FULL, REFRESH, MODERATE_STEP, ACTIVE_STEP = 0, 3, 2, 1


def step_level(i: int, num_steps: int, warmup: int, cooldown: int, static_interval: int, medium_interval: int) -> int:
    """Level of 0-based step ``i`` (official ``update_step_level`` with its 1-based step i+1).

    With j = i - warmup the number of steps since warm-up: j % static_interval == 0 -> 3,
    else j % medium_interval == 0 -> 2, else 1. Warm-up (i < warmup) and cool-down (the last
    ``cooldown`` steps) are full; an interval of 0 turns the method off (all full).
    """
    if i < warmup or i >= num_steps - cooldown or static_interval * medium_interval == 0:
        return FULL
    j = i - warmup
    if j % static_interval == 0:
        return REFRESH
    if j % medium_interval == 0:
        return MODERATE_STEP
    return ACTIVE_STEP


def computed_tokens(token_levels: Tensor, level: int) -> Tensor | None:
    """Indices (ascending) of the tokens a step of ``level`` computes; None means all of them."""
    if level in (FULL, REFRESH):
        return None
    return torch.nonzero(token_levels >= 4 - level).flatten()


@dataclass(frozen=True)
class JanoPlan:
    """Per-step levels and computed tokens for one generation, fixed once the levels are known."""

    step_levels: tuple[int, ...]
    token_levels: Tensor  # [L] in {1, 2, 3}

    @classmethod
    def build(
        cls, token_levels: Tensor, num_steps: int, *, warmup: int, cooldown: int, static_interval: int,
        medium_interval: int,
    ) -> "JanoPlan":
        levels = tuple(
            step_level(i, num_steps, warmup, cooldown, static_interval, medium_interval) for i in range(num_steps)
        )
        return cls(levels, token_levels)

    @property
    def num_tokens(self) -> int:
        return int(self.token_levels.numel())

    @cached_property
    def _index_by_level(self) -> dict[int, Tensor | None]:
        # one nonzero() per step level, not one per step: the sampler asks at every step
        return {level: computed_tokens(self.token_levels, level) for level in set(self.step_levels)}

    def computed(self, i: int) -> Tensor | None:
        return self._index_by_level[self.step_levels[i]]

    @cached_property
    def _active_by_level(self) -> dict[int, Tensor | None]:
        active = {}
        for level, index in self._index_by_level.items():
            computed = self.token_levels if index is None else self.token_levels[index]
            active[level] = None if bool((computed == 3).all()) else torch.nonzero(computed == 3).flatten()
        return active

    def active_among_computed(self, i: int) -> Tensor | None:
        """Positions of the active tokens (computed at every step) among step ``i``'s computed tokens, or None if the
        step computes nothing else. A step of the latter kind refreshes no frozen token, so a step cache may let what
        it kept from an earlier step (over the active tokens) stand in for its computation (``sample_jano``)."""
        return self._active_by_level[self.step_levels[i]]

    def token_counts(self) -> list[int]:
        """Tokens computed at every step."""
        return [self.num_tokens if (idx := self.computed(i)) is None else int(idx.numel())
                for i in range(len(self.step_levels))]

    def ideal_speedup(self, cost: TokenCost) -> float:
        """Sum of full-step FLOPs over the sum of planned FLOPs (Jano's ideal speedup)."""
        full = cost.forward_flops(self.num_tokens, self.num_tokens) * len(self.step_levels)
        planned = sum(cost.forward_flops(n, self.num_tokens) for n in self.token_counts())
        return full / planned if planned else float("inf")

    def describe(self, cost: TokenCost | None = None) -> str:
        """A short table: how many steps of each level, tokens per level, per-step counts, ideal speedup."""
        lv = self.token_levels
        names = {FULL: "full", REFRESH: "refresh", MODERATE_STEP: "moderate", ACTIVE_STEP: "active"}
        lines = [
            f"tokens: {self.num_tokens} = {int((lv == 1).sum())} static + {int((lv == 2).sum())} moderate "
            f"+ {int((lv == 3).sum())} active",
            "steps: " + ", ".join(f"{self.step_levels.count(k)} {names[k]}" for k in (FULL, REFRESH, MODERATE_STEP, ACTIVE_STEP)),
            "computed per step: " + " ".join(str(n) for n in self.token_counts()),
        ]
        if cost is not None:
            lines.append(f"ideal speedup (token FLOPs): {self.ideal_speedup(cost):.2f}x")
        return "\n".join(lines)
