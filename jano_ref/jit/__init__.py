"""JiT: run the DiT on a sparse, growing set of anchor tokens, extend their velocity to the whole latent (SAG-ODE),
and bring newly activated tokens to the right noise level with a deterministic micro-flow."""

from .sampler import PRESETS, JiTConfig, JiTReport, beta_sigmas, get_jit_preset, sample_jit

__all__ = ["PRESETS", "JiTConfig", "JiTReport", "beta_sigmas", "get_jit_preset", "sample_jit"]
