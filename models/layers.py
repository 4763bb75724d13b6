"""Pieces shared by the Flux and Wan transformers: RoPE, RMSNorm, timestep embedding, attention,
and the optional key/value cache hook that lets an accelerator compute only some tokens.

Both models rotate *adjacent* channel pairs (x[2j], x[2j+1]) by an angle pos * theta^(-2j/d_axis),
one group of pairs per position axis; they differ only in the axis split and where positions come
from. Angles are computed in float64 and the rotation in float32, then cast back (BFL flux math.py
computes in float32 from float64 frequencies; Wan rope_apply in complex float64). A forward turns its
angles into a rotation once (``rope_rotation``) and every attention layer applies it (``apply_rope``).
"""

from __future__ import annotations

import math
from typing import Callable, Protocol, Sequence

import torch
import torch.nn.functional as F
from torch import Tensor


class KVCache(Protocol):
    """The one hook a model offers to accelerators ("compute these tokens, use this cache").

    Every self-attention layer calls ``extend_kv(layer, k, v)`` with the keys and values of the
    tokens it is computing this step, *after* QK-norm and RoPE, shaped ``[B, heads, n, head_dim]``.
    It returns the keys and values to attend to: the fresh ones, possibly followed by cached
    entries for tokens that are not computed. Attention is invariant to key order once RoPE is
    applied, so appended keys need no positions. ``layer`` is a unique int per self-attention.
    For Flux only image tokens pass through the hook; text tokens are always computed.

    A cache may store the attention input of rows instead of their K/V (one tensor instead of two) and
    recompute their K/V when it needs them. It then also offers ``extend_kv_rows(layer, k, v, rows, project)``,
    which the models call instead (``cached_kv``): ``rows`` [B, n, dim] is the attention input of the
    computed tokens, and ``project(rows, index)`` turns the attention input of the tokens ``index``
    (positions in the full token sequence, like ``token_index``) into their keys and values, after QK-norm
    and RoPE at those tokens' positions.
    """

    def extend_kv(self, layer: int, k: Tensor, v: Tensor) -> tuple[Tensor, Tensor]: ...


Projection = Callable[[Tensor, Tensor], tuple[Tensor, Tensor]]


def cached_kv(kv_cache: KVCache | None, layer: int, k: Tensor, v: Tensor, rows: Tensor, project: Projection
              ) -> tuple[Tensor, Tensor]:
    """The keys and values a self-attention attends to: its own, extended by the optional cache (see ``KVCache``)."""
    if kv_cache is None:
        return k, v
    from_rows = getattr(kv_cache, "extend_kv_rows", None)
    if from_rows is None:
        return kv_cache.extend_kv(layer, k, v)
    return from_rows(layer, k, v, rows, project)


class Hooks(Protocol):
    """The optional hook for step- and feature-level caches (TeaCache, first-block cache, PAB, ToCa).

    Each method gets a function that computes the real thing and returns what the model should use
    instead; ``PassThrough`` (the default) just calls it. ``layer`` counts blocks in execution order.

    - ``block(layer, x, run, modulated)``: x [B, L, dim] is the block's input stream (Flux: text rows
      then image rows; Wan: video tokens); ``run(x)`` is the block; ``modulated()`` is the adaLN-modulated,
      normalised input of its first branch (Flux: image rows only). Return the block's output.
    - ``attention(layer, kind, run)``: kind "self" or "cross"; ``run()`` gives the attention output the
      block consumes (Flux: joint attention before the per-stream projections; Wan: the module output).
    - ``mlp(layer, h, run)``: h [B, L, dim] is the MLP's modulated input; ``run(rows)`` maps any subset of
      its rows to their MLP output (Flux single blocks: the GELU activations that linear2 reads).
    """

    def block(self, layer: int, x: Tensor, run: Callable[[Tensor], Tensor], modulated: Callable[[], Tensor]
              ) -> Tensor: ...

    def attention(self, layer: int, kind: str, run: Callable[[], Tensor]) -> Tensor: ...

    def mlp(self, layer: int, h: Tensor, run: Callable[[Tensor], Tensor]) -> Tensor: ...


class PassThrough:
    """``Hooks`` that compute everything: the model without any cache."""

    def block(self, layer: int, x: Tensor, run: Callable[[Tensor], Tensor], modulated: Callable[[], Tensor]
              ) -> Tensor:
        return run(x)

    def attention(self, layer: int, kind: str, run: Callable[[], Tensor]) -> Tensor:
        return run()

    def mlp(self, layer: int, h: Tensor, run: Callable[[Tensor], Tensor]) -> Tensor:
        return run(h)


PASS_THROUGH = PassThrough()


def rms_norm(x: Tensor, weight: Tensor, eps: float = 1e-6) -> Tensor:
    """RMSNorm in float32, cast back to x's dtype, then scaled (BFL RMSNorm and WanRMSNorm agree)."""
    x32 = x.float()
    normed = x32 * torch.rsqrt(x32.pow(2).mean(dim=-1, keepdim=True) + eps)
    return normed.to(x.dtype) * weight


def layer_norm(x: Tensor, eps: float = 1e-6) -> Tensor:
    """Parameter-free LayerNorm (elementwise_affine=False) used before every modulation."""
    return F.layer_norm(x, x.shape[-1:], eps=eps)


def modulate(x: Tensor, shift: Tensor, scale: Tensor) -> Tensor:
    """adaLN modulation (1 + scale) * x + shift, as in DiT and both official models."""
    return x * (1 + scale) + shift


def timestep_embedding(
    t: Tensor,
    dim: int,
    *,
    time_factor: float = 1.0,
    max_period: float = 10000.0,
    compute_dtype: torch.dtype = torch.float32,
) -> Tensor:
    """Sinusoidal embedding [cos(t f), sin(t f)] (cos first), f_j = max_period^(-j/half).

    Flux: time_factor 1000 on t in [0, 1], float32 math (BFL layers.timestep_embedding).
    Wan: time_factor 1 on t in [0, 1000], float64 math (Wan sinusoidal_embedding_1d).
    The precision matters: at t*1000 ~ 900 a float32 angle is off by ~1e-4 rad. Returns float32.
    """
    if compute_dtype == torch.float64 and t.device.type == "mps":
        compute_dtype = torch.float32
    half = dim // 2
    freqs = torch.exp(-math.log(max_period) * torch.arange(half, dtype=compute_dtype, device=t.device) / half)
    args = (time_factor * t.to(compute_dtype))[:, None] * freqs[None]
    emb = torch.cat([torch.cos(args), torch.sin(args)], dim=-1)
    if dim % 2:
        emb = torch.cat([emb, torch.zeros_like(emb[:, :1])], dim=-1)
    return emb.float()


def rope_angles(positions: Tensor, axes_dim: Sequence[int], theta: float = 10000.0) -> Tensor:
    """Rotation angles for multi-axis RoPE.

    positions: [..., n_axes] (integer or float positions per axis).
    Returns [..., sum(axes_dim) // 2] float64 angles; pair j of axis i turns by pos_i * theta^(-2j/d_i).
    """
    if positions.shape[-1] != len(axes_dim):
        raise ValueError(f"positions have {positions.shape[-1]} axes but axes_dim has {len(axes_dim)} entries")
    dtype = torch.float32 if positions.device.type == "mps" else torch.float64  # mps has no float64
    parts = []
    for i, d in enumerate(axes_dim):
        omega = 1.0 / theta ** (torch.arange(0, d, 2, dtype=dtype, device=positions.device) / d)
        parts.append(positions[..., i].to(dtype)[..., None] * omega)
    return torch.cat(parts, dim=-1)


def rope_rotation(angles: Tensor) -> Tensor:
    """cos + i sin of angles [B, L, D/2] (or [L, D/2]) as complex64, with a head axis: what ``apply_rope`` multiplies
    by. A forward computes it once for all its attention layers (they all rotate by the same angles)."""
    return torch.complex(torch.cos(angles).float(), torch.sin(angles).float()).unsqueeze(-3)


def apply_rope(x: Tensor, rotation: Tensor) -> Tensor:
    """Rotate adjacent pairs of x [B, H, L, D] by ``rope_rotation(angles)``; float32 math.

    Turning the pair (x0, x1) by an angle a is multiplying x0 + i x1 by cos a + i sin a:
    (x0 cos a - x1 sin a) + i (x0 sin a + x1 cos a). One complex product instead of four strided real ones."""
    pairs = torch.view_as_complex(x.float().unflatten(-1, (-1, 2)).contiguous())
    return torch.view_as_real(pairs * rotation).flatten(-2).to(x.dtype)


def attention(q: Tensor, k: Tensor, v: Tensor) -> Tensor:
    """Softmax attention with the default 1/sqrt(D) scale; [B, H, Lq, D] -> [B, Lq, H*D].

    Every self-attention calls it through an ``AttentionOp`` argument that defaults to this function, so a
    caller may replace the attention op (for example one that spreads the heads over several processes)."""
    out = F.scaled_dot_product_attention(q, k, v)
    return out.transpose(1, 2).flatten(2)


AttentionOp = Callable[[Tensor, Tensor, Tensor], Tensor]
"""``attention``'s signature: (q [B, H, Lq, D], k and v [B, H, Lk, D]) -> [B, Lq, H*D]. The models call it in every
self-attention with the queries, keys and values this forward holds (after QK-norm, RoPE and
``KVCache.extend_kv``). The default attends to exactly those keys; a replacement may attend to more, for example to
the keys of the same sequence's other tokens, held by other processes."""
