"""A fixed, parameter-free, exactly invertible stand-in for a VAE: space-to-depth.

Real Flux / Wan latents come from trained VAEs we cannot download. For tiny models trained here on
procedural data, ``SpaceToDepth`` plays the VAE: it rescales pixels from [0, 1] to [-1, 1] and folds
each ``factor x factor`` block of pixels into channels, so a latent "pixel" still describes one spatial
block, like a VAE latent, but nothing is learned and nothing is lost.

Channel order (as in ``models.flux.pack``): latent channel ``c * f^2 + py * f + px`` holds colour channel
``c`` of the pixel at offset (py, px) inside its block. Videos are [B, 3, F, H, W] <-> [B, 3 f^2, F, H/f, W/f]:
no temporal compression.

Exactness: ``x * 2 - 1`` and its inverse are exact in float32 for every pixel value that is a multiple
of 2^-24 (``torch.rand`` outputs, the renderer of ``jano_ref.lab.tiny.data``, every float in [0.5, 1]). Values
below 0.25 that are not on that grid (e.g. k / 255) round by at most 2^-25 (half an ulp of the latent).
"""

from __future__ import annotations

from einops import rearrange
from torch import Tensor


class SpaceToDepth:
    """pixels in [0, 1] <-> latents in [-1, 1] with ``3 * factor**2`` channels at 1/factor the resolution."""

    def __init__(self, factor: int = 2) -> None:
        if factor < 1:
            raise ValueError(f"factor must be a positive integer, got {factor}")
        self.factor = factor

    @property
    def latent_channels(self) -> int:
        return 3 * self.factor**2

    def _check(self, x: Tensor, channels: int, name: str) -> None:
        if x.ndim not in (4, 5) or x.shape[1] != channels:
            raise ValueError(f"{name} must be [B, {channels}, H, W] or [B, {channels}, F, H, W], got {tuple(x.shape)}")

    def encode(self, pixels: Tensor) -> Tensor:
        """[B, 3, H, W] -> [B, 3f^2, H/f, W/f], or [B, 3, F, H, W] -> [B, 3f^2, F, H/f, W/f]; same dtype."""
        self._check(pixels, 3, "pixels")
        f = self.factor
        h, w = pixels.shape[-2:]
        if h % f or w % f:
            raise ValueError(f"height and width ({h}, {w}) must be multiples of the factor {f}")
        z = pixels * 2 - 1
        if z.ndim == 4:
            return rearrange(z, "b c (h py) (w px) -> b (c py px) h w", py=f, px=f)
        return rearrange(z, "b c t (h py) (w px) -> b (c py px) t h w", py=f, px=f)

    def decode(self, latents: Tensor, clamp: bool = True) -> Tensor:
        """Exact inverse of ``encode``; ``clamp`` clips to [0, 1] (a generated latent may leave [-1, 1])."""
        self._check(latents, self.latent_channels, "latents")
        f = self.factor
        if latents.ndim == 4:
            z = rearrange(latents, "b (c py px) h w -> b c (h py) (w px)", py=f, px=f)
        else:
            z = rearrange(latents, "b (c py px) t h w -> b c t (h py) (w px)", py=f, px=f)
        x = (z + 1) / 2
        return x.clamp(0, 1) if clamp else x

    def __repr__(self) -> str:
        return f"SpaceToDepth(factor={self.factor})"
