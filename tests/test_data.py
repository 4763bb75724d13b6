"""Procedural captioned data (jano_ref.lab.tiny.data), the space-to-depth "autoencoder" and the tiny text encoder."""

import os
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F

from jano_ref.lab.tiny.data import (
    BACKGROUNDS,
    CAPTION_WORDS,
    COLOURS,
    MOTIONS,
    POSITION_JITTER,
    SHAPES,
    SIZE_RANGE,
    TEXTURE_WORDS,
    TEXTURES,
    Scene,
    caption_agreement,
    frame_step,
    make_batch,
    object_mask,
    random_scene,
    render_background,
    render_image,
    render_video,
)
from models.tiny_text import TINY_VOCABULARY, TinyTextEncoder
from models.autoencoder import SpaceToDepth

ROOT = Path(__file__).resolve().parents[1]


# ---- SpaceToDepth ---------------------------------------------------------------------------------


@pytest.mark.parametrize("factor", [1, 2, 4])
def test_space_to_depth_image_round_trip_is_exact(factor):
    ae = SpaceToDepth(factor)
    x = torch.rand(2, 3, 16, 24, generator=torch.Generator().manual_seed(factor))
    z = ae.encode(x)
    assert z.shape == (2, 3 * factor**2, 16 // factor, 24 // factor)
    assert z.dtype == torch.float32 and z.min() >= -1 and z.max() <= 1
    assert torch.equal(ae.decode(z), x) and torch.equal(ae.decode(z, clamp=False), x)


def test_space_to_depth_video_round_trip_and_layout():
    ae = SpaceToDepth(2)
    video, _, _ = make_batch(2, seed=3, size=16, frames=5)
    z = ae.encode(video)
    assert z.shape == (2, 12, 5, 8, 8)
    assert torch.equal(ae.decode(z), video)
    # no temporal mixing: each frame encodes like an image
    assert torch.equal(z[:, :, 2], ae.encode(video[:, :, 2]))
    # documented channel order c * f^2 + py * f + px, values x * 2 - 1
    assert torch.equal(z[0, 1 * 4 + 1 * 2 + 0, 3, 4, 5], video[0, 1, 3, 2 * 4 + 1, 2 * 5] * 2 - 1)


def test_space_to_depth_decode_clamps_out_of_range_latents():
    ae = SpaceToDepth(2)
    z = torch.full((1, 12, 2, 2), 3.0)
    assert ae.decode(z).max() == 1 and ae.decode(z, clamp=False).max() == 2
    with pytest.raises(ValueError, match="multiples"):
        ae.encode(torch.rand(1, 3, 5, 4))


# ---- determinism, captions, vocabulary ----------------------------------------------------------


def test_same_seed_same_batch_different_seed_different_batch():
    a, cap_a, scenes_a = make_batch(8, seed=11, size=32)
    b, cap_b, scenes_b = make_batch(8, seed=11, size=32)
    c, cap_c, _ = make_batch(8, seed=12, size=32)
    assert torch.equal(a, b) and cap_a == cap_b and scenes_a == scenes_b
    assert not torch.equal(a, c) and cap_a != cap_c
    v1, _, _ = make_batch(3, seed=4, size=32, frames=4)
    v2, _, _ = make_batch(3, seed=4, size=32, frames=4)
    assert v1.shape == (3, 3, 4, 32, 32) and torch.equal(v1, v2)


def test_batch_is_fast_and_in_range():
    start = time.perf_counter()
    pixels, captions, _ = make_batch(64, seed=0, size=64)
    assert time.perf_counter() - start < 1.0
    assert pixels.shape == (64, 3, 64, 64) and len(captions) == 64
    assert pixels.min() >= 0 and pixels.max() <= 1


def test_caption_states_the_scene():
    scene = Scene(colour="red", shape="circle", texture="stripes", background="gradient", motion="left", video=True)
    assert scene.caption == "a red striped circle on a gradient background moving left"
    assert Scene(colour="blue", shape="cross").caption == "a blue cross on a flat background"
    still = Scene(colour="white", shape="ring", texture="marks", video=True)
    assert still.caption == "a white scribbled ring on a flat background standing still"
    with pytest.raises(ValueError):
        Scene(colour="purple", shape="circle")

    g = torch.Generator().manual_seed(0)
    for _ in range(200):
        s = random_scene(g, video=True)
        words = s.caption.split()
        assert words[1] == s.colour and s.shape in words and f"{s.background} background" in s.caption
        adjective = TEXTURE_WORDS[TEXTURES.index(s.texture)]
        assert (adjective in words) == (s.texture != "plain")
        assert s.caption.endswith("standing still" if s.motion == "still" else f"moving {s.motion}")
        assert set(words) <= set(CAPTION_WORDS)


def test_the_text_encoder_vocabulary_is_the_caption_words():
    """models.tiny_text keeps its own copy (models/ never imports the lab); order matters: it picks embedding rows."""
    assert TINY_VOCABULARY == CAPTION_WORDS
    assert TinyTextEncoder().vocabulary == ("<pad>", "<unk>") + CAPTION_WORDS


def test_vocabulary_is_covered():
    _, _, images = make_batch(400, seed=1, size=16)
    _, _, clips = make_batch(200, seed=2, size=16, frames=2)
    fields = [("colour", COLOURS), ("shape", SHAPES), ("texture", TEXTURES), ("background", BACKGROUNDS)]
    for field, vocabulary in fields:
        counts = Counter(getattr(s, field) for s in images)
        assert set(counts) == set(vocabulary)
        assert min(counts.values()) > 400 / len(vocabulary) / 2  # roughly uniform
    assert {s.motion for s in images} == {"still"}
    assert {s.motion for s in clips} == set(MOTIONS)


# ---- region complexity ---------------------------------------------------------------------------


def _abs_laplacian(image):
    kernel = torch.tensor([[0.0, 1, 0], [1, -4, 1], [0, 1, 0]]).expand(3, 1, 3, 3)
    return F.conv2d(image[None], kernel, groups=3)[0].abs().sum(0)  # [H-2, W-2]


@pytest.mark.parametrize("texture", ["stripes", "checkers", "noise", "marks"])
@pytest.mark.parametrize("background", ["flat", "gradient"])
def test_textured_object_is_much_busier_than_background(texture, background):
    scene = Scene(colour="green", shape="square", texture=texture, background=background, size=0.3,
                  tone="olive", gradient_angle=0.7, period=2.9, detail_seed=5)
    image, alpha = render_image(scene, 64), object_mask(scene, 64)
    lap = _abs_laplacian(image)
    inside = (F.max_pool2d(-alpha[None, None], 5, 1, 2)[0, 0] == -1)[1:-1, 1:-1]  # eroded: no edges
    outside = (F.max_pool2d(alpha[None, None], 5, 1, 2)[0, 0] == 0)[1:-1, 1:-1]
    assert inside.sum() > 200 and outside.sum() > 1000
    assert lap[inside].mean() > 0.3
    assert lap[inside].mean() > 100 * lap[outside].mean() + 1e-6
    plain = render_image(Scene(colour="green", shape="square", background=background, size=0.3), 64)
    assert _abs_laplacian(plain)[inside].mean() < 1e-5  # the same region without texture is simple


def _neighbour_change(tokens):
    """Mean distance between vertically plus horizontally adjacent tokens of a [h, w, C] grid."""
    vertical = (tokens[1:] - tokens[:-1]).norm(dim=-1).mean()
    horizontal = (tokens[:, 1:] - tokens[:, :-1]).norm(dim=-1).mean()
    return vertical + horizontal


def test_texture_survives_space_to_depth_and_token_packing():
    """Textures must vary from one 4x4-pixel token to the next (f=2 latents packed 2x2), or the
    textured region would be a constant, simple region for the DiT: hence non-integer periods."""
    from models.flux import pack

    ae = SpaceToDepth(2)
    for texture in ["stripes", "checkers", "noise", "marks"]:
        for period in [2.3, 2.8, 3.3]:
            for orientation in range(4):
                scene = Scene(colour="blue", shape="square", texture=texture, size=0.35, period=period,
                              orientation=orientation, background="gradient", detail_seed=orientation)
                tokens = pack(ae.encode(render_image(scene, 64)[None])).reshape(16, 16, 48)
                step = _neighbour_change(tokens[4:12, 4:12])  # inside the object, away from its edges
                flat = _neighbour_change(tokens[:2, :2])  # background
                assert step > 0.5 and step > 5 * flat, (texture, period, orientation, step, flat)


# ---- video ---------------------------------------------------------------------------------------


def test_still_clip_has_identical_frames():
    scene = Scene(colour="cyan", shape="triangle", texture="noise", background="gradient", video=True)
    clip = render_video(scene, 32, 6)
    assert clip.shape == (3, 6, 32, 32)
    assert all(torch.equal(clip[:, t], clip[:, 0]) for t in range(6))
    assert torch.equal(clip[:, 0], render_image(scene, 32))


@pytest.mark.parametrize("motion", ["left", "right", "up", "down"])
def test_moving_object_shifts_by_the_expected_amount_over_a_static_background(motion):
    scene = Scene(colour="yellow", shape="cross", texture="marks", background="gradient", motion=motion,
                  size=0.18, speed=0.04, gradient_angle=2.0, detail_seed=9, video=True)
    size, frames = 64, 7
    clip, alpha = render_video(scene, size, frames), object_mask(scene, size, frames)
    dx, dy = frame_step(scene, size)
    assert (abs(dx), abs(dy)) in {(2, 0), (0, 2)}
    # fully in frame all along; exact: coverages are multiples of 1/16 (4 x 4 samples), so any summation order is exact
    assert torch.all(alpha.sum((1, 2)) == alpha[0].sum())
    coords = torch.arange(size, dtype=torch.float32)
    ys, xs = torch.meshgrid(coords, coords, indexing="ij")
    cx = (alpha * xs).sum((1, 2)) / alpha.sum((1, 2))
    cy = (alpha * ys).sum((1, 2)) / alpha.sum((1, 2))
    t = torch.arange(frames)
    assert torch.allclose(cx - cx[0], dx * t.float(), atol=1e-4)
    assert torch.allclose(cy - cy[0], dy * t.float(), atol=1e-4)
    # in the middle of the clip the object is at scene.position
    mid = frames // 2
    assert abs(cx[mid] + 0.5 - 0.5 * size) < 1e-3 and abs(cy[mid] + 0.5 - 0.5 * size) < 1e-3
    # the pixels fully inside the object move rigidly (texture included)
    last = clip[:, -1].roll(shifts=(-dy * (frames - 1), -dx * (frames - 1)), dims=(1, 2))
    full = (alpha[0] == 1) & (alpha[-1].roll(shifts=(-dy * (frames - 1), -dx * (frames - 1)), dims=(0, 1)) == 1)
    assert full.sum() > 100 and torch.equal(last[:, full], clip[:, 0][:, full])
    # where the object never is, every frame shows the same background
    empty = alpha.sum(0) == 0
    background = render_background(scene, size)
    assert all(torch.equal(clip[:, k][:, empty], background[:, empty]) for k in range(frames))
    assert not torch.equal(clip[:, 0], clip[:, -1])


def test_random_objects_are_large_and_near_the_centre():
    """A 16 x 16-token model needs objects that span many tokens and a location it need not choose (see data.py)."""
    _, _, images = make_batch(200, seed=5, size=64)
    _, _, clips = make_batch(100, seed=6, size=64, frames=4)
    for s in images + clips:
        assert SIZE_RANGE[0] <= s.size <= SIZE_RANGE[1]
        assert all(abs(c - 0.5) <= POSITION_JITTER + 1e-9 for c in s.position), s
    spread = torch.tensor([s.position for s in images])
    assert (spread.std(0) > POSITION_JITTER / 3).all()  # jittered, not pinned to the centre


def test_random_video_scenes_stay_in_frame():
    _, _, scenes = make_batch(60, seed=8, size=64, frames=8)
    for s in scenes:
        alpha = object_mask(s, 64, 8)
        assert (alpha.sum((1, 2)) >= 0.95 * alpha.sum((1, 2)).max()).all(), s


# ---- caption agreement ---------------------------------------------------------------------------


def _agreement_rates(images, scenes):
    results = [caption_agreement(x, s) for x, s in zip(images, scenes)]
    return (sum(r["colour"] for r in results) / len(results), sum(r["shape"] for r in results) / len(results))


def test_caption_agreement_scores_renderer_outputs_as_correct():
    images, _, scenes = make_batch(100, seed=21, size=64)
    colour, shape = _agreement_rates(images, scenes)
    assert colour >= 0.98 and shape >= 0.95, (colour, shape)
    clips, _, clip_scenes = make_batch(20, seed=22, size=64, frames=5)
    colour, shape = _agreement_rates(clips, clip_scenes)
    assert colour >= 0.95 and shape >= 0.9, (colour, shape)


def test_caption_agreement_is_near_chance_on_noise_and_wrong_captions():
    _, _, scenes = make_batch(100, seed=23, size=64)
    g = torch.Generator().manual_seed(0)
    colour, shape = _agreement_rates(torch.rand(100, 3, 64, 64, generator=g), scenes)
    assert colour <= 0.4 and shape <= 0.45, (colour, shape)
    flat = torch.full((3, 64, 64), 0.3)
    assert caption_agreement(flat, scenes[0]) == {"colour": False, "shape": False}
    # the right picture with a different truth is rejected
    scene = Scene(colour="red", shape="ring", texture="checkers", background="gradient", gradient_angle=1.0)
    image = render_image(scene, 64)
    assert caption_agreement(image, scene) == {"colour": True, "shape": True}
    assert caption_agreement(image, Scene(colour="magenta", shape="circle")) == {"colour": False, "shape": False}


# ---- TinyTextEncoder -----------------------------------------------------------------------------


def test_text_encoder_shapes_and_determinism():
    enc = TinyTextEncoder()
    txt, y = enc.flux("a red striped circle on a gradient background", context_in_dim=40, vec_in_dim=24)
    assert txt.shape == (1, 16, 40) and y.shape == (1, 24) and txt.dtype == torch.float32
    context = enc.wan("a blue ring on a flat background moving up", text_dim=24, max_tokens=12)
    assert context.shape == (1, 12, 24)
    txt2, y2 = TinyTextEncoder(seed=0).flux("a red striped circle on a gradient background", 40, 24)
    assert torch.equal(txt, txt2) and torch.equal(y, y2)  # the same computation twice: bit-exact
    txt3, _ = TinyTextEncoder(seed=1).flux("a red striped circle on a gradient background", 40, 24)
    assert not torch.allclose(txt, txt3)
    captions = ["a red circle on a flat background", "", "a green square on a gradient background"]
    batch_txt, batch_y = enc.flux_batch(captions, 40, 24)
    assert batch_txt.shape == (3, 16, 40) and batch_y.shape == (3, 24)
    # Training encodes caption batches and generation one caption, so a model relies on batch == single; only up
    # to rounding: a batch of 3 is another matmul shape than a batch of 1, and BLAS may take another kernel and
    # summation order for it (the pooled vector differs in the last bits on AVX-512). float32, unit-scale entries.
    for i, c in enumerate(captions):
        t, yy = enc.flux(c, 40, 24)
        torch.testing.assert_close(batch_txt[i], t[0], rtol=1e-6, atol=1e-6)
        torch.testing.assert_close(batch_y[i], yy[0], rtol=1e-6, atol=1e-6)
    torch.testing.assert_close(enc.wan_batch(captions, 24)[2], enc.wan(captions[2], 24)[0], rtol=1e-6, atol=1e-6)
    half = enc.wan("a red circle", 24, device="cpu", dtype=torch.bfloat16)
    assert half.dtype == torch.bfloat16


def test_text_encoder_is_the_same_in_another_process():
    """Same caption -> same numbers in a fresh interpreter with a different hash salt."""
    code = (
        "from models.tiny_text import TinyTextEncoder as T;"
        "t, y = T().flux('a cyan noisy cross on a flat background', 40, 24);"
        "print(repr(t.double().sum().item()), repr(y.double().sum().item()), repr(T().wan('', 24).sum().item()))"
    )
    env = {**os.environ, "PYTHONHASHSEED": "12345"}
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, env=env, capture_output=True, text=True, check=True)
    enc = TinyTextEncoder()
    t, y = enc.flux("a cyan noisy cross on a flat background", 40, 24)
    here = f"{t.double().sum().item()!r} {y.double().sum().item()!r} {enc.wan('', 24).sum().item()!r}"
    assert out.stdout.strip() == here


def test_text_encoder_distinguishes_captions_and_word_order():
    enc = TinyTextEncoder()
    base = enc.wan("a red circle on a flat background", 32)
    assert not torch.allclose(base, enc.wan("a blue circle on a flat background", 32))
    swapped = enc.wan("a circle red on a flat background", 32)
    assert not torch.allclose(base, swapped)
    # same bag of words, so only the position code tells them apart: the pooled vector is equal
    _, y = enc.flux("a red circle on a flat background", 32, 8)
    _, y_swapped = enc.flux("a circle red on a flat background", 32, 8)
    assert torch.allclose(y, y_swapped, atol=1e-6)
    assert enc.tokenize("A RED, circle!", 5)[:3] == enc.tokenize("a red circle", 5)[:3]
    assert enc.tokenize("a zebra", 4) == [enc._ids["a"], enc.UNK, enc.PAD, enc.PAD]
    assert len(enc.tokenize(" ".join(["red"] * 30), 16)) == 16  # long captions are truncated


def test_text_encoder_empty_caption_is_all_padding():
    enc = TinyTextEncoder()
    assert enc.tokenize("", 6) == [enc.PAD] * 6
    txt, y = enc.flux("", 40, 24)
    assert txt.shape == (1, 16, 40) and torch.isfinite(txt).all() and torch.isfinite(y).all()
    assert not torch.allclose(txt, enc.flux("a red circle on a flat background", 40, 24)[0])
    assert torch.equal(enc.wan("   ", 24), enc.wan("", 24))
