"""The self-written Wan2.1 VAE (models/wan_vae.py) and its one-time converter (weights/convert_wan_vae.py).

CPU, float32, small random configs ("wan-vae-test": the published stages and strides with 8 base channels and
z_dim 4); the full-size model is only built on the meta device. Reference: diffusers 0.42.1 ``AutoencoderKLWan``,
whose key layout ours shares, so its state dict loads into ours unchanged.
"""

from __future__ import annotations

import dataclasses
import importlib.util
import inspect
import json
from pathlib import Path

import pytest
import torch

from models import CheckpointError, load_checkpoint
from models.wan_vae import WAN_VAE_PRESETS, WanVAE, build_wan_vae

from .helpers import randomize_, rel_err

KEYS = Path(__file__).parent / "data" / "checkpoint-keys" / "wan2.1.vae.json"
CONVERTER = Path(__file__).resolve().parents[1] / "weights" / "convert_wan_vae.py"
# Same math as diffusers (and the same computation across chunkings); only the summation order differs
# (our convs pad inside, diffusers pads with F.pad first; chunk sizes change the conv shapes), which moves
# float32 results by ~1e-7 relative. 1e-5 leaves room for other CPUs' kernels and still catches any real error.
TOL = 1e-5
H, W = 16, 24  # latent 2 x 3: not square, so a swapped height and width would show


def converter():
    spec = importlib.util.spec_from_file_location("convert_wan_vae", CONVERTER)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def reference_pair(seed: int = 0, **overrides) -> tuple[WanVAE, torch.nn.Module]:
    """Our "wan-vae-test" VAE and diffusers' AutoencoderKLWan with the same random weights."""
    diffusers = pytest.importorskip("diffusers", reason="parity tests need the test extra (pip install -e .[test])")
    torch.manual_seed(seed)
    ours = build_wan_vae("wan-vae-test", **overrides)
    config = {k: list(v) if isinstance(v, tuple) else v for k, v in dataclasses.asdict(ours.params).items()}
    ref = randomize_(diffusers.AutoencoderKLWan(**config), seed=seed).eval()
    ours.load_state_dict(ref.state_dict(), strict=True)  # same key layout: no mapping
    return ours, ref


def video(frames: int, seed: int, batch: int = 2) -> torch.Tensor:
    return torch.rand(batch, 3, frames, H, W, generator=torch.Generator().manual_seed(seed)) * 2 - 1


def stats(vae: WanVAE) -> tuple[torch.Tensor, torch.Tensor]:
    p = vae.params
    return torch.tensor(p.latents_mean).view(1, -1, 1, 1, 1), torch.tensor(p.latents_std).view(1, -1, 1, 1, 1)


# ---- parity with diffusers ---------------------------------------------------------------------------


@pytest.mark.parametrize("frames", [1, 5, 9])
def test_encode_decode_match_diffusers(frames, one_thread_no_grad):
    ours, ref = reference_pair(seed=frames)
    mean, std = stats(ours)
    x = video(frames, seed=10 + frames)
    z = ours.encode(x)
    # diffusers returns the raw posterior; its pipelines normalise with (mu - mean) * (1 / std).
    z_ref = (ref.encode(x).latent_dist.mode() - mean) * (1 / std)
    assert z.shape == z_ref.shape == (2, 4, 1 + (frames - 1) // 4, H // 8, W // 8)
    assert rel_err(z, z_ref) <= TOL

    # The last RMSNorm fixes the output scale: a larger final conv makes the clamp to [-1, 1] bite in places.
    for vae in (ours, ref):
        vae.decoder.conv_out.weight.mul_(3)
    z = torch.randn(z.shape, generator=torch.Generator().manual_seed(frames))
    out = ours.decode(z)
    out_ref = ref.decode(z / (1 / std) + mean).sample  # the pipelines' de-normalisation
    assert out.shape == out_ref.shape == x.shape
    assert 0 < (out.abs() == 1).float().mean() < 0.5
    assert rel_err(out, out_ref) <= TOL


def test_frame_count_must_be_4n_plus_1(one_thread_no_grad):
    """diffusers (like the official code) accepts F = 6 but silently drops the frame that does not fill a group
    of 4; ours refuses with an error that says so."""
    ours, ref = reference_pair(seed=3)
    x = video(6, seed=4, batch=1)
    dropped = ref.encode(x).latent_dist.mode()
    # frame 5 had no effect; exact, as diffusers encodes chunks of 1 + 4 frames and never reads it (same computation)
    assert torch.equal(dropped, ref.encode(x[:, :, :5]).latent_dist.mode())
    with pytest.raises(ValueError, match=r"F = 6 frames, but F must be 4n \+ 1"):
        ours.encode(x)
    with pytest.raises(ValueError, match="multiples of 8"):
        ours.encode(video(5, seed=4, batch=1)[..., :12])
    with pytest.raises(ValueError, match=r"latents must be \[B, 4, frames, h, w\]"):
        ours.decode(torch.zeros(1, 16, 2, 2, 3))


# ---- key layout, loading and conversion ---------------------------------------------------------------


def test_full_size_keys_match_the_diffusers_manifest():
    """tests/data/checkpoint-keys/wan2.1.vae.json is the {key: shape} map of diffusers 0.42.1 ``AutoencoderKLWan()``
    (its defaults are the published Wan2.1 config) built under ``torch.device("meta")``, written with
    ``json.dumps({k: list(v.shape) for k, v in vae.state_dict().items()}, indent=0)``. No real weights were read."""
    manifest = {k: tuple(v) for k, v in json.loads(KEYS.read_text()).items()}
    ours = {k: tuple(v.shape) for k, v in build_wan_vae("wan2.1-vae", device="meta").state_dict().items()}
    assert len(manifest) == 194
    assert ours == manifest


def test_preset_is_the_diffusers_default_config():
    """diffusers' AutoencoderKLWan defaults are the published Wan2.1 config (what convert_wan_to_diffusers.py
    builds with ``AutoencoderKLWan()``); our preset must name the same fields with the same values."""
    diffusers = pytest.importorskip("diffusers")
    signature = inspect.signature(diffusers.AutoencoderKLWan.__init__).parameters
    for name, value in dataclasses.asdict(WAN_VAE_PRESETS["wan2.1-vae"]).items():
        expected = signature[name].default
        assert (tuple(expected) if isinstance(expected, list) else expected) == value, name


def test_loads_a_diffusers_vae_folder(tmp_path, one_thread_no_grad):
    """The Diffusers repos' vae/ layout: diffusion_pytorch_model.safetensors + config.json, as written by
    diffusers' save_pretrained. Our config fields are named as in that config.json."""
    ours, ref = reference_pair(seed=5)
    ref.save_pretrained(tmp_path / "vae")
    config = json.loads((tmp_path / "vae" / "config.json").read_text())
    fields = {f.name for f in dataclasses.fields(ours.params)}
    assert fields <= set(config)
    as_configured = build_wan_vae("wan2.1-vae", device="meta", **{k: config[k] for k in fields})
    loaded = load_checkpoint(as_configured, tmp_path / "vae")
    assert loaded.params == ours.params
    assert all(torch.equal(a, b) for a, b in zip(loaded.state_dict().values(), ours.state_dict().values()))
    x = video(5, seed=6, batch=1)
    assert torch.equal(loaded.encode(x), ours.encode(x))  # the same computation twice: bit-exact


def original_state_dict(vae: WanVAE) -> dict[str, torch.Tensor]:
    """Our weights under Wan's own key names (Wan2.1_VAE.pth layout), via the converter's mapping."""
    cw = converter()
    return {cw.original_key(k, vae.params): v.clone() for k, v in vae.state_dict().items()}


@pytest.mark.parametrize("preset", ["wan2.1-vae", "wan-vae-test"])
def test_original_key_names_agree_with_diffusers_converter(preset):
    """No real Wan2.1_VAE.pth is available offline, so the original layout is reconstructed from our mapping.
    diffusers' single-file converter (convert_wan_vae_to_diffusers, written independently with the published
    indices) must take those names back to ours, key for key."""
    pytest.importorskip("diffusers")
    from diffusers.loaders.single_file_utils import convert_wan_vae_to_diffusers

    vae = build_wan_vae(preset, device="meta")
    names = {converter().original_key(k, vae.params): k for k in vae.state_dict()}
    assert len(names) == len(vae.state_dict())
    assert convert_wan_vae_to_diffusers({wan: wan for wan in names}) == {ours: wan for wan, ours in names.items()}


def test_converter_round_trip(tmp_path, one_thread_no_grad):
    """A random small VAE saved as a Wan-layout .pth (reconstructed from our mapping, see above), converted,
    and loaded strictly: the same tensors, so the same outputs, exactly."""
    torch.manual_seed(7)
    vae = randomize_(build_wan_vae("wan-vae-test"), seed=7)
    pth = tmp_path / "Wan2.1_VAE.pth"
    torch.save(original_state_dict(vae), pth)
    out = converter().main([str(pth), "--preset", "wan-vae-test"])
    assert out == tmp_path / "Wan2.1_VAE.safetensors"
    loaded = load_checkpoint(build_wan_vae("wan-vae-test", device="meta"), out)
    x = video(5, seed=8, batch=1)
    z = vae.encode(x)
    assert torch.equal(loaded.encode(x), z)
    assert torch.equal(loaded.decode(z), vae.decode(z))
    first = out.read_bytes()
    converter().main([str(pth), "--preset", "wan-vae-test"])
    assert out.read_bytes() == first  # deterministic file


def test_converter_errors(tmp_path):
    cw = converter()
    vae = build_wan_vae("wan-vae-test")
    sd = original_state_dict(vae)
    p = vae.params

    broken = dict(sd)
    del broken["decoder.upsamples.4.shortcut.weight"]
    broken["decoder.upsamples.4.shortcut.scale"] = torch.zeros(1)
    broken["conv2.weight"] = torch.zeros(2, 2, 1, 1, 1)
    with pytest.raises(CheckpointError) as info:
        cw.convert(broken, p)
    message = str(info.value)
    assert "1 missing key(s) (the model has them, the file not): decoder.upsamples.4.shortcut.weight" in message
    assert "1 unexpected key(s) (in the file, not in the model): decoder.upsamples.4.shortcut.scale" in message
    assert "1 shape mismatch(es): conv2.weight: expected [4, 4, 1, 1, 1], found [2, 2, 1, 1, 1]" in message
    assert "--preset" in message

    with pytest.raises(CheckpointError, match="flat {name: tensor} state dict"):
        cw.convert({"state_dict": sd}, p)
    with pytest.raises(SystemExit, match="refusing to convert"):  # the full preset does not fit the small file
        torch.save(sd, tmp_path / "small.pth")
        cw.main([str(tmp_path / "small.pth")])
    (tmp_path / "junk.pth").write_bytes(b"not a checkpoint")
    with pytest.raises(SystemExit, match="weights_only=True"):
        cw.main([str(tmp_path / "junk.pth")])


# ---- the feature cache ----------------------------------------------------------------------------------


def test_chunked_runs_equal_whole_video_runs(one_thread_no_grad):
    """Frame 0 then 4 frames at a time (the official chunking) equals one pass over the whole video, and
    decoding one latent frame at a time equals decoding all at once or two at a time (tolerance: see TOL)."""
    torch.manual_seed(9)
    vae = randomize_(build_wan_vae("wan-vae-test"), seed=9)
    x = video(13, seed=10, batch=1)
    z = vae.encode(x)
    assert z.shape[2] == 4
    assert rel_err(vae.encode(x, latents_per_step=None), z) <= TOL
    assert rel_err(vae.encode(x, latents_per_step=2), z) <= TOL
    out = vae.decode(z)
    for per_step in (None, 2, 3):
        assert rel_err(vae.decode(z, latents_per_step=per_step), out) <= TOL
    # ... and what the cache carries matters: without latent frame 0 the later frames come out different.
    assert rel_err(vae.decode(z[:, :, 1:])[:, :, 1:], out[:, :, 5:]) > 1e-2


def test_calls_share_no_state(one_thread_no_grad):
    """Every call makes its own feature cache: repeated and interleaved calls give bit-identical results."""
    torch.manual_seed(11)
    vae = randomize_(build_wan_vae("wan-vae-test"), seed=11)
    a, b = video(9, seed=12, batch=1), video(5, seed=13, batch=1)
    za = vae.encode(a)
    assert torch.equal(vae.encode(b), vae.encode(b))
    assert torch.equal(vae.encode(a), za)
    first = vae.decode(za)
    vae.decode(vae.encode(b))
    assert torch.equal(vae.decode(za), first)


def test_bfloat16_is_close_to_float32(one_thread_no_grad):
    torch.manual_seed(14)
    vae = randomize_(build_wan_vae("wan-vae-test"), seed=14)
    half = build_wan_vae("wan-vae-test", dtype=torch.bfloat16)
    half.load_state_dict(vae.state_dict())
    x = video(5, seed=15, batch=1)
    z, z_half = vae.encode(x), half.encode(x)
    assert z_half.dtype == torch.float32  # outputs are float32 whatever the compute dtype, as in the official code
    assert rel_err(z_half, z) < 5e-2  # bf16 keeps 8 bits of mantissa
    assert rel_err(half.decode(z), vae.decode(z)) < 5e-2
