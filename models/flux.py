"""FLUX.1 transformer (dev and schnell), written from BFL's reference (black-forest-labs/flux,
src/flux/model.py and modules/layers.py).

Module attribute names equal the keys of the official ``flux1-dev.safetensors`` /
``flux1-schnell.safetensors``, so loading is ``load_state_dict(strict=True)`` with no mapping.

Layout: packed image latents ``img [B, L_img, 64]`` (16 latent channels x 2x2 patch) and T5
tokens ``txt [B, L_txt, 4096]`` are embedded separately, run through ``depth`` double-stream
blocks (separate weights per stream, joint attention over [txt, img]) and ``depth_single_blocks``
single-stream blocks over the concatenation, and the image part is projected back to 64 channels.
The time embedding (+ guidance for dev, + pooled CLIP ``y``) modulates every block (adaLN).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable

import torch
from einops import rearrange
from torch import Tensor, nn

from .layers import (
    PASS_THROUGH, AttentionOp, Hooks, KVCache, Projection, apply_rope, attention, cached_kv, layer_norm, modulate,
    rms_norm, rope_angles, rope_rotation, timestep_embedding,
)


@dataclass
class FluxParams:
    """Hyper-parameters; field names follow BFL's ``FluxParams`` (src/flux/model.py)."""

    in_channels: int = 64
    out_channels: int = 64
    vec_in_dim: int = 768
    context_in_dim: int = 4096
    hidden_size: int = 3072
    mlp_ratio: float = 4.0
    num_heads: int = 24
    depth: int = 19
    depth_single_blocks: int = 38
    axes_dim: list[int] = field(default_factory=lambda: [16, 56, 56])
    theta: int = 10_000
    qkv_bias: bool = True
    guidance_embed: bool = True

    def __post_init__(self) -> None:
        if self.hidden_size % self.num_heads:
            raise ValueError(f"hidden_size {self.hidden_size} is not divisible by num_heads {self.num_heads}")
        head_dim = self.hidden_size // self.num_heads
        if sum(self.axes_dim) != head_dim:
            raise ValueError(
                f"axes_dim {list(self.axes_dim)} sums to {sum(self.axes_dim)} but the head dim is {head_dim} "
                f"(hidden_size / num_heads); choose axes_dim that sum to {head_dim}"
            )
        if any(d % 2 for d in self.axes_dim):
            raise ValueError(f"every entry of axes_dim must be even (RoPE rotates pairs), got {list(self.axes_dim)}")


# Official configs: BFL src/flux/util.py `configs["flux-dev"]` and `configs["flux-schnell"]`.
FLUX_PRESETS: dict[str, FluxParams] = {
    "flux-dev": FluxParams(guidance_embed=True),
    "flux-schnell": FluxParams(guidance_embed=False),
    # Our trained tiny model: 64 px images through SpaceToDepth(2) -> 12 x 32 x 32 latents -> 256 tokens of 48
    # channels; TinyTextEncoder features of width 64; no distilled guidance (classifier-free guidance instead).
    # RoPE theta 100, not FLUX.1's 10000: with 12 dims (6 frequencies) per spatial axis and a 16-token side,
    # theta 10000 gives wavelengths of 6, 29, 135, 628, 2900 and 13600 tokens, so four of the six pairs barely turn
    # across the image and carry almost no position. Theta 100 spreads the wavelengths over 6 to 292 tokens. (On its
    # own it did not make the samples take shape; large, centred objects in jano_ref/lab/tiny/data.py did.)
    "tiny-flux": FluxParams(
        in_channels=48, out_channels=48, vec_in_dim=64, context_in_dim=64, hidden_size=128, mlp_ratio=4.0,
        num_heads=4, depth=2, depth_single_blocks=4, axes_dim=[8, 12, 12], theta=100, guidance_embed=False,
    ),
    # Small random-weight config for unit tests (models.md §3.2 tiny parity config).
    "flux-test": FluxParams(
        in_channels=16, out_channels=16, vec_in_dim=24, context_in_dim=40, hidden_size=64, mlp_ratio=4.0,
        num_heads=2, depth=2, depth_single_blocks=3, axes_dim=[8, 12, 12], guidance_embed=True,
    ),
}


class MLPEmbedder(nn.Module):
    """Linear -> SiLU -> Linear (time, guidance and pooled-text embedders)."""

    def __init__(self, in_dim: int, hidden_dim: int):
        super().__init__()
        self.in_layer = nn.Linear(in_dim, hidden_dim)
        self.silu = nn.SiLU()
        self.out_layer = nn.Linear(hidden_dim, hidden_dim)

    def forward(self, x: Tensor) -> Tensor:
        return self.out_layer(self.silu(self.in_layer(x)))


class RMSNorm(nn.Module):
    """QK RMSNorm over the head dim; the parameter is called ``scale`` in the checkpoint."""

    def __init__(self, dim: int):
        super().__init__()
        self.scale = nn.Parameter(torch.ones(dim))

    def forward(self, x: Tensor) -> Tensor:
        return rms_norm(x, self.scale)


class QKNorm(nn.Module):
    def __init__(self, dim: int):
        super().__init__()
        self.query_norm = RMSNorm(dim)
        self.key_norm = RMSNorm(dim)


class SelfAttention(nn.Module):
    """Holds one stream's qkv / QK-norm / output projection; attention itself is joint."""

    def __init__(self, dim: int, num_heads: int, qkv_bias: bool):
        super().__init__()
        self.num_heads = num_heads
        self.qkv = nn.Linear(dim, dim * 3, bias=qkv_bias)
        self.norm = QKNorm(dim // num_heads)
        self.proj = nn.Linear(dim, dim)

    def project(self, x: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        """x [B, L, dim] -> normed q, k and v, each [B, H, L, D]."""
        q, k, v = rearrange(self.qkv(x), "b l (three h d) -> three b h l d", three=3, h=self.num_heads)
        return self.norm.query_norm(q), self.norm.key_norm(k), v

    def key_value(self, x: Tensor, rope: Tensor) -> tuple[Tensor, Tensor]:
        """Keys (normed, rotated by ``rope``) and values of the rows x [B, n, dim], without their queries."""
        d = self.qkv.in_features
        bias = None if self.qkv.bias is None else self.qkv.bias[d:]
        k, v = rearrange(nn.functional.linear(x, self.qkv.weight[d:], bias), "b l (two h d) -> two b h l d", two=2,
                         h=self.num_heads)
        return apply_rope(self.norm.key_norm(k), rope), v


@dataclass
class ModulationOut:
    shift: Tensor
    scale: Tensor
    gate: Tensor


class Modulation(nn.Module):
    """adaLN parameters from the conditioning vector: 6 chunks (double) or 3 chunks (single),
    each in the order shift, scale, gate."""

    def __init__(self, dim: int, double: bool):
        super().__init__()
        self.multiplier = 6 if double else 3
        self.lin = nn.Linear(dim, self.multiplier * dim)

    def forward(self, vec: Tensor) -> list[ModulationOut]:
        chunks = self.lin(nn.functional.silu(vec))[:, None, :].chunk(self.multiplier, dim=-1)
        return [ModulationOut(*chunks[i : i + 3]) for i in range(0, self.multiplier, 3)]


def _mlp(dim: int, hidden: int) -> nn.Sequential:
    """Linear -> GELU(tanh) -> Linear; keys .0 and .2 as in the checkpoint."""
    return nn.Sequential(nn.Linear(dim, hidden), nn.GELU(approximate="tanh"), nn.Linear(hidden, dim))


def joint_attention(
    q: Tensor, k: Tensor, v: Tensor, rope: Tensor, n_txt: int, layer: int, kv_cache: KVCache | None,
    img_rows: Tensor | None = None, project: Projection | None = None, attention_op: AttentionOp = attention,
) -> Tensor:
    """RoPE, then attention over [txt, img] where the image keys may be extended from a cache.

    q, k, v: [B, H, n_txt + n_img, D] for the tokens computed this step; rope their ``rope_rotation``;
    img_rows and project: the image rows' attention input and their projection (``layers.cached_kv``).
    """
    q, k = apply_rope(q, rope), apply_rope(k, rope)
    if kv_cache is not None:
        k_img, v_img = cached_kv(kv_cache, layer, k[:, :, n_txt:], v[:, :, n_txt:], img_rows, project)
        k = torch.cat([k[:, :, :n_txt], k_img], dim=2)
        v = torch.cat([v[:, :, :n_txt], v_img], dim=2)
    return attention_op(q, k, v)


class DoubleStreamBlock(nn.Module):
    def __init__(self, hidden_size: int, num_heads: int, mlp_ratio: float, qkv_bias: bool):
        super().__init__()
        mlp_hidden = int(hidden_size * mlp_ratio)
        self.img_mod = Modulation(hidden_size, double=True)
        self.img_attn = SelfAttention(hidden_size, num_heads, qkv_bias)
        self.img_mlp = _mlp(hidden_size, mlp_hidden)
        self.txt_mod = Modulation(hidden_size, double=True)
        self.txt_attn = SelfAttention(hidden_size, num_heads, qkv_bias)
        self.txt_mlp = _mlp(hidden_size, mlp_hidden)

    def modulated_input(self, x: Tensor, vec: Tensor, n_txt: int) -> Tensor:
        """The image rows as the attention branch sees them (TeaCache's signal)."""
        img_m1, _ = self.img_mod(vec)
        return modulate(layer_norm(x[:, n_txt:]), img_m1.shift, img_m1.scale)

    def forward(
        self, x: Tensor, vec: Tensor, rope: Tensor, n_txt: int, layer: int, kv_cache: KVCache | None,
        hooks: Hooks = PASS_THROUGH, rope_of: Callable[[Tensor], Tensor] | None = None,
        attention_op: AttentionOp = attention,
    ) -> Tensor:
        """x [B, n_txt + n_img, dim]: the text stream then the image stream, each with its own weights.
        ``rope_of(index)`` gives any image tokens' RoPE rotation, for a cache that projects rows itself."""
        txt, img = x[:, :n_txt], x[:, n_txt:]
        img_m1, img_m2 = self.img_mod(vec)
        txt_m1, txt_m2 = self.txt_mod(vec)

        def joint() -> Tensor:
            img_in = modulate(layer_norm(img), img_m1.shift, img_m1.scale)
            img_q, img_k, img_v = self.img_attn.project(img_in)
            txt_q, txt_k, txt_v = self.txt_attn.project(modulate(layer_norm(txt), txt_m1.shift, txt_m1.scale))
            return joint_attention(
                torch.cat([txt_q, img_q], dim=2),
                torch.cat([txt_k, img_k], dim=2),
                torch.cat([txt_v, img_v], dim=2),
                rope, n_txt, layer, kv_cache,
                img_in, lambda rows, index: self.img_attn.key_value(rows, rope_of(index)), attention_op,
            )

        attn = hooks.attention(layer, "self", joint)
        txt_attn, img_attn = attn[:, :n_txt], attn[:, n_txt:]

        img = img + img_m1.gate * self.img_attn.proj(img_attn)
        img = img + img_m2.gate * hooks.mlp(layer, modulate(layer_norm(img), img_m2.shift, img_m2.scale), self.img_mlp)
        txt = txt + txt_m1.gate * self.txt_attn.proj(txt_attn)
        txt = txt + txt_m2.gate * self.txt_mlp(modulate(layer_norm(txt), txt_m2.shift, txt_m2.scale))
        return torch.cat([txt, img], dim=1)


class SingleStreamBlock(nn.Module):
    """Parallel attention + MLP over [txt, img]; linear1 makes q, k, v and the MLP input at once."""

    def __init__(self, hidden_size: int, num_heads: int, mlp_ratio: float):
        super().__init__()
        self.hidden_size, self.num_heads = hidden_size, num_heads
        self.mlp_hidden = int(hidden_size * mlp_ratio)
        self.linear1 = nn.Linear(hidden_size, hidden_size * 3 + self.mlp_hidden)
        self.linear2 = nn.Linear(hidden_size + self.mlp_hidden, hidden_size)
        self.norm = QKNorm(hidden_size // num_heads)
        self.modulation = Modulation(hidden_size, double=False)

    def modulated_input(self, x: Tensor, vec: Tensor, n_txt: int) -> Tensor:
        (mod,) = self.modulation(vec)
        return modulate(layer_norm(x), mod.shift, mod.scale)

    def forward(
        self, x: Tensor, vec: Tensor, rope: Tensor, n_txt: int, layer: int, kv_cache: KVCache | None,
        hooks: Hooks = PASS_THROUGH, rope_of: Callable[[Tensor], Tensor] | None = None,
        attention_op: AttentionOp = attention,
    ) -> Tensor:
        (mod,) = self.modulation(vec)
        h = modulate(layer_norm(x), mod.shift, mod.scale)
        # linear1 holds the q, k, v and MLP-input weights side by side; applying its two row blocks separately
        # lets a cache skip either part.
        d = 3 * self.hidden_size
        w, b = self.linear1.weight, self.linear1.bias

        def attend() -> Tensor:
            q, k, v = rearrange(nn.functional.linear(h, w[:d], b[:d]), "b l (three h d) -> three b h l d",
                                three=3, h=self.num_heads)
            q, k = self.norm.query_norm(q), self.norm.key_norm(k)
            return joint_attention(q, k, v, rope, n_txt, layer, kv_cache, h[:, n_txt:], key_value,
                                   attention_op)

        def key_value(rows: Tensor, index: Tensor) -> tuple[Tensor, Tensor]:  # K/V of any image rows of h
            k, v = rearrange(nn.functional.linear(rows, w[self.hidden_size:d], b[self.hidden_size:d]),
                             "b l (two h d) -> two b h l d", two=2, h=self.num_heads)
            return apply_rope(self.norm.key_norm(k), rope_of(index)), v

        def mlp(rows: Tensor) -> Tensor:
            return nn.functional.gelu(nn.functional.linear(rows, w[d:], b[d:]), approximate="tanh")

        attn = hooks.attention(layer, "self", attend)
        return x + mod.gate * self.linear2(torch.cat([attn, hooks.mlp(layer, h, mlp)], dim=-1))


class LastLayer(nn.Module):
    def __init__(self, hidden_size: int, out_channels: int):
        super().__init__()
        self.linear = nn.Linear(hidden_size, out_channels)
        self.adaLN_modulation = nn.Sequential(nn.SiLU(), nn.Linear(hidden_size, 2 * hidden_size))

    def forward(self, x: Tensor, vec: Tensor) -> Tensor:
        shift, scale = self.adaLN_modulation(vec)[:, None, :].chunk(2, dim=-1)  # shift first (BFL order)
        return self.linear(modulate(layer_norm(x), shift, scale))


class Flux(nn.Module):
    def __init__(self, params: FluxParams):
        super().__init__()
        self.params = params
        p = params
        self.img_in = nn.Linear(p.in_channels, p.hidden_size)
        self.time_in = MLPEmbedder(256, p.hidden_size)
        self.vector_in = MLPEmbedder(p.vec_in_dim, p.hidden_size)
        self.guidance_in = MLPEmbedder(256, p.hidden_size) if p.guidance_embed else nn.Identity()
        self.txt_in = nn.Linear(p.context_in_dim, p.hidden_size)
        self.double_blocks = nn.ModuleList(
            DoubleStreamBlock(p.hidden_size, p.num_heads, p.mlp_ratio, p.qkv_bias) for _ in range(p.depth)
        )
        self.single_blocks = nn.ModuleList(
            SingleStreamBlock(p.hidden_size, p.num_heads, p.mlp_ratio) for _ in range(p.depth_single_blocks)
        )
        self.final_layer = LastLayer(p.hidden_size, p.out_channels)

    @property
    def num_attention_layers(self) -> int:
        """Self-attention layers seen by a KVCache: double blocks 0..depth-1, then single blocks."""
        return self.params.depth + self.params.depth_single_blocks

    def rope_table(self, txt_ids: Tensor, img_ids: Tensor) -> Tensor:
        """The RoPE rotation (``layers.rope_rotation``) of every text and image position, [B or 1, 1, L_txt + L_img,
        D/2]: what ``forward`` rotates by (ids as there). It depends on the positions alone, so a caller running many
        forwards over the same positions (a sampler) can build it once and pass it as ``forward(rope=...)``."""
        if txt_ids.ndim != img_ids.ndim:
            txt_ids, img_ids = _batched_ids(txt_ids, 1), _batched_ids(img_ids, 1)
        ids = torch.cat([txt_ids, img_ids], dim=-2)
        return rope_rotation(rope_angles(ids, self.params.axes_dim, self.params.theta))

    def forward(
        self,
        img: Tensor,
        img_ids: Tensor,
        txt: Tensor,
        txt_ids: Tensor,
        timesteps: Tensor,
        y: Tensor,
        guidance: Tensor | None = None,
        *,
        token_index: Tensor | None = None,
        kv_cache: KVCache | None = None,
        hooks: Hooks | None = None,
        attention_op: AttentionOp = attention,
        rope: Tensor | None = None,
    ) -> Tensor:
        """Velocity for packed latents.

        img [B, L_img, in_channels], img_ids [B, L_img, 3] or [L_img, 3], txt [B, L_txt, context_in_dim],
        txt_ids likewise, timesteps [B] in [0, 1] (1 = noise), y [B, vec_in_dim], guidance [B] (dev only).
        token_index: optional 1-D indices of the image tokens to compute (all text tokens always are);
        the output then has one row per index. kv_cache: optional hook that extends image keys/values.
        hooks: optional ``models.layers.Hooks`` for block / attention / MLP caches (default: compute all).
        attention_op: the joint self-attention op (``models.layers.AttentionOp``; default ``attention``).
        rope: ``rope_table(txt_ids, img_ids)`` if the caller keeps it (built here from the ids when None).
        Returns [B, L_img or len(token_index), out_channels].
        """
        if img.ndim != 3 or txt.ndim != 3:
            raise ValueError(f"img and txt must be [B, L, C]; got {tuple(img.shape)} and {tuple(txt.shape)}")
        hooks = PASS_THROUGH if hooks is None else hooks
        n_txt = txt.shape[1]
        if rope is None:
            rope = self.rope_table(_batched_ids(txt_ids, txt.shape[0]), _batched_ids(img_ids, img.shape[0]))
        if rope.shape[-2] != n_txt + img.shape[1]:
            raise ValueError(f"rope covers {rope.shape[-2]} positions, but there are {n_txt} text and {img.shape[1]} "
                             "image tokens; build it with rope_table(txt_ids, img_ids) for these ids")
        img_rope = rope[..., n_txt:, :]
        if token_index is not None:  # the computed image tokens, and their positions' rotation
            img = img[:, token_index]
            rope = torch.cat([rope[..., :n_txt, :], img_rope.index_select(-2, token_index)], dim=-2)

        vec = self.time_in(timestep_embedding(timesteps, 256, time_factor=1000.0).to(img.dtype))
        if self.params.guidance_embed:
            if guidance is None:
                raise ValueError("this Flux model was built with guidance_embed=True (flux-dev): pass guidance=[B] "
                                 "(e.g. torch.full((B,), 3.5)), or build flux-schnell for an undistilled-guidance model")
            vec = vec + self.guidance_in(timestep_embedding(guidance, 256, time_factor=1000.0).to(img.dtype))
        vec = vec + self.vector_in(y)

        x = torch.cat([self.txt_in(txt), self.img_in(img)], dim=1)

        def rope_of(index: Tensor) -> Tensor:  # any image tokens' rotation, for a cache that projects rows itself
            return img_rope.index_select(-2, index)

        for i, block in enumerate([*self.double_blocks, *self.single_blocks]):
            x = hooks.block(
                i, x,
                lambda x, block=block, i=i: block(
                    x, vec, rope, n_txt, i, kv_cache, hooks, rope_of, attention_op),
                lambda x=x, block=block: block.modulated_input(x, vec, n_txt),
            )
        return self.final_layer(x[:, n_txt:], vec)


def _batched_ids(ids: Tensor, batch: int) -> Tensor:
    if ids.ndim == 2:
        return ids[None].expand(batch, -1, -1)
    if ids.ndim != 3 or ids.shape[-1] != 3:
        raise ValueError(f"position ids must be [L, 3] or [B, L, 3], got {tuple(ids.shape)}")
    return ids


# ---- latent packing and position ids (BFL sampling.prepare / unpack) -------------------------


def pack(latent: Tensor) -> Tensor:
    """[B, C, H, W] -> [B, (H/2)(W/2), 4C]; channel index c*4 + py*2 + px, tokens row-major."""
    return rearrange(latent, "b c (h ph) (w pw) -> b (h w) (c ph pw)", ph=2, pw=2)


def unpack(tokens: Tensor, height: int, width: int) -> Tensor:
    """Inverse of ``pack``; height and width are the latent (not token) sizes."""
    return rearrange(tokens, "b (h w) (c ph pw) -> b c (h ph) (w pw)", h=height // 2, w=width // 2, ph=2, pw=2)


def image_ids(height: int, width: int, device: torch.device | str | None = None) -> Tensor:
    """Position ids (0, row, col) of the packed tokens of a [*, height, width] latent; [L, 3]."""
    rows = torch.arange(height // 2, device=device)
    cols = torch.arange(width // 2, device=device)
    grid = torch.stack(torch.meshgrid(rows, cols, indexing="ij"), dim=-1).reshape(-1, 2)
    return torch.cat([torch.zeros_like(grid[:, :1]), grid], dim=-1).float()


def text_ids(length: int, device: torch.device | str | None = None) -> Tensor:
    """Text tokens sit at position (0, 0, 0): RoPE leaves them unrotated."""
    return torch.zeros(length, 3, device=device)


def latent_size(height_px: int, width_px: int) -> tuple[int, int]:
    """Latent size for an image: the AE downsamples 8x and packing needs even sizes (BFL get_noise)."""
    return 2 * -(-height_px // 16), 2 * -(-width_px // 16)
