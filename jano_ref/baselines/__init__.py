"""Training-free caching baselines in one harness, each a short module written from its paper / notes:

    teacache   skip the whole DiT while the rescaled change of the modulated input stays small   (TeaCache)
    fbcache    skip all blocks after the first while its residual barely changes            (First-block cache)
    pab        reuse self- / cross-attention outputs for a few steps                         (PAB)
    toca       reuse attention, recompute the MLP of a scored fraction of tokens             (ToCa)
    ras        per step, compute a band of tokens ranked by the channel-std of their last velocity step; the
               rest reuse their velocity; KV cache for their keys/values                        (RAS)

Every module exports a frozen config dataclass, ``PRESETS`` (named, each citing its source), ``KNOB`` (the config
field ``jano bench --sweep`` varies), ``SWEEP`` (its values) and ``sample_<name>(field, x, sigmas, config)``
returning ``(tokens, BaselineReport)``. They reach the models only through ``models.layers.Hooks`` (and RAS
through ``token_index`` / ``KVCache``), like Jano and JiT.
"""

from __future__ import annotations

import dataclasses
import importlib
from types import ModuleType
from typing import Any

from torch import Tensor

from ..runtime.presets import lookup_preset
from .common import BaselineReport, CacheHooks, sample_with_hooks

BASELINES = ("teacache", "fbcache", "pab", "toca", "ras")


def _config_type(module: ModuleType) -> type:
    return type(next(iter(module.PRESETS.values())))


def presets(method: str) -> dict[str, Any]:
    return _module(method).PRESETS


def knob(method: str) -> str:
    """The config field ``jano bench --sweep`` varies."""
    return _module(method).KNOB


def accepts(method: str, preset: str) -> bool:
    """Whether ``preset`` names one of the method's presets or sets its sweep knob (``knob=value``)."""
    module = _module(method)
    return preset in module.PRESETS or preset.split("=", 1)[0] == module.KNOB and "=" in preset


def default_preset(method: str, model: str | None = None) -> str:
    """``<method>-<model>`` where a method has a preset fitted to that model (TeaCache's rescale polynomial),
    else the first preset listed: the method's paper / reference-code default."""
    names = _module(method).PRESETS
    return f"{method}-{model}" if f"{method}-{model}" in names else next(iter(names))


def resolve(method: str, preset: str | None, model: str | None = None) -> Any:
    """A config from a preset name, a sweep label ``knob=value`` (applied to the model's default preset) or None
    (the default preset)."""
    if preset is None:
        return get_baseline_preset(method, default_preset(method, model))
    if "=" in preset:
        module = _module(method)
        knob, value = preset.split("=", 1)
        if knob != module.KNOB:
            raise ValueError(f"{method}: {preset!r} sets {knob!r}, but its sweep knob is {module.KNOB!r}; "
                             f"write {module.KNOB}=VALUE or use a preset ({', '.join(module.PRESETS)})")
        base = get_baseline_preset(method, default_preset(method, model))
        return dataclasses.replace(base, **{knob: type(getattr(base, knob))(float(value))})
    return get_baseline_preset(method, preset)


def get_baseline_preset(method: str, name) -> Any:
    module = _module(method)
    return lookup_preset(name, module.PRESETS, _config_type(module), method)


def sweep(method: str, model: str | None = None) -> list[tuple[str, Any]]:
    """(label, config) for every value of the method's knob, applied to the model's default preset; the labels
    are what ``resolve`` reads back."""
    module = _module(method)
    return [(label, resolve(method, label, model)) for label in (f"{module.KNOB}={v:g}" for v in module.SWEEP)]


def sample_baseline(field, x: Tensor, sigmas: Tensor, method: str, config, *, callback=None
                    ) -> tuple[Tensor, BaselineReport]:
    module = _module(method)
    sample = getattr(module, f"sample_{method}")
    return sample(field, x, sigmas, get_baseline_preset(method, config), callback=callback)


def _module(method: str) -> ModuleType:
    """The method's module, imported on first use."""
    if method not in BASELINES:
        raise KeyError(f"unknown baseline {method!r}; choose one of {', '.join(BASELINES)}")
    return importlib.import_module(f"{__name__}.{method}")


__all__ = ["BASELINES", "BaselineReport", "CacheHooks", "accepts", "default_preset", "get_baseline_preset", "knob",
           "presets", "resolve", "sample_baseline", "sample_with_hooks", "sweep"]
