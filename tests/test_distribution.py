"""KID (jano_ref.lab.eval.distribution): the estimator against a direct double loop, its unbiasedness, its subsets,
and the LPIPS-AlexNet features it runs on."""

from __future__ import annotations

import math
import statistics

import pytest
import torch

from jano_ref.lab.eval.distribution import alex_features, kid, kid_subsets, mmd2_unbiased, polynomial_kernel
from jano_ref.lab.eval.metrics import LPIPS


def direct_mmd2(a: list[list[float]], b: list[list[float]]) -> float:
    """MMD^2_u written out as Binkowski et al. (2018) state it: Python floats, one kernel value at a time."""
    d = len(a[0])

    def k(x, y):
        return (sum(p * q for p, q in zip(x, y)) / d + 1) ** 3

    m, n = len(a), len(b)
    aa = sum(k(a[i], a[j]) for i in range(m) for j in range(m) if i != j) / (m * (m - 1))
    bb = sum(k(b[i], b[j]) for i in range(n) for j in range(n) if i != j) / (n * (n - 1))
    ab = sum(k(x, y) for x in a for y in b) / (m * n)
    return aa + bb - 2 * ab


def test_mmd2_matches_a_direct_double_loop():
    g = torch.Generator().manual_seed(0)
    a = torch.rand(6, 5, generator=g, dtype=torch.float64)
    b = torch.rand(9, 5, generator=g, dtype=torch.float64) + 0.2
    # float64 throughout; the two differ only in summation order, so 1e-12 relative is ample
    assert mmd2_unbiased(a, b) == pytest.approx(direct_mmd2(a.tolist(), b.tolist()), rel=1e-12)
    assert polynomial_kernel(a, b)[2, 3].item() == pytest.approx((a[2] @ b[3] / 5 + 1).item() ** 3, rel=1e-14)


def test_kid_subsets_are_direct_estimates_on_the_drawn_indices():
    g = torch.Generator().manual_seed(1)
    a = torch.randn(10, 4, generator=g, dtype=torch.float64)
    b = torch.randn(12, 4, generator=g, dtype=torch.float64) * 1.5
    mean, std = kid(a, b, subsets=7, subset_size=5, generator=torch.Generator().manual_seed(3))
    draw = torch.Generator().manual_seed(3)  # the same stream: per subset, a permutation of a, then one of b
    values = []
    for _ in range(7):
        ia, ib = torch.randperm(10, generator=draw)[:5], torch.randperm(12, generator=draw)[:5]
        values.append(direct_mmd2(a[ia].tolist(), b[ib].tolist()))
    assert mean == pytest.approx(statistics.fmean(values), rel=1e-10)
    assert std == pytest.approx(statistics.pstdev(values), rel=1e-8)  # population std, as torch-fidelity
    assert std > 0


def test_kid_with_whole_sets_is_the_full_estimate_and_reproducible():
    g = torch.Generator().manual_seed(2)
    a, b = torch.randn(8, 3, generator=g), torch.randn(8, 3, generator=g)
    mean, std = kid(a, b, subsets=5)
    assert mean == pytest.approx(mmd2_unbiased(a, b), rel=1e-12) and std == pytest.approx(0, abs=1e-15)
    c = torch.randn(20, 3, generator=g)
    assert kid(a, c, subset_size=4) == kid(a, c, subset_size=4)  # default generator: seeded, so repeatable


def test_kid_is_unbiased_zero_for_one_distribution_and_grows_with_a_shift():
    """Two samples of one distribution: the estimates average to 0 and many are negative (the unbiased estimator,
    unlike the biased one, can go below 0). A mean shift makes it positive and larger with the shift; and, being
    unbiased, its mean does not depend on the sample size (the biased V-statistic's would, by O(1/m))."""
    g = torch.Generator().manual_seed(4)
    d, trials = 6, 300

    def estimates(shift: float, m: int) -> list[float]:
        return [mmd2_unbiased(torch.rand(m, d, generator=g, dtype=torch.float64),
                              torch.rand(m, d, generator=g, dtype=torch.float64) + shift) for _ in range(trials)]

    same = estimates(0.0, 8)
    se = statistics.stdev(same) / math.sqrt(trials)
    assert abs(statistics.fmean(same)) < 4 * se
    assert sum(v < 0 for v in same) > trials // 5
    means = [statistics.fmean(estimates(s, 8)) for s in (0.1, 0.2, 0.4)]
    assert means[0] > 4 * se and means[0] < means[1] < means[2]
    # unbiased: 4 and 32 samples per set estimate the same population value
    small, large = estimates(0.2, 4), estimates(0.2, 32)
    se_diff = math.hypot(statistics.stdev(small), statistics.stdev(large)) / math.sqrt(trials)
    assert abs(statistics.fmean(small) - statistics.fmean(large)) < 4 * se_diff


def test_kid_errors_say_what_is_wrong():
    x = torch.zeros(5, 3)
    with pytest.raises(ValueError, match="one dimension"):
        kid(x, torch.zeros(5, 4))
    with pytest.raises(ValueError, match="at least 2"):
        kid(x, torch.zeros(1, 3))
    with pytest.raises(ValueError, match="subset_size=6"):
        kid(x, torch.zeros(9, 3), subset_size=6)


@pytest.fixture(scope="module")
def net():
    return LPIPS()


def test_alex_features_pool_the_lpips_activations(net):
    g = torch.Generator().manual_seed(5)
    images = torch.rand(3, 3, 40, 36, generator=g)
    f = alex_features(images, net, batch=2)
    assert f.shape == (3, 1152) and f.dtype == torch.float32
    # by hand for image 1: unit vectors along channels, spatial mean, sqrt(1152 / 5) per layer
    acts = net.activations(images[1:2])
    by_hand = torch.cat([(a / a.norm(dim=1, keepdim=True)).mean(dim=(2, 3)) for a in acts], dim=1) * math.sqrt(1152 / 5)
    torch.testing.assert_close(f[1:2], by_hand, rtol=1e-5, atol=1e-6)  # float32 network; the eps 1e-10 is negligible
    # each layer's part has norm <= sqrt(1152 / 5), so x . x / d <= 1 (the kernel's regime, see the module docstring)
    assert ((f * f).sum(dim=1) / 1152 <= 1 + 1e-5).all()
    # a clip is its frames' features concatenated in order
    clip = torch.stack([images[0], images[2]], dim=1)[None]  # [1, 3, 2, H, W]
    torch.testing.assert_close(alex_features(clip, net), torch.cat([f[0], f[2]])[None], rtol=1e-5, atol=1e-6)
    with pytest.raises(ValueError, match=r"\[N, 3, H, W\]"):
        alex_features(torch.rand(3, 40, 40), net)


def test_paired_subsets_and_quality_cells(tmp_path):
    """Two runs on the same prompts: kid_subsets draws the same indices for sets of the same sizes, so a run against
    itself differs by exactly 0 on every subset; a quality cell survives its file."""
    from jano_ref.lab.eval import quality

    g = torch.Generator().manual_seed(6)
    run, other, reference = torch.rand(8, 5, generator=g), torch.rand(8, 5, generator=g), torch.rand(32, 5, generator=g)
    assert kid_subsets(run, reference, 10, 4) == kid_subsets(run, reference, 10, 4)
    cell = quality.QualityCell(run, [True] * 5 + [False] * 3, [False] * 8, dict(method="steps", preset="12"))
    path = cell.save(tmp_path / "cell.safetensors")
    back = quality.QualityCell.load(path)
    assert torch.equal(back.features, run) and back.colour == cell.colour and back.info == cell.info
    fields = quality.run_fields([back], reference, full=[cell])
    assert fields["kid_vs_full"] == 0 and fields["kid_vs_full_std"] == 0 and fields["kid_std"] > 0
    assert (fields["caption_colour_n"], fields["caption_shape_n"], fields["quality_samples"]) == (5 / 8, 0, 8)
    versus = quality.run_fields([quality.QualityCell(other, [True] * 8, [True] * 8, {})], reference, full=[cell])
    assert versus["kid_vs_full"] == pytest.approx(versus["kid"] - fields["kid"], rel=1e-9)
