"""JiT core: sparse forward, lifter exactness, micro-flow, anchors (init, growth, nesting, schedule), seeding,
all-active = plain Euler, Beta timestep warp, FLOPs accounting."""

import dataclasses
import math
from dataclasses import dataclass

import pytest
import torch
import torch.nn.functional as F
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from jano_ref.jit.anchors import (
    by_importance, grow_anchors, initial_anchor_order, initial_anchors, lattice_and_border, local_variance,
)
from jano_ref.jit.config import PRESETS, JiTConfig, get_jit_preset
from jano_ref.jit.lift import grid_coordinates, make_lifter, nearest_anchor
from jano_ref.jit.microflow import hitting_flow, micro_flow, micro_flow_target, transition_noise
from jano_ref.jit.sampler import sample_jit
from jano_ref.jit.schedule import beta_sigmas, stage_bounds, stage_budgets
from jano_ref.runtime.cost import TokenCost
from jano_ref.runtime.sampling import sample_euler
from jano_ref.pipelines.tiny import load_model, prepare

from .helpers import rel_err

SETTINGS = settings(max_examples=15, deadline=None, suppress_health_check=[HealthCheck.too_slow])
CFG = JiTConfig(num_steps=3, token_fractions=(1.0, 1.0, 1.0))


@pytest.fixture(scope="module", autouse=True)
def one_thread():
    """One intra-op thread: these forwards are tiny, and on a busy machine OpenMP barriers cost more than they save."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@dataclass
class Small:
    field: object
    noise: torch.Tensor
    sigmas: torch.Tensor


@pytest.fixture(scope="module")
def tiny():
    """tiny-flux and tiny-wan (seed-0 random weights, their own conditioning and classifier-free guidance) on a
    smaller latent than they ship with, to keep the tests fast: Flux 8 x 8 tokens, Wan 2 x 8 x 8."""
    out = {}
    for name, latent in (("tiny-flux", (16, 16)), ("tiny-wan", (2, 16, 16))):
        setup = prepare(name, "a red striped circle", steps=4, model=load_model(name, random_weights=True))
        key = "latent_hw" if name == "tiny-flux" else "latent_fhw"
        small = dataclasses.replace(setup.field, **{key: latent})
        noise = torch.randn(1, math.prod(small.token_grid), setup.noise.shape[-1],
                            generator=torch.Generator().manual_seed(0))
        out[name] = Small(small, noise, setup.sigmas)
    return out


@dataclass
class ToyField:
    """A cheap token velocity field with a sparse-sequence coupling: each computed token sees the mean of the
    computed tokens only (like attention without a cache). Cost: linear in the computed tokens."""

    token_grid: tuple[int, int, int]
    branches: tuple[str, ...] = ("cond",)

    def token_cost(self) -> TokenCost:
        return TokenCost(linear_per_token=1.0, self_attn_per_pair=0.0)

    def __call__(self, x, sigma, *, token_index=None, kv_caches=None):
        assert kv_caches is None
        xs = x if token_index is None else x[:, token_index]
        return torch.tanh(xs) * (1 + sigma) - xs.mean(1, keepdim=True)


def _toy_noise(grid, seed=0, dim=4):
    return torch.randn(1, math.prod(grid), dim, generator=torch.Generator().manual_seed(seed))


grids = st.tuples(st.integers(1, 3), st.integers(1, 9), st.integers(1, 9))


def _random_subset(n: int, k: int, seed: int) -> torch.Tensor:
    return torch.randperm(n, generator=torch.Generator().manual_seed(seed))[: max(1, min(k, n))].sort().values


# ---- the sparse sequence: token_index without a cache attends among the anchors only ---------------------------------


@pytest.mark.parametrize("name", ["tiny-flux", "tiny-wan"])
def test_sparse_forward_ignores_inactive_tokens(tiny, name):
    setup = tiny[name]
    n = setup.noise.shape[1]
    anchors = _random_subset(n, n // 3, 1)
    inactive = torch.ones(n, dtype=torch.bool)
    inactive[anchors] = False
    other = setup.noise.clone()
    other[:, inactive] = torch.randn(1, int(inactive.sum()), other.shape[-1]) * 5
    with torch.no_grad():
        a = setup.field(setup.noise, setup.sigmas[1], token_index=anchors, kv_caches=None)
        b = setup.field(other, setup.sigmas[1], token_index=anchors, kv_caches=None)
        full = setup.field(setup.noise, setup.sigmas[1])
    assert torch.equal(a, b)
    assert rel_err(a, full[:, anchors]) > 1e-3  # and it differs from the dense forward: a different sequence


# ---- lifter -----------------------------------------------------------------------------------------------------


@SETTINGS
@given(grid=grids, frac=st.floats(0.01, 1.0), seed=st.integers(0, 2**31 - 1), dim=st.integers(1, 5))
def test_lifter_is_exact_on_anchors(grid, frac, seed, dim):
    n = math.prod(grid)
    anchors = _random_subset(n, int(frac * n), seed)
    u = torch.randn(1, len(anchors), dim, generator=torch.Generator().manual_seed(seed), dtype=torch.float64)
    lifted = make_lifter(grid, anchors, get_jit_preset("jit-4x"))(u)
    assert lifted.shape == (1, n, dim)
    assert torch.equal(lifted[:, anchors], u)
    assert torch.isfinite(lifted).all()


@SETTINGS
@given(grid=grids, frac=st.floats(0.01, 1.0), seed=st.integers(0, 2**31 - 1))
def test_nearest_anchor_is_a_nearest_anchor(grid, frac, seed):
    n = math.prod(grid)
    anchors = _random_subset(n, int(frac * n), seed)
    coords = grid_coordinates(grid).double()
    d2 = torch.cdist(coords, coords[anchors]) ** 2
    near = nearest_anchor(grid, anchors, chunk_elements=7)  # tiny chunks: the chunking is exercised too
    assert torch.allclose(d2[torch.arange(n), near], d2.min(1).values)
    assert torch.equal(anchors[near[anchors]], anchors)  # anchors are their own nearest anchor


def test_lifter_of_a_constant_is_that_constant_and_blur_smooths():
    grid = (2, 8, 8)
    anchors = initial_anchors(grid, 40, torch.Generator().manual_seed(0))
    lifter = make_lifter(grid, anchors, get_jit_preset("jit-4x"))
    c = torch.full((1, len(anchors), 3), 0.7, dtype=torch.float64)
    assert torch.allclose(lifter(c), torch.full((1, 128, 3), 0.7, dtype=torch.float64), atol=1e-14)
    # a single non-zero anchor spreads beyond its nearest-neighbour cell (the blur), but only within its frame
    u = torch.zeros(1, len(anchors), 1, dtype=torch.float64)
    u[0, 0] = 1.0  # token 0 = frame 0, corner
    lifted = lifter(u)[0, :, 0].reshape(grid)
    assert lifted[1].abs().max() == 0 and (lifted[0] > 0).sum() > (lifter.nearest[:64] == 0).sum()


@pytest.mark.parametrize("name", ["tiny-flux", "tiny-wan"])
def test_sampler_velocity_equals_dit_on_anchors(tiny, name):
    setup = tiny[name]
    seen = []

    def check(info):
        if info["computed"] is None:
            return
        with torch.no_grad():
            ref = setup.field(info["x"], info["sigma"], token_index=info["computed"], kv_caches=None)
        assert torch.equal(info["velocity"][:, info["computed"]], ref)
        seen.append(len(info["computed"]))

    cfg = JiTConfig(4, (0.5, 0.75, 1.0), micro_flow="exact")
    with torch.no_grad():
        sample_jit(setup.field, setup.noise, setup.sigmas, cfg, callback=check)
    n = setup.noise.shape[1]
    assert seen == [int(0.5 * n), int(0.75 * n)]  # steps 0 and 1 are sparse, 2-3 dense


# ---- micro-flow -------------------------------------------------------------------------------------------------


@SETTINGS
@given(n=st.integers(2, 40), k=st.integers(1, 10), seed=st.integers(0, 2**31 - 1), steps=st.integers(1, 6))
def test_micro_flow_hits_target_and_freezes_the_rest(n, k, seed, steps):
    g = torch.Generator().manual_seed(seed)
    state = torch.randn(1, n, 3, generator=g)
    new = _random_subset(n, k, seed + 1)
    target = torch.randn(1, len(new), 3, generator=g)
    rest = torch.ones(n, dtype=torch.bool)
    rest[new] = False

    exact = micro_flow(state, new, target, "exact")
    assert torch.equal(exact[:, new], target)
    assert torch.equal(exact[:, rest], state[:, rest])

    blend = micro_flow(state, new, target, "blend", steps)
    w = 1.0 / steps
    assert torch.allclose(blend[:, new], (1 - w) * state[:, new] + w * target, rtol=0, atol=1e-6)
    assert torch.equal(blend[:, rest], state[:, rest])
    assert torch.equal(state, torch.randn(1, n, 3, generator=torch.Generator().manual_seed(seed)))  # not in place


@SETTINGS
@given(substeps=st.integers(1, 12), delta=st.floats(1e-3, 0.5), t_end=st.floats(0.55, 1.0), seed=st.integers(0, 99))
def test_hitting_ode_closed_form(substeps, delta, t_end, seed):
    """Euler on Q y' = (y* - Q y) / (T - t) from T - delta lands on the closed form after every sub-step, and on
    y* after the last one, whatever delta."""
    g = torch.Generator().manual_seed(seed)
    y0, target = torch.randn(5, generator=g, dtype=torch.float64), torch.randn(5, generator=g, dtype=torch.float64)
    y, t, h = y0.clone(), t_end - delta, delta / substeps
    for j in range(1, substeps + 1):
        y = y + h * (target - y) / (t_end - t)
        t = t_end - delta + j * h
        assert torch.allclose(y, hitting_flow(y0, target, j / substeps), atol=1e-12)
    assert torch.allclose(y, target, atol=1e-12)
    assert torch.equal(hitting_flow(y0, target, 1.0), target)


@pytest.mark.parametrize("mode", ["exact", "blend"])
@pytest.mark.parametrize("grid", [(1, 12, 12), (3, 6, 8)])
def test_sampler_transitions_replay_ita_and_dmf(mode, grid):
    """At every transition the sampler grows the set by the last velocity's local variance and moves exactly the
    new tokens onto the DMF target built from the previous step (x0 = y - sigma v, old lifter, seeded noise)."""
    cfg = JiTConfig(6, (0.4, 0.7, 1.0), micro_flow=mode, seed=3)
    steps = []
    x = _toy_noise(grid)
    _, report = sample_jit(ToyField(grid), x, cfg, callback=lambda info: steps.append(info))
    assert report.transition_steps == [2, 3]
    noise = transition_noise(x.shape, cfg.seed, torch.float32)
    for k, i in enumerate(report.transition_steps):
        prev, now = steps[i - 1], steps[i]
        old, grown = report.anchor_sets[k], report.anchor_sets[k + 1]
        expected, new = grow_anchors(old, local_variance(prev["velocity"], grid), len(grown))
        assert torch.equal(expected, grown)
        euler = prev["x"] + (prev["sigma_next"] - prev["sigma"]) * prev["velocity"]
        x0 = prev["x"] - prev["sigma"] * prev["velocity"]
        target = micro_flow_target(x0, make_lifter(grid, old, cfg), new, now["sigma"], noise)
        moved = target if mode == "exact" else (2 / 3) * euler[:, new] + (1 / 3) * target
        assert torch.allclose(now["x"][:, new], moved, rtol=0, atol=1e-6)
        rest = ~torch.isin(torch.arange(math.prod(grid)), new)
        assert torch.allclose(now["x"][:, rest], euler[:, rest], rtol=0, atol=1e-6)
        assert not torch.allclose(now["x"][:, new], euler[:, new], atol=1e-3)


def test_micro_flow_target_of_a_constant_clean_estimate():
    grid = (1, 6, 6)
    anchors = initial_anchors(grid, 18, torch.Generator().manual_seed(0))
    lifter = make_lifter(grid, anchors, get_jit_preset("jit-4x"))
    x0 = torch.full((1, 36, 2), -1.5, dtype=torch.float64)
    x0[:, ~torch.isin(torch.arange(36), anchors)] = 99.0  # non-anchor clean estimates are not used
    noise = torch.randn(1, 36, 2, dtype=torch.float64)
    new = torch.tensor([1, 7, 20])
    sigma = torch.tensor(0.3, dtype=torch.float64)
    out = micro_flow_target(x0, lifter, new, sigma, noise)
    assert torch.allclose(out, 0.7 * -1.5 + 0.3 * noise[:, new], atol=1e-12)


# ---- anchors: initial set, growth, schedule, nesting ------------------------------------------------------------


@SETTINGS
@given(grid=grids, extra=st.floats(0, 1), seed=st.integers(0, 2**31 - 1))
def test_initial_set_holds_lattice_and_border(grid, extra, seed):
    t, h, w = grid
    n = math.prod(grid)
    base = lattice_and_border(grid)
    ff, rr, cc = grid_coordinates(grid).unbind(1)
    expected = ((rr % 2 == 0) & (cc % 2 == 0)) | (rr == 0) | (rr == h - 1) | (cc == 0) | (cc == w - 1)
    assert torch.equal(base, expected)
    budget = int(base.sum()) + int(extra * (n - int(base.sum())))
    anchors = initial_anchors(grid, budget, torch.Generator().manual_seed(seed))
    assert len(anchors) == budget and len(anchors.unique()) == budget
    assert base[anchors].sum() == base.sum()  # every lattice/border token is in
    small = initial_anchors(grid, max(1, int(base.sum()) // 2), torch.Generator().manual_seed(seed))
    assert base[small].all() and len(small) == max(1, int(base.sum()) // 2)  # too small a budget: a subset


def test_growth_picks_highest_variance_inactive_tokens():
    """One spike of height a at (2, 2) of a 6 x 6 velocity: every token whose 3 x 3 window (all inside the grid)
    holds the spike has variance a^2/9 - (a/9)^2 = 8a^2/81, every other token 0."""
    grid, a = (1, 6, 6), 3.0
    v = torch.zeros(1, 36, 2)
    v[0, 2 * 6 + 2] = a
    imp = local_variance(v, grid).reshape(6, 6)
    expected = torch.zeros(6, 6)
    expected[1:4, 1:4] = 8 * a * a / 81
    assert torch.allclose(imp, expected, atol=1e-6)
    anchors = torch.tensor([0, 8, 14, 35])  # (1, 2) and (2, 2) of the 3 x 3 block are active
    block = {r * 6 + c for r in range(1, 4) for c in range(1, 4)} - {8, 14}
    grown, added = grow_anchors(anchors, imp.flatten(), 4 + len(block))
    assert set(added.tolist()) == block
    assert set(grown.tolist()) == set(anchors.tolist()) | block


@SETTINGS
@given(grid=grids, seed=st.integers(0, 2**31 - 1), frac=st.floats(0, 1))
def test_growth_matches_brute_force_variance(grid, seed, frac):
    n = math.prod(grid)
    v = torch.randn(1, n, 3, generator=torch.Generator().manual_seed(seed), dtype=torch.float64)
    imp = local_variance(v, grid)
    vol = v[0].reshape(*grid, 3)
    ref = torch.empty(grid, dtype=torch.float64)
    for f, r, c in grid_coordinates(grid).tolist():
        sl = [slice(max(0, p - 1), p + 2) if size > 1 else slice(p, p + 1) for p, size in zip((f, r, c), grid)]
        win = vol[sl[0], sl[1], sl[2]].reshape(-1, 3)
        ref[f, r, c] = win.var(0, unbiased=False).mean()
    assert torch.allclose(imp, ref.flatten(), atol=1e-12)
    anchors = _random_subset(n, int(frac * n), seed)
    budget = len(anchors) + (n - len(anchors)) // 2
    grown, added = grow_anchors(anchors, imp, budget)
    inactive = ~torch.isin(torch.arange(n), anchors)
    left = inactive & ~torch.isin(torch.arange(n), added)
    assert len(grown) == budget and torch.isin(anchors, grown).all()
    if len(added) and left.any():
        assert imp[added].min() >= imp[left].max()


def _official_importance(v: torch.Tensor, h: int, w: int) -> torch.Tensor:
    """``_compute_importance_map`` of the official pipeline_flux_JiT.py (@818ed8d), one sample, written again:
    3 x 3 avg_pool2d with padding 1 and the default count_include_pad=True, variance per channel, channel mean."""
    v2d = v.reshape(1, h, w, -1).permute(0, 3, 1, 2)
    mean = F.avg_pool2d(v2d, 3, stride=1, padding=1)
    return (F.avg_pool2d(v2d**2, 3, stride=1, padding=1) - mean**2).mean(dim=1).flatten()


def test_zero_padded_variance_is_the_codes_importance_map():
    h, w = 7, 9
    v = torch.randn(1, h * w, 4, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    official = _official_importance(v, h, w)
    # float64 on both sides; only the pooling arithmetic differs (a 3-D pool and a division by the frame share)
    torch.testing.assert_close(local_variance(v, (1, h, w), padding="zeros"), official, rtol=1e-12, atol=1e-12)
    # the paper's local variance ("valid") is the code's inside the grid and differs on its border
    valid = local_variance(v, (1, h, w)).reshape(h, w)
    official = official.reshape(h, w)
    torch.testing.assert_close(valid[1:-1, 1:-1], official[1:-1, 1:-1], rtol=1e-12, atol=1e-12)
    border = torch.ones(h, w, dtype=torch.bool)
    border[1:-1, 1:-1] = False
    assert ((valid - official)[border].abs() > 1e-3).all()
    # video: zeros beyond rows and columns count, frames count only inside the grid (brute force)
    grid = (3, 4, 5)
    v = torch.randn(1, math.prod(grid), 2, generator=torch.Generator().manual_seed(1), dtype=torch.float64)
    vol = F.pad(v[0].reshape(*grid, 2).permute(3, 0, 1, 2), (1, 1, 1, 1))  # [2, T, H + 2, W + 2], zero border
    expected = torch.empty(grid, dtype=torch.float64)
    for f, r, c in grid_coordinates(grid).tolist():
        win = vol[:, max(0, f - 1) : f + 2, r : r + 3, c : c + 3].reshape(2, -1)  # all 9 cells of each frame
        expected[f, r, c] = ((win**2).mean(1) - win.mean(1) ** 2).mean()
    torch.testing.assert_close(local_variance(v, grid, padding="zeros"), expected.flatten(), rtol=1e-12, atol=1e-12)
    with pytest.raises(ValueError, match="padding"):
        local_variance(v, grid, padding="reflect")


def _official_nearest(grid, order: torch.Tensor) -> torch.Tensor:
    """``_irregular_interpolation`` step 1 of the official code, written again: for every token, the token index of
    ``cdist(coords, coords[anchors]).argmin`` over the anchor list in its stored order (argmin: the first minimum).
    The code has (row, col) coordinates; (frame, row, col) here, the video extension."""
    coords = grid_coordinates(grid).float()
    return order[torch.cdist(coords, coords[order]).argmin(dim=-1)]


@SETTINGS
@given(grid=grids, frac=st.floats(0.05, 1.0), seed=st.integers(0, 2**31 - 1))
def test_stored_tie_order_is_the_codes_argmin_over_its_anchor_list(grid, frac, seed):
    n = math.prod(grid)
    anchors = _random_subset(n, int(frac * n), seed)
    order = anchors[torch.randperm(len(anchors), generator=torch.Generator().manual_seed(seed + 1))]
    cfg = get_jit_preset("jit-4x")
    stored = make_lifter(grid, anchors, cfg.replace(tie_order="stored"), order=order)
    assert torch.equal(stored.anchors[stored.nearest], _official_nearest(grid, order))
    index = make_lifter(grid, anchors, cfg)  # "index" = the same rule over the sorted list
    assert torch.equal(index.anchors[index.nearest], _official_nearest(grid, anchors))


def test_tie_orders_differ_on_an_equidistant_token():
    grid, anchors, order = (1, 1, 3), torch.tensor([0, 2]), torch.tensor([2, 0])  # token 1 is 1 from both
    cfg = get_jit_preset("jit-4x-code")
    assert cfg.tie_order == "stored" and _official_nearest(grid, order)[1] == 2
    assert make_lifter(grid, anchors, cfg, order=order).nearest[1] == 1  # position of token 2 in the sorted set
    assert make_lifter(grid, anchors, cfg.replace(tie_order="index")).nearest[1] == 0
    with pytest.raises(ValueError, match="order"):
        make_lifter(grid, anchors, cfg)
    with pytest.raises(ValueError, match="order must hold"):
        make_lifter(grid, anchors, cfg, order=torch.tensor([2, 1]))


def test_code_mode_sampler_keeps_the_anchor_order_and_pads_with_zeros():
    """A 12 x 12 grid: the lattice + border (69) exceeds the first budget (57), so the kept set comes in a random
    drawn order, as in the code, and many nearest-anchor ties break differently from the index rule."""
    grid = (1, 12, 12)
    cfg = JiTConfig(6, (0.4, 0.7, 1.0), micro_flow="blend", variance_padding="zeros", tie_order="stored", seed=3)
    steps = []
    _, report = sample_jit(ToyField(grid), _toy_noise(grid), cfg, callback=steps.append)
    order = initial_anchor_order(grid, len(report.anchor_sets[0]), torch.Generator().manual_seed(cfg.seed))
    ties_matter = False
    for info in steps:
        if info["i"] in report.transition_steps:
            importance = local_variance(steps[info["i"] - 1]["velocity"], grid, padding="zeros")
            k = report.transition_steps.index(info["i"])
            grown, new = grow_anchors(order.sort().values, importance, len(report.anchor_sets[k + 1]))
            assert torch.equal(grown, report.anchor_sets[k + 1])
            order = torch.cat([order, by_importance(new, importance)])
        if info["computed"] is None:
            continue
        anchors = order.sort().values
        u = info["velocity"][:, anchors]
        assert torch.equal(info["velocity"], make_lifter(grid, anchors, cfg, order=order)(u))  # same computation
        ties_matter |= not torch.equal(info["velocity"], make_lifter(grid, anchors, cfg.replace(tie_order="index"))(u))
    assert ties_matter


@pytest.mark.parametrize(
    "preset,grid,counts,ends",
    [
        ("jit-7x", (1, 32, 32), [327] * 4 + [614] * 3 + [1024] * 4, [4, 7, 11]),
        ("jit-4x", (1, 32, 32), [358] * 7 + [634] * 4 + [1024] * 7, [7, 11, 18]),
        ("jit-4x", (3, 12, 10), [126] * 7 + [223] * 4 + [360] * 7, [7, 11, 18]),
    ],
)
def test_anchor_sets_are_nested_and_follow_the_schedule(preset, grid, counts, ends):
    cfg = get_jit_preset(preset)
    n = math.prod(grid)
    assert stage_bounds(cfg.num_steps, cfg.stage_ends) == ends
    _, report = sample_jit(ToyField(grid), _toy_noise(grid), cfg)
    assert report.token_counts == counts and report.stage_ends == ends
    assert report.transition_steps == ends[:2]
    sets = report.anchor_sets
    assert [len(s) for s in sets] == stage_budgets(n, cfg.token_fractions) == sorted(set(counts))
    for small, big in zip(sets, sets[1:]):
        assert torch.isin(small, big).all()
    assert torch.equal(sets[-1], torch.arange(n))
    if preset == "jit-4x" and grid[1:] == (32, 32):  # the lattice + border (349 tokens) fits in 358
        assert lattice_and_border(grid)[sets[0]].sum() == lattice_and_border(grid).sum()


def test_presets_cite_a_source_and_have_the_paper_tiers():
    assert all(p.source for p in PRESETS.values())
    assert (PRESETS["jit-4x"].num_steps, PRESETS["jit-4x"].token_fractions) == (18, (0.35, 0.62, 1.0))
    assert (PRESETS["jit-7x"].num_steps, PRESETS["jit-7x"].token_fractions) == (11, (0.32, 0.60, 1.0))
    assert PRESETS["jit-4x"].micro_flow == "exact" and PRESETS["jit-4x-code"].micro_flow == "blend"
    for name, preset in PRESETS.items():  # the code's importance padding and tie order only in the -code presets
        code = name.endswith("-code")
        assert (preset.variance_padding, preset.tie_order) == (("zeros", "stored") if code else ("valid", "index"))
    with pytest.raises(ValueError, match="variance_padding"):
        JiTConfig(10, (0.3, 1.0), stage_ends=(0.5, 1.0), variance_padding="reflect")
    with pytest.raises(ValueError, match="tie_order"):
        JiTConfig(10, (0.3, 1.0), stage_ends=(0.5, 1.0), tie_order="random")
    with pytest.raises(ValueError):
        JiTConfig(10, (0.5, 0.3, 1.0))  # not nested
    with pytest.raises(ValueError):
        JiTConfig(10, (0.3, 0.6))  # does not end dense / ends mismatch
    with pytest.raises(ValueError):
        JiTConfig(10, (0.3, 1.0), stage_ends=(0.5, 1.0), micro_flow="bridge")


# ---- seeding ----------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("mode", ["exact", "blend"])
def test_same_seed_same_bits_different_seed_different_top_up(mode):
    grid = (1, 32, 32)  # 349 lattice/border tokens, budget 358: 9 drawn at random
    cfg = get_jit_preset("jit-4x").replace(micro_flow=mode)
    x = _toy_noise(grid)
    a, ra = sample_jit(ToyField(grid), x, cfg)
    b, rb = sample_jit(ToyField(grid), x, cfg)
    c, rc = sample_jit(ToyField(grid), x, cfg.replace(seed=1))
    assert torch.equal(a, b) and all(torch.equal(s, t) for s, t in zip(ra.anchor_sets, rb.anchor_sets))
    assert not torch.equal(ra.anchor_sets[0], rc.anchor_sets[0])
    base = lattice_and_border(grid)
    assert torch.equal(ra.anchor_sets[0][base[ra.anchor_sets[0]]], rc.anchor_sets[0][base[rc.anchor_sets[0]]])
    assert not torch.equal(a, c)


# ---- all tokens active = plain Euler ----------------------------------------------------------------------------


@pytest.mark.parametrize("name", ["tiny-flux", "tiny-wan"])
def test_all_active_equals_sample_euler(tiny, name):
    setup = tiny[name]
    sigmas = setup.sigmas[[0, 1, 2, 4]]  # 3 steps
    with torch.no_grad():
        ref = sample_euler(setup.field, setup.noise, sigmas)
        out, report = sample_jit(setup.field, setup.noise, sigmas, CFG)
    assert rel_err(out, ref) <= 1e-6
    assert report.token_counts == [setup.noise.shape[1]] * 3 and report.transition_steps == []
    assert report.ideal_speedup == pytest.approx(1.0)


def test_batch_and_step_count_are_checked():
    grid = (1, 4, 4)
    with pytest.raises(ValueError, match="one sample at a time"):
        sample_jit(ToyField(grid), torch.randn(2, 16, 4), CFG)
    with pytest.raises(ValueError, match="num_steps"):
        sample_jit(ToyField(grid), torch.randn(1, 16, 4), torch.linspace(1, 0, 6), CFG)


# ---- Beta timestep warp -----------------------------------------------------------------------------------------


@SETTINGS
@given(steps=st.integers(1, 60), alpha=st.floats(0.3, 4.0), beta=st.floats(0.3, 4.0))
def test_beta_warp_is_monotone_from_one_to_zero(steps, alpha, beta):
    s = beta_sigmas(steps, alpha, beta)
    assert len(s) == steps + 1 and s[0] == 1.0 and s[-1] == 0.0
    assert (s[1:] < s[:-1]).all()


def test_beta_warp_matches_scipy_and_the_notes():
    stats = pytest.importorskip("scipy.stats")
    for steps, beta in [(11, 0.425), (18, 0.42), (50, 0.42)]:
        q = 1 - torch.linspace(0, 1, steps, dtype=torch.float64)
        ref = 1 / steps + (1 - 1 / steps) * torch.from_numpy(stats.beta.ppf(q.numpy(), 1.4, beta))
        assert torch.allclose(beta_sigmas(steps, 1.4, beta)[:-1].double(), ref, atol=1e-6)
    notes_7x = [1.000, .997, .986, .964, .929, .878, .808, .715, .591, .418, .091, 0.0]  # notes §3.3
    assert torch.allclose(beta_sigmas(11, 1.4, 0.425).double(), torch.tensor(notes_7x, dtype=torch.float64), atol=6e-4)


# ---- FLOPs ------------------------------------------------------------------------------------------------------


def test_flops_ratio_is_token_proportional_for_a_linear_cost():
    """Linear cost only: JiT FLOPs = sum of anchors; speedup against 50 full steps = 50 N / sum m (notes §3.3:
    7x tier on a 64 x 64 grid gives 50 / 7.08 ~ 7.06)."""
    grid = (1, 64, 64)
    _, report = sample_jit(ToyField(grid), _toy_noise(grid, dim=1), "jit-7x")
    assert report.flops == sum(report.token_counts) == 4 * 1310 + 3 * 2457 + 4 * 4096
    assert report.speedup_vs(50) == pytest.approx(50 * 4096 / report.flops)
    assert report.speedup_vs(50) == pytest.approx(7.06, abs=0.01)
    assert report.ideal_speedup == pytest.approx(11 * 4096 / report.flops)
    assert len(report.step_seconds) == 11
