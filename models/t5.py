"""T5 encoder (T5 v1.1 for FLUX.1, umT5 for Wan2.1), written from the T5 paper and checked against
transformers' ``T5EncoderModel`` / ``UMT5EncoderModel`` (tests/test_text_encoders.py).

Module attribute names equal the Hugging Face keys, as stored in FLUX.1's ``text_encoder_2/`` folder
(google/t5-v1_1-xxl) and in the ``text_encoder/`` folder of the Wan2.1 ``*-Diffusers`` repos (umT5-XXL):

    shared.weight                                                 token embedding [vocab, d_model]
    encoder.embed_tokens.weight                                   the same tensor (tied; files may omit it)
    encoder.block.{i}.layer.0.SelfAttention.{q,k,v,o}.weight      no biases anywhere
    encoder.block.{i}.layer.0.SelfAttention.relative_attention_bias.weight   [buckets, heads]; T5 v1.1: block 0
                                                                  only, shared by all blocks; umT5: every block
    encoder.block.{i}.layer.0.layer_norm.weight
    encoder.block.{i}.layer.1.DenseReluDense.{wi_0,wi_1,wo}.weight   gated GELU(tanh) feed-forward
    encoder.block.{i}.layer.1.layer_norm.weight
    encoder.final_layer_norm.weight

T5 details that differ from a textbook transformer: pre-norm RMSNorm without a bias or mean subtraction
(variance in float32), attention logits *not* scaled by 1/sqrt(d_kv) (T5 folds that into the
initialisation of q), and a learned per-head bias indexed by the bucketed relative position instead of
position embeddings. Padding is masked out of the keys when an attention mask is given; FLUX.1 passes
none (its padding tokens are encoded and used), Wan2.1 passes one.

Not reproduced: transformers keeps ``wo`` in float32 when it loads T5 in half precision
(``_keep_in_fp32_modules``); here every weight takes the dtype it is loaded in.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from einops import rearrange
from torch import Tensor, nn

from .layers import rms_norm


@dataclass
class T5Params:
    """Hyper-parameters; field names follow transformers' ``T5Config`` / ``UMT5Config``."""

    vocab_size: int = 32128
    d_model: int = 4096
    d_kv: int = 64
    d_ff: int = 10240
    num_layers: int = 24
    num_heads: int = 64
    relative_attention_num_buckets: int = 32
    relative_attention_max_distance: int = 128
    feed_forward_proj: str = "gated-gelu"
    per_layer_position_bias: bool = False  # umT5: every block has its own relative_attention_bias
    layer_norm_epsilon: float = 1e-6

    def __post_init__(self) -> None:
        if self.feed_forward_proj != "gated-gelu":
            raise ValueError(f"feed_forward_proj {self.feed_forward_proj!r} is not implemented; only 'gated-gelu' "
                             "(T5 v1.1, umT5: DenseReluDense.wi_0 / wi_1 / wo) is")
        # Bidirectional buckets: half per direction, of which half are exact offsets and half log-spaced.
        exact = self.relative_attention_num_buckets // 4
        if exact < 1 or self.relative_attention_max_distance <= exact:
            raise ValueError(
                f"relative_attention_num_buckets must be >= 4 and relative_attention_max_distance > num_buckets / 4; "
                f"got {self.relative_attention_num_buckets} and {self.relative_attention_max_distance}"
            )


# Published configs: google/t5-v1_1-xxl config.json (= FLUX.1 text_encoder_2/config.json) and
# google/umt5-xxl config.json (= Wan2.1 *-Diffusers text_encoder/config.json): d_model 4096, d_kv 64, d_ff 10240,
# 24 layers, 64 heads, 32 buckets, max distance 128 (the transformers default, not in the files), eps 1e-6,
# feed_forward_proj "gated-gelu"; vocab 32128 and 256384. umT5 = UMT5EncoderModel: a position bias per block.
T5_PRESETS: dict[str, T5Params] = {
    "t5-v1_1-xxl": T5Params(),
    "umt5-xxl": T5Params(vocab_size=256384, per_layer_position_bias=True),
    # Small random-weight configs for unit tests; inner dim (heads * d_kv = 24) differs from d_model on purpose.
    "t5-test": T5Params(vocab_size=96, d_model=32, d_kv=6, d_ff=48, num_layers=3, num_heads=4,
                        relative_attention_num_buckets=8, relative_attention_max_distance=20),
    "umt5-test": T5Params(vocab_size=96, d_model=32, d_kv=6, d_ff=48, num_layers=3, num_heads=4,
                          relative_attention_num_buckets=8, relative_attention_max_distance=20,
                          per_layer_position_bias=True),
}


def relative_position_buckets(length: int, num_buckets: int, max_distance: int, device=None) -> Tensor:
    """[length, length] bucket of key position j seen from query position i (bidirectional, Mesh TF's scheme).

    Offsets j - i > 0 use the upper half of the buckets. Within a half, |offset| < n/2 gets its own bucket
    (n = num_buckets / 2); larger ones share log-spaced buckets up to max_distance, beyond which all fall
    into the last bucket.
    """
    pos = torch.arange(length, device=device)
    offset = pos[None, :] - pos[:, None]
    half = num_buckets // 2
    exact = half // 2
    distance = offset.abs()
    # float32 log, truncated toward zero, exactly as the reference computes it (bucket edges depend on it)
    far = exact + (torch.log(distance.clamp(min=exact).float() / exact) / math.log(max_distance / exact)
                   * (half - exact)).long()
    far = far.clamp(max=half - 1)
    return (offset > 0).long() * half + torch.where(distance < exact, distance, far)


class T5LayerNorm(nn.Module):
    """RMSNorm with a learned scale and no bias; the mean square is taken in float32."""

    def __init__(self, dim: int, eps: float):
        super().__init__()
        self.weight = nn.Parameter(torch.ones(dim))
        self.eps = eps

    def forward(self, x: Tensor) -> Tensor:
        return rms_norm(x, self.weight, self.eps)


class T5Attention(nn.Module):
    def __init__(self, p: T5Params, has_relative_attention_bias: bool):
        super().__init__()
        self.num_heads = p.num_heads
        self.num_buckets, self.max_distance = p.relative_attention_num_buckets, p.relative_attention_max_distance
        inner = p.num_heads * p.d_kv
        self.q = nn.Linear(p.d_model, inner, bias=False)
        self.k = nn.Linear(p.d_model, inner, bias=False)
        self.v = nn.Linear(p.d_model, inner, bias=False)
        self.o = nn.Linear(inner, p.d_model, bias=False)
        self.has_relative_attention_bias = has_relative_attention_bias
        if has_relative_attention_bias:
            self.relative_attention_bias = nn.Embedding(p.relative_attention_num_buckets, p.num_heads)

    def position_bias(self, length: int) -> Tensor:
        """[1, heads, length, length] additive logit bias."""
        buckets = relative_position_buckets(length, self.num_buckets, self.max_distance,
                                            self.relative_attention_bias.weight.device)
        return rearrange(self.relative_attention_bias(buckets), "i j h -> 1 h i j")

    def forward(self, x: Tensor, bias: Tensor) -> Tensor:
        """x [B, L, d_model]; bias [1 or B, heads, L, L] (position bias, padded keys at the dtype's minimum)."""
        q, k, v = (rearrange(f(x), "b l (h d) -> b h l d", h=self.num_heads) for f in (self.q, self.k, self.v))
        out = F.scaled_dot_product_attention(q, k, v, attn_mask=bias, scale=1.0)  # T5: no 1/sqrt(d_kv)
        return self.o(rearrange(out, "b h l d -> b l (h d)"))


class T5LayerSelfAttention(nn.Module):
    def __init__(self, p: T5Params, has_relative_attention_bias: bool):
        super().__init__()
        self.SelfAttention = T5Attention(p, has_relative_attention_bias)
        self.layer_norm = T5LayerNorm(p.d_model, p.layer_norm_epsilon)

    def forward(self, x: Tensor, bias: Tensor) -> Tensor:
        return x + self.SelfAttention(self.layer_norm(x), bias)


class T5DenseGatedActDense(nn.Module):
    """wo(gelu_tanh(wi_0 x) * wi_1 x); the checkpoint calls it DenseReluDense whatever the activation."""

    def __init__(self, p: T5Params):
        super().__init__()
        self.wi_0 = nn.Linear(p.d_model, p.d_ff, bias=False)
        self.wi_1 = nn.Linear(p.d_model, p.d_ff, bias=False)
        self.wo = nn.Linear(p.d_ff, p.d_model, bias=False)

    def forward(self, x: Tensor) -> Tensor:
        return self.wo(F.gelu(self.wi_0(x), approximate="tanh") * self.wi_1(x))


class T5LayerFF(nn.Module):
    def __init__(self, p: T5Params):
        super().__init__()
        self.DenseReluDense = T5DenseGatedActDense(p)
        self.layer_norm = T5LayerNorm(p.d_model, p.layer_norm_epsilon)

    def forward(self, x: Tensor) -> Tensor:
        return x + self.DenseReluDense(self.layer_norm(x))


class T5Block(nn.Module):
    def __init__(self, p: T5Params, has_relative_attention_bias: bool):
        super().__init__()
        self.layer = nn.ModuleList([T5LayerSelfAttention(p, has_relative_attention_bias), T5LayerFF(p)])

    def forward(self, x: Tensor, bias: Tensor) -> Tensor:
        return self.layer[1](self.layer[0](x, bias))


class T5Stack(nn.Module):
    def __init__(self, p: T5Params, embed_tokens: nn.Embedding):
        super().__init__()
        self.embed_tokens = embed_tokens  # the parent's ``shared`` module itself: one tensor, two key names
        self.block = nn.ModuleList(
            T5Block(p, has_relative_attention_bias=p.per_layer_position_bias or i == 0) for i in range(p.num_layers)
        )
        self.final_layer_norm = T5LayerNorm(p.d_model, p.layer_norm_epsilon)

    def forward(self, x: Tensor, keep: Tensor | None) -> Tensor:
        """x [B, L, d_model] embedded tokens; keep [B, L] bool (False = padding) or None."""
        bias = None
        for block in self.block:
            attention = block.layer[0].SelfAttention
            if attention.has_relative_attention_bias:  # T5 v1.1: block 0's bias serves every block
                bias = attention.position_bias(x.shape[1]).to(x.dtype)
                if keep is not None:
                    bias = bias.masked_fill(~keep[:, None, None, :], torch.finfo(bias.dtype).min)
            x = block(x, bias)
        return self.final_layer_norm(x)


class T5Encoder(nn.Module):
    """The encoder half of T5 v1.1 / umT5: ``forward(input_ids, attention_mask=None) -> last_hidden_state``."""

    # For models.loading: a file may store the embedding as shared.weight, encoder.embed_tokens.weight or both.
    tied_keys = {"encoder.embed_tokens.weight": "shared.weight"}

    def __init__(self, params: T5Params):
        super().__init__()
        self.params = params
        self.shared = nn.Embedding(params.vocab_size, params.d_model)
        self.encoder = T5Stack(params, self.shared)

    def forward(self, input_ids: Tensor, attention_mask: Tensor | None = None) -> Tensor:
        """input_ids [B, L] int; attention_mask [B, L] (1 = token, 0 = padding) or None (attend to all).
        Returns [B, L, d_model] in the weights' dtype; padded positions are computed too (callers trim them)."""
        if input_ids.ndim != 2:
            raise ValueError(f"input_ids must be [batch, length]; got shape {tuple(input_ids.shape)}")
        keep = None
        if attention_mask is not None:
            if attention_mask.shape != input_ids.shape:
                raise ValueError(f"attention_mask {tuple(attention_mask.shape)} must have the shape of input_ids "
                                 f"{tuple(input_ids.shape)}")
            keep = attention_mask.to(input_ids.device).bool()
        return self.encoder(self.shared(input_ids), keep)
