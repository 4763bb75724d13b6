"""Self-written FLUX.1 and Wan2.1 transformers that load the official checkpoints unchanged, and the networks
around them (FLUX.1 autoencoder, Wan2.1 VAE, CLIP-L / T5 / umT5 text encoders, tokenization).

    model = build_model("flux-dev", device="meta")        # no memory used yet
    load_checkpoint(model, "flux1-dev.safetensors")       # strict, assign=True, never unpickles

``PRESETS`` / ``build_model`` are the DiTs only; the other networks have their own presets and builders.
"""

from __future__ import annotations

import dataclasses

import torch
from torch import nn

from .flux import FLUX_PRESETS, Flux, FluxParams
from .wan import WAN_PRESETS, WanModel, WanParams

PRESETS: dict[str, FluxParams | WanParams] = {**FLUX_PRESETS, **WAN_PRESETS}


def model_names() -> list[str]:
    return sorted(PRESETS)


def build_model(
    name: str,
    device: torch.device | str | None = None,
    dtype: torch.dtype | None = None,
    **overrides,
) -> nn.Module:
    """Build a preset, optionally overriding config fields named as in the official configs
    (Flux: hidden_size, num_heads, depth, depth_single_blocks, axes_dim, mlp_ratio, context_in_dim,
    vec_in_dim, ...; Wan: dim, ffn_dim, num_heads, num_layers, text_dim, freq_dim, ...).

    ``device="meta"`` allocates nothing; follow with ``load_checkpoint`` (which loads with assign).
    Weights are randomly initialised otherwise (PyTorch defaults), which is what tests want.
    """
    if name not in PRESETS:
        raise KeyError(f"unknown model {name!r}; choose one of {', '.join(model_names())}")
    base = PRESETS[name]
    valid = {f.name for f in dataclasses.fields(base)}
    unknown = sorted(set(overrides) - valid)
    if unknown:
        raise TypeError(f"{name} has no config field(s) {unknown}; valid fields: {', '.join(sorted(valid))}")
    params = dataclasses.replace(base, **overrides)
    cls = Flux if isinstance(params, FluxParams) else WanModel
    with torch.device(device or "cpu"):
        model = cls(params)
    if dtype is not None:
        model = model.to(dtype)
    return model.eval()


from .clip import CLIP_PRESETS, CLIPTextEncoder, CLIPTextParams  # noqa: E402
from .flux_ae import AE_PRESETS, AutoEncoder, AutoEncoderParams, build_flux_ae  # noqa: E402
from .loading import CheckpointError, identify_checkpoint, load_checkpoint, read_metadata, read_state_dict  # noqa: E402
from .t5 import T5_PRESETS, T5Encoder, T5Params  # noqa: E402
from .tokenization import FLUX_T5_MAX_LENGTH, PromptTokenizer, Tokens, clean_prompt  # noqa: E402
from .wan_vae import WAN_VAE_PRESETS, WanVAE, WanVAEParams, build_wan_vae  # noqa: E402

__all__ = [
    "PRESETS", "Flux", "FluxParams", "WanModel", "WanParams", "CheckpointError",
    "build_model", "identify_checkpoint", "load_checkpoint", "model_names", "read_metadata", "read_state_dict",
    "AE_PRESETS", "AutoEncoder", "AutoEncoderParams", "build_flux_ae",
    "WAN_VAE_PRESETS", "WanVAE", "WanVAEParams", "build_wan_vae",
    "T5_PRESETS", "T5Encoder", "T5Params", "CLIP_PRESETS", "CLIPTextEncoder", "CLIPTextParams",
    "FLUX_T5_MAX_LENGTH", "PromptTokenizer", "Tokens", "clean_prompt",
]
