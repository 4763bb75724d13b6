"""Tests for jano_ref.jano.analyzer: block partition with masked padding, distances and lagged change (Eqs. 10-13),
mixing and min-max (Eq. 14), inward diffusion (Eq. 15) and its grid helpers (``morphology``)."""

import math

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from scipy import ndimage
from hypothesis import strategies as st

from jano_ref.jano.analyzer import (
    FLUX_SETTINGS,
    WAN_SETTINGS,
    BlockGrid,
    analyze,
    default_lag,
    enclosed_regions,
    enhance_inward_diffusion,
    flux_block_grid,
    lagged_change,
    minmax_normalize,
    pairwise_l2,
    stack_warmup,
)
from jano_ref.jano.morphology import connected_components, dilate_cross, distance_to_mask

F64 = torch.float64
NO_BOOST = dict(d_strength=0.0, d_distance=1.0)  # inward diffusion switched off (boost factor 0)


def rand(*shape, seed=0):
    return torch.randn(*shape, generator=torch.Generator().manual_seed(seed), dtype=F64)


# ----------------------------------------------------------------------------------------------------------------------
# Warm-up stack and grid
# ----------------------------------------------------------------------------------------------------------------------


def test_stack_warmup_prepends_noise_only_when_given():
    vs = [rand(2, 1, 4, 4, seed=i) for i in range(3)]
    noise = rand(2, 1, 4, 4, seed=9)
    assert stack_warmup(vs).shape == (3, 2, 1, 4, 4)
    with_noise = stack_warmup(vs, initial_noise=noise)
    assert with_noise.shape == (4, 2, 1, 4, 4)
    assert torch.equal(with_noise[0], noise) and torch.equal(with_noise[1:], torch.stack(vs))
    assert torch.equal(stack_warmup(torch.stack(vs)), torch.stack(vs))
    with pytest.raises(ValueError, match="expected"):
        stack_warmup(vs, initial_noise=rand(2, 1, 4, 5))
    with pytest.raises(ValueError, match="unsqueeze"):
        stack_warmup(rand(3, 2, 4, 4))


def test_grid_shapes_and_official_flux_block():
    grid = BlockGrid((21, 60, 104), (7, 6, 8))  # Wan 1.3B: no padding, 3 x 10 x 13 blocks
    assert grid.counts == (3, 10, 13) and grid.padding == (0, 0, 0)
    assert flux_block_grid(128, 128).block == (1, 8, 8) and flux_block_grid(128, 128).counts == (1, 16, 16)
    assert flux_block_grid(96, 160).counts == (1, 16, 16)
    odd = BlockGrid((1, 5, 7), (1, 2, 3))
    assert odd.counts == (1, 3, 3) and odd.padding == (0, 1, 2)
    valid = odd.valid()
    assert valid.shape == (1, 3, 3, 1, 6) and int(valid.sum()) == 5 * 7
    # expand is the inverse of the block partition on real cells: cell (h, w) lies in block (h // 2, w // 3).
    ids = torch.arange(9).reshape(1, 3, 3)
    h, w = torch.meshgrid(torch.arange(5), torch.arange(7), indexing="ij")
    assert torch.equal(odd.expand(ids)[0], (h // 2) * 3 + w // 3)


# ----------------------------------------------------------------------------------------------------------------------
# Distances and scores
# ----------------------------------------------------------------------------------------------------------------------


def test_pairwise_l2_is_exact_for_equal_vectors_at_large_magnitude():
    v = rand(1, 16) * 1e4 + 3e4
    x = torch.cat([v, v, v + 1.0], dim=0).float()  # float32: the Gram trick gives ~1e1 error here
    d = pairwise_l2(x)
    assert d[0, 1] == 0 and d[1, 0] == 0 and torch.all(d.diagonal() == 0)
    assert torch.allclose(d[0, 2], torch.tensor(4.0))  # |(1,...,1)| over 16 channels


def test_hand_computed_spatial_change_with_lag_one():
    # One block of two positions (bh, bw) = (1, 2), C = 2, K = 3 -> lag 1.
    # Distances between the two vectors: k=0: |(3,4)| = 5; k=1: |(6,8)| = 10; k=2: |(0,1)| = 1.
    # Ordered pairs incl. the zero diagonal: 4, of which 2 are off-diagonal.
    # Changes: k=1: |10 - 5| = 5, k=2: |1 - 10| = 9  ->  SD = (2 * 5 + 2 * 9) / (2 steps * 4 pairs) = 3.5.
    a = torch.zeros(2, dtype=F64)
    others = [torch.tensor(v, dtype=F64) for v in ([3.0, 4.0], [6.0, 8.0], [0.0, 1.0])]
    warmup = torch.stack([torch.stack([a, b], dim=-1).reshape(2, 1, 1, 2) for b in others])  # [3, 2, 1, 1, 2]
    report = analyze(warmup, (1, 1, 2), alpha=0.0, **NO_BOOST)
    assert report.lag == 1 and report.num_steps == 3 and default_lag(3) == 1 and default_lag(7) == 3
    # Hand values vs the implementation: the distances come from a sqrt (of 25, 100, 1), which torch does not
    # round correctly on every CPU path, so compare to float64 precision rather than bit for bit.
    assert report.spatial.item() == pytest.approx(3.5, rel=1e-12)
    assert report.temporal.item() == 0.0  # one frame: only the zero diagonal, exactly 0 on any path
    # Same numbers through the primitive: lag 2 uses only k = 2: |1 - 5| = 4 on 2 of 4 pairs -> 2.
    d = torch.tensor([5.0, 10.0, 1.0], dtype=F64)
    mats = torch.stack([torch.tensor([[0, x], [x, 0]]) for x in d])
    assert lagged_change(mats, 2).mean().item() == 2.0  # integers and a division by 8: exact on any path
    assert analyze(warmup, (1, 1, 2), alpha=0.0, lag=2, **NO_BOOST).spatial.item() == pytest.approx(2.0, rel=1e-12)


def test_hand_computed_temporal_change():
    # One spatial position, bt = 2 frames, C = 1: frame distance |a - b| over K = 2 steps (lag 1): 1 then 4.
    # TD = |4 - 1| on 2 of 4 ordered pairs = 1.5. SD: one position per frame -> 0.
    warmup = torch.tensor([[0.0, 1.0], [0.0, 4.0]], dtype=F64).reshape(2, 1, 2, 1, 1)
    report = analyze(warmup, (2, 1, 1), alpha=1.0, **NO_BOOST)
    assert report.temporal.item() == pytest.approx(1.5, rel=1e-12)  # via sqrt (see above)
    assert report.spatial.item() == 0.0


def _one_changing_block(seed=0):
    # [K=5, C=3, T=2, H=6, W=6], blocks (1, 3, 3) -> 2 x 2 x 2 blocks; only block (1, 0, 1) changes over k.
    base = rand(3, 2, 6, 6, seed=seed)
    warmup = base.expand(5, -1, -1, -1, -1).clone()
    warmup[:, :, 1, 0:3, 3:6] += rand(5, 3, 3, 3, seed=seed + 1)
    return warmup


def test_constant_blocks_score_zero_and_the_changing_block_one():
    report = analyze(_one_changing_block(), (1, 3, 3), alpha=0.5, **NO_BOOST)
    changing = torch.zeros(2, 2, 2, dtype=torch.bool)
    changing[1, 0, 1] = True
    assert torch.all(report.temporal[~changing] == 0) and torch.all(report.spatial[~changing] == 0)
    assert report.spatial[changing].item() > 0
    expected = changing.to(F64)
    assert torch.equal(report.combined, expected)
    # bt = 2 mixes the frames: now the temporal score sees the change too.
    report_t = analyze(_one_changing_block(), (2, 3, 3), alpha=1.0, **NO_BOOST)
    assert report_t.temporal[0, 0, 1] > 0 and report_t.temporal[0, 0, 0] == 0


def test_all_constant_warmup_normalises_to_zero():
    warmup = rand(3, 1, 4, 4).expand(4, -1, -1, -1, -1)
    report = analyze(warmup, (1, 2, 2), **WAN_SETTINGS)
    assert torch.equal(report.combined, torch.zeros(1, 2, 2, dtype=F64))
    assert torch.equal(report.enhanced, report.combined)


@settings(max_examples=25, deadline=None)
@given(
    k=st.integers(2, 5),
    c=st.integers(1, 6),
    t=st.integers(1, 4),
    h=st.integers(1, 9),
    w=st.integers(1, 9),
    bt=st.integers(1, 3),
    bh=st.integers(1, 4),
    bw=st.integers(1, 4),
    alpha=st.floats(0, 1),
    seed=st.integers(0, 2**16),
)
def test_scores_invariant_to_channel_permutation(k, c, t, h, w, bt, bh, bw, alpha, seed):
    warmup = rand(k, c, t, h, w, seed=seed)
    perm = torch.randperm(c, generator=torch.Generator().manual_seed(seed + 1))
    a = analyze(warmup, (bt, bh, bw), **FLUX_SETTINGS | dict(alpha=alpha))
    b = analyze(warmup[:, perm], (bt, bh, bw), **FLUX_SETTINGS | dict(alpha=alpha))
    for name in ("temporal", "spatial", "combined", "enhanced"):
        torch.testing.assert_close(getattr(a, name), getattr(b, name), rtol=1e-12, atol=1e-12)


@settings(max_examples=25, deadline=None)
@given(
    k=st.integers(2, 5),
    t=st.integers(1, 2),
    nh=st.integers(1, 3),
    nw=st.integers(1, 3),
    bt=st.integers(1, 2),
    bh=st.integers(1, 3),
    bw=st.integers(1, 3),
    extra_h=st.integers(0, 2),
    extra_w=st.integers(1, 2),
    seed=st.integers(0, 2**16),
)
def test_padding_never_moves_full_block_scores(k, t, nh, nw, bt, bh, bw, extra_h, extra_w, seed):
    """A full grid vs the same latent extended by a partial block row/column (padded): full blocks unchanged."""
    extra_h, extra_w = min(extra_h, bh - 1), min(extra_w, bw - 1)
    if extra_h == 0 and extra_w == 0:
        extra_w = bw - 1 if bw > 1 else 0
    h, w = nh * bh, nw * bw
    big = rand(k, 3, t * bt, h + extra_h, w + extra_w, seed=seed)
    small = analyze(big[..., :h, :w], (bt, bh, bw), alpha=0.5, **NO_BOOST)
    padded = analyze(big, (bt, bh, bw), alpha=0.5, **NO_BOOST)
    for name in ("temporal", "spatial"):
        torch.testing.assert_close(getattr(padded, name)[:, :nh, :nw], getattr(small, name), rtol=1e-13, atol=0)


@settings(max_examples=25, deadline=None)
@given(
    k=st.integers(2, 4),
    t=st.integers(1, 5),
    h=st.integers(1, 7),
    w=st.integers(1, 7),
    bt=st.integers(1, 3),
    bh=st.integers(1, 3),
    bw=st.integers(1, 3),
    seed=st.integers(0, 2**16),
)
def test_padded_cells_never_contribute(k, t, h, w, bt, bh, bw, seed):
    """Every block, partial or not, scores as if its real cells were an unpadded latent of their own."""
    warmup = rand(k, 2, t, h, w, seed=seed)
    report = analyze(warmup, (bt, bh, bw), alpha=0.5, **NO_BOOST)
    nt, nh, nw = report.grid.counts
    for i in range(nt):
        for j in range(nh):
            for l in range(nw):
                cell = warmup[..., i * bt : (i + 1) * bt, j * bh : (j + 1) * bh, l * bw : (l + 1) * bw]
                alone = analyze(cell, tuple(cell.shape[-3:]), alpha=0.5, **NO_BOOST)
                torch.testing.assert_close(report.temporal[i, j, l], alone.temporal[0, 0, 0], rtol=1e-13, atol=0)
                torch.testing.assert_close(report.spatial[i, j, l], alone.spatial[0, 0, 0], rtol=1e-13, atol=0)


def test_padding_with_large_values_would_change_an_unmasked_score():
    """Guard for the test above: the masked mean differs from the official v2 mean that lets zero padding in."""
    warmup = rand(3, 2, 1, 3, 3, seed=5)
    report = analyze(warmup, (1, 2, 2), alpha=0.0, **NO_BOOST)  # last row/col blocks are partial
    zero_padded = torch.nn.functional.pad(warmup, (0, 1, 0, 1))
    unmasked = analyze(zero_padded, (1, 2, 2), alpha=0.0, **NO_BOOST)
    # the full block agrees, bit for bit: both grids are 2 x 2 blocks, so it is the same computation on the same cells
    assert torch.equal(report.spatial[0, 0, 0], unmasked.spatial[0, 0, 0])
    assert not torch.allclose(report.spatial[0, 1, 1], unmasked.spatial[0, 1, 1])  # the partial one does not


def test_video_with_bt_one_reduces_to_images():
    warmup = rand(4, 3, 3, 6, 4, seed=3)
    video = analyze(warmup, (1, 2, 2), **WAN_SETTINGS)
    assert torch.equal(video.temporal, torch.zeros_like(video.temporal))
    for t in range(3):
        image = analyze(warmup[:, :, t : t + 1], (1, 2, 2), **FLUX_SETTINGS)
        assert torch.equal(image.temporal, torch.zeros_like(image.temporal))
        torch.testing.assert_close(video.spatial[t], image.spatial[0], rtol=1e-14, atol=0)


def test_minmax_and_mixing():
    assert torch.equal(minmax_normalize(torch.tensor([2.0, 4.0, 3.0])), torch.tensor([0.0, 1.0, 0.5]))
    assert torch.equal(minmax_normalize(torch.full((3,), 7.0)), torch.zeros(3))
    warmup = rand(4, 2, 2, 4, 4, seed=8)
    r = analyze(warmup, (2, 2, 2), alpha=0.3, **NO_BOOST)
    # exact: the same elementwise ops on the same tensors as inside analyze (1.0 - 0.3 == 0.7 in float64)
    torch.testing.assert_close(r.combined, minmax_normalize(0.3 * r.temporal + 0.7 * r.spatial), rtol=0, atol=0)
    with pytest.raises(ValueError, match="alpha"):
        analyze(warmup, (2, 2, 2), alpha=1.5, **NO_BOOST)
    with pytest.raises(ValueError, match="lag"):
        analyze(warmup, (2, 2, 2), alpha=0.3, lag=4, **NO_BOOST)


def test_low_precision_input_is_computed_in_float32():
    warmup = rand(3, 2, 1, 4, 4).to(torch.bfloat16)
    report = analyze(warmup, (1, 2, 2), **FLUX_SETTINGS)
    assert report.combined.dtype == torch.float32
    reference = analyze(warmup.float(), (1, 2, 2), **FLUX_SETTINGS)
    assert torch.equal(report.combined, reference.combined)  # exact: the same float32 computation after the cast


# ----------------------------------------------------------------------------------------------------------------------
# Inward diffusion
# ----------------------------------------------------------------------------------------------------------------------


def _ring_slice(n=7, inner=(2, 5), ring=(1, 6), outside=0.3, ring_value=1.0, inner_value=0.0):
    s = torch.full((n, n), outside, dtype=F64)
    s[ring[0] : ring[1], ring[0] : ring[1]] = ring_value
    s[inner[0] : inner[1], inner[0] : inner[1]] = inner_value
    return s


def test_ring_encloses_interior_and_boost_follows_the_formula():
    layer = _ring_slice()  # 7x7: edge 0.3, ring (rows/cols 1..5) 1.0, 3x3 interior 0.0
    mu, sigma = layer.mean(), layer.std()  # unbiased, as the official torch.std and our default
    contour = layer > mu + 0.3 * sigma
    assert torch.equal(contour, layer == 1.0)  # the construction does what the test assumes
    d_strength, d_distance = 0.8, 2.0
    out = enhance_inward_diffusion(layer[None], d_strength, d_distance)[0]
    # Distances from the 3x3 interior to the ring: 1 for its 8 outer cells, 2 for its centre.
    expected = layer.clone()
    mean_contour = layer[contour].mean()
    for i in range(2, 5):
        for j in range(2, 5):
            d = 2.0 if (i, j) == (3, 3) else 1.0
            expected[i, j] += math.exp(-d / (d_distance / 2)) * mean_contour * d_strength
    torch.testing.assert_close(out, expected, rtol=1e-15, atol=0)
    assert out[3, 3] > 0 and out[2, 2] > out[3, 3]
    # d_distance = 1: only interior cells at distance <= 1 are boosted (Wan), with weight exp(-2).
    out1 = enhance_inward_diffusion(layer[None], 0.8, 1.0)[0]
    assert out1[3, 3] == 0.0
    torch.testing.assert_close(out1[2, 2], torch.tensor(math.exp(-2.0) * 0.8, dtype=F64) * mean_contour)


def _layer(picture):
    """Slice from a character map: '#' contour (1.0), 'o' low (0.0), '-' background at a level b chosen so that it
    is neither a contour (b <= mu + 0.3 sigma) nor a candidate (b >= mu). Asserts that the construction holds."""
    rows = [r.strip() for r in picture.strip().splitlines()]
    high = torch.tensor([[c == "#" for c in r] for r in rows])
    low = torch.tensor([[c == "o" for c in r] for r in rows])
    for b in torch.linspace(0.01, 0.99, 99, dtype=F64):
        layer = torch.where(high, 1.0, torch.where(low, 0.0, b)).to(F64)
        mu, sigma = layer.mean(), layer.std()  # unbiased, as the official torch.std and our default
        if mu + 1e-3 < b < mu + 0.3 * sigma - 1e-3:
            assert torch.equal(layer > mu + 0.3 * sigma, high) and torch.equal(layer < mu, low)
            return layer
    raise AssertionError("no background level separates the picture's classes")


def test_open_region_is_not_boosted():
    # A contour column far (ring distance >= 3) from a low region: not enclosed even though d_distance would reach it.
    layer = _layer(
        """
        ---------
        -#---ooo-
        -#---ooo-
        -#---ooo-
        -#---ooo-
        -#---ooo-
        -#---ooo-
        -#---ooo-
        ---------
        """
    )
    contour, enclosed, distance = enclosed_regions(layer)
    assert contour[1:8, 1].all() and not enclosed.any()
    assert distance[4, 5] == 4.0  # within d_distance = 5, so only the enclosure rule keeps it unboosted
    out = enhance_inward_diffusion(layer[None], 0.8, 5.0)[0]
    assert torch.equal(out, layer)


def test_single_block_component_is_not_boosted():
    single = _layer(
        """
        -------
        -------
        --###--
        --#o#--
        --###--
        -------
        -------
        """
    )
    _, enclosed, _ = enclosed_regions(single)
    assert not enclosed.any()
    assert torch.equal(enhance_inward_diffusion(single[None], 0.8, 2.0)[0], single)
    double = _layer(  # a second low block joins it: now enclosed (every ring cell is within 2 of a contour)
        """
        -------
        -------
        --###--
        --oo#--
        --###--
        -------
        -------
        """
    )
    _, enclosed, _ = enclosed_regions(double)
    assert enclosed[3, 2] and enclosed[3, 3] and int(enclosed.sum()) == 2


def test_edge_rows_and_columns_are_never_candidates():
    # A low run on the top edge, walled in by contour blocks below and beside it: would be enclosed if it were inside.
    on_edge = _layer(
        """
        -#ooo#-
        -#####-
        -------
        -------
        -------
        -------
        -------
        """
    )
    _, enclosed, _ = enclosed_regions(on_edge)
    assert not enclosed.any()
    inside = _layer(  # the same pattern one row lower, off the edge, is enclosed
        """
        -------
        -#####-
        -#ooo#-
        -#####-
        -------
        -------
        -------
        """
    )
    _, enclosed, _ = enclosed_regions(inside)
    assert enclosed[2, 2:5].all() and int(enclosed.sum()) == 3


@settings(max_examples=30, deadline=None)
@given(n=st.integers(3, 8), m=st.integers(3, 8), seed=st.integers(0, 2**16))
def test_enclosed_blocks_are_interior_and_below_mean(n, m, seed):
    layer = torch.rand(n, m, generator=torch.Generator().manual_seed(seed), dtype=F64)
    contour, enclosed, _ = enclosed_regions(layer)
    assert not enclosed[0].any() and not enclosed[-1].any() and not enclosed[:, 0].any() and not enclosed[:, -1].any()
    assert torch.all(layer[enclosed] < layer.mean())
    out = enhance_inward_diffusion(layer[None], 0.8, 2.0)[0]
    assert torch.all(out >= layer) and torch.equal(out[~enclosed], layer[~enclosed])


def test_no_contour_means_no_change_and_slices_are_independent():
    flat = torch.full((5, 5), 0.4, dtype=F64)
    assert torch.equal(enhance_inward_diffusion(flat[None], 0.8, 2.0)[0], flat)
    scores = torch.stack([_ring_slice(), torch.full((7, 7), 0.2, dtype=F64)])
    out = enhance_inward_diffusion(scores, 0.8, 2.0)
    assert torch.equal(out[0], enhance_inward_diffusion(scores[:1], 0.8, 2.0)[0])
    assert torch.equal(out[1], scores[1])
    with pytest.raises(ValueError, match="d_distance"):
        enhance_inward_diffusion(scores, 0.8, 0.0)


def _official_enhance(layer: np.ndarray, d_strength: float, d_distance: float) -> np.ndarray:
    """The official ``DynamicAnalyzer._enhance_combined_score`` on one slice (chen-yy20/Jano, the same at paper-era
    2a964ea and HEAD 7befec0), written again here from its steps with torch.std and scipy.ndimage (skimage's
    ``measure.label`` is 8-connected on 2-D, its ``binary_dilation`` default is the cross, as scipy's)."""
    t = torch.from_numpy(layer)
    mean, std = t.mean(), torch.std(t)  # torch.std: unbiased (correction=1)
    contour, low = (t > mean + 0.3 * std).numpy(), (t < mean).numpy()
    if not contour.any() or not low.any():
        return layer.copy()
    candidates = low.copy()
    candidates[0, :] = candidates[-1, :] = candidates[:, 0] = candidates[:, -1] = False
    labels, n = ndimage.label(candidates, structure=np.ones((3, 3), dtype=bool))
    distance = ndimage.distance_transform_edt(~contour)
    inside = np.zeros_like(candidates)
    for label in range(1, n + 1):
        region = labels == label
        ring = ndimage.binary_dilation(region) & ~region
        if (distance[ring] <= 2.0).mean() >= 0.3 and region.sum() >= 2:
            inside |= region
    out = layer.copy()
    boost = inside & (distance <= d_distance)
    out[boost] += np.exp(-distance[boost] / (d_distance / 2)) * layer[contour].mean() * d_strength
    return out


def test_inward_diffusion_matches_the_official_formula_on_smooth_maps():
    """Smooth random score maps (16 x 16 Flux-like with the Flux settings, 10 x 13 Wan-like slices with Wan's): the
    default (unbiased std) equals the official code on every map; the population std differs on some of them."""
    g = torch.Generator().manual_seed(0)
    differs_with_population_std = 0
    for shape, (d_strength, d_distance) in [((16, 16), (0.8, 2.0)), ((10, 13), (0.8, 1.0))] * 25:
        smooth = ndimage.gaussian_filter(torch.randn(shape, generator=g, dtype=F64).numpy(), 1.5)
        layer = (smooth - smooth.min()) / (smooth.max() - smooth.min())
        expected = torch.from_numpy(_official_enhance(layer, d_strength, d_distance))
        ours = enhance_inward_diffusion(torch.from_numpy(layer)[None], d_strength, d_distance)[0]
        # float64 on both sides; only the order of the sums differs (the mean, the std, the contour mean)
        torch.testing.assert_close(ours, expected, rtol=1e-12, atol=1e-12)
        population = enhance_inward_diffusion(torch.from_numpy(layer)[None], d_strength, d_distance, std_correction=0)
        differs_with_population_std += not torch.allclose(population[0], expected, rtol=1e-12, atol=1e-12)
    assert differs_with_population_std >= 1  # so the test above tells the two corrections apart


def test_std_correction_moves_the_contour_threshold():
    # 3x3 slice: one block at 1.0, one at v, the rest 0. Find v that is a contour block under the population std
    # (np.std of the first official commits) but not under the unbiased std (the official torch.std since
    # 2025-11-19, the default), and check that the option switches it.
    for v in torch.linspace(0.0, 1.0, 10001, dtype=F64):  # the window is ~0.006 wide
        layer = torch.zeros(3, 3, dtype=F64)
        layer[0, 0], layer[0, 1] = 1.0, v
        mu = layer.mean()
        if mu + 0.3 * layer.std(correction=0) < v <= mu + 0.3 * layer.std(correction=1):
            break
    else:
        raise AssertionError("construction failed")
    c0, _, _ = enclosed_regions(layer, std_correction=0)
    c1, _, _ = enclosed_regions(layer, std_correction=1)
    assert c0[0, 1] and not c1[0, 1] and c0[0, 0] and c1[0, 0]


# ----------------------------------------------------------------------------------------------------------------------
# Grid helpers vs brute force
# ----------------------------------------------------------------------------------------------------------------------


def _brute_force_same_component(mask, connectivity):
    cells = [(i, j) for i in range(mask.shape[0]) for j in range(mask.shape[1]) if mask[i, j]]
    n = len(cells)
    reach = torch.eye(n, dtype=torch.bool)
    for a, (i, j) in enumerate(cells):
        for b, (y, x) in enumerate(cells):
            di, dj = abs(i - y), abs(j - x)
            adjacent = max(di, dj) == 1 if connectivity == 8 else di + dj == 1
            reach[a, b] |= adjacent
    for _ in range(n):  # transitive closure
        reach = reach | ((reach.float() @ reach.float()) > 0)
    return cells, reach


@settings(max_examples=40, deadline=None)
@given(
    h=st.integers(1, 7),
    w=st.integers(1, 7),
    p=st.floats(0.1, 0.9),
    connectivity=st.sampled_from([4, 8]),
    seed=st.integers(0, 2**16),
)
def test_connected_components_match_brute_force(h, w, p, connectivity, seed):
    mask = torch.rand(h, w, generator=torch.Generator().manual_seed(seed)) < p
    labels = connected_components(mask, connectivity)
    assert torch.equal(labels > 0, mask)
    cells, reach = _brute_force_same_component(mask, connectivity)
    for a, (i, j) in enumerate(cells):
        for b, (y, x) in enumerate(cells):
            assert (labels[i, j] == labels[y, x]).item() == reach[a, b].item()
    if cells:  # labels are 1..n, numbered in raster order of first appearance
        firsts = []
        for i, j in cells:
            if int(labels[i, j]) not in firsts:
                firsts.append(int(labels[i, j]))
        assert firsts == list(range(1, len(firsts) + 1))


@settings(max_examples=40, deadline=None)
@given(h=st.integers(1, 9), w=st.integers(1, 9), p=st.floats(0.0, 0.6), seed=st.integers(0, 2**16))
def test_distance_to_mask_matches_brute_force(h, w, p, seed):
    mask = torch.rand(h, w, generator=torch.Generator().manual_seed(seed)) < p
    d = distance_to_mask(mask)
    targets = mask.nonzero().tolist()
    for i in range(h):
        for j in range(w):
            squared = min(((i - y) ** 2 + (j - x) ** 2 for y, x in targets), default=math.inf)
            expected = math.sqrt(squared)
            if math.isinf(expected) or expected == int(expected):
                # whole distances are exact (the official thresholds d <= 1, 2 rely on it); so are 0 and inf
                assert d[i, j].item() == expected
            else:
                # torch's float64 sqrt is not correctly rounded on every CPU path: it may differ from math.sqrt by
                # one ulp (AVX-512: sqrt(2) = 1.414213562373095 vs 1.4142135623730951), so allow a few ulp
                assert math.isclose(d[i, j].item(), expected, rel_tol=1e-15, abs_tol=0.0)


@settings(max_examples=30, deadline=None)
@given(h=st.integers(1, 7), w=st.integers(1, 7), seed=st.integers(0, 2**16))
def test_dilate_cross_matches_definition(h, w, seed):
    mask = torch.rand(h, w, generator=torch.Generator().manual_seed(seed)) < 0.3
    out = dilate_cross(mask)
    for i in range(h):
        for j in range(w):
            near = [(i, j), (i - 1, j), (i + 1, j), (i, j - 1), (i, j + 1)]
            expected = any(0 <= y < h and 0 <= x < w and bool(mask[y, x]) for y, x in near)
            assert bool(out[i, j]) == expected
