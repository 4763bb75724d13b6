"""Architectures read back from the files of a checkpoint folder: each network's params from its tensor shapes
(safetensors headers, no data read) and, where shapes cannot tell, from the ``config.json`` beside it.

    flux_params(read_metadata_shapes, transformer_config)    FLUX.1 DiT (flux1-dev.safetensors; heads from the
                                                              QK-norm width, RoPE split from transformer/config.json)
    wan_params(shapes, config)                               Wan2.1 DiT (heads from config.json)
    flux_ae_params(shapes)                                   FLUX.1 autoencoder (ae.safetensors has no config)
    t5_params(config), clip_params(config), wan_vae_params(config)   Hugging Face / diffusers config.json files

So a folder of the official models gives the official architectures, and a folder of small random weights in the
same layout (``jano fake-weights``) gives its small ones, through the same code. Config fields we do not model
(``_class_name``, ``torch_dtype``, ...) are ignored.
"""

from __future__ import annotations

import dataclasses
import math
import re

from .clip import CLIPTextParams
from .flux import FluxParams
from .flux_ae import AutoEncoderParams
from .t5 import T5Params
from .wan import WanParams
from .wan_vae import WanVAEParams

Shapes = dict[str, tuple[int, ...]]
FLUX_AXES_DIM = [16, 56, 56]  # BFL util.py configs: the RoPE split of FLUX.1's 128-wide heads
WAN_HEADS = {1536: 12, 5120: 40}  # Wan2.1 1.3B and 14B (wan/configs), for a DiT file without its config.json


class ConfigError(ValueError):
    """The files do not describe a network we can build; the message says what is missing."""


def flux_params(shapes: Shapes, config: dict | None = None) -> FluxParams:
    """FLUX.1 DiT params from a BFL-layout checkpoint's shapes; ``config`` is a diffusers transformer/config.json
    (only ``axes_dims_rope`` is read: the RoPE split is not in any shape)."""
    _need(shapes, ["img_in.weight", "txt_in.weight", "vector_in.in_layer.weight", "final_layer.linear.weight",
                   "double_blocks.0.img_attn.norm.query_norm.scale", "double_blocks.0.img_mlp.0.weight"], "FLUX.1 DiT")
    hidden, in_channels = shapes["img_in.weight"]
    head_dim = shapes["double_blocks.0.img_attn.norm.query_norm.scale"][0]
    axes = (config or {}).get("axes_dims_rope")
    if axes is None:
        if head_dim != sum(FLUX_AXES_DIM):
            raise ConfigError(f"a FLUX.1 DiT with {head_dim}-wide heads needs its RoPE split (axes_dims_rope) from a "
                              "transformer/config.json beside it; FLUX.1's own split fits 128-wide heads only")
        axes = FLUX_AXES_DIM
    return FluxParams(
        in_channels=in_channels, out_channels=shapes["final_layer.linear.weight"][0],
        vec_in_dim=shapes["vector_in.in_layer.weight"][1], context_in_dim=shapes["txt_in.weight"][1],
        hidden_size=hidden, mlp_ratio=shapes["double_blocks.0.img_mlp.0.weight"][0] / hidden,
        num_heads=hidden // head_dim, depth=_count(shapes, "double_blocks"),
        depth_single_blocks=_count(shapes, "single_blocks"), axes_dim=list(axes),
        qkv_bias="double_blocks.0.img_attn.qkv.bias" in shapes, guidance_embed="guidance_in.in_layer.weight" in shapes,
    )


def wan_params(shapes: Shapes, config: dict | None = None) -> WanParams:
    """Wan2.1 DiT params from an original-layout checkpoint's shapes (rename a diffusers one first with
    ``models.diffusers_keys.wan_key``). The head count comes from ``config``: the original repo's config.json
    (``num_heads``) or a diffusers transformer/config.json (``num_attention_heads``); without one, the official
    count for the official widths."""
    _need(shapes, ["patch_embedding.weight", "text_embedding.0.weight", "time_embedding.0.weight",
                   "blocks.0.ffn.0.weight", "head.head.weight"], "Wan2.1 DiT")
    config = config or {}
    dim, in_dim, *patch = shapes["patch_embedding.weight"]
    heads = config.get("num_heads", config.get("num_attention_heads", WAN_HEADS.get(dim)))
    if heads is None:
        raise ConfigError(f"a Wan2.1 DiT of width {dim} needs its head count from a config.json beside it "
                          "(num_heads, or num_attention_heads in a diffusers transformer/config.json)")
    return WanParams(
        patch_size=tuple(patch), text_len=config.get("text_len", 512), in_dim=in_dim, dim=dim,
        ffn_dim=shapes["blocks.0.ffn.0.weight"][0], freq_dim=shapes["time_embedding.0.weight"][1],
        text_dim=shapes["text_embedding.0.weight"][1], out_dim=shapes["head.head.weight"][0] // math.prod(patch),
        num_heads=heads, num_layers=_count(shapes, "blocks"), qk_norm="blocks.0.self_attn.norm_q.weight" in shapes,
        cross_attn_norm="blocks.0.norm3.weight" in shapes, eps=config.get("eps", 1e-6),
    )


def flux_ae_params(shapes: Shapes) -> AutoEncoderParams:
    """FLUX.1 autoencoder params from ``ae.safetensors`` shapes; the latent scale and shift are FLUX.1's (they are
    not stored in the file)."""
    _need(shapes, ["encoder.conv_in.weight", "decoder.conv_in.weight", "decoder.conv_out.weight",
                   "encoder.down.0.block.0.conv1.weight"], "FLUX.1 autoencoder")
    ch, in_channels = shapes["encoder.conv_in.weight"][:2]
    levels = _count(shapes, "encoder.down")
    return AutoEncoderParams(
        in_channels=in_channels, ch=ch, out_ch=shapes["decoder.conv_out.weight"][0],
        ch_mult=[shapes[f"encoder.down.{i}.block.0.conv1.weight"][0] // ch for i in range(levels)],
        num_res_blocks=_count(shapes, "encoder.down.0.block"), z_channels=shapes["decoder.conv_in.weight"][1],
    )


def t5_params(config: dict) -> T5Params:
    """T5 v1.1 / umT5 encoder params from a transformers config.json (``model_type`` "umt5": a position bias per
    block)."""
    params = _pick(T5Params, config)
    return dataclasses.replace(params, per_layer_position_bias=config.get("model_type") == "umt5")


def clip_params(config: dict) -> CLIPTextParams:
    """CLIP text-encoder params from a CLIPTextConfig config.json, or a full CLIPConfig's ``text_config``."""
    return _pick(CLIPTextParams, config.get("text_config", config))


def wan_vae_params(config: dict) -> WanVAEParams:
    """Wan2.1 VAE params from a diffusers ``AutoencoderKLWan`` vae/config.json."""
    if config.get("is_residual"):
        raise ConfigError("this vae/config.json describes a residual (Wan2.2-style) VAE; only the Wan2.1 VAE is "
                          "implemented")
    return _pick(WanVAEParams, config)


def _pick(cls, config: dict):
    names = {f.name for f in dataclasses.fields(cls)}
    return cls(**{k: v for k, v in config.items() if k in names})


def _count(shapes: Shapes, prefix: str) -> int:
    """Number of numbered children ``prefix.N.*``."""
    pattern = re.compile(re.escape(prefix) + r"\.(\d+)\.")
    found = {int(m.group(1)) for k in shapes if (m := pattern.match(k))}
    return max(found) + 1 if found else 0


def _need(shapes: Shapes, keys: list[str], what: str) -> None:
    missing = [k for k in keys if k not in shapes]
    if missing:
        raise ConfigError(f"not a {what} checkpoint: it lacks {', '.join(missing)} (it has {len(shapes)} tensors, "
                          f"e.g. {', '.join(sorted(shapes)[:3])})")
