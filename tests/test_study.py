"""Tests for jano_ref.lab.eval.study: ranks and Spearman's rho with its p-value (against scipy), the incomplete beta
function, ground-truth convergence and complexity maps, the FFT high-frequency measure, tercile accuracy and shuffled
level maps."""

import math

import numpy as np
import pytest
import scipy.special
import scipy.stats
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from jano_ref.jano.analyzer import BlockGrid, minmax_normalize
from jano_ref.jano.levels import classify
from jano_ref.runtime.special import regularized_incomplete_beta
from jano_ref.lab.eval.study import (
    convergence_map,
    fft_complexity_map,
    fft_high_frequency_energy,
    rankdata,
    shuffled_levels,
    spearman,
    student_t_two_sided_p,
    tercile_accuracy,
)

F64 = torch.float64
P_RTOL = 1e-6


def _scipy_spearman(x: torch.Tensor, y: torch.Tensor) -> tuple[float, float]:
    r = scipy.stats.spearmanr(x.numpy(), y.numpy())
    return float(r.statistic), float(r.pvalue)


# ----------------------------------------------------------------------------------------------------------------------
# rankdata
# ----------------------------------------------------------------------------------------------------------------------


def test_rankdata_average_ties_one_based_float64():
    r = rankdata(torch.tensor([10, 30, 20, 20]))
    assert r.dtype == F64
    assert r.tolist() == [1.0, 4.0, 2.5, 2.5]


@pytest.mark.parametrize("seed", range(3))
def test_rankdata_matches_scipy_with_ties(seed):
    g = torch.Generator().manual_seed(seed)
    x = torch.randint(0, 7, (200,), generator=g).to(F64)
    np.testing.assert_array_equal(rankdata(x).numpy(), scipy.stats.rankdata(x.numpy()))


def test_rankdata_rejects_bad_input():
    with pytest.raises(ValueError, match="1-D"):
        rankdata(torch.zeros(2, 3))
    with pytest.raises(ValueError, match="NaN"):
        rankdata(torch.tensor([1.0, math.nan]))


@settings(max_examples=40, deadline=None)
@given(st.permutations(list(range(12))))
def test_rankdata_of_a_permutation_is_the_permutation_plus_one(perm):
    p = torch.tensor(perm)
    assert torch.equal(rankdata(p), (p + 1).to(F64))


@settings(max_examples=40, deadline=None)
@given(st.lists(st.integers(-5, 5), min_size=1, max_size=30), st.randoms(use_true_random=False))
def test_rankdata_commutes_with_permutation(values, rnd):
    x = torch.tensor(values)
    perm = list(range(len(values)))
    rnd.shuffle(perm)
    perm = torch.tensor(perm)
    assert torch.equal(rankdata(x[perm]), rankdata(x)[perm])


# ----------------------------------------------------------------------------------------------------------------------
# Spearman against scipy
# ----------------------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("n", [3, 4, 7, 20, 100, 2000])
@pytest.mark.parametrize("ties", [False, True])
@pytest.mark.parametrize("noise", [0.0, 0.3, 1.0, 5.0])
def test_spearman_matches_scipy(n, ties, noise):
    g = torch.Generator().manual_seed(1000 * n + int(10 * noise) + ties)
    x = torch.randn(n, generator=g, dtype=F64)
    y = x + noise * torch.randn(n, generator=g, dtype=F64) if noise else torch.randn(n, generator=g, dtype=F64)
    if ties:  # coarse rounding: many tied values in both samples
        x, y = torch.round(2 * x), torch.round(2 * y)
    rho, p = spearman(x, y)
    ref_rho, ref_p = _scipy_spearman(x, y)
    if math.isnan(ref_rho):  # a constant rounded sample (possible only for tiny n)
        assert math.isnan(rho) and math.isnan(p)
        return
    assert rho == pytest.approx(ref_rho, abs=1e-12)
    if abs(ref_rho) == 1.0:
        assert p == 0.0
    else:
        assert p == pytest.approx(ref_p, rel=P_RTOL)


def test_spearman_tiny_p_values_match_scipy():
    """Correlation strengths swept so that the p-values cover 1e-1 down to below 1e-10 (the paper's regime)."""
    g = torch.Generator().manual_seed(7)
    n = 40
    x = torch.randn(n, generator=g, dtype=F64)
    noise = torch.randn(n, generator=g, dtype=F64)
    p_values = []
    for scale in torch.logspace(-1.3, 0.9, 80).tolist():
        y = x + scale * noise
        rho, p = spearman(x, y)
        ref_rho, ref_p = _scipy_spearman(x, y)
        assert rho == pytest.approx(ref_rho, abs=1e-12)
        assert p == pytest.approx(ref_p, rel=P_RTOL)
        p_values.append(ref_p)
    # The sweep really covered that range, including the ~1e-10 decade.
    assert min(p_values) < 1e-12 and max(p_values) > 1e-2 and any(1e-11 < p < 1e-9 for p in p_values)


def test_spearman_perfect_and_undefined_cases():
    x = torch.arange(10.0)
    assert spearman(x, x**3) == (1.0, 0.0)
    assert spearman(x, -x) == (-1.0, 0.0)
    for a, b in [(torch.tensor([1.0, 2.0]), torch.tensor([2.0, 1.0])), (torch.ones(5), torch.arange(5.0))]:
        rho, p = spearman(a, b)
        assert math.isnan(rho) and math.isnan(p)


def test_spearman_accepts_maps_and_rejects_mismatched_shapes():
    g = torch.Generator().manual_seed(0)
    a, b = torch.randn(1, 4, 5, generator=g), torch.randn(1, 4, 5, generator=g)
    assert spearman(a, b) == spearman(a.reshape(-1), b.reshape(-1))
    with pytest.raises(ValueError, match="same shape"):
        spearman(torch.zeros(4), torch.zeros(5))


@settings(max_examples=40, deadline=None)
@given(
    st.lists(st.tuples(st.integers(-1000, 1000), st.integers(-1000, 1000)), min_size=3, max_size=40),
    st.sampled_from(["affine", "cube", "exp"]),
)
def test_spearman_invariant_to_increasing_transforms(pairs, transform):
    x = torch.tensor([a for a, _ in pairs], dtype=F64)
    y = torch.tensor([b for _, b in pairs], dtype=F64)
    f = {"affine": lambda v: 3 * v + 7, "cube": lambda v: v**3, "exp": lambda v: torch.exp(v / 100)}[transform]
    base = spearman(x, y)
    for got in (spearman(f(x), y), spearman(x, f(y)), spearman(f(x), f(y))):
        if math.isnan(base[0]):
            assert math.isnan(got[0]) and math.isnan(got[1])
        else:
            assert got == base  # ranks are identical, so the result is bit-identical


@settings(max_examples=40, deadline=None)
@given(st.lists(st.tuples(st.integers(-20, 20), st.integers(-20, 20)), min_size=3, max_size=40))
def test_spearman_is_odd_in_y(pairs):
    x = torch.tensor([a for a, _ in pairs], dtype=F64)
    y = torch.tensor([b for _, b in pairs], dtype=F64)
    rho, p = spearman(x, y)
    rho_neg, p_neg = spearman(x, -y)
    if math.isnan(rho):
        assert math.isnan(rho_neg)
        return
    assert rho_neg == pytest.approx(-rho, abs=1e-14)
    assert p_neg == pytest.approx(p, rel=1e-12, abs=1e-300)


# ----------------------------------------------------------------------------------------------------------------------
# Incomplete beta and Student's t
# ----------------------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("a", [0.5, 1.0, 2.5, 24.0, 500.0])
@pytest.mark.parametrize("b", [0.5, 3.0, 40.0])
def test_incomplete_beta_matches_scipy(a, b):
    for x in [0.0, 1e-8, 0.01, 0.2, 0.5, 0.8, 0.99, 1 - 1e-9, 1.0]:
        ref = float(scipy.special.betainc(a, b, x))
        assert regularized_incomplete_beta(x, a, b) == pytest.approx(ref, rel=1e-9, abs=1e-300)


def test_incomplete_beta_rejects_bad_arguments():
    with pytest.raises(ValueError, match="a > 0"):
        regularized_incomplete_beta(0.5, 0.0, 1.0)
    with pytest.raises(ValueError, match=r"\[0, 1\]"):
        regularized_incomplete_beta(1.5, 1.0, 1.0)


@pytest.mark.parametrize("df", [1, 3, 28, 1000])
def test_student_t_two_sided_p_matches_scipy(df):
    for t in [0.0, 0.3, -1.7, 4.0, 12.0, -40.0]:
        ref = float(2 * scipy.stats.t.sf(abs(t), df))
        assert student_t_two_sided_p(t, df) == pytest.approx(ref, rel=1e-9, abs=1e-300)
    assert student_t_two_sided_p(math.inf, df) == 0.0


# ----------------------------------------------------------------------------------------------------------------------
# convergence_map
# ----------------------------------------------------------------------------------------------------------------------


def _trajectory(num_states: int, latent=(1, 4, 6), channels=3, seed=0) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return torch.randn(num_states, channels, *latent, generator=g, dtype=F64)


def test_convergence_map_late_block_scores_one_frozen_blocks_zero():
    grid = BlockGrid((1, 4, 6), (1, 2, 2))  # 2 x 3 blocks
    states = _trajectory(26)  # S = 25 steps; everything changes (a lot) before step 10
    states[10:] = states[10].clone()  # ... then freezes
    late = (slice(None), slice(None), slice(None), slice(2, 4), slice(4, 6))  # block (0, 1, 2)
    for k in range(11, 26):
        states[k][late[1:]] = states[10][late[1:]] + 0.1 * k
    m = convergence_map(states, grid)
    assert m.shape == (1, 2, 3) and m.dtype == F64
    expected = torch.zeros(1, 2, 3, dtype=F64)
    expected[0, 1, 2] = 1.0
    assert torch.equal(m, expected)


def test_convergence_map_samples_only_interval_endpoints():
    """k = 10, 15 for S = 22 (20 + 5 > 22): changes after state 20 and changes that undo themselves are not seen."""
    grid = BlockGrid((1, 2, 6), (1, 2, 2))  # 1 x 3 blocks
    states = torch.zeros(23, 1, 1, 2, 6, dtype=F64)
    states[15:, ..., 0:2] = 1.0  # block 0: one step of 1 between states 10 and 15
    states[15:, ..., 2:4] = 0.5  # block 1: half of it
    states[12, ..., 4:6] = 9.0  # block 2: a detour that returns by state 15 ...
    states[21:, ..., 4:6] = 9.0  # ... and a change after the last interval endpoint 20
    m = convergence_map(states, grid)
    assert torch.equal(m, torch.tensor([[[1.0, 0.5, 0.0]]], dtype=F64))


def test_convergence_map_excludes_padding():
    # 5 x 5 latent in 2 x 2 blocks: the last block row and column are partial (padded by the grid).
    grid = BlockGrid((1, 5, 5), (1, 2, 2))
    states = torch.zeros(16, 2, 1, 5, 5, dtype=F64)
    states[15] = 1.0  # every real cell changes by 1 between states 10 and 15 ...
    states[15, :, :, 0:2, 0:2] = 3.0  # ... block (0, 0, 0) by 3
    m = convergence_map(states, grid)
    # If padded zeros entered the mean, the partial blocks would fall to 1/2 or 1/4 of the full ones and differ.
    expected = torch.zeros(1, 3, 3, dtype=F64)
    expected[0, 0, 0] = 1.0
    assert torch.equal(m, expected)


def test_convergence_map_matches_naive_block_loop_with_partial_blocks():
    latent, block = (3, 5, 7), (2, 2, 3)  # partial blocks along every axis
    grid = BlockGrid(latent, block)
    states = _trajectory(29, latent, channels=2, seed=3).to(torch.float32)
    start, interval = 4, 6
    raw = torch.zeros(grid.counts, dtype=F64)
    s = states.to(F64)
    for k in range(start, 29 - interval, interval):  # k = 4, 10, 16, 22: the last interval ends at S = 28
        d = (s[k + interval] - s[k]).abs()
        for i in range(grid.counts[0]):
            for j in range(grid.counts[1]):
                for l in range(grid.counts[2]):
                    cell = d[:, i * 2 : i * 2 + 2, j * 2 : j * 2 + 2, l * 3 : l * 3 + 3]  # slicing clips to real cells
                    raw[i, j, l] += cell.mean()
    got = convergence_map(states, grid, start=start, interval=interval)
    torch.testing.assert_close(got, minmax_normalize(raw), rtol=1e-12, atol=1e-12)


def test_convergence_map_errors():
    grid = BlockGrid((1, 4, 6), (1, 2, 2))
    convergence_map(_trajectory(16), grid)  # S = 15: exactly one interval, fine
    with pytest.raises(ValueError, match="too short"):
        convergence_map(_trajectory(15), grid)  # S = 14 < 10 + 5
    with pytest.raises(ValueError, match="too short"):
        convergence_map(_trajectory(8), grid, start=2, interval=6)
    with pytest.raises(ValueError, match=r"\[S\+1, C, T, H, W\]"):
        convergence_map(torch.zeros(16, 3, 4, 6), grid)
    with pytest.raises(ValueError, match="does not match the grid"):
        convergence_map(_trajectory(16, latent=(1, 4, 8)), grid)
    with pytest.raises(ValueError, match="interval >= 1"):
        convergence_map(_trajectory(16), grid, interval=0)


# ----------------------------------------------------------------------------------------------------------------------
# fft_complexity_map
# ----------------------------------------------------------------------------------------------------------------------


def test_fft_complexity_map_is_normalised_fft_energy_on_the_grid():
    g = torch.Generator().manual_seed(0)
    latent = torch.randn(4, 1, 12, 20, generator=g, dtype=F64)
    latent[..., :6, :8] = 1.0  # a smooth (zero high-frequency) region: block (0, 0, 0) is the minimum
    grid = BlockGrid((1, 12, 20), (1, 6, 8))  # partial last column
    m = fft_complexity_map(latent, grid)
    assert m.shape == grid.counts and m.dtype == F64
    torch.testing.assert_close(m, minmax_normalize(fft_high_frequency_energy(latent, grid.block)))
    assert m[0, 0, 0] == 0.0 and m.max() == 1.0
    torch.testing.assert_close(fft_complexity_map(latent[:, 0], grid), m)  # image [C, H, W] form
    with pytest.raises(ValueError, match="does not match the grid"):
        fft_complexity_map(latent[..., :10], grid)


# ----------------------------------------------------------------------------------------------------------------------
# tercile_accuracy
# ----------------------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("n", [3, 10, 30, 256])
def test_tercile_accuracy_perfect_and_reversed(n):
    g = torch.Generator().manual_seed(n)
    s = torch.randn(n, generator=g, dtype=F64)
    assert tercile_accuracy(s, s) == 1.0
    assert tercile_accuracy(s, 5 * s + 2) == 1.0  # only the order matters
    assert tercile_accuracy(s, -s) == 0.0
    ties = torch.round(s)
    assert tercile_accuracy(ties, ties) == 1.0  # tie-breaking is deterministic


def test_tercile_accuracy_breaks_ties_by_block_index():
    # Constant prediction: the stable sort puts blocks 0..k-1 both at the top and at the bottom.
    truth = torch.arange(9.0)  # true top = {6, 7, 8}, bottom = {0, 1, 2}
    assert tercile_accuracy(torch.zeros(9), truth) == 0.5


def test_tercile_accuracy_of_random_predictor_is_one_third():
    g = torch.Generator().manual_seed(0)
    scores = [tercile_accuracy(torch.rand(30, generator=g), torch.rand(30, generator=g)) for _ in range(2000)]
    # Expectation k / n = 1/3; one draw has sd ~0.088, so the mean of 2000 has sd ~0.002.
    assert sum(scores) / len(scores) == pytest.approx(1 / 3, abs=0.01)


def test_tercile_accuracy_errors():
    with pytest.raises(ValueError, match="at least 3"):
        tercile_accuracy(torch.zeros(2), torch.zeros(2))
    with pytest.raises(ValueError, match="same shape"):
        tercile_accuracy(torch.zeros(9), torch.zeros(3, 3))
    with pytest.raises(ValueError, match="NaN"):
        tercile_accuracy(torch.tensor([0.0, 1.0, math.nan]), torch.zeros(3))


# ----------------------------------------------------------------------------------------------------------------------
# shuffled_levels
# ----------------------------------------------------------------------------------------------------------------------


def _levels() -> torch.Tensor:
    g = torch.Generator().manual_seed(0)
    return classify(torch.rand(1, 16, 16, generator=g), 0.2, 0.4)


def test_shuffled_levels_preserves_counts_shape_and_dtype():
    levels = _levels()
    out = shuffled_levels(levels, torch.Generator().manual_seed(1))
    assert out.shape == levels.shape and out.dtype == levels.dtype
    assert torch.equal(torch.bincount(out.reshape(-1)), torch.bincount(levels.reshape(-1)))


def test_shuffled_levels_is_deterministic_and_moves_blocks():
    levels = _levels()
    a = shuffled_levels(levels, torch.Generator().manual_seed(5))
    b = shuffled_levels(levels, torch.Generator().manual_seed(5))
    c = shuffled_levels(levels, torch.Generator().manual_seed(6))
    assert torch.equal(a, b)
    assert not torch.equal(a, levels)
    assert not torch.equal(a, c)


# ----------------------------------------------------------------------------------------------------------------------
# FFT high-frequency energy
# ----------------------------------------------------------------------------------------------------------------------


def test_fft_constant_is_low_and_checkerboard_and_noise_are_high():
    constant = torch.full((4, 16, 16), 3.0, dtype=F64)
    assert fft_high_frequency_energy(constant).item() < 1e-12
    i, j = torch.meshgrid(torch.arange(16), torch.arange(16), indexing="ij")
    checker = (((i + j) % 2) * 2 - 1).to(F64).expand(4, 16, 16)
    assert fft_high_frequency_energy(checker).item() > 1 - 1e-12
    noise = torch.randn(4, 2, 32, 32, generator=torch.Generator().manual_seed(0), dtype=F64)
    # White noise spreads energy evenly: expected fraction ~ 1 - pi (8 bins)^2 / 32^2 = 1 - pi / 16 ~ 0.80.
    assert abs(fft_high_frequency_energy(noise).item() - (1 - math.pi / 16)) < 0.05
    smooth = torch.sin(2 * math.pi * i / 16).to(F64).expand(4, 16, 16)  # 1 cycle: well inside the circle
    assert fft_high_frequency_energy(smooth).item() < 1e-12


def test_fft_per_block_map():
    latent = torch.zeros(2, 2, 12, 20, dtype=F64)
    i, j = torch.meshgrid(torch.arange(12), torch.arange(20), indexing="ij")
    latent[:, 1, :, 8:16] = (((i + j) % 2) * 2 - 1).to(F64)[:, 8:16]  # checkerboard in frame 1, block column 1
    latent += 1.0
    out = fft_high_frequency_energy(latent, (1, 6, 8))
    assert out.shape == (2, 2, 3)  # W = 20 -> 3 block columns, the last one partial (4 cells) and not padded
    assert torch.all(out[0] < 1e-12)
    assert torch.all(out[1, :, 1] > 0.4) and torch.all(out[1, :, [0, 2]] < 1e-12)
    image = latent[:, 1]
    # one frame alone vs inside a two-frame latent: FFTs over another batch shape, so float64 rounding, not bits
    torch.testing.assert_close(fft_high_frequency_energy(image, (6, 8)), out[1:2], rtol=1e-12, atol=1e-15)
    whole = fft_high_frequency_energy(latent)
    assert whole.dim() == 0 and 0 < whole < 1
