"""Jano with a step-level cache on top: ``jano+teacache``, ``jano+fbcache``, ``jano+pab``.

Jano's plan decides which tokens a step computes (spatial redundancy); a step cache decides whether a step's blocks
run at all (TeaCache, first-block cache) or reuse attention outputs (PAB) (temporal redundancy). Nothing here is a
third copy of either: ``sample_jano(step_cache=...)`` runs the plan and the KV cache, and the baselines' hooks
(``TeaCacheHooks``, ``FBCacheHooks``, ``PABHooks``) make the decisions, told by ``CacheHooks.restrict`` which tokens
each step computes.

The rule is the official ``jano_teacache_forward`` (chen-yy20/Jano ``flux/teacache/tea_transformer.py`` and
``wan/jano_baselines/teacache_forward.py``; notes jano-official-code.md):

- TeaCache accumulates its rescaled change at every step; a step may be skipped only if it is a level-1 step (it
  computes the active tokens alone); every other step computes and resets the accumulator, whatever the sum.
- The residual it keeps is the active tokens' (stack output minus stack input), refreshed at every computed step; a
  skipped step adds it to the active tokens' stack input and runs the head on them.
- Frozen tokens are untouched by a skip: they keep their last velocity, as on any level-1 step, and the KV cache is
  neither read nor written (no attention runs).

Where this departs from it, and why:

- *Which tokens the change is measured on.* The official code measures block 0's modulated input over every image
  token (it embeds all of them before masking); here it is measured over the active tokens, against the same tokens
  at the previous step. A Jano forward never embeds frozen tokens (the hooks see only the computed rows), and the
  active tokens are the ones a skip gives a velocity to. With no frozen tokens both are the same. (The Wan script
  reads the time embedding instead; our TeaCache reads block 0's modulated input for both models, see
  ``baselines.teacache``.)
- *Which steps may be skipped* is said by what they compute, not by their level number: a step that computes only
  the active tokens refreshes no frozen token. That is every level-1 step, and also level-2 / level-3 / cool-down
  steps of a plan without moderate / static tokens, which the official code never skips. So with no frozen token the
  combination is plain TeaCache after the warm-up. Warm-up steps are never skipped (the analyzer reads the model's
  own velocities; the official code never skips level-0 steps either).
- The official code stores no residual on level-0 steps; here every computed step stores one. The first step after
  warm-up is a refresh that always computes, so the warm-up residual is only ever reused when nothing is frozen.
- ``jano+fbcache`` and ``jano+pab`` have no official counterpart; they follow the same rule: the first-block cache
  compares block 0's residual over the active tokens (and Flux's text rows) and keeps the rest of the stack's
  residual over them; PAB keeps attention outputs over them and reuses them only on steps that compute just them.

The ideal speedup counts each step's token FLOPs times the share of its block FLOPs the step cache spent
(``jano.sampler.combined_ideal_speedup``): a plain Jano plan when nothing is reused, the step cache's own figure when
every token is computed.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any

from torch import Tensor

from . import baselines
from .baselines.fbcache import FBCacheHooks
from .baselines.pab import PABHooks
from .baselines.teacache import TeaCacheHooks
from .jano.cache import CacheOptions
from .jano.config import PRESETS as JANO_PRESETS
from .jano.config import JanoConfig, get_preset
from .jano.sampler import JanoReport, sample_jano

COMBINATIONS = ("jano+teacache", "jano+fbcache", "jano+pab")
SEPARATOR = "@"  # a combination's preset label: JANO_PRESET@STEP_CACHE_PRESET or JANO_PRESET@KNOB=VALUE

_HOOKS = {"teacache": TeaCacheHooks, "fbcache": FBCacheHooks, "pab": PABHooks}


@dataclass(frozen=True)
class CombinedConfig:
    """Jano's settings and the step cache's (a ``TeaCacheConfig``, ``FBCacheConfig`` or ``PABConfig``)."""

    jano: JanoConfig
    step: Any


def step_cache_of(method: str) -> str:
    """The step cache a combination adds to Jano ("jano+teacache" -> "teacache")."""
    if method not in COMBINATIONS:
        raise ValueError(f"unknown combination {method!r}; choose one of {', '.join(COMBINATIONS)}")
    return method.split("+", 1)[1]


def split_label(label: str) -> tuple[str, str | None]:
    """"flux-dev@rel_l1_thresh=0.05" -> ("flux-dev", "rel_l1_thresh=0.05"); "flux-dev" -> ("flux-dev", None)."""
    jano, _, step = label.partition(SEPARATOR)
    return jano, step or None


def accepts(method: str, label: str) -> bool:
    """Whether ``label`` names a Jano preset and, after ``@``, a preset or knob=value of the method's step cache."""
    jano, step = split_label(label)
    return jano in JANO_PRESETS and (step is None or baselines.accepts(step_cache_of(method), step))


def resolve(method: str, label: str | None, model: str | None, default_jano: str) -> tuple[str, CombinedConfig]:
    """(full label, config) from ``JANO[@STEP]``: a Jano preset (default ``default_jano``) and a preset or knob=value
    of the step cache (default: its preset for ``model``, ``baselines.default_preset``)."""
    cache = step_cache_of(method)
    jano, step = split_label(label) if label else (default_jano, None)
    step = step or baselines.default_preset(cache, model)
    if jano not in JANO_PRESETS:
        raise KeyError(f"{method}: {jano!r} is not a Jano preset; write JANO_PRESET{SEPARATOR}STEP_CACHE_SETTING with "
                       f"a Jano preset ({', '.join(JANO_PRESETS)}), e.g. flux-dev{SEPARATOR}"
                       f"{baselines.knob(cache)}=VALUE")
    return f"{jano}{SEPARATOR}{step}", CombinedConfig(get_preset(jano), baselines.resolve(cache, step, model))


def sweep(method: str, jano_preset: str, model: str | None) -> list[str]:
    """Labels of the step cache's knob sweep (``SWEEP`` in its module) at one Jano preset."""
    return [f"{jano_preset}{SEPARATOR}{label}" for label, _ in baselines.sweep(step_cache_of(method), model)]


def params(config: CombinedConfig) -> dict:
    """The settings a bench cell records: Jano's and the step cache's, without their sources."""
    return {part: {k: v for k, v in dataclasses.asdict(getattr(config, part)).items() if k != "source"}
            for part in ("jano", "step")}


def sample_combined(field, x: Tensor, sigmas: Tensor, method: str, config: CombinedConfig, *, layout=None,
                    callback=None, log=None, level_map=None, solver: str = "euler", cache: CacheOptions | None = None
                    ) -> tuple[Tensor, JanoReport]:
    """Jano sampling (``sample_jano``, its arguments) with the method's step cache, one hooks object per guidance
    branch; returns (tokens, JanoReport) whose ``decisions`` say what the cond branch's step cache did at each step."""
    hooks = _HOOKS[step_cache_of(method)]
    costs = (layout if layout is not None else field).block_costs()
    describe = PABHooks.describe if hooks is PABHooks else (lambda h: "skip" if h.skipping else "compute")
    return sample_jano(field, x, sigmas, config.jano, layout=layout, callback=callback, log=log, level_map=level_map,
                       solver=solver, cache=cache, step_cache=lambda: hooks(costs, config.step), describe=describe)
