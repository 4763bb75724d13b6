"""diffusers-layout transformer weights -> our (the official BFL / Wan) key layout.

diffusers renames and splits some tensors when it converts the official checkpoints (models.md §3.2, §3.3;
``tests/diffusers_reference.py`` does that direction for the parity tests). This module undoes it, so weights that
exist only in the diffusers layout load into our modules unchanged otherwise:

- the ``transformer/`` folder of the ``Wan-AI/Wan2.1-T2V-*-Diffusers`` repos (a pure rename: ``wan_key``);
- the transformer of a diffusers ``FluxPipeline`` / ``WanPipeline`` held in memory (``flux_state_dict``,
  ``wan_state_dict``); Flux needs tensors joined, not only renamed.

Nothing here imports diffusers.
"""

from __future__ import annotations

import re

import torch
from torch import Tensor

# diffusers fragment -> Wan fragment, applied in this order (the reverse of diffusers'
# convert_wan_transformer_to_diffusers). norm2 and norm3 trade places: diffusers calls the cross-attention's
# affine norm norm2 and the FFN's parameter-free norm norm3; the official code the other way round.
_WAN_RENAMES = (
    ("condition_embedder.time_embedder.linear_1", "time_embedding.0"),
    ("condition_embedder.time_embedder.linear_2", "time_embedding.2"),
    ("condition_embedder.text_embedder.linear_1", "text_embedding.0"),
    ("condition_embedder.text_embedder.linear_2", "text_embedding.2"),
    ("condition_embedder.time_proj", "time_projection.1"),
    (".attn1.", ".self_attn."),
    (".attn2.", ".cross_attn."),
    (".to_out.0.", ".o."),
    (".to_q.", ".q."),
    (".to_k.", ".k."),
    (".to_v.", ".v."),
    (".ffn.net.0.proj.", ".ffn.0."),
    (".ffn.net.2.", ".ffn.2."),
)
_WAN_BLOCK_TABLE = re.compile(r"^blocks\.(\d+)\.scale_shift_table$")
_WAN_NORM = re.compile(r"^(blocks\.\d+)\.norm([23])\.")


def wan_key(key: str) -> str:
    """One diffusers ``WanTransformer3DModel`` key -> the official ``WanModel`` key (our attribute path)."""
    if key == "scale_shift_table":
        return "head.modulation"
    if key.startswith("proj_out."):
        return "head.head." + key.removeprefix("proj_out.")
    block = _WAN_BLOCK_TABLE.match(key)
    if block:
        return f"blocks.{block.group(1)}.modulation"
    norm = _WAN_NORM.match(key)
    if norm:
        other = "3" if norm.group(2) == "2" else "2"
        key = f"{norm.group(1)}.norm{other}." + key[norm.end():]
    for old, new in _WAN_RENAMES:
        key = key.replace(old, new)
    return key


def wan_key_to_diffusers(key: str) -> str:
    """The inverse of ``wan_key``: our (official) Wan key -> diffusers' (what diffusers' converter writes)."""
    if key == "head.modulation":
        return "scale_shift_table"
    if key.startswith("head.head."):
        return "proj_out." + key.removeprefix("head.head.")
    if key.endswith(".modulation") and key.startswith("blocks."):
        return key.removesuffix("modulation") + "scale_shift_table"
    norm = _WAN_NORM.match(key)
    if norm:
        other = "3" if norm.group(2) == "2" else "2"
        key = f"{norm.group(1)}.norm{other}." + key[norm.end():]
    for new, old in reversed(_WAN_RENAMES):
        key = key.replace(old, new)
    return key


def wan_state_dict(sd: dict[str, Tensor]) -> dict[str, Tensor]:
    """A diffusers ``WanTransformer3DModel`` state dict in our key layout (same tensors, renamed)."""
    return {wan_key(k): v for k, v in sd.items()}


def flux_state_dict(sd: dict[str, Tensor]) -> dict[str, Tensor]:
    """A diffusers ``FluxTransformer2DModel`` state dict in BFL's key layout (our attribute paths).

    q, k, v (and in single blocks the MLP input) are one ``qkv`` / ``linear1`` tensor in BFL's layout, and the final
    modulation stores (shift, scale) where diffusers stores (scale, shift).
    """
    out: dict[str, Tensor] = {}

    def put(dst: str, src: str) -> None:
        for part in ("weight", "bias"):
            if f"{src}.{part}" in sd:
                out[f"{dst}.{part}"] = sd[f"{src}.{part}"]

    def join(dst: str, srcs: list[str]) -> None:
        for part in ("weight", "bias"):
            out[f"{dst}.{part}"] = torch.cat([sd[f"{s}.{part}"] for s in srcs])

    put("img_in", "x_embedder")
    put("txt_in", "context_embedder")
    put("time_in.in_layer", "time_text_embed.timestep_embedder.linear_1")
    put("time_in.out_layer", "time_text_embed.timestep_embedder.linear_2")
    put("vector_in.in_layer", "time_text_embed.text_embedder.linear_1")
    put("vector_in.out_layer", "time_text_embed.text_embedder.linear_2")
    if "time_text_embed.guidance_embedder.linear_1.weight" in sd:
        put("guidance_in.in_layer", "time_text_embed.guidance_embedder.linear_1")
        put("guidance_in.out_layer", "time_text_embed.guidance_embedder.linear_2")
    for i in range(_count(sd, "transformer_blocks")):
        d, s = f"double_blocks.{i}", f"transformer_blocks.{i}"
        put(f"{d}.img_mod.lin", f"{s}.norm1.linear")
        put(f"{d}.txt_mod.lin", f"{s}.norm1_context.linear")
        join(f"{d}.img_attn.qkv", [f"{s}.attn.to_q", f"{s}.attn.to_k", f"{s}.attn.to_v"])
        join(f"{d}.txt_attn.qkv", [f"{s}.attn.add_q_proj", f"{s}.attn.add_k_proj", f"{s}.attn.add_v_proj"])
        out[f"{d}.img_attn.norm.query_norm.scale"] = sd[f"{s}.attn.norm_q.weight"]
        out[f"{d}.img_attn.norm.key_norm.scale"] = sd[f"{s}.attn.norm_k.weight"]
        out[f"{d}.txt_attn.norm.query_norm.scale"] = sd[f"{s}.attn.norm_added_q.weight"]
        out[f"{d}.txt_attn.norm.key_norm.scale"] = sd[f"{s}.attn.norm_added_k.weight"]
        put(f"{d}.img_attn.proj", f"{s}.attn.to_out.0")
        put(f"{d}.txt_attn.proj", f"{s}.attn.to_add_out")
        put(f"{d}.img_mlp.0", f"{s}.ff.net.0.proj")
        put(f"{d}.img_mlp.2", f"{s}.ff.net.2")
        put(f"{d}.txt_mlp.0", f"{s}.ff_context.net.0.proj")
        put(f"{d}.txt_mlp.2", f"{s}.ff_context.net.2")
    for i in range(_count(sd, "single_transformer_blocks")):
        d, s = f"single_blocks.{i}", f"single_transformer_blocks.{i}"
        put(f"{d}.modulation.lin", f"{s}.norm.linear")
        join(f"{d}.linear1", [f"{s}.attn.to_q", f"{s}.attn.to_k", f"{s}.attn.to_v", f"{s}.proj_mlp"])
        out[f"{d}.norm.query_norm.scale"] = sd[f"{s}.attn.norm_q.weight"]
        out[f"{d}.norm.key_norm.scale"] = sd[f"{s}.attn.norm_k.weight"]
        put(f"{d}.linear2", f"{s}.proj_out")
    put("final_layer.linear", "proj_out")
    for part in ("weight", "bias"):
        scale, shift = sd[f"norm_out.linear.{part}"].chunk(2)
        out[f"final_layer.adaLN_modulation.1.{part}"] = torch.cat([shift, scale])
    return out


def _count(sd: dict[str, Tensor], prefix: str) -> int:
    """Number of blocks ``prefix.N.*`` in a state dict."""
    found = {int(k.split(".")[1]) for k in sd if k.startswith(prefix + ".")}
    return max(found) + 1 if found else 0
