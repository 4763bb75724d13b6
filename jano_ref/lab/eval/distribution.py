"""Distribution-level quality: the Kernel Inception Distance (KID) on LPIPS AlexNet features, offline.

Same-noise PSNR / SSIM / LPIPS (``metrics.py``) ask whether an accelerated sample equals the dense one. KID asks
what JiT's paper and most users ask: whether the samples look like the data, equal or not. It is the squared
maximum mean discrepancy (MMD^2) between two sets of image features under the polynomial kernel

    k(x, y) = (x . y / d + 1) ** 3          (d = feature dimension)

estimated without bias (Binkowski et al. 2018, "Demystifying MMD GANs", §4; torch-fidelity's ``kid`` and
clean-fid's ``kernel_distance`` use the same estimator)::

    MMD^2_u = sum_{i != j} k(a_i, a_j) / (m (m - 1)) + sum_{i != j} k(b_i, b_j) / (n (n - 1))
              - 2 sum_{i, j} k(a_i, b_j) / (m n)

It is 0 in expectation when both sets come from one distribution, so a finite-sample value can be negative; unlike
FID it has no bias that depends on the sample count, which is why it suits the few hundred samples a CPU can make.
``kid`` follows torch-fidelity: the mean and the (population) standard deviation of the estimate over ``subsets``
random subsets of ``subset_size`` features from each set, drawn without replacement. The standard deviation is the
spread of one subset-sized estimate, not the standard error of the mean. ``kid_subsets`` gives the values per subset;
with the default generator two calls on sets of the same sizes draw the same subsets, so the difference between two
runs on the same prompts can be taken subset by subset (paired), which is far less noisy than either KID.

Features (``alex_features``): no Inception network can be loaded offline, so the features come from the LPIPS
AlexNet trunk that already ships (``weights/lpips_alex_v0.1.safetensors``). For each of its five relu layers the
activation at every position is unit-normalised along channels, exactly as LPIPS does before it compares two
images, then averaged over space; each layer's vector is scaled by ``sqrt(d / 5)`` and the five are concatenated
(d = 64 + 192 + 384 + 256 + 256 = 1152). Why:

- all five layers: the tiny data differ from a poor sample in fine texture and edges (relu1-2) as much as in colour
  and shape (relu3-5), and a 64 px picture leaves only 3 x 3 positions at relu3-5;
- unit-normalised: raw pooled activations differ by an order of magnitude between layers (on the tiny data relu3's
  vector is ~8x longer than relu1's), so one layer would decide the kernel; normalised, every layer weighs the
  same, as the five layers do in LPIPS's sum;
- scaled by ``sqrt(d / 5)``: then ``x . y / d`` lies in [0, 1] (0.26 on average between two pictures of the tiny
  data), so the kernel's cubic term matters; left as unit vectors, ``x . y / d`` would stay below 5 / d, the kernel
  would be almost affine and KID almost ``3 / d`` times the squared distance between the two feature means.

A clip is one sample: its feature is its frames' features concatenated in order (d = 1152 x frames), so the
kernel sees each frame in its place but no network looks at the motion.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor

from .metrics import LPIPS

__all__ = ["alex_features", "kid", "kid_subsets", "mean_std", "mmd2_unbiased", "polynomial_kernel"]

KID_DEGREE = 3  # the kernel of Binkowski et al., torch-fidelity and clean-fid: (x.y / d + 1) ** 3
KID_COEF = 1.0


def polynomial_kernel(a: Tensor, b: Tensor) -> Tensor:
    """``(a_i . b_j / d + 1) ** 3`` for features ``a`` [m, d] and ``b`` [n, d] -> [m, n]."""
    return (a @ b.T / a.shape[1] + KID_COEF) ** KID_DEGREE


def _check_features(a: Tensor, b: Tensor) -> None:
    if a.ndim != 2 or b.ndim != 2 or a.shape[1] != b.shape[1]:
        raise ValueError(f"expected features [m, d] and [n, d] of one dimension d, got {tuple(a.shape)} and "
                         f"{tuple(b.shape)}")
    if min(a.shape[0], b.shape[0]) < 2:
        raise ValueError(f"the unbiased estimator needs at least 2 features per set, got {a.shape[0]} and "
                         f"{b.shape[0]}")


def _mmd2(kaa: Tensor, kbb: Tensor, kab: Tensor) -> Tensor:
    """The unbiased MMD^2 from the three kernel matrices (the diagonals of kaa and kbb are left out)."""
    m, n = kaa.shape[0], kbb.shape[0]
    within_a = (kaa.sum() - kaa.diagonal().sum()) / (m * (m - 1))
    within_b = (kbb.sum() - kbb.diagonal().sum()) / (n * (n - 1))
    return within_a + within_b - 2 * kab.mean()


def mmd2_unbiased(a: Tensor, b: Tensor) -> float:
    """The unbiased MMD^2 of all of ``a`` [m, d] against all of ``b`` [n, d] (m and n may differ), in float64."""
    _check_features(a, b)
    a, b = a.double(), b.double()
    return _mmd2(polynomial_kernel(a, a), polynomial_kernel(b, b), polynomial_kernel(a, b)).item()


def kid_subsets(features_a: Tensor, features_b: Tensor, subsets: int = 100, subset_size: int | None = None,
                generator: torch.Generator | None = None) -> list[float]:
    """The unbiased MMD^2 of each of ``subsets`` random subsets: ``subset_size`` features drawn without replacement
    from each set (torch-fidelity's scheme). ``kid`` summarises them.

    ``subset_size`` defaults to ``min(m, n)``; with m = n every subset is then the whole of both sets.
    ``generator`` (a CPU ``torch.Generator``) draws the subsets; by default a fresh one seeded 0, so that a call is
    reproducible, and two calls on sets of the same sizes draw the same indices: the subsets are *paired*, which is
    what a difference between two runs on the same prompts wants. Computed in float64 on the features' device; the
    kernel matrices are built once and indexed per subset.
    """
    _check_features(features_a, features_b)
    m, n = features_a.shape[0], features_b.shape[0]
    size = min(m, n) if subset_size is None else subset_size
    if not 2 <= size <= min(m, n):
        raise ValueError(f"subset_size={size} must be in [2, {min(m, n)}] (the smaller set's size)")
    if subsets < 1:
        raise ValueError(f"subsets={subsets} must be >= 1")
    generator = generator if generator is not None else torch.Generator().manual_seed(0)
    a, b = features_a.double(), features_b.double()
    kaa, kbb, kab = polynomial_kernel(a, a), polynomial_kernel(b, b), polynomial_kernel(a, b)
    values = []
    for _ in range(subsets):
        ia = torch.randperm(m, generator=generator)[:size].to(a.device)
        ib = torch.randperm(n, generator=generator)[:size].to(a.device)
        values.append(_mmd2(kaa[ia][:, ia], kbb[ib][:, ib], kab[ia][:, ib]).item())
    return values


def mean_std(values: list[float]) -> tuple[float, float]:
    """Mean and population standard deviation (numpy's default, which torch-fidelity reports)."""
    mean = math.fsum(values) / len(values)
    return mean, math.sqrt(math.fsum((v - mean) ** 2 for v in values) / len(values))


def kid(features_a: Tensor, features_b: Tensor, subsets: int = 100, subset_size: int | None = None,
        generator: torch.Generator | None = None) -> tuple[float, float]:
    """KID of two feature sets [m, d] and [n, d]: (mean, std) of the unbiased MMD^2 over ``subsets`` random subsets
    of ``subset_size`` features from each (``kid_subsets``). With m = n and the default ``subset_size`` the mean is
    ``mmd2_unbiased(a, b)`` and the std 0. The std is the spread of one subset-sized estimate (torch-fidelity's
    ``kernel_distance_std``), not the standard error of the mean."""
    return mean_std(kid_subsets(features_a, features_b, subsets, subset_size, generator))


def alex_features(images: Tensor, net: LPIPS | None = None, batch: int = 64) -> Tensor:
    """KID features of pictures ``[N, 3, H, W]`` or clips ``[N, 3, F, H, W]`` in [0, 1] -> float32 [N, 1152 * F]
    (see the module docstring). Without ``net`` a float32 ``LPIPS`` is built on ``images``' device for this call."""
    if images.ndim not in (4, 5) or images.shape[1] != 3:
        raise ValueError(f"expected pictures [N, 3, H, W] or clips [N, 3, F, H, W] in [0, 1], got "
                         f"{tuple(images.shape)}")
    if net is None:
        net = LPIPS(device=images.device)
    frames = 1 if images.ndim == 4 else images.shape[2]
    flat = images if images.ndim == 4 else images.transpose(1, 2).flatten(0, 1)  # [N * F, 3, H, W], frames in order
    scale = math.sqrt(sum(LPIPS.CHANNELS) / len(LPIPS.CHANNELS))
    out = []
    with torch.no_grad():
        for i in range(0, flat.shape[0], batch):
            layers = []
            for act in net.activations(flat[i : i + batch]):
                unit = act / (act.square().sum(dim=1, keepdim=True).sqrt() + 1e-10)  # as LPIPS normalises
                layers.append(scale * unit.mean(dim=(2, 3)))
            out.append(torch.cat(layers, dim=1).float().cpu())
    return torch.cat(out).reshape(images.shape[0], frames * sum(LPIPS.CHANNELS))
