"""jano_ref: training-free, region-aware acceleration of Diffusion Transformers (Jano, JiT), in plain PyTorch.

    from jano_ref import generate
    result = generate(field, noise_tokens, sigmas, method="jano", config="flux-dev")
"""

from .jano.cache import CacheOptions
from .jano.config import PRESETS as JANO_PRESETS
from .jano.config import JanoConfig, get_preset
from .generate import Generation, generate
from .jano.sampler import JanoReport, sample_jano

__all__ = ["JANO_PRESETS", "CacheOptions", "Generation", "JanoConfig", "JanoReport", "generate", "get_preset", "sample_jano"]
