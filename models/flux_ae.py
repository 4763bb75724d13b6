"""FLUX.1 autoencoder (``ae.safetensors`` of FLUX.1-dev and FLUX.1-schnell), written from BFL's reference
(black-forest-labs/flux, src/flux/modules/autoencoder.py).

Module attribute names equal the checkpoint keys (models.md §1.11), so loading is strict with no mapping:

    ae = build_flux_ae(device="meta", dtype=torch.bfloat16)
    load_checkpoint(ae, "ae.safetensors")   # or ("black-forest-labs/FLUX.1-dev", filename="ae.safetensors")

Images [B, 3, H, W] in [-1, 1] <-> latents [B, 16, H/8, W/8]. The encoder ends in 2 * z_channels channels, the mean
and log-variance of a diagonal Gaussian; ``encode`` keeps the mean (deterministic; diffusers'
``latent_dist.mode()``), where BFL's ``AutoEncoder.encode`` adds a random draw of std * noise. Latents are then
normalised as ``scale_factor * (mean - shift_factor)``, the scale the transformer was trained on.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field

import torch
from einops import rearrange
from torch import Tensor, nn
from torch.nn import functional as F

from .layers import attention


@dataclass
class AutoEncoderParams:
    """Hyper-parameters; field names follow BFL's ``AutoEncoderParams`` (src/flux/modules/autoencoder.py)."""

    resolution: int = 256  # training resolution; kept for parity with BFL's config, no layer depends on it
    in_channels: int = 3
    ch: int = 128  # channels at full resolution; level i has ch * ch_mult[i]
    out_ch: int = 3
    ch_mult: list[int] = field(default_factory=lambda: [1, 2, 4, 4])
    num_res_blocks: int = 2  # per encoder level; the decoder has one more per level
    z_channels: int = 16
    scale_factor: float = 0.3611
    shift_factor: float = 0.1159

    def __post_init__(self) -> None:
        widths = [self.ch * m for m in self.ch_mult]
        if not widths or any(w % 32 for w in widths):
            raise ValueError(f"ch * ch_mult must give widths divisible by 32 (GroupNorm with 32 groups); "
                             f"ch={self.ch}, ch_mult={list(self.ch_mult)} give {widths}")

    @property
    def downsample(self) -> int:
        """Pixels per latent pixel along each side: one halving per level but the last."""
        return 2 ** (len(self.ch_mult) - 1)


# Official config: BFL src/flux/util.py `configs["flux-dev"].ae_params` (the same for flux-schnell).
AE_PRESETS: dict[str, AutoEncoderParams] = {
    "flux1-ae": AutoEncoderParams(),
    # Small random-weight config for unit tests: 4 latent channels, as the "flux-test" transformer packs (16 = 4 x 2x2).
    "flux1-ae-test": AutoEncoderParams(resolution=32, ch=32, ch_mult=[1, 2, 2], num_res_blocks=1, z_channels=4),
}


def _group_norm(channels: int) -> nn.GroupNorm:
    return nn.GroupNorm(32, channels, eps=1e-6)


class ResnetBlock(nn.Module):
    """GroupNorm -> swish -> conv3x3, twice, plus the input (through a 1x1 conv when the width changes)."""

    def __init__(self, in_channels: int, out_channels: int):
        super().__init__()
        self.norm1 = _group_norm(in_channels)
        self.conv1 = nn.Conv2d(in_channels, out_channels, 3, padding=1)
        self.norm2 = _group_norm(out_channels)
        self.conv2 = nn.Conv2d(out_channels, out_channels, 3, padding=1)
        self.nin_shortcut = nn.Conv2d(in_channels, out_channels, 1) if in_channels != out_channels else nn.Identity()

    def forward(self, x: Tensor) -> Tensor:
        h = self.conv1(F.silu(self.norm1(x)))
        h = self.conv2(F.silu(self.norm2(h)))
        return self.nin_shortcut(x) + h


class AttnBlock(nn.Module):
    """Single-head self-attention over the H*W positions, C channels per token; 1x1 convs project."""

    def __init__(self, channels: int):
        super().__init__()
        self.norm = _group_norm(channels)
        self.q = nn.Conv2d(channels, channels, 1)
        self.k = nn.Conv2d(channels, channels, 1)
        self.v = nn.Conv2d(channels, channels, 1)
        self.proj_out = nn.Conv2d(channels, channels, 1)

    def forward(self, x: Tensor) -> Tensor:
        h = self.norm(x)
        q, k, v = (rearrange(conv(h), "b c h w -> b 1 (h w) c") for conv in (self.q, self.k, self.v))
        out = rearrange(attention(q, k, v), "b (h w) c -> b c h w", h=x.shape[2])
        return x + self.proj_out(out)


class Downsample(nn.Module):
    """Halve H and W: pad one zero row/column at the bottom/right, then a 3x3 conv of stride 2 with no padding
    (torch convs pad symmetrically only)."""

    def __init__(self, channels: int):
        super().__init__()
        self.conv = nn.Conv2d(channels, channels, 3, stride=2)

    def forward(self, x: Tensor) -> Tensor:
        return self.conv(F.pad(x, (0, 1, 0, 1)))


class Upsample(nn.Module):
    """Double H and W: nearest-neighbour repeat, then a 3x3 conv."""

    def __init__(self, channels: int):
        super().__init__()
        self.conv = nn.Conv2d(channels, channels, 3, padding=1)

    def forward(self, x: Tensor) -> Tensor:
        return self.conv(F.interpolate(x, scale_factor=2.0, mode="nearest"))


class Level(nn.Module):
    """One resolution: resnet blocks, then optionally a resampler. ``attn`` is BFL's always-empty list (no keys)."""

    def __init__(self, widths: list[int], resample: str | None):
        super().__init__()
        self.block = nn.ModuleList(ResnetBlock(a, b) for a, b in zip(widths, widths[1:]))
        self.attn = nn.ModuleList()
        if resample == "down":
            self.downsample = Downsample(widths[-1])
        elif resample == "up":
            self.upsample = Upsample(widths[-1])

    def forward(self, x: Tensor) -> Tensor:
        for block in self.block:
            x = block(x)
        if hasattr(self, "downsample"):
            x = self.downsample(x)
        if hasattr(self, "upsample"):
            x = self.upsample(x)
        return x


class Middle(nn.Module):
    def __init__(self, channels: int):
        super().__init__()
        self.block_1 = ResnetBlock(channels, channels)
        self.attn_1 = AttnBlock(channels)
        self.block_2 = ResnetBlock(channels, channels)

    def forward(self, x: Tensor) -> Tensor:
        return self.block_2(self.attn_1(self.block_1(x)))


class Encoder(nn.Module):
    """[B, in_channels, H, W] -> [B, 2 * z_channels, H/f, W/f] (mean and log-variance), f = params.downsample."""

    def __init__(self, p: AutoEncoderParams):
        super().__init__()
        widths = [p.ch * m for m in p.ch_mult]
        self.conv_in = nn.Conv2d(p.in_channels, p.ch, 3, padding=1)
        self.down = nn.ModuleList()
        width = p.ch
        for i, out in enumerate(widths):
            last = i == len(widths) - 1
            self.down.append(Level([width] + [out] * p.num_res_blocks, None if last else "down"))
            width = out
        self.mid = Middle(width)
        self.norm_out = _group_norm(width)
        self.conv_out = nn.Conv2d(width, 2 * p.z_channels, 3, padding=1)

    def forward(self, x: Tensor) -> Tensor:
        h = self.conv_in(x)
        for level in self.down:
            h = level(h)
        return self.conv_out(F.silu(self.norm_out(self.mid(h))))


class Decoder(nn.Module):
    """[B, z_channels, h, w] -> [B, out_ch, h*f, w*f]. ``up`` is indexed by resolution like the encoder's
    ``down`` (up.0 is full resolution), so it runs from the last index to 0."""

    def __init__(self, p: AutoEncoderParams):
        super().__init__()
        widths = [p.ch * m for m in p.ch_mult]
        width = widths[-1]
        self.conv_in = nn.Conv2d(p.z_channels, width, 3, padding=1)
        self.mid = Middle(width)
        levels = []
        for i in reversed(range(len(widths))):
            levels.append(Level([width] + [widths[i]] * (p.num_res_blocks + 1), "up" if i > 0 else None))
            width = widths[i]
        self.up = nn.ModuleList(reversed(levels))
        self.norm_out = _group_norm(width)
        self.conv_out = nn.Conv2d(width, p.out_ch, 3, padding=1)

    def forward(self, z: Tensor) -> Tensor:
        h = self.mid(self.conv_in(z))
        for level in reversed(self.up):
            h = level(h)
        return self.conv_out(F.silu(self.norm_out(h)))


class AutoEncoder(nn.Module):
    def __init__(self, params: AutoEncoderParams):
        super().__init__()
        self.params = params
        self.encoder = Encoder(params)
        self.decoder = Decoder(params)

    def encode(self, x: Tensor) -> Tensor:
        """Images [B, in_channels, H, W] in [-1, 1] -> normalised latents [B, z_channels, H/f, W/f] (the mean)."""
        p = self.params
        f = p.downsample
        if x.ndim != 4 or x.shape[1] != p.in_channels or x.shape[2] % f or x.shape[3] % f:
            raise ValueError(f"images must be [B, {p.in_channels}, H, W] with H and W multiples of {f}, got "
                             f"{tuple(x.shape)}; pad or resize them (FLUX.1 pipelines use multiples of 16)")
        mean = self.encoder(x)[:, : p.z_channels]  # the other half is the log-variance
        return p.scale_factor * (mean - p.shift_factor)

    def decode(self, z: Tensor) -> Tensor:
        """Normalised latents [B, z_channels, h, w] -> images [B, out_ch, h*f, w*f], roughly in [-1, 1] (unclamped)."""
        p = self.params
        if z.ndim != 4 or z.shape[1] != p.z_channels:
            raise ValueError(f"latents must be [B, {p.z_channels}, h, w], got {tuple(z.shape)}")
        return self.decoder(z / p.scale_factor + p.shift_factor)

    def forward(self, x: Tensor) -> Tensor:
        return self.decode(self.encode(x))


def build_flux_ae(
    name: str = "flux1-ae",
    device: torch.device | str | None = None,
    dtype: torch.dtype | None = None,
    **overrides,
) -> AutoEncoder:
    """Build an autoencoder preset, optionally overriding ``AutoEncoderParams`` fields, like ``build_model``.

    ``device="meta"`` allocates nothing; follow with ``load_checkpoint(ae, "ae.safetensors")``.
    Weights are randomly initialised otherwise (PyTorch defaults), which is what tests want.
    """
    if name not in AE_PRESETS:
        raise KeyError(f"unknown autoencoder {name!r}; choose one of {', '.join(sorted(AE_PRESETS))}")
    base = AE_PRESETS[name]
    valid = {f.name for f in dataclasses.fields(base)}
    unknown = sorted(set(overrides) - valid)
    if unknown:
        raise TypeError(f"{name} has no config field(s) {unknown}; valid fields: {', '.join(sorted(valid))}")
    params = dataclasses.replace(base, **overrides)
    with torch.device(device or "cpu"):
        ae = AutoEncoder(params)
    if dtype is not None:
        ae = ae.to(dtype)
    return ae.eval()
