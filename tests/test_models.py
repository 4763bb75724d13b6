"""Structure, layout helpers, configs and error messages of our Flux and Wan modules."""

import pytest
import torch

from models import PRESETS, build_model
from models.flux import image_ids, latent_size, pack, unpack
from models.wan import grid_positions

from .helpers import randomize_, rel_err


@pytest.mark.parametrize(
    "name, n_params, n_tensors",
    [
        # counts from the meta dumps of the official classes (models.md §1.1, §2.1)
        ("flux-dev", 11_901_408_320, 780),
        ("wan2.1-1.3b", 1_418_996_800, 825),
        ("wan2.1-14b", 14_288_491_584, 1095),
    ],
)
def test_full_size_parameter_counts(name, n_params, n_tensors):
    model = build_model(name, device="meta")
    assert all(p.is_meta for p in model.parameters())
    assert sum(p.numel() for p in model.parameters()) == n_params
    assert len(model.state_dict()) == n_tensors


def test_flux_pack_layout_and_round_trip():
    latent = torch.randn(2, 16, 6, 8)
    tokens = pack(latent)
    assert tokens.shape == (2, 12, 64)
    # token (r, c) holds channel-major 2x2 patches: index c*4 + py*2 + px (BFL sampling.prepare)
    r, c, ch, py, px = 1, 2, 5, 1, 0
    assert tokens[0, r * 4 + c, ch * 4 + py * 2 + px] == latent[0, ch, 2 * r + py, 2 * c + px]
    assert torch.equal(unpack(tokens, 6, 8), latent)
    ids = image_ids(6, 8)
    assert ids.shape == (12, 3) and ids[:, 0].eq(0).all()
    assert ids[r * 4 + c].tolist() == [0, r, c]
    assert latent_size(1024, 1024) == (128, 128) and latent_size(1000, 520) == (126, 66)


def test_wan_patch_layout_and_round_trip():
    model = build_model("wan-test")
    x = torch.randn(2, 4, 3, 4, 6)
    tokens = model.patchify(x)
    assert tokens.shape == (2, 3 * 2 * 3, 16)
    # Wan unpatchify: out[c, f, 2h+i, 2w+j] = token(f, h, w)[(i*2 + j)*C + c] (channel last)
    f, h, w, i, j, ch = 2, 1, 2, 1, 0, 3
    assert tokens[1, (f * 2 + h) * 3 + w, (i * 2 + j) * 4 + ch] == x[1, ch, f, 2 * h + i, 2 * w + j]
    assert torch.equal(model.unpatchify(tokens, (3, 2, 3)), x)
    assert grid_positions((3, 2, 3))[(f * 2 + h) * 3 + w].tolist() == [f, h, w]


def test_wan_rope_split_matches_official():
    assert PRESETS["wan2.1-1.3b"].rope_axes_dim == [44, 42, 42]
    assert PRESETS["wan2.1-14b"].rope_axes_dim == [44, 42, 42]
    assert PRESETS["wan-test"].rope_axes_dim == [16, 16, 16]


def _flux_inputs(model, h=4, w=6, n_txt=5):
    p = model.params
    return dict(
        img=torch.randn(1, h * w, p.in_channels), img_ids=image_ids(2 * h, 2 * w),
        txt=torch.randn(1, n_txt, p.context_in_dim), txt_ids=torch.zeros(n_txt, 3),
        timesteps=torch.tensor([0.5]), y=torch.randn(1, p.vec_in_dim), guidance=torch.tensor([3.5]),
    )


def test_token_index_all_tokens_equals_full_forward():
    flux = randomize_(build_model("flux-test"))
    inp = _flux_inputs(flux)
    perm = torch.randperm(24)
    with torch.no_grad():
        full = flux(**inp)
        subset = flux(**inp, token_index=perm)
    assert rel_err(subset, full[:, perm]) < 1e-6

    wan = randomize_(build_model("wan-test"))
    x, t, ctx = torch.randn(1, 4, 2, 8, 4), torch.tensor([500.0]), torch.randn(1, 7, 24)  # 2x4x2 = 16 tokens
    idx = torch.tensor([0, 3, 5, 6, 9, 12, 14, 15])
    with torch.no_grad():
        full = wan.forward_tokens(x, t, ctx)
        reversed_ = wan.forward_tokens(x, t, ctx, token_index=torch.arange(16).flip(0))
        subset = wan.forward_tokens(x, t, ctx, token_index=idx)
    assert rel_err(reversed_, full.flip(1)) < 1e-6
    # without a cache a strict subset attends to fewer keys, so it must differ
    assert subset.shape == (1, 8, 16) and rel_err(subset, full[:, idx]) > 1e-4


@pytest.mark.parametrize("name", ["flux-test", "wan-test"])
def test_bfloat16_runs_close_to_float32(name):
    model = randomize_(build_model(name))
    with torch.no_grad():
        if name == "flux-test":
            inp = _flux_inputs(model)
            ref = model(**inp)
            low = build_model(name, dtype=torch.bfloat16)
            low.load_state_dict(model.state_dict())
            out = low(**{k: v.bfloat16() if v.is_floating_point() and k in ("img", "txt", "y") else v for k, v in inp.items()})
            assert out.dtype == torch.bfloat16
        else:
            x, t, ctx = torch.randn(1, 4, 2, 4, 4), torch.tensor([500.0]), torch.randn(1, 7, 24)
            ref = model(x, t, ctx)
            low = build_model(name, dtype=torch.bfloat16)
            low.load_state_dict(model.state_dict())
            out = low(x, t, ctx)
            assert out.dtype == torch.float32  # Wan returns float32, like the official model
    assert rel_err(out, ref) < 5e-2


def test_build_model_errors_name_the_fix():
    with pytest.raises(KeyError, match="flux-dev"):
        build_model("flux-pro")
    with pytest.raises(TypeError, match="hidden_size"):
        build_model("flux-test", hiden_size=32)
    with pytest.raises(ValueError, match="axes_dim"):
        build_model("flux-test", hidden_size=128)
    wan = build_model("wan-test", dim=128, num_heads=2, ffn_dim=64)
    assert wan.params.rope_axes_dim == [24, 20, 20]


def test_missing_guidance_and_long_context_errors():
    flux = build_model("flux-test")
    inp = _flux_inputs(flux)
    inp.pop("guidance")
    with pytest.raises(ValueError, match="guidance"):
        flux(**inp)
    wan = build_model("wan-test", text_len=8)
    with pytest.raises(ValueError, match="text_len=8"):
        wan(torch.randn(1, 4, 1, 2, 2), torch.tensor([1.0]), torch.randn(1, 9, 24))


def _spatial_rope(name: str) -> tuple[list[int], float]:
    p = PRESETS[name]
    dims = p.axes_dim if hasattr(p, "axes_dim") else p.rope_axes_dim
    return list(dims[1:]), p.theta  # (height, width); axis 0 is the frame / the unused Flux image axis


@pytest.mark.parametrize("name", ["tiny-flux", "tiny-wan"])
def test_tiny_presets_rope_resolves_their_16_token_grid(name):
    """A trained tiny model sees 16 tokens per side. RoPE only tells positions apart through the frequencies that
    turn by a radian or more across that side; with FLUX.1's theta 10000 and 5-6 frequencies per axis most of them
    hardly turn. Require at least half of each spatial axis's frequencies to turn by >= 1 rad across the grid."""
    side = 16
    dims, theta = _spatial_rope(name)
    for d in dims:
        omega = theta ** (-torch.arange(0, d, 2, dtype=torch.float64) / d)
        turning = int(((side - 1) * omega >= 1.0).sum())
        assert turning >= (d // 2 + 1) // 2, f"{name}: only {turning} of {d // 2} RoPE frequencies turn >= 1 rad"
