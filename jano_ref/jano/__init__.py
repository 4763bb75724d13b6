"""Jano: analyse the first denoising steps, sort tokens into static / moderate / active levels, and recompute them
at different rates while a per-level KV cache keeps full-attention context.

The pipeline, one stage per module: ``analyzer`` -> ``levels`` -> ``plan`` -> ``cache`` -> ``sampler``
(``sample_jano`` runs them in one loop); ``config`` holds ``JanoConfig`` and the named presets; ``memory`` (the cache's
size before running, the budget) and ``offload`` (host-memory cache with per-layer prefetch) serve ``cache``.
"""

from .cache import CacheOptions, CacheReport
from .config import PRESETS, JanoConfig, get_preset
from .sampler import JanoReport, sample_jano

__all__ = ["PRESETS", "CacheOptions", "CacheReport", "JanoConfig", "JanoReport", "get_preset", "sample_jano"]
