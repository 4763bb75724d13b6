"""What every step and feature cache shares: per-branch hook state with a FLOP meter, and the Euler loop.

A cache is a ``models.layers.Hooks`` object that decides, at each call, whether to run the real computation or
reuse something it stored. ``CacheHooks`` computes everything and meters the FLOPs it spends, using the field's
``block_costs()``; a method subclasses it and overrides the hook it skips. ``sample_with_hooks`` is plain Euler
(``sampling.sample_euler``) that gives every guidance branch its own hooks object, so the cond and uncond passes
never share a cache (diffusers keys its cache state by ``cache_context("cond"/"uncond")`` for the same reason).

A sampler that computes only some tokens at some steps (Jano: ``sample_jano(step_cache=...)``) tells the hooks so
after ``begin_step`` (``restrict``): what they store then covers only the tokens that their reusable steps compute
(``keep``), and they reuse only on those steps. Plain sampling never restricts: every step computes every token.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any, Callable

import torch
from torch import Tensor

from models.layers import PassThrough

from ..runtime.sampling import sample_euler


class CacheHooks(PassThrough):
    """Hooks that compute everything and count the FLOPs they spend; the base of every cache here.

    ``begin_step(i, num_steps, sigma)`` is called before each step's forward; ``step_flops`` is what the last
    forward spent. Subclasses call ``super()`` for the calls they do compute, so metering stays in one place.
    """

    def __init__(self, costs) -> None:
        self.all_costs = costs  # list[fields.BlockCost], one per block, every token computed
        self.costs = costs  # the same at this step's tokens (``restrict``)
        self.step = -1
        self.num_steps = 0
        self.sigma = 1.0
        self.step_flops = 0.0
        self.computed: int | None = None  # tokens computed this step (None: all)
        self.kept: Tensor | None = None  # positions among them of the tokens a cache keeps (None: all)
        self.reusable = True  # whether this step may reuse what was kept

    def begin_step(self, i: int, num_steps: int, sigma: float) -> None:
        self.step, self.num_steps, self.sigma = i, num_steps, sigma
        self.step_flops = 0.0
        self.costs, self.computed, self.kept, self.reusable = self.all_costs, None, None, True

    def restrict(self, computed: int, kept: Tensor | None, reusable: bool, costs) -> None:
        """For a sampler that computes only some tokens (module docstring), after ``begin_step``: this step computes
        ``computed`` tokens; ``kept`` are the positions among them of the tokens that the reusable steps compute (None:
        all of them), the only ones a cache keeps from this step; ``reusable`` says whether this step computes just
        those, so that what was kept may stand in for its computation; ``costs`` are the blocks' FLOPs at this step's
        tokens (the field's ``block_costs(computed)``)."""
        self.computed, self.kept, self.reusable, self.costs = computed, kept, reusable, costs

    def keep(self, rows: Tensor) -> Tensor:
        """What a cache keeps of ``rows`` [B, L, ...] (a stream, a modulated input, an attention output): every row,
        or the leading rows no token index reaches (Flux's text) and the kept tokens' rows."""
        if self.kept is None:
            return rows
        lead = rows.shape[1] - self.computed
        return torch.cat([rows[:, :lead], rows[:, lead:][:, self.kept]], dim=1)

    @property
    def spent_share(self) -> float:
        """The share of this step's block FLOPs (at its tokens) that the hooks spent."""
        total = sum(c.total for c in self.costs)
        return self.step_flops / total if total else 0.0

    def block(self, layer, x, run, modulated):
        self.step_flops += self.costs[layer].rest
        return run(x)

    def attention(self, layer, kind, run):
        cost = self.costs[layer]
        self.step_flops += cost.self_attn if kind == "self" else cost.cross_attn
        return run()

    def mlp(self, layer, h, run):
        return self.mlp_rows(layer, h.shape[1], run(h))

    def mlp_rows(self, layer: int, rows: int, out: Tensor) -> Tensor:
        """Meter an MLP evaluation over ``rows`` rows and pass its output through."""
        cost = self.costs[layer]
        self.step_flops += cost.mlp * rows / cost.rows
        return out


class StackSkipHooks(CacheHooks):
    """The shared mechanism of the step-level caches (TeaCache, first-block cache): while ``skipping`` is set,
    blocks ``first_skipped`` to the last are replaced by the residual they added at the last computed step (added
    once at ``first_skipped``, the later blocks pass their input through); otherwise they run and refresh it.
    A subclass decides ``skipping`` at a block before ``first_skipped`` (or at it), only on ``reusable`` steps, and
    calls ``skip_or_run``. The residual covers the kept rows (``keep``), which are the rows of a reusable step."""

    first_skipped = 0

    def __init__(self, costs) -> None:
        super().__init__(costs)
        self.skipping = False
        self.residual: Tensor | None = None  # last block's output minus first_skipped's input, last computed step
        self._start: Tensor | None = None

    def skip_or_run(self, layer, x, run, modulated):
        if self.skipping:
            return x + self.residual if layer == self.first_skipped else x
        if layer == self.first_skipped:
            self._start = x
        out = super().block(layer, x, run, modulated)
        if layer == len(self.costs) - 1:
            self.residual = self.keep(out - self._start)
        return out


@dataclass
class BaselineReport:
    """What a cached generation spent and decided, in the shape the bench reads (``token_counts``,
    ``ideal_speedup``, ``step_seconds``)."""

    method: str
    config: Any
    num_tokens: int
    full_step_flops: float  # one uncached step, all guidance branches
    step_flops: list[float] = field(default_factory=list)
    step_seconds: list[float] = field(default_factory=list)
    decisions: list[str] = field(default_factory=list)  # per step, what the cond branch did (method-specific words)

    @property
    def ideal_speedup(self) -> float:
        """Uncached FLOPs over spent FLOPs at the same steps (the bench's compute proxy)."""
        spent = sum(self.step_flops)
        return self.full_step_flops * len(self.step_flops) / spent if spent else float("inf")

    @property
    def token_counts(self) -> list[int]:
        """Per step, the spent FLOPs expressed as a number of fully computed tokens."""
        return [round(self.num_tokens * f / self.full_step_flops) for f in self.step_flops]


def sample_with_hooks(
    field_: Callable[..., Tensor],
    x: Tensor,
    sigmas: Tensor,
    make_hooks: Callable[[], CacheHooks],
    *,
    method: str,
    config: Any,
    callback: Callable[[dict[str, Any]], None] | None = None,
    describe: Callable[[CacheHooks], str] | None = None,
) -> tuple[Tensor, BaselineReport]:
    """``sampling.sample_euler`` over ``field_`` with one fresh ``make_hooks()`` per guidance branch.

    With hooks that compute everything this is bit-identical to ``sample_euler(field_, x, sigmas)``.
    ``describe(hooks)`` names the cond branch's decision after each step (for ``BaselineReport.decisions``).
    """
    branches = getattr(field_, "branches", ("cond",))
    hooks = {b: make_hooks() for b in branches}
    report = BaselineReport(method, config, x.shape[1], sum(c.total for c in field_.block_costs()) * len(branches))
    num_steps = len(sigmas) - 1
    clock = [0.0]

    def model(x_in: Tensor, sigma: Tensor) -> Tensor:
        clock[0] = time.perf_counter()
        for h in hooks.values():
            h.begin_step(len(report.step_flops), num_steps, float(sigma))
        return field_(x_in, sigma, hooks=hooks)

    def after_step(info: dict[str, Any]) -> None:
        report.step_flops.append(sum(h.step_flops for h in hooks.values()))
        report.step_seconds.append(time.perf_counter() - clock[0])
        if describe is not None:
            report.decisions.append(describe(hooks[branches[0]]))
        if callback is not None:
            callback(info)

    return sample_euler(model, x, sigmas, callback=after_step), report


def relative_l1(a: Tensor, b: Tensor) -> float:
    """mean|a - b| / mean|b|: the change measure of TeaCache and the first-block cache."""
    a, b = a.detach().float(), b.detach().float()  # bf16 means would make the decisions jumpy
    return float((a - b).abs().mean() / b.abs().mean().clamp_min(torch.finfo(torch.float32).tiny))
