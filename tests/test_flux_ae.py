"""The FLUX.1 autoencoder (models/flux_ae.py): numeric parity with diffusers' AutoencoderKL on small random fp32
configs, the official ae.safetensors key set, and loading through models.loading. CPU only, no weights needed."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
import torch
from safetensors.torch import save_file

from models import CheckpointError, load_checkpoint
from models.flux_ae import AutoEncoder, build_flux_ae

from .helpers import randomize_, rel_err

KEYS = Path(__file__).parent / "data" / "checkpoint-keys" / "flux1.ae.json"  # copied from the real file's header
# Same math in both libraries, different summation order (1x1 convs here, linear layers there; their GroupNorm and
# attention kernels), so fp32 outputs agree to rounding; 1e-5 relative leaves a wide margin over it.
TOL = 1e-5
# Two small shapes: the test preset (3 levels, one resnet per level, 4 latent channels as flux-test packs) and a
# 2-level one with FLUX.1's 2 resnets per level and 16 latent channels.
CONFIGS = {
    "test-preset": {},
    "two-levels-z16": dict(ch=32, ch_mult=[1, 2], num_res_blocks=2, z_channels=16),
}


def small_ae(seed: int, **overrides) -> AutoEncoder:
    torch.manual_seed(seed)
    return randomize_(build_flux_ae("flux1-ae-test", **overrides), seed=seed)


def images(batch=2, size=32, seed=0) -> torch.Tensor:
    return torch.rand(batch, 3, size, size, generator=torch.Generator().manual_seed(seed)) * 2 - 1


# ---- parity with diffusers -----------------------------------------------------------------------------------


def to_diffusers_state_dict(sd: dict[str, torch.Tensor], levels: int) -> dict[str, torch.Tensor]:
    """BFL / LDM key layout (ours) -> diffusers AutoencoderKL layout.

    diffusers numbers decoder levels in the order they run (up_blocks.0 is the lowest resolution), BFL by resolution
    (up.0 is the full one); it names the mid-block resnets as a list, and its attention projections are linear
    layers, so their 1x1 conv kernels lose the two trailing unit dims.
    """
    renames = [
        (r"\.down\.(\d+)\.block\.", r".down_blocks.\1.resnets."),
        (r"\.down\.(\d+)\.downsample\.", r".down_blocks.\1.downsamplers.0."),
        (r"\.up\.(\d+)\.block\.", lambda m: f".up_blocks.{levels - 1 - int(m[1])}.resnets."),
        (r"\.up\.(\d+)\.upsample\.", lambda m: f".up_blocks.{levels - 1 - int(m[1])}.upsamplers.0."),
        (r"\.mid\.block_(\d)\.", lambda m: f".mid_block.resnets.{int(m[1]) - 1}."),
        (r"\.mid\.attn_1\.norm\.", ".mid_block.attentions.0.group_norm."),
        (r"\.mid\.attn_1\.([qkv])\.", r".mid_block.attentions.0.to_\1."),
        (r"\.mid\.attn_1\.proj_out\.", ".mid_block.attentions.0.to_out.0."),
        (r"\.nin_shortcut\.", ".conv_shortcut."),
        (r"\.norm_out\.", ".conv_norm_out."),
    ]
    out = {}
    for key, tensor in sd.items():
        new = key
        for pattern, replacement in renames:
            new = re.sub(pattern, replacement, new)
        out[new] = tensor.flatten(1) if ".attentions.0.to_" in new and tensor.ndim == 4 else tensor
    return out


def diffusers_ae(ae: AutoEncoder):
    """diffusers' AutoencoderKL in the FLUX.1 configuration, holding ``ae``'s weights (strict load)."""
    from diffusers import AutoencoderKL

    p = ae.params
    levels = len(p.ch_mult)
    ref = AutoencoderKL(
        in_channels=p.in_channels, out_channels=p.out_ch,
        down_block_types=("DownEncoderBlock2D",) * levels, up_block_types=("UpDecoderBlock2D",) * levels,
        block_out_channels=tuple(p.ch * m for m in p.ch_mult), layers_per_block=p.num_res_blocks,
        act_fn="silu", latent_channels=p.z_channels, norm_num_groups=32, sample_size=p.resolution,
        scaling_factor=p.scale_factor, shift_factor=p.shift_factor,
        use_quant_conv=False, use_post_quant_conv=False, mid_block_add_attention=True,
    )
    ref.load_state_dict(to_diffusers_state_dict(ae.state_dict(), levels), strict=True)
    return ref.eval()


@pytest.mark.parametrize("overrides", CONFIGS.values(), ids=CONFIGS.keys())
def test_encode_and_decode_match_diffusers(overrides, one_thread_no_grad):
    pytest.importorskip("diffusers", reason="parity tests need the test extra (pip install -e .[test])")
    ae = small_ae(seed=1, **overrides)
    ref = diffusers_ae(ae)
    p, x = ae.params, images()
    latent_side = 32 // 2 ** (len(p.ch_mult) - 1)

    z = ae.encode(x)
    z_ref = (ref.encode(x).latent_dist.mode() - p.shift_factor) * p.scale_factor
    assert z.shape == z_ref.shape == (2, p.z_channels, latent_side, latent_side)
    assert rel_err(z, z_ref) <= TOL

    z_in = torch.randn(2, p.z_channels, latent_side, latent_side, generator=torch.Generator().manual_seed(2))
    decoded, decoded_ref = ae.decode(z_in), ref.decode(z_in / p.scale_factor + p.shift_factor).sample
    assert decoded.shape == decoded_ref.shape == (2, 3, 32, 32)
    assert rel_err(decoded, decoded_ref) <= TOL


def test_encode_keeps_the_mean_not_the_log_variance(one_thread_no_grad):
    """Guards the parity test: mean and log-variance halves must differ, or taking the wrong half would pass."""
    ae = small_ae(seed=3)
    moments = ae.encoder(images())
    mean, logvar = moments.chunk(2, dim=1)
    p = ae.params
    assert torch.equal(ae.encode(images()), p.scale_factor * (mean - p.shift_factor))
    assert rel_err(logvar, mean) > 0.1


def test_bfloat16_runs_end_to_end(one_thread_no_grad):
    """The same code in bf16 (as on CUDA): dtypes are kept and results stay near fp32. bf16 keeps 8 significant
    bits, so each layer adds ~0.4% error and ~15 layers compound it (measured ~3e-2 each way); the
    bounds catch a broken dtype path, not precision."""
    ae = small_ae(seed=6)
    bf16 = build_flux_ae("flux1-ae-test", dtype=torch.bfloat16)
    bf16.load_state_dict(ae.state_dict())
    x = images(seed=7)
    z = bf16.encode(x.bfloat16())
    decoded = bf16.decode(z)
    assert z.dtype == decoded.dtype == torch.bfloat16
    assert rel_err(z, ae.encode(x)) < 0.1
    assert rel_err(decoded, ae.decode(z.float())) < 0.1


def test_wrong_input_shapes_are_refused():
    ae = build_flux_ae("flux1-ae-test")
    with pytest.raises(ValueError, match=r"multiples of 4"):
        ae.encode(torch.zeros(1, 3, 30, 32))
    with pytest.raises(ValueError, match=r"\[B, 4, h, w\]"):
        ae.decode(torch.zeros(1, 16, 8, 8))


def test_build_flux_ae_rejects_unknown_presets_and_fields():
    with pytest.raises(KeyError, match="flux1-ae"):
        build_flux_ae("flux1-vae")
    with pytest.raises(TypeError, match="latent_channels"):
        build_flux_ae(latent_channels=16)


# ---- the official checkpoint's keys --------------------------------------------------------------------------


def test_full_size_build_has_the_official_keys_and_shapes():
    official = {k: tuple(v) for k, v in json.loads(KEYS.read_text()).items()}
    ae = build_flux_ae(device="meta", dtype=torch.bfloat16)
    ours = {k: tuple(v.shape) for k, v in ae.state_dict().items()}
    assert len(official) == 244
    assert sorted(ours) == sorted(official)
    assert {k: v for k, v in ours.items() if official[k] != v} == {}
    assert sum(t.numel() for t in ae.state_dict().values()) == 83_819_683  # models.md §1.11
    assert {t.dtype for t in ae.state_dict().values()} == {torch.bfloat16}


# ---- loading ---------------------------------------------------------------------------------------------------


def saved(ae: AutoEncoder, path: Path, edit=None) -> Path:
    sd = {k: v.detach().clone().contiguous() for k, v in ae.state_dict().items()}
    if edit is not None:
        edit(sd)
    save_file(sd, path)
    return path


def test_loading_into_a_meta_build_gives_bit_identical_outputs(tmp_path, one_thread_no_grad):
    original = small_ae(seed=4)
    loaded = build_flux_ae("flux1-ae-test", device="meta")
    assert load_checkpoint(loaded, saved(original, tmp_path / "ae.safetensors")) is loaded
    assert all(t.device == torch.device("cpu") for t in loaded.state_dict().values())
    x = images(seed=5)
    z = original.encode(x)
    assert torch.equal(loaded.encode(x), z)  # the same computation twice: exact
    assert torch.equal(loaded.decode(z), original.decode(z))


@pytest.mark.parametrize("how", ["missing", "renamed"])
def test_a_checkpoint_with_a_missing_or_renamed_key_is_refused(how, tmp_path):
    key = "decoder.up.0.block.0.nin_shortcut.weight"
    new = key.replace("nin_shortcut", "conv_shortcut")  # the diffusers name

    def edit(sd):
        tensor = sd.pop(key)
        if how == "renamed":
            sd[new] = tensor

    path = saved(build_flux_ae("flux1-ae-test"), tmp_path / "ae.safetensors", edit)
    with pytest.raises(CheckpointError) as info:
        load_checkpoint(build_flux_ae("flux1-ae-test", device="meta"), path)
    message = str(info.value)
    assert f"1 missing key(s) (in the model, not in the checkpoint): {key}" in message
    assert (f"1 unexpected key(s) (in the checkpoint, not in the model): {new}" in message) == (how == "renamed")
