"""Build diffusers' Flux / Wan transformers with the *same weights* as ours (test-only reference).

Our modules use the official (BFL / Wan) key layout; diffusers renames and splits some tensors.
The Flux mapping is written out here because diffusers' own converter hard-codes hidden size 3072
(models.md §3.2); the Wan mapping is diffusers' own pure-rename converter (models.md §3.3).
"""

from __future__ import annotations

import torch

from models import Flux, WanModel


def flux_to_diffusers_state_dict(sd: dict[str, torch.Tensor], depth: int, depth_single: int, hidden: int):
    """BFL key layout -> diffusers FluxTransformer2DModel layout, parametrised by size."""
    out: dict[str, torch.Tensor] = {}

    def put(dst: str, src: str) -> None:
        out[f"{dst}.weight"] = sd[f"{src}.weight"]
        if f"{src}.bias" in sd:
            out[f"{dst}.bias"] = sd[f"{src}.bias"]

    def split(dst_names: list[str], src: str, sizes: list[int]) -> None:
        for name, w, b in zip(dst_names, sd[f"{src}.weight"].split(sizes), sd[f"{src}.bias"].split(sizes)):
            out[f"{name}.weight"], out[f"{name}.bias"] = w, b

    put("x_embedder", "img_in")
    put("context_embedder", "txt_in")
    put("time_text_embed.timestep_embedder.linear_1", "time_in.in_layer")
    put("time_text_embed.timestep_embedder.linear_2", "time_in.out_layer")
    put("time_text_embed.text_embedder.linear_1", "vector_in.in_layer")
    put("time_text_embed.text_embedder.linear_2", "vector_in.out_layer")
    if "guidance_in.in_layer.weight" in sd:
        put("time_text_embed.guidance_embedder.linear_1", "guidance_in.in_layer")
        put("time_text_embed.guidance_embedder.linear_2", "guidance_in.out_layer")
    for i in range(depth):
        s, d = f"double_blocks.{i}", f"transformer_blocks.{i}"
        put(f"{d}.norm1.linear", f"{s}.img_mod.lin")
        put(f"{d}.norm1_context.linear", f"{s}.txt_mod.lin")
        split([f"{d}.attn.to_q", f"{d}.attn.to_k", f"{d}.attn.to_v"], f"{s}.img_attn.qkv", [hidden] * 3)
        split([f"{d}.attn.add_q_proj", f"{d}.attn.add_k_proj", f"{d}.attn.add_v_proj"], f"{s}.txt_attn.qkv", [hidden] * 3)
        out[f"{d}.attn.norm_q.weight"] = sd[f"{s}.img_attn.norm.query_norm.scale"]
        out[f"{d}.attn.norm_k.weight"] = sd[f"{s}.img_attn.norm.key_norm.scale"]
        out[f"{d}.attn.norm_added_q.weight"] = sd[f"{s}.txt_attn.norm.query_norm.scale"]
        out[f"{d}.attn.norm_added_k.weight"] = sd[f"{s}.txt_attn.norm.key_norm.scale"]
        put(f"{d}.attn.to_out.0", f"{s}.img_attn.proj")
        put(f"{d}.attn.to_add_out", f"{s}.txt_attn.proj")
        put(f"{d}.ff.net.0.proj", f"{s}.img_mlp.0")
        put(f"{d}.ff.net.2", f"{s}.img_mlp.2")
        put(f"{d}.ff_context.net.0.proj", f"{s}.txt_mlp.0")
        put(f"{d}.ff_context.net.2", f"{s}.txt_mlp.2")
    for i in range(depth_single):
        s, d = f"single_blocks.{i}", f"single_transformer_blocks.{i}"
        put(f"{d}.norm.linear", f"{s}.modulation.lin")
        mlp = sd[f"{s}.linear1.weight"].shape[0] - 3 * hidden
        split([f"{d}.attn.to_q", f"{d}.attn.to_k", f"{d}.attn.to_v", f"{d}.proj_mlp"], f"{s}.linear1", [hidden] * 3 + [mlp])
        out[f"{d}.attn.norm_q.weight"] = sd[f"{s}.norm.query_norm.scale"]
        out[f"{d}.attn.norm_k.weight"] = sd[f"{s}.norm.key_norm.scale"]
        put(f"{d}.proj_out", f"{s}.linear2")
    put("proj_out", "final_layer.linear")
    shift, scale = sd["final_layer.adaLN_modulation.1.weight"].chunk(2)
    out["norm_out.linear.weight"] = torch.cat([scale, shift])  # diffusers wants (scale, shift)
    shift, scale = sd["final_layer.adaLN_modulation.1.bias"].chunk(2)
    out["norm_out.linear.bias"] = torch.cat([scale, shift])
    return out


def diffusers_flux(model: Flux):
    from diffusers import FluxTransformer2DModel

    p = model.params
    ref = FluxTransformer2DModel(
        patch_size=1, in_channels=p.in_channels, out_channels=p.out_channels, num_layers=p.depth,
        num_single_layers=p.depth_single_blocks, attention_head_dim=p.hidden_size // p.num_heads,
        num_attention_heads=p.num_heads, joint_attention_dim=p.context_in_dim, pooled_projection_dim=p.vec_in_dim,
        guidance_embeds=p.guidance_embed, axes_dims_rope=tuple(p.axes_dim),
    )
    sd = flux_to_diffusers_state_dict(model.state_dict(), p.depth, p.depth_single_blocks, p.hidden_size)
    ref.load_state_dict(sd, strict=True)
    return ref.eval()


def diffusers_wan(model: WanModel):
    from diffusers import WanTransformer3DModel
    from diffusers.loaders.single_file_utils import convert_wan_transformer_to_diffusers

    p = model.params
    ref = WanTransformer3DModel(
        patch_size=p.patch_size, num_attention_heads=p.num_heads, attention_head_dim=p.head_dim,
        in_channels=p.in_dim, out_channels=p.out_dim, text_dim=p.text_dim, freq_dim=p.freq_dim, ffn_dim=p.ffn_dim,
        num_layers=p.num_layers, cross_attn_norm=p.cross_attn_norm, qk_norm="rms_norm_across_heads", eps=p.eps,
    )
    sd = convert_wan_transformer_to_diffusers(dict(model.state_dict()))  # the converter pops: pass a copy
    ref.load_state_dict(sd, strict=True)
    return ref.eval()
