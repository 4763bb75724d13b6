"""Minimal PNG writer and latent-to-picture helper (zlib only, so no imaging library is needed)."""

from __future__ import annotations

import struct
import zlib
from pathlib import Path

import numpy as np
import torch
from torch import Tensor


def write_png(path: str | Path, image: np.ndarray) -> Path:
    """Write an [H, W, 3] or [H, W] uint8 array as an 8-bit PNG."""
    if image.dtype != np.uint8 or image.ndim not in (2, 3):
        raise ValueError(f"expected a uint8 array [H, W] or [H, W, 3], got {image.dtype} {image.shape}")
    h, w = image.shape[:2]
    colour = 2 if image.ndim == 3 else 0
    raw = b"".join(b"\x00" + image[row].tobytes() for row in range(h))  # filter type 0 per row

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)

    header = struct.pack(">IIBBBBB", w, h, 8, colour, 0, 0, 0)
    png = b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", zlib.compress(raw, 6)) + chunk(b"IEND", b"")
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(png)
    return path


def latent_preview(latent: Tensor, scale: int = 8) -> np.ndarray:
    """[C, H, W] latent -> uint8 RGB picture of its first three channels (each min-max scaled),
    enlarged ``scale`` times with nearest neighbour so small latents are visible."""
    x = latent.detach().float().cpu()[:3]
    if x.shape[0] < 3:
        x = torch.cat([x, x[:1].expand(3 - x.shape[0], -1, -1)])
    lo = x.amin(dim=(1, 2), keepdim=True)
    hi = x.amax(dim=(1, 2), keepdim=True)
    x = (x - lo) / (hi - lo).clamp_min(1e-12)
    img = (x.permute(1, 2, 0).numpy() * 255).round().astype(np.uint8)
    return img.repeat(scale, axis=0).repeat(scale, axis=1)
