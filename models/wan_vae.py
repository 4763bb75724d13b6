"""Wan2.1 video VAE: a causal 3-D convolutional autoencoder with stride (4, 8, 8) in (time, height, width)
and 16 latent channels, written from the official Wan-Video/Wan2.1 ``wan/modules/vae.py``.

Module attribute names equal the keys of ``vae/diffusion_pytorch_model.safetensors`` in the
``Wan-AI/Wan2.1-T2V-{1.3B,14B}-Diffusers`` repos (diffusers' ``AutoencoderKLWan`` layout), so loading is
``load_state_dict(strict=True)`` with no mapping. The official ``Wan2.1_VAE.pth`` (a pickle, with Wan's own
key names) is converted once by ``weights/convert_wan_vae.py``.

    vae = build_wan_vae("wan2.1-vae", device="meta")
    load_checkpoint(vae, "path/to/Wan2.1-T2V-1.3B-Diffusers/vae")     # the folder or its .safetensors
    z = vae.encode(video)      # [B, 3, 4n+1, H, W] in [-1, 1] -> [B, 16, n+1, H/8, W/8], normalised
    video = vae.decode(z)      # and back, clamped to [-1, 1]

Causality: every convolution over time sees only the current and earlier frames (all its temporal padding
is in front). Frame 0 is encoded alone into latent frame 0 (so a still image is a 1-frame video), and each
later group of 4 frames into one more latent frame. That lets the official code run the encoder on chunks
(frame 0, then 4 frames at a time) and the decoder on one latent frame at a time: each causal layer keeps
the last input frames it saw in a feature cache and puts them in front of the next chunk. Here that cache
is a ``FeatureCache`` made fresh by every ``encode`` / ``decode`` call and passed down explicitly; no module
keeps state between calls. Chunked and whole-video runs compute the same thing (``latents_per_step``).
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field

import torch
import torch.nn.functional as F
from einops import rearrange
from torch import Tensor, nn

# Per-channel statistics of the latents, used to normalise them for the DiT: official WanVAE.__init__
# (wan/modules/vae.py), identical to latents_mean / latents_std in the Diffusers repos' vae/config.json.
WAN21_LATENTS_MEAN = (
    -0.7571, -0.7089, -0.9113, 0.1075, -0.1745, 0.9653, -0.1517, 1.5508,
    0.4134, -0.0715, 0.5517, -0.3632, -0.1922, -0.9497, 0.2503, -0.2921,
)
WAN21_LATENTS_STD = (
    2.8184, 1.4541, 2.3275, 2.6558, 1.2196, 1.7708, 2.6052, 2.0743,
    3.2687, 2.1526, 2.8652, 1.5579, 1.6382, 1.1253, 2.8251, 1.9160,
)


@dataclass
class WanVAEParams:
    """Hyper-parameters; field names follow the Diffusers ``vae/config.json`` (``AutoencoderKLWan``), which keeps
    the official ``WanVAE_`` argument names, ``temperal_downsample`` spelling included (``base_dim`` is ``dim``)."""

    base_dim: int = 96
    z_dim: int = 16
    dim_mult: tuple[int, ...] = (1, 2, 4, 4)
    num_res_blocks: int = 2
    attn_scales: tuple[float, ...] = ()
    temperal_downsample: tuple[bool, ...] = (False, True, True)
    dropout: float = 0.0
    latents_mean: tuple[float, ...] = WAN21_LATENTS_MEAN
    latents_std: tuple[float, ...] = WAN21_LATENTS_STD

    def __post_init__(self) -> None:
        for name in ("dim_mult", "attn_scales", "temperal_downsample", "latents_mean", "latents_std"):
            setattr(self, name, tuple(getattr(self, name)))  # config.json gives lists
        if len(self.temperal_downsample) != len(self.dim_mult) - 1:
            raise ValueError(f"temperal_downsample needs one flag per down-sampling stage, i.e. len(dim_mult) - 1 = "
                             f"{len(self.dim_mult) - 1}; got {list(self.temperal_downsample)}")
        for name in ("latents_mean", "latents_std"):
            if len(getattr(self, name)) != self.z_dim:
                raise ValueError(f"{name} needs z_dim = {self.z_dim} values (one per latent channel), "
                                 f"got {len(getattr(self, name))}")
        if self.attn_scales:
            # The Diffusers layout has no place for decoder attention at these scales; Wan2.1 uses none.
            raise ValueError(f"attn_scales must be empty (Wan2.1 has attention only in the middle blocks), "
                             f"got {list(self.attn_scales)}")

    @property
    def temporal_stride(self) -> int:
        return 2 ** sum(self.temperal_downsample)

    @property
    def spatial_stride(self) -> int:
        return 2 ** (len(self.dim_mult) - 1)


WAN_VAE_PRESETS: dict[str, WanVAEParams] = {
    # Official: Wan2.1 wan/modules/vae.py `_video_vae` (dim 96, dim_mult [1,2,4,4], 2 res blocks, no attn_scales,
    # temperal_downsample [False, True, True], dropout 0) with WanVAE(z_dim=16) and its mean / std; the same
    # Wan2.1_VAE.pth serves the 1.3B and the 14B model.
    "wan2.1-vae": WanVAEParams(),
    # Small random-weight config for unit tests: the same stages and strides, narrow channels.
    "wan-vae-test": WanVAEParams(
        base_dim=8, z_dim=4, latents_mean=(0.1, -0.2, 0.3, -0.4), latents_std=(1.5, 0.5, 2.0, 0.8)
    ),
}


@dataclass
class FeatureCache:
    """What the causal layers carry from one chunk of a video to the next, made fresh per encode / decode call.

    frames: each causal conv's last input frames (and each temporal down-sampler's last frame).
    started: the temporal up-samplers that have already passed frame 0.
    """

    frames: dict[nn.Module, Tensor] = field(default_factory=dict)
    started: set[nn.Module] = field(default_factory=set)


class CausalConv3d(nn.Conv3d):
    """Conv3d whose temporal padding (2 x ``padding[0]``) all goes in front, so output frame t sees input
    frames <= t. With a cache, the frames in front are the previous chunk's last inputs (zeros at the start),
    which makes a chunked run equal to a run over the whole video."""

    def __init__(self, in_dim: int, out_dim: int, kernel_size, stride=1, padding=0):
        pt, ph, pw = (padding,) * 3 if isinstance(padding, int) else padding
        super().__init__(in_dim, out_dim, kernel_size, stride=stride, padding=(0, ph, pw))
        self.past = 2 * pt  # input frames it needs from before the chunk

    def forward(self, x: Tensor, cache: FeatureCache | None = None) -> Tensor:
        if self.past:
            before = cache.frames.get(self) if cache is not None else None
            if before is None:  # the start of the video: zeros, like ordinary zero padding
                before = x.new_zeros(*x.shape[:2], self.past, *x.shape[3:])
            x = torch.cat([before, x], dim=2)
            if cache is not None:
                cache.frames[self] = x[:, :, -self.past:].clone()  # clone: do not keep the whole chunk alive
        return super().forward(x)


class RMSNorm(nn.Module):
    """Normalise each position's channel vector (dim 1) to norm sqrt(C), then scale per channel by ``gamma``.
    ``ndim`` is the rank of the input (5 for video, 4 for per-frame images)."""

    def __init__(self, dim: int, ndim: int = 5):
        super().__init__()
        self.scale = dim**0.5
        self.gamma = nn.Parameter(torch.ones(dim, *(1,) * (ndim - 2)))

    def forward(self, x: Tensor) -> Tensor:
        # In float32 for half-precision inputs (a sum of C squares overflows or loses bits in 16 bits).
        return F.normalize(x.float(), dim=1).to(x.dtype) * self.scale * self.gamma


def per_frame(layer: nn.Module, x: Tensor) -> Tensor:
    """Apply a 2-D layer to every frame of ``x [B, C, T, H, W]``."""
    y = layer(rearrange(x, "b c t h w -> (b t) c h w"))
    return rearrange(y, "(b t) c h w -> b c t h w", t=x.shape[2])


class ResidualBlock(nn.Module):
    def __init__(self, in_dim: int, out_dim: int, dropout: float):
        super().__init__()
        self.norm1 = RMSNorm(in_dim)
        self.conv1 = CausalConv3d(in_dim, out_dim, 3, padding=1)
        self.norm2 = RMSNorm(out_dim)
        self.dropout = nn.Dropout(dropout)
        self.conv2 = CausalConv3d(out_dim, out_dim, 3, padding=1)
        self.conv_shortcut = CausalConv3d(in_dim, out_dim, 1) if in_dim != out_dim else nn.Identity()

    def forward(self, x: Tensor, cache: FeatureCache) -> Tensor:
        h = self.conv1(F.silu(self.norm1(x)), cache)
        h = self.conv2(self.dropout(F.silu(self.norm2(h))), cache)
        return h + self.conv_shortcut(x)  # a 1x1x1 conv needs no past frames


class AttentionBlock(nn.Module):
    """Single-head self-attention among the pixels of each frame (frames do not attend to each other)."""

    def __init__(self, dim: int):
        super().__init__()
        self.norm = RMSNorm(dim, ndim=4)
        self.to_qkv = nn.Conv2d(dim, 3 * dim, 1)
        self.proj = nn.Conv2d(dim, dim, 1)

    def forward(self, x: Tensor) -> Tensor:
        _, _, t, h, w = x.shape
        qkv = self.to_qkv(self.norm(rearrange(x, "b c t h w -> (b t) c h w")))
        q, k, v = rearrange(qkv, "n (three c) h w -> three n 1 (h w) c", three=3)
        out = rearrange(F.scaled_dot_product_attention(q, k, v), "n 1 (h w) c -> n c h w", h=h, w=w)
        return x + rearrange(self.proj(out), "(b t) c h w -> b c t h w", t=t)


class MidBlock(nn.Module):
    """ResidualBlock, AttentionBlock, ResidualBlock at the lowest resolution."""

    def __init__(self, dim: int, dropout: float):
        super().__init__()
        self.attentions = nn.ModuleList([AttentionBlock(dim)])
        self.resnets = nn.ModuleList([ResidualBlock(dim, dim, dropout), ResidualBlock(dim, dim, dropout)])

    def forward(self, x: Tensor, cache: FeatureCache) -> Tensor:
        x = self.resnets[0](x, cache)
        return self.resnets[1](self.attentions[0](x), cache)


class Downsample(nn.Module):
    """Halve H and W (pad right and bottom by one, stride-2 3x3 conv). With ``temporal``, then halve the frames
    after frame 0: frame 0 passes through, and a stride-2 conv over time maps frames (0, 1, 2), (2, 3, 4), ...
    to one frame each, so 1 + 2n frames become 1 + n."""

    def __init__(self, dim: int, temporal: bool):
        super().__init__()
        self.resample = nn.Sequential(nn.ZeroPad2d((0, 1, 0, 1)), nn.Conv2d(dim, dim, 3, stride=2))
        self.time_conv = CausalConv3d(dim, dim, (3, 1, 1), stride=(2, 1, 1)) if temporal else None

    def forward(self, x: Tensor, cache: FeatureCache) -> Tensor:
        x = per_frame(self.resample, x)
        if self.time_conv is None:
            return x
        before = cache.frames.get(self)
        cache.frames[self] = x[:, :, -1:].clone()
        if before is None:  # the video's first chunk: frame 0 also passes through on its own
            head, windows = x[:, :, :1], x
        else:  # a later chunk (of even length): its windows start at the previous chunk's last frame
            head, windows = x[:, :, :0], torch.cat([before, x], dim=2)
        if windows.shape[2] < 3:  # only frame 0 so far
            return head
        return torch.cat([head, self.time_conv(windows)], dim=2)


class Nearest2x(nn.Module):
    """Copy each pixel into a 2x2 block: nearest(-exact) upsampling by 2, exact in any dtype."""

    def forward(self, x: Tensor) -> Tensor:
        return x.repeat_interleave(2, dim=-2).repeat_interleave(2, dim=-1)


class Upsample(nn.Module):
    """Double H and W (nearest, then a 3x3 conv to ``dim // 2`` channels). With ``temporal``, first double the
    frames after frame 0: a causal conv over frames 1, 2, ... gives 2 x ``dim`` channels per frame, whose two
    halves become two frames; frame 0 stays one frame (latent frame 0 decodes to video frame 0 alone)."""

    def __init__(self, dim: int, temporal: bool):
        super().__init__()
        self.resample = nn.Sequential(Nearest2x(), nn.Conv2d(dim, dim // 2, 3, padding=1))
        self.time_conv = CausalConv3d(dim, 2 * dim, (3, 1, 1), padding=(1, 0, 0)) if temporal else None

    def forward(self, x: Tensor, cache: FeatureCache) -> Tensor:
        if self.time_conv is not None:
            head = x[:, :, :0]
            if self not in cache.started:
                cache.started.add(self)
                head, x = x[:, :, :1], x[:, :, 1:]
            if x.shape[2]:
                # time_conv's zero padding sits before frame 1, not frame 0: official behaviour.
                x = rearrange(self.time_conv(x, cache), "b (two c) t h w -> b c (t two) h w", two=2)
            x = torch.cat([head, x], dim=2)
        return per_frame(self.resample, x)


class UpBlock(nn.Module):
    def __init__(self, in_dim: int, out_dim: int, num_res_blocks: int, dropout: float, upsample: str | None):
        super().__init__()
        dims = [in_dim] + [out_dim] * (num_res_blocks + 1)
        self.resnets = nn.ModuleList(ResidualBlock(a, b, dropout) for a, b in zip(dims, dims[1:]))
        ups = [] if upsample is None else [Upsample(out_dim, temporal=upsample == "3d")]
        self.upsamplers = nn.ModuleList(ups)

    def forward(self, x: Tensor, cache: FeatureCache) -> Tensor:
        for layer in (*self.resnets, *self.upsamplers):
            x = layer(x, cache)
        return x


class Encoder(nn.Module):
    """[B, 3, F, H, W] -> [B, 2 z_dim, latent frames, H / s, W / s]: the latent mean and log-variance."""

    def __init__(self, p: WanVAEParams):
        super().__init__()
        dims = [p.base_dim * m for m in (1, *p.dim_mult)]
        self.conv_in = CausalConv3d(3, dims[0], 3, padding=1)
        blocks: list[nn.Module] = []  # one flat list, as in the checkpoint: res blocks, then a down-sampler
        for stage, (in_dim, out_dim) in enumerate(zip(dims, dims[1:])):
            for i in range(p.num_res_blocks):
                blocks.append(ResidualBlock(in_dim if i == 0 else out_dim, out_dim, p.dropout))
            if stage < len(p.dim_mult) - 1:
                blocks.append(Downsample(out_dim, temporal=p.temperal_downsample[stage]))
        self.down_blocks = nn.ModuleList(blocks)
        self.mid_block = MidBlock(dims[-1], p.dropout)
        self.norm_out = RMSNorm(dims[-1])
        self.conv_out = CausalConv3d(dims[-1], 2 * p.z_dim, 3, padding=1)

    def forward(self, x: Tensor, cache: FeatureCache) -> Tensor:
        x = self.conv_in(x, cache)
        for block in self.down_blocks:
            x = block(x, cache)
        x = self.mid_block(x, cache)
        return self.conv_out(F.silu(self.norm_out(x)), cache)


class Decoder(nn.Module):
    """[B, z_dim, latent frames, h, w] -> [B, 3, F, h * s, w * s], unclamped."""

    def __init__(self, p: WanVAEParams):
        super().__init__()
        dims = [p.base_dim * m for m in (p.dim_mult[-1], *reversed(p.dim_mult))]
        temporal = tuple(reversed(p.temperal_downsample))
        self.conv_in = CausalConv3d(p.z_dim, dims[0], 3, padding=1)
        self.mid_block = MidBlock(dims[0], p.dropout)
        blocks, channels = [], dims[0]
        for stage, out_dim in enumerate(dims[1:]):
            last = stage == len(p.dim_mult) - 1
            upsample = None if last else "3d" if temporal[stage] else "2d"
            blocks.append(UpBlock(channels, out_dim, p.num_res_blocks, p.dropout, upsample))
            channels = out_dim if last else out_dim // 2  # each up-sampler halves the channels
        self.up_blocks = nn.ModuleList(blocks)
        self.norm_out = RMSNorm(dims[-1])
        self.conv_out = CausalConv3d(dims[-1], 3, 3, padding=1)

    def forward(self, x: Tensor, cache: FeatureCache) -> Tensor:
        x = self.mid_block(self.conv_in(x, cache), cache)
        for block in self.up_blocks:
            x = block(x, cache)
        return self.conv_out(F.silu(self.norm_out(x)), cache)


class WanVAE(nn.Module):
    def __init__(self, params: WanVAEParams):
        super().__init__()
        self.params = p = params
        self.encoder = Encoder(p)
        self.quant_conv = CausalConv3d(2 * p.z_dim, 2 * p.z_dim, 1)
        self.post_quant_conv = CausalConv3d(p.z_dim, p.z_dim, 1)
        self.decoder = Decoder(p)

    def latent_shape(self, frames: int, height: int, width: int) -> tuple[int, int, int, int]:
        """(z_dim, latent frames, h, w) of a video of ``frames`` x ``height`` x ``width`` pixels."""
        p = self.params
        return p.z_dim, 1 + (frames - 1) // p.temporal_stride, height // p.spatial_stride, width // p.spatial_stride

    def encode(self, video: Tensor, *, latents_per_step: int | None = 1) -> Tensor:
        """Video ``[B, 3, F, H, W]`` in [-1, 1], F = 4n + 1, H and W multiples of 8 -> normalised latents
        ``z = (mu - latents_mean) / latents_std`` of shape [B, z_dim, n + 1, H / 8, W / 8], float32.

        The latent mean mu is used, not a sample. ``latents_per_step``: latent frames encoded per step
        (1: frame 0, then 4 frames at a time, as the official code; None: the whole video at once, more
        memory, the same result up to float rounding).
        """
        p = self.params
        self._check_video(video)
        n = self.latent_shape(*video.shape[2:])[1]
        x, cache = video.to(self.quant_conv.weight.dtype), FeatureCache()
        # Latent frame i comes from video frames [start(i), start(i + 1)): frame 0 alone, then groups of 4.
        start = [0] + [1 + p.temporal_stride * i for i in range(n)]
        h = torch.cat([self.encoder(x[:, :, start[a] : start[b]], cache) for a, b in _steps(n, latents_per_step)], 2)
        mu = self.quant_conv(h)[:, : p.z_dim].float()  # [:z_dim] is the mean; the rest is the log-variance
        mean, std = self._stats(mu)
        return (mu - mean) * (1 / std)  # official: times the reciprocal (and decode divides by it)

    def decode(self, z: Tensor, *, latents_per_step: int | None = 1) -> Tensor:
        """Normalised latents ``[B, z_dim, n + 1, h, w]`` -> video ``[B, 3, 4n + 1, 8h, 8w]`` clamped to [-1, 1],
        float32. ``latents_per_step``: latent frames decoded per step (1, as the official code, keeps memory
        flat in the video length; None decodes all at once, the same result up to float rounding)."""
        p = self.params
        if z.ndim != 5 or z.shape[1] != p.z_dim:
            raise ValueError(f"latents must be [B, {p.z_dim}, frames, h, w], got {tuple(z.shape)}")
        mean, std = self._stats(z)
        mu = (z.float() / (1 / std) + mean).to(self.post_quant_conv.weight.dtype)
        x, cache = self.post_quant_conv(mu), FeatureCache()
        out = torch.cat([self.decoder(x[:, :, a:b], cache) for a, b in _steps(z.shape[2], latents_per_step)], 2)
        return out.float().clamp(-1.0, 1.0)

    def _stats(self, like: Tensor) -> tuple[Tensor, Tensor]:
        """latents_mean and latents_std as float32 [1, z_dim, 1, 1, 1] on ``like``'s device."""
        p = self.params
        mean, std = (torch.tensor(v, dtype=torch.float32, device=like.device) for v in (p.latents_mean, p.latents_std))
        return mean.view(1, -1, 1, 1, 1), std.view(1, -1, 1, 1, 1)

    def _check_video(self, video: Tensor) -> None:
        p = self.params
        if video.ndim != 5 or video.shape[1] != 3:
            raise ValueError(f"video must be [B, 3, F, H, W], got {tuple(video.shape)}")
        frames, height, width = video.shape[2:]
        t, s = p.temporal_stride, p.spatial_stride
        if frames < 1 or (frames - 1) % t:
            examples = ", ".join(str(t * i + 1) for i in range(4))
            raise ValueError(
                f"video has F = {frames} frames, but F must be {t}n + 1 ({examples}, ...): the causal encoder turns "
                f"frame 0 into latent frame 0 and each later group of {t} frames into one more (the official code "
                f"silently drops leftover frames). Trim or pad the video to {t}n + 1 frames."
            )
        if height % s or width % s:
            raise ValueError(f"video height and width ({height}, {width}) must be multiples of {s}; crop or resize it")


def _steps(n: int, per_step: int | None) -> list[tuple[int, int]]:
    """[(a, b), ...] covering range(n) in runs of ``per_step`` (None: one run)."""
    if per_step is not None and per_step < 1:
        raise ValueError(f"latents_per_step must be a positive integer or None, got {per_step}")
    size = n if per_step is None else per_step
    return [(a, min(a + size, n)) for a in range(0, n, size)]


def wan_vae_names() -> list[str]:
    return sorted(WAN_VAE_PRESETS)


def build_wan_vae(
    name: str = "wan2.1-vae",
    device: torch.device | str | None = None,
    dtype: torch.dtype | None = None,
    **overrides,
) -> WanVAE:
    """Build a preset, optionally overriding config fields named as in the Diffusers vae/config.json
    (base_dim, z_dim, dim_mult, num_res_blocks, temperal_downsample, latents_mean, latents_std, ...).

    ``device="meta"`` allocates nothing; follow with ``models.load_checkpoint(vae, folder_or_file)``.
    Weights are randomly initialised otherwise (PyTorch defaults), which is what tests want.
    """
    if name not in WAN_VAE_PRESETS:
        raise KeyError(f"unknown VAE {name!r}; choose one of {', '.join(wan_vae_names())}")
    base = WAN_VAE_PRESETS[name]
    valid = {f.name for f in dataclasses.fields(base)}
    unknown = sorted(set(overrides) - valid)
    if unknown:
        raise TypeError(f"{name} has no config field(s) {unknown}; valid fields: {', '.join(sorted(valid))}")
    params = dataclasses.replace(base, **overrides)
    with torch.device(device or "cpu"):
        vae = WanVAE(params)
    if dtype is not None:
        vae = vae.to(dtype)
    return vae.eval()
