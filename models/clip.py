"""CLIP text encoder (FLUX.1's CLIP-L, openai/clip-vit-large-patch14), written from OpenAI's CLIP
(clip/model.py, ``encode_text``) and checked against transformers' ``CLIPTextModel``
(tests/test_text_encoders.py).

Module attribute names equal the keys of FLUX.1's ``text_encoder/model.safetensors``:

    text_model.embeddings.token_embedding.weight          [vocab, hidden]
    text_model.embeddings.position_embedding.weight       [max_positions, hidden]  (learned, absolute)
    text_model.encoder.layers.{i}.self_attn.{q,k,v,out}_proj.{weight,bias}
    text_model.encoder.layers.{i}.layer_norm1.{weight,bias}, layer_norm2.{weight,bias}
    text_model.encoder.layers.{i}.mlp.fc1.{weight,bias}, mlp.fc2.{weight,bias}
    text_model.final_layer_norm.{weight,bias}

transformers 5 drops the ``text_model.`` prefix from ``CLIPTextModel.state_dict()`` and adds it back when it
loads such a file; the files themselves (written by transformers 4) keep it. Files written before
transformers 4.31 also carry ``text_model.embeddings.position_ids``, an ``arange`` buffer: we compute
positions instead, and ``models.loading`` skips that key (``obsolete_keys``). The full CLIPModel file of
openai/clip-vit-large-patch14 also holds the vision tower: load it with ``strict=False`` (only
``text_model.*`` is read; anything of ours still missing is reported).

Pre-norm transformer with a causal mask, QuickGELU MLP and a final LayerNorm. The pooled output (what
FLUX.1 feeds its ``vector_in``) is the final hidden state at the end-of-text token.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import NamedTuple

import torch
import torch.nn.functional as F
from einops import rearrange
from torch import Tensor, nn

ACTIVATIONS = {
    "quick_gelu": lambda x: x * torch.sigmoid(1.702 * x),  # OpenAI CLIP's GELU approximation
    "gelu": F.gelu,
}


@dataclass
class CLIPTextParams:
    """Hyper-parameters; field names follow transformers' ``CLIPTextConfig``."""

    vocab_size: int = 49408
    hidden_size: int = 768
    intermediate_size: int = 3072
    num_hidden_layers: int = 12
    num_attention_heads: int = 12
    max_position_embeddings: int = 77
    hidden_act: str = "quick_gelu"
    layer_norm_eps: float = 1e-5
    # Where the pooled output is taken. 2 is the value configs written before transformers PR #24773 carry
    # (openai/clip-vit-large-patch14 and FLUX.1's text_encoder among them); it means "the highest token id",
    # which is the end-of-text token (49407) in CLIP's vocabulary. Any other value: the first position
    # holding that id.
    eos_token_id: int = 2

    def __post_init__(self) -> None:
        if self.hidden_size % self.num_attention_heads:
            raise ValueError(f"hidden_size {self.hidden_size} is not divisible by num_attention_heads "
                             f"{self.num_attention_heads}")
        if self.hidden_act not in ACTIVATIONS:
            raise ValueError(f"hidden_act {self.hidden_act!r} is not one of {', '.join(ACTIVATIONS)}")


# Published config: openai/clip-vit-large-patch14 config.json "text_config" (= FLUX.1 text_encoder/config.json):
# vocab 49408, hidden 768, intermediate 3072, 12 layers, 12 heads, 77 positions, quick_gelu, eps 1e-5, eos_token_id 2.
CLIP_PRESETS: dict[str, CLIPTextParams] = {
    "clip-vit-large-patch14": CLIPTextParams(),
    # Small random-weight config for unit tests.
    "clip-test": CLIPTextParams(vocab_size=99, hidden_size=32, intermediate_size=48, num_hidden_layers=2,
                                num_attention_heads=4, max_position_embeddings=16),
}


class CLIPTextOutput(NamedTuple):
    last_hidden_state: Tensor  # [B, L, hidden], after the final LayerNorm
    pooler_output: Tensor  # [B, hidden], last_hidden_state at the end-of-text token


class CLIPTextEmbeddings(nn.Module):
    def __init__(self, p: CLIPTextParams):
        super().__init__()
        self.token_embedding = nn.Embedding(p.vocab_size, p.hidden_size)
        self.position_embedding = nn.Embedding(p.max_position_embeddings, p.hidden_size)

    def forward(self, input_ids: Tensor) -> Tensor:
        return self.token_embedding(input_ids) + self.position_embedding.weight[: input_ids.shape[1]]


class CLIPAttention(nn.Module):
    def __init__(self, p: CLIPTextParams):
        super().__init__()
        self.num_heads = p.num_attention_heads
        self.q_proj = nn.Linear(p.hidden_size, p.hidden_size)
        self.k_proj = nn.Linear(p.hidden_size, p.hidden_size)
        self.v_proj = nn.Linear(p.hidden_size, p.hidden_size)
        self.out_proj = nn.Linear(p.hidden_size, p.hidden_size)

    def forward(self, x: Tensor, mask: Tensor) -> Tensor:
        """x [B, L, hidden]; mask [1 or B, 1, L, L] additive (0 or the dtype's minimum)."""
        q, k, v = (rearrange(f(x), "b l (h d) -> b h l d", h=self.num_heads)
                   for f in (self.q_proj, self.k_proj, self.v_proj))
        out = F.scaled_dot_product_attention(q, k, v, attn_mask=mask)  # the usual 1/sqrt(head_dim) scale
        return self.out_proj(rearrange(out, "b h l d -> b l (h d)"))


class CLIPMLP(nn.Module):
    def __init__(self, p: CLIPTextParams):
        super().__init__()
        self.fc1 = nn.Linear(p.hidden_size, p.intermediate_size)
        self.fc2 = nn.Linear(p.intermediate_size, p.hidden_size)
        self.act = ACTIVATIONS[p.hidden_act]

    def forward(self, x: Tensor) -> Tensor:
        return self.fc2(self.act(self.fc1(x)))


class CLIPEncoderLayer(nn.Module):
    def __init__(self, p: CLIPTextParams):
        super().__init__()
        self.self_attn = CLIPAttention(p)
        self.layer_norm1 = nn.LayerNorm(p.hidden_size, eps=p.layer_norm_eps)
        self.mlp = CLIPMLP(p)
        self.layer_norm2 = nn.LayerNorm(p.hidden_size, eps=p.layer_norm_eps)

    def forward(self, x: Tensor, mask: Tensor) -> Tensor:
        x = x + self.self_attn(self.layer_norm1(x), mask)
        return x + self.mlp(self.layer_norm2(x))


class CLIPEncoder(nn.Module):
    def __init__(self, p: CLIPTextParams):
        super().__init__()
        self.layers = nn.ModuleList(CLIPEncoderLayer(p) for _ in range(p.num_hidden_layers))


class CLIPTextTransformer(nn.Module):
    def __init__(self, p: CLIPTextParams):
        super().__init__()
        self.embeddings = CLIPTextEmbeddings(p)
        self.encoder = CLIPEncoder(p)
        self.final_layer_norm = nn.LayerNorm(p.hidden_size, eps=p.layer_norm_eps)


def attention_mask_4d(length: int, attention_mask: Tensor | None, dtype: torch.dtype, device) -> Tensor:
    """Additive [1 or B, 1, L, L] mask: causal, plus padded keys (attention_mask == 0) when given."""
    allowed = torch.ones(length, length, dtype=torch.bool, device=device).tril()[None, None]
    if attention_mask is not None:
        allowed = allowed & attention_mask.to(device).bool()[:, None, None, :]
    return torch.zeros(allowed.shape, dtype=dtype, device=device).masked_fill(~allowed, torch.finfo(dtype).min)


class CLIPTextEncoder(nn.Module):
    """``forward(input_ids, attention_mask=None) -> CLIPTextOutput(last_hidden_state, pooler_output)``."""

    # For models.loading: an arange buffer that older files store and that we do not keep (see the module doc).
    obsolete_keys = ("text_model.embeddings.position_ids",)

    def __init__(self, params: CLIPTextParams):
        super().__init__()
        self.params = params
        self.text_model = CLIPTextTransformer(params)

    def forward(self, input_ids: Tensor, attention_mask: Tensor | None = None) -> CLIPTextOutput:
        """input_ids [B, L] int with L <= max_position_embeddings; attention_mask [B, L] (1 = token, 0 = padding)
        or None. FLUX.1 passes no mask: causality alone keeps padding after the end-of-text token out of it."""
        if input_ids.ndim != 2:
            raise ValueError(f"input_ids must be [batch, length]; got shape {tuple(input_ids.shape)}")
        length, limit = input_ids.shape[1], self.params.max_position_embeddings
        if length > limit:
            raise ValueError(f"{length} tokens exceed CLIP's {limit} positions; tokenize with max_length={limit} "
                             "and truncation (models.tokenization does)")
        model = self.text_model
        x = model.embeddings(input_ids)
        mask = attention_mask_4d(length, attention_mask, x.dtype, x.device)
        for layer in model.encoder.layers:
            x = layer(x, mask)
        x = model.final_layer_norm(x)
        return CLIPTextOutput(x, x[torch.arange(x.shape[0], device=x.device), self.eos_positions(input_ids)])

    def eos_positions(self, input_ids: Tensor) -> Tensor:
        """[B] index of the end-of-text token, by transformers' two conventions (see ``eos_token_id``)."""
        ids = input_ids.to(torch.int)  # argmax returns the first of equal maxima
        if self.params.eos_token_id == 2:
            return ids.argmax(dim=-1)
        return (ids == self.params.eos_token_id).int().argmax(dim=-1)
