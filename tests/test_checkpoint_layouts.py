"""models.configs (architectures read back from checkpoint files) and models.diffusers_keys (diffusers-layout
transformer weights -> ours), on the full-size key manifests and on small random models.

The manifests in tests/data/checkpoint-keys/ are the official files' {key: shape}; diffusers' full-size key sets are
made here from its classes on the meta device (no weights).
"""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import pytest
import torch
from safetensors.torch import save_file

from models import PRESETS, CheckpointError, build_model, load_checkpoint
from models.clip import CLIP_PRESETS
from models.configs import (
    ConfigError, clip_params, flux_ae_params, flux_params, t5_params, wan_params, wan_vae_params,
)
from models.diffusers_keys import flux_state_dict, wan_key, wan_key_to_diffusers, wan_state_dict
from models.flux_ae import AE_PRESETS
from models.t5 import T5_PRESETS
from models.wan_vae import WAN_VAE_PRESETS

from .helpers import randomize_

KEYS = Path(__file__).parent / "data" / "checkpoint-keys"


def manifest(name: str) -> dict[str, tuple[int, ...]]:
    return {k: tuple(v) for k, v in json.loads((KEYS / f"{name}.json").read_text()).items()}


@pytest.mark.parametrize("preset, file", [("flux-dev", "flux1-dev.transformer"),
                                          ("flux-schnell", "flux1-schnell.transformer")])
def test_flux_params_from_the_official_file_shapes(preset, file):
    assert flux_params(manifest(file)) == PRESETS[preset]


@pytest.mark.parametrize("preset, file", [("wan2.1-1.3b", "wan2.1-t2v-1.3b.transformer"),
                                          ("wan2.1-14b", "wan2.1-t2v-14b.transformer")])
def test_wan_params_from_the_official_file_shapes(preset, file):
    shapes = manifest(file)
    assert wan_params(shapes) == PRESETS[preset]  # heads from the official width
    assert wan_params(shapes, {"num_attention_heads": PRESETS[preset].num_heads}) == PRESETS[preset]


def test_autoencoder_and_encoder_params_from_files_and_configs():
    assert flux_ae_params(manifest("flux1.ae")) == AE_PRESETS["flux1-ae"]
    t5_config = {"model_type": "t5", "vocab_size": 32128, "d_model": 4096, "d_kv": 64, "d_ff": 10240, "num_layers": 24,
                 "num_heads": 64, "relative_attention_num_buckets": 32, "feed_forward_proj": "gated-gelu",
                 "layer_norm_epsilon": 1e-6, "is_gated_act": True, "torch_dtype": "bfloat16"}  # google/t5-v1_1-xxl
    assert t5_params(t5_config) == T5_PRESETS["t5-v1_1-xxl"]
    assert t5_params(dict(t5_config, model_type="umt5", vocab_size=256384)) == T5_PRESETS["umt5-xxl"]
    clip = {"vocab_size": 49408, "hidden_size": 768, "intermediate_size": 3072, "num_hidden_layers": 12,
            "num_attention_heads": 12, "max_position_embeddings": 77, "hidden_act": "quick_gelu", "eos_token_id": 2,
            "layer_norm_eps": 1e-5, "projection_dim": 768}
    assert clip_params(clip) == CLIP_PRESETS["clip-vit-large-patch14"]
    assert clip_params({"text_config": clip, "vision_config": {}}) == CLIP_PRESETS["clip-vit-large-patch14"]


def test_wan_vae_params_from_diffusers_config():
    diffusers = pytest.importorskip("diffusers")
    with torch.device("meta"):
        config = dict(diffusers.AutoencoderKLWan().config)  # its defaults are the published Wan2.1 config
    assert wan_vae_params(config) == WAN_VAE_PRESETS["wan2.1-vae"]
    with pytest.raises(ConfigError, match="Wan2.2"):
        wan_vae_params(dict(config, is_residual=True))


def test_architecture_errors_say_what_is_missing():
    flux = {k: v for k, v in manifest("flux1-dev.transformer").items()}
    flux["double_blocks.0.img_attn.norm.query_norm.scale"] = (64,)
    with pytest.raises(ConfigError, match="axes_dims_rope"):
        flux_params(flux)
    assert flux_params(flux, {"axes_dims_rope": [16, 24, 24]}).num_heads == 48
    wan = manifest("wan2.1-t2v-1.3b.transformer")
    wan["patch_embedding.weight"] = (1024, 16, 1, 2, 2)
    with pytest.raises(ConfigError, match="num_heads"):
        wan_params(wan)
    with pytest.raises(ConfigError, match="not a FLUX.1 DiT"):
        flux_params(wan)


# ---- diffusers layout -> ours ------------------------------------------------------------------------------


@pytest.mark.parametrize("preset, file", [("wan2.1-1.3b", "wan2.1-t2v-1.3b.transformer"),
                                          ("wan2.1-14b", "wan2.1-t2v-14b.transformer")])
def test_wan_diffusers_keys_at_full_size(preset, file):
    diffusers = pytest.importorskip("diffusers")
    p = PRESETS[preset]
    with torch.device("meta"):
        ref = diffusers.WanTransformer3DModel(num_attention_heads=p.num_heads, ffn_dim=p.ffn_dim,
                                              num_layers=p.num_layers)
    theirs = {k: tuple(v.shape) for k, v in ref.state_dict().items()}
    assert {wan_key(k): s for k, s in theirs.items()} == manifest(file)
    assert {wan_key_to_diffusers(k): s for k, s in manifest(file).items()} == theirs


@pytest.mark.parametrize("preset, file", [("flux-dev", "flux1-dev.transformer"),
                                          ("flux-schnell", "flux1-schnell.transformer")])
def test_flux_diffusers_state_dict_at_full_size(preset, file):
    diffusers = pytest.importorskip("diffusers")
    with torch.device("meta"):
        ref = diffusers.FluxTransformer2DModel(guidance_embeds=PRESETS[preset].guidance_embed,
                                               axes_dims_rope=(16, 56, 56))
    ours = flux_state_dict(ref.state_dict())  # concatenation works on the meta device
    assert {k: tuple(v.shape) for k, v in ours.items()} == manifest(file)


@pytest.mark.parametrize("name", ["flux-test", "wan-test"])
def test_diffusers_layout_round_trip_is_exact(name):
    from .diffusers_reference import diffusers_flux, diffusers_wan

    torch.manual_seed(0)
    model = randomize_(build_model(name))
    ref = (diffusers_flux if name == "flux-test" else diffusers_wan)(model)
    back = (flux_state_dict if name == "flux-test" else wan_state_dict)(ref.state_dict())
    assert back.keys() == model.state_dict().keys()
    assert all(torch.equal(back[k], v) for k, v in model.state_dict().items())
    # The final modulation's halves are swapped on the way (diffusers: scale, shift): a plain copy would not match.
    if name == "flux-test":
        assert not torch.equal(ref.state_dict()["norm_out.linear.weight"],
                               model.state_dict()["final_layer.adaLN_modulation.1.weight"])


def test_load_checkpoint_renames_a_diffusers_layout_file(tmp_path):
    torch.manual_seed(0)
    model = randomize_(build_model("wan-test"))
    state = {wan_key_to_diffusers(k): v for k, v in model.state_dict().items()}
    save_file(state, str(tmp_path / "diffusion_pytorch_model.safetensors"))
    fresh = build_model("wan-test", device="meta")
    load_checkpoint(fresh, tmp_path, rename=wan_key)
    assert all(torch.equal(fresh.state_dict()[k], v) for k, v in model.state_dict().items())
    with pytest.raises(CheckpointError, match="diffusers-layout"):  # without the rename: refused, with the hint
        load_checkpoint(build_model("wan-test", device="meta"), tmp_path)
    del state["blocks.0.norm2.weight"]  # diffusers' norm2 is our norm3: the error names our key
    save_file(state, str(tmp_path / "diffusion_pytorch_model.safetensors"))
    with pytest.raises(CheckpointError, match="blocks.0.norm3.weight"):
        load_checkpoint(build_model("wan-test", device="meta"), tmp_path, rename=wan_key)
    assert dataclasses.asdict(fresh.params) == dataclasses.asdict(PRESETS["wan-test"])
