"""Wan2.1 text-to-video transformer (1.3B and 14B), written from the official Wan-Video/Wan2.1
``wan/modules/model.py`` (T2V path only).

Module attribute names equal the keys of the official ``diffusion_pytorch_model*.safetensors``,
so loading is ``load_state_dict(strict=True)`` with no mapping.

Layout: a latent video ``x [B, 16, F, H, W]`` is cut into (1, 2, 2) patches by a Conv3d, giving
tokens in (frame, row, col) row-major order. Each block runs modulated self-attention with 3D RoPE,
cross-attention to the umT5 text (zero-padded to 512 tokens inside the model, unmasked), and a
modulated FFN. Modulation and the residual stream are float32, as in the official code, which
wraps them in ``autocast(float32)``. Attention is torch SDPA, so the model also runs on CPU.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Callable

import torch
from einops import rearrange
from torch import Tensor, nn

from .layers import (
    PASS_THROUGH, AttentionOp, Hooks, KVCache, apply_rope, attention, cached_kv, layer_norm, modulate, rms_norm,
    rope_angles, rope_rotation, timestep_embedding,
)


@dataclass
class WanParams:
    """Hyper-parameters; field names follow ``WanModel.__init__`` (wan/modules/model.py)."""

    patch_size: tuple[int, int, int] = (1, 2, 2)
    text_len: int = 512
    in_dim: int = 16
    dim: int = 1536
    ffn_dim: int = 8960
    freq_dim: int = 256
    text_dim: int = 4096
    out_dim: int = 16
    num_heads: int = 12
    num_layers: int = 30
    qk_norm: bool = True
    cross_attn_norm: bool = True
    eps: float = 1e-6
    theta: float = 10_000.0

    def __post_init__(self) -> None:
        self.patch_size = tuple(self.patch_size)
        if self.dim % self.num_heads:
            raise ValueError(f"dim {self.dim} is not divisible by num_heads {self.num_heads}")
        d = self.dim // self.num_heads
        if d % 2:
            raise ValueError(f"head dim {d} (dim / num_heads) must be even for RoPE; pick another dim or num_heads")

    @property
    def head_dim(self) -> int:
        return self.dim // self.num_heads

    @property
    def rope_axes_dim(self) -> list[int]:
        """Wan's RoPE split of the head dim d: frame d - 4*(d//6), height and width 2*(d//6) (44/42/42 at 128)."""
        d = self.head_dim
        return [d - 4 * (d // 6), 2 * (d // 6), 2 * (d // 6)]


# Official configs: Wan2.1 wan/configs/wan_t2v_1_3B.py and wan_t2v_14B.py (+ shared_config.py).
WAN_PRESETS: dict[str, WanParams] = {
    "wan2.1-1.3b": WanParams(dim=1536, ffn_dim=8960, num_heads=12, num_layers=30),
    "wan2.1-14b": WanParams(dim=5120, ffn_dim=13824, num_heads=40, num_layers=40),
    # Our trained tiny model: 4 frames of 64 px through SpaceToDepth(2) -> 12 x 4 x 32 x 32 latents -> 1024 tokens;
    # TinyTextEncoder context of width 64 padded to 16 tokens (not 512: cross-attention would dominate the cost).
    # RoPE theta 100, not 10000, for the same reason as tiny-flux (models/flux.py): on a 16-token side most of
    # theta 10000's frequencies hardly turn, and tokens barely tell their neighbours apart.
    "tiny-wan": WanParams(
        in_dim=12, out_dim=12, dim=128, ffn_dim=384, freq_dim=64, text_dim=64, text_len=16, num_heads=4, num_layers=4,
        theta=100.0,
    ),
    # Small random-weight config for unit tests (models.md §3.4 tiny parity config).
    "wan-test": WanParams(in_dim=4, out_dim=4, dim=96, ffn_dim=160, freq_dim=32, text_dim=24, num_heads=2, num_layers=2),
}


class WanRMSNorm(nn.Module):
    """RMSNorm over the whole ``dim`` (all heads at once), parameter ``weight``."""

    def __init__(self, dim: int, eps: float):
        super().__init__()
        self.eps = eps
        self.weight = nn.Parameter(torch.ones(dim))

    def forward(self, x: Tensor) -> Tensor:
        return rms_norm(x, self.weight, self.eps)


class Float32LayerNorm(nn.LayerNorm):
    """Affine LayerNorm computed in float32 whatever the weight dtype (official WanLayerNorm)."""

    def forward(self, x: Tensor) -> Tensor:
        return nn.functional.layer_norm(x.float(), self.normalized_shape, self.weight.float(), self.bias.float(), self.eps)


class WanAttention(nn.Module):
    """Projections shared by self- and cross-attention: q, k, v, o and QK RMSNorm."""

    def __init__(self, dim: int, num_heads: int, eps: float):
        super().__init__()
        self.num_heads = num_heads
        self.q, self.k, self.v, self.o = (nn.Linear(dim, dim) for _ in range(4))
        self.norm_q = WanRMSNorm(dim, eps)
        self.norm_k = WanRMSNorm(dim, eps)

    def heads(self, x: Tensor) -> Tensor:
        return rearrange(x, "b l (h d) -> b h l d", h=self.num_heads)


class WanSelfAttention(WanAttention):
    def key_value(self, x: Tensor, rope: Tensor) -> tuple[Tensor, Tensor]:
        """Keys (normed, rotated by ``rope``) and values of the rows x [B, n, dim]."""
        return apply_rope(self.heads(self.norm_k(self.k(x))), rope), self.heads(self.v(x))

    def forward(self, x: Tensor, rope: Tensor, layer: int, kv_cache: KVCache | None,
                rope_of: Callable[[Tensor], Tensor] | None = None, attention_op: AttentionOp = attention) -> Tensor:
        """``rope_of(index)`` gives the RoPE rotation of any tokens, for a cache that projects rows itself."""
        q = apply_rope(self.heads(self.norm_q(self.q(x))), rope)
        k, v = self.key_value(x, rope)
        k, v = cached_kv(kv_cache, layer, k, v, x, lambda rows, index: self.key_value(rows, rope_of(index)))
        return self.o(attention_op(q, k, v))


class WanCrossAttention(WanAttention):
    def forward(self, x: Tensor, context: Tensor) -> Tensor:
        q = self.heads(self.norm_q(self.q(x)))
        k = self.heads(self.norm_k(self.k(context)))
        return self.o(attention(q, k, self.heads(self.v(context))))


class WanAttentionBlock(nn.Module):
    def __init__(self, p: WanParams):
        super().__init__()
        self.eps = p.eps
        self.self_attn = WanSelfAttention(p.dim, p.num_heads, p.eps)
        # norm1/norm2 (before self-attn and FFN) have no parameters; norm3 is the affine cross-attn norm.
        self.norm3 = Float32LayerNorm(p.dim, eps=p.eps) if p.cross_attn_norm else nn.Identity()
        self.cross_attn = WanCrossAttention(p.dim, p.num_heads, p.eps)
        self.ffn = nn.Sequential(nn.Linear(p.dim, p.ffn_dim), nn.GELU(approximate="tanh"), nn.Linear(p.ffn_dim, p.dim))
        self.modulation = nn.Parameter(torch.randn(1, 6, p.dim) / p.dim**0.5)

    def modulated_input(self, x: Tensor, e0: Tensor) -> Tensor:
        """The input of self-attention after norm and modulation (TeaCache's signal)."""
        shift_sa, scale_sa = (self.modulation.float() + e0).chunk(6, dim=1)[:2]
        return modulate(layer_norm(x, self.eps), shift_sa, scale_sa)

    def forward(
        self, x: Tensor, e0: Tensor, context: Tensor, rope: Tensor, layer: int, kv_cache: KVCache | None,
        hooks: Hooks = PASS_THROUGH, rope_of: Callable[[Tensor], Tensor] | None = None,
        attention_op: AttentionOp = attention,
    ) -> Tensor:
        """x [B, L, dim] float32 residual stream; e0 [B, 6, dim] float32 time projection."""
        dtype = self.ffn[0].weight.dtype
        shift_sa, scale_sa, gate_sa, shift_ff, scale_ff, gate_ff = (self.modulation.float() + e0).chunk(6, dim=1)
        h = modulate(layer_norm(x, self.eps), shift_sa, scale_sa).to(dtype)
        self_attn = lambda: self.self_attn(h, rope, layer, kv_cache, rope_of, attention_op)  # noqa: E731
        x = x + hooks.attention(layer, "self", self_attn).float() * gate_sa
        x = x + hooks.attention(layer, "cross", lambda x=x: self.cross_attn(self.norm3(x).to(dtype), context)).float()
        h = modulate(layer_norm(x, self.eps), shift_ff, scale_ff).to(dtype)
        return x + hooks.mlp(layer, h, self.ffn).float() * gate_ff


class Head(nn.Module):
    def __init__(self, p: WanParams):
        super().__init__()
        self.eps = p.eps
        self.head = nn.Linear(p.dim, math.prod(p.patch_size) * p.out_dim)
        self.modulation = nn.Parameter(torch.randn(1, 2, p.dim) / p.dim**0.5)

    def forward(self, x: Tensor, e: Tensor) -> Tensor:
        """x [B, L, dim] float32; e [B, dim] float32 time embedding (before the 6-way projection)."""
        shift, scale = (self.modulation.float() + e[:, None]).chunk(2, dim=1)
        return self.head(modulate(layer_norm(x, self.eps), shift, scale).to(self.head.weight.dtype))


class WanModel(nn.Module):
    def __init__(self, params: WanParams):
        super().__init__()
        self.params = p = params
        self.patch_embedding = nn.Conv3d(p.in_dim, p.dim, kernel_size=p.patch_size, stride=p.patch_size)
        self.text_embedding = nn.Sequential(
            nn.Linear(p.text_dim, p.dim), nn.GELU(approximate="tanh"), nn.Linear(p.dim, p.dim)
        )
        self.time_embedding = nn.Sequential(nn.Linear(p.freq_dim, p.dim), nn.SiLU(), nn.Linear(p.dim, p.dim))
        self.time_projection = nn.Sequential(nn.SiLU(), nn.Linear(p.dim, p.dim * 6))
        self.blocks = nn.ModuleList(WanAttentionBlock(p) for _ in range(p.num_layers))
        self.head = Head(p)

    @property
    def num_attention_layers(self) -> int:
        return self.params.num_layers

    def grid_size(self, x: Tensor) -> tuple[int, int, int]:
        """Token grid (F', H', W') of a latent video [B, C, F, H, W]."""
        pt, ph, pw = self.params.patch_size
        _, _, f, h, w = x.shape
        if f % pt or h % ph or w % pw:
            raise ValueError(f"latent size (F, H, W) = {(f, h, w)} must be divisible by the patch {(pt, ph, pw)}")
        return f // pt, h // ph, w // pw

    def rope_table(self, grid: tuple[int, int, int], device: torch.device | str | None = None) -> Tensor:
        """The RoPE rotation (``layers.rope_rotation``) of every token of a grid (F', H', W'), [1, L, D/2] in grid
        order: what ``forward_tokens`` rotates by. It depends on the grid alone, so a caller running many forwards
        on one grid (a sampler) can build it once and pass it as ``forward_tokens(rope=...)``."""
        p = self.params
        return rope_rotation(rope_angles(grid_positions(grid, device=device), p.rope_axes_dim, p.theta))

    def forward(self, x: Tensor, t: Tensor, context: Tensor) -> Tensor:
        """Velocity for a latent video x [B, in_dim, F, H, W] at t [B] in [0, 1000] (1000 = noise),
        text context [B, L_txt <= text_len, text_dim]. Returns [B, out_dim, F, H, W] in float32."""
        return self.unpatchify(self.forward_tokens(x, t, context), self.grid_size(x))

    def forward_tokens(
        self,
        x: Tensor,
        t: Tensor,
        context: Tensor,
        *,
        token_index: Tensor | None = None,
        kv_cache: KVCache | None = None,
        hooks: Hooks | None = None,
        attention_op: AttentionOp = attention,
        rope: Tensor | None = None,
    ) -> Tensor:
        """Like ``forward`` but returns per-token outputs [B, n, prod(patch) * out_dim] (float32).

        token_index: optional 1-D indices of the video tokens to compute (default all, in grid order);
        kv_cache: optional hook that extends the self-attention keys/values of the computed tokens.
        hooks: optional ``models.layers.Hooks`` for block / attention / MLP caches (default: compute all).
        attention_op: the self-attention op (``models.layers.AttentionOp``; default ``attention``).
        rope: ``rope_table(grid)`` if the caller keeps it (built here when None).
        """
        hooks = PASS_THROUGH if hooks is None else hooks
        p, dtype = self.params, self.patch_embedding.weight.dtype
        if context.ndim != 3 or context.shape[-1] != p.text_dim:
            raise ValueError(f"context must be [B, L, {p.text_dim}], got {tuple(context.shape)}")
        if context.shape[1] > p.text_len:
            raise ValueError(f"context has {context.shape[1]} tokens; Wan takes at most text_len={p.text_len}")
        # Official WanModel zero-pads every prompt to text_len and attends to the padding unmasked.
        context = nn.functional.pad(context, (0, 0, 0, p.text_len - context.shape[1]))

        grid = self.grid_size(x)
        tokens = rearrange(self.patch_embedding(x.to(dtype)), "b c f h w -> b (f h w) c").float()
        all_rope = self.rope_table(grid, x.device) if rope is None else rope
        if all_rope.shape[-2] != tokens.shape[1]:
            raise ValueError(f"rope covers {all_rope.shape[-2]} positions, but the grid {grid} has {tokens.shape[1]} "
                             "tokens; build it with rope_table(grid)")
        rope = all_rope
        if token_index is not None:  # the computed tokens, and their positions' rotation
            tokens, rope = tokens[:, token_index], all_rope.index_select(-2, token_index)

        def rope_of(index: Tensor) -> Tensor:  # any tokens' rotation, for a cache that projects rows itself
            return all_rope.index_select(-2, index)

        e = _float32_mlp(self.time_embedding, timestep_embedding(t, p.freq_dim, compute_dtype=torch.float64))
        e0 = _float32_mlp(self.time_projection, e).unflatten(1, (6, p.dim))
        context = self.text_embedding(context.to(dtype))
        for i, block in enumerate(self.blocks):
            tokens = hooks.block(
                i, tokens,
                lambda x, block=block, i=i: block(
                    x, e0, context, rope, i, kv_cache, hooks, rope_of, attention_op),
                lambda x=tokens, block=block: block.modulated_input(x, e0),
            )
        return self.head(tokens, e).float()

    def patchify(self, x: Tensor) -> Tensor:
        """[B, C, F, H, W] -> [B, L, pt*ph*pw*C], the same per-token layout as the model output."""
        pt, ph, pw = self.params.patch_size
        return rearrange(x, "b c (f pf) (h ph) (w pw) -> b (f h w) (pf ph pw c)", pf=pt, ph=ph, pw=pw)

    def unpatchify(self, tokens: Tensor, grid: tuple[int, int, int]) -> Tensor:
        """[B, L, pt*ph*pw*C] -> [B, C, F, H, W]; each token holds (pt, ph, pw, c), channel last
        (Wan ``unpatchify``; unlike Flux packing, which is channel first)."""
        pt, ph, pw = self.params.patch_size
        f, h, w = grid
        return rearrange(tokens, "b (f h w) (pf ph pw c) -> b c (f pf) (h ph) (w pw)", f=f, h=h, w=w, pf=pt, ph=ph, pw=pw)


def grid_positions(grid: tuple[int, int, int], device: torch.device | str | None = None) -> Tensor:
    """(frame, row, col) of every token in grid order, [F'*H'*W', 3]; positions start at 0."""
    axes = [torch.arange(n, device=device) for n in grid]
    return torch.stack(torch.meshgrid(*axes, indexing="ij"), dim=-1).reshape(-1, 3)


def _float32_mlp(seq: nn.Sequential, x: Tensor) -> Tensor:
    """Run a Linear/activation stack in float32 whatever the weight dtype (official: autocast fp32)."""
    x = x.float()
    for layer in seq:
        if isinstance(layer, nn.Linear):
            bias = None if layer.bias is None else layer.bias.float()
            x = nn.functional.linear(x, layer.weight.float(), bias)
        else:
            x = layer(x)
    return x
