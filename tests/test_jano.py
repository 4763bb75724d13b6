"""Jano core: attention permutation invariance, exact equivalence of the cached forward, plan invariants,
all-active = full sampling, no global state, DDIM adapter, dtype of the cache."""

import subprocess
import sys
import textwrap

import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from jano_ref import generate, get_preset
from jano_ref.jano.cache import LevelKVCache
from jano_ref.runtime.cost import TokenCost
from jano_ref.jano.plan import (
    ACTIVE_STEP, FULL, MODERATE_STEP, REFRESH, JanoPlan, computed_tokens, step_level,
)
from jano_ref.runtime.fields import WanVelocity
from jano_ref.runtime.sampling import EpsToVelocity, linear_beta_alphas_cumprod, sample_euler
from models import build_model
from models.flux import image_ids, text_ids
from models.layers import attention

from .helpers import flux_cfg_field, flux_field, randomize_, rel_err, wan_field

SETTINGS = settings(max_examples=12, deadline=None, suppress_health_check=[HealthCheck.too_slow])


# ---- (a) permutation invariance -----------------------------------------------------------------


@SETTINGS
@given(st.integers(1, 4), st.integers(1, 9), st.integers(1, 20), st.sampled_from([8, 16]), st.integers(0, 2**31 - 1))
def test_attention_is_invariant_to_key_order(heads, n_q, n_k, dim, seed):
    g = torch.Generator().manual_seed(seed)
    q, k, v = (torch.randn(2, heads, n, dim, generator=g, dtype=torch.float64) for n in (n_q, n_k, n_k))
    perm = torch.randperm(n_k, generator=g)
    assert torch.allclose(attention(q, k[:, :, perm], v[:, :, perm]), attention(q, k, v), rtol=1e-12, atol=1e-12)


# ---- (b) exact equivalence to full attention ----------------------------------------------------

FLUX_AXES = {1: [16, 24, 24], 2: [8, 12, 12], 4: [4, 6, 6]}


def _random_levels(n: int, seed: int, p_static: float, p_moderate: float) -> torch.Tensor:
    u = torch.rand(n, generator=torch.Generator().manual_seed(seed))
    return torch.where(u < p_static, 1, torch.where(u < p_static + p_moderate, 2, 3))


@SETTINGS
@given(
    heads=st.sampled_from([1, 2, 4]), h=st.integers(1, 4), w=st.integers(1, 5), n_txt=st.integers(1, 7),
    p_static=st.floats(0, 0.6), p_moderate=st.floats(0, 0.4), seed=st.integers(0, 2**31 - 1),
)
def test_flux_cached_forward_equals_full_forward(heads, h, w, n_txt, p_static, p_moderate, seed):
    torch.manual_seed(seed)
    model = randomize_(build_model("flux-test", num_heads=heads, axes_dim=FLUX_AXES[heads]), seed=seed)
    n = h * w
    inp = dict(
        img=torch.randn(1, n, 16), img_ids=image_ids(2 * h, 2 * w), txt=torch.randn(1, n_txt, 40),
        txt_ids=text_ids(n_txt), timesteps=torch.tensor([0.6]), y=torch.randn(1, 24), guidance=torch.tensor([3.0]),
    )
    levels = _random_levels(n, seed, p_static, p_moderate)
    cache = LevelKVCache(levels)
    with torch.no_grad():
        full = model(**inp, kv_cache=cache.at(REFRESH))
        for level in (MODERATE_STEP, ACTIVE_STEP):
            index = computed_tokens(levels, level)
            if index.numel() == 0:
                continue
            out = model(**inp, token_index=index, kv_cache=cache.at(level))
            assert rel_err(out, full[:, index]) <= 1e-5, level


@SETTINGS
@given(
    heads=st.sampled_from([1, 2, 4]), f=st.integers(1, 3), h=st.integers(1, 3), w=st.integers(1, 3),
    p_static=st.floats(0, 0.6), p_moderate=st.floats(0, 0.4), seed=st.integers(0, 2**31 - 1),
)
def test_wan_cached_forward_equals_full_forward_per_cfg_branch(heads, f, h, w, p_static, p_moderate, seed):
    """Each guidance branch has its own cache, and each branch's cached forward equals its full forward.
    (Compared per branch: the guided mix u + g (c - u) amplifies float32 rounding by about g.)"""
    torch.manual_seed(seed)
    model = randomize_(build_model("wan-test", num_heads=heads), seed=seed)
    contexts = {"cond": torch.randn(1, 5, 24), "uncond": torch.randn(1, 3, 24)}
    video = torch.randn(1, 4, f, 2 * h, 2 * w)
    t = torch.tensor([400.0])
    levels = _random_levels(f * h * w, seed, p_static, p_moderate)
    caches = {b: LevelKVCache(levels) for b in contexts}
    with torch.no_grad():
        full = {b: model.forward_tokens(video, t, ctx, kv_cache=caches[b].at(REFRESH)) for b, ctx in contexts.items()}
        for level in (MODERATE_STEP, ACTIVE_STEP):
            index = computed_tokens(levels, level)
            if index.numel() == 0:
                continue
            for b, ctx in contexts.items():  # interleaved, as in sampling: cond then uncond at every step
                out = model.forward_tokens(video, t, ctx, token_index=index, kv_cache=caches[b].at(level))
                assert rel_err(out, full[b][:, index]) <= 1e-5, (b, level)


def test_cfg_branches_need_their_own_cache():
    """Sharing one cache between cond and uncond mixes their keys: the equivalence must then break, while one cache
    per branch keeps it on the same inputs."""
    model = randomize_(build_model("wan-test"), seed=5)
    # Seeded, and contexts far apart as a prompt's and the empty prompt's are: with unit-scale random contexts the
    # branches' frozen keys differ so little that the mixing error (~1e-4) depended on the global RNG state.
    g = torch.Generator().manual_seed(0)
    field = WanVelocity(model, 10 * torch.randn(1, 5, 24, generator=g), 10 * torch.randn(1, 3, 24, generator=g), (2, 4, 4))
    x, sigma = torch.randn(1, 8, 16, generator=g), torch.tensor(0.5)
    levels = torch.tensor([1, 1, 2, 3, 1, 2, 3, 3])
    index = computed_tokens(levels, ACTIVE_STEP)

    def active_vs_full(caches: dict[str, LevelKVCache]) -> float:
        with torch.no_grad():
            full = field(x, sigma, kv_caches={b: c.at(REFRESH) for b, c in caches.items()})
            out = field(x, sigma, token_index=index, kv_caches={b: c.at(ACTIVE_STEP) for b, c in caches.items()})
        return rel_err(out, full[:, index])

    shared = LevelKVCache(levels)
    assert active_vs_full({"cond": shared, "uncond": shared}) > 1e-4
    assert active_vs_full({"cond": LevelKVCache(levels), "uncond": LevelKVCache(levels)}) < 1e-4


def test_cache_keeps_the_model_dtype_and_needs_a_refresh_first():
    model = build_model("wan-test", dtype=torch.bfloat16)
    cache = LevelKVCache(torch.tensor([1, 2, 3, 3]))
    with torch.no_grad():
        model.forward_tokens(torch.randn(1, 4, 1, 4, 4), torch.tensor([10.0]), torch.randn(1, 3, 24), kv_cache=cache.at(REFRESH))
    assert {t.dtype for kv in cache.static.values() for t in kv} == {torch.bfloat16}
    assert cache.nbytes() == model.params.num_layers * 2 * 2 * (1 * 96) * 2  # layers x (static+moderate) x (K,V) x dim x 2 B
    with pytest.raises(RuntimeError, match="refresh step"):
        LevelKVCache(torch.tensor([1, 3])).at(ACTIVE_STEP).extend_kv(0, torch.zeros(1, 1, 1, 4), torch.zeros(1, 1, 1, 4))


# ---- (c) plan invariants --------------------------------------------------------------------------


@settings(max_examples=60, deadline=None)
@given(
    num_steps=st.integers(1, 60), warmup=st.integers(2, 10), cooldown=st.integers(0, 6),
    static_interval=st.integers(1, 14), medium_interval=st.integers(1, 6), seed=st.integers(0, 1000),
)
def test_plan_invariants(num_steps, warmup, cooldown, static_interval, medium_interval, seed):
    levels = _random_levels(30, seed, 0.4, 0.3)
    plan = JanoPlan.build(levels, num_steps, warmup=warmup, cooldown=cooldown, static_interval=static_interval,
                          medium_interval=medium_interval)
    for i, lv in enumerate(plan.step_levels):
        if i < warmup or i >= num_steps - cooldown:
            assert lv == FULL
    if warmup < num_steps - cooldown:
        assert plan.step_levels[warmup] == REFRESH  # the first step after warm-up refreshes everything
    # every token is computed at least once every static_interval steps
    last = torch.full((30,), -1)
    for i in range(num_steps):
        index = plan.computed(i)
        computed = torch.ones(30, dtype=torch.bool) if index is None else torch.zeros(30, dtype=torch.bool).index_fill(0, index, True)
        assert ((i - last)[~computed] < static_interval).all() or i < warmup
        last = torch.where(computed, i, last)
    # moderate and active tokens every medium_interval steps, active ones every step
    for i in range(num_steps):
        index = plan.computed(i)
        if index is not None:
            assert set(torch.nonzero(levels == 3).flatten().tolist()) <= set(index.tolist())


def test_step_levels_reproduce_the_official_flux_and_wan_counts():
    """notes §7: Flux (W7, Cd2, 12/4) gives 9 full, 4 refresh, 7 moderate, 30 active; Wan (6, 4, 6/3)
    gives 10 full with refreshes at 1-based i = 7, 13, ..., 43 and moderate steps at 10, 16, ..., 46."""
    flux = [step_level(i, 50, 7, 2, 12, 4) for i in range(50)]
    assert [flux.count(k) for k in (FULL, REFRESH, MODERATE_STEP, ACTIVE_STEP)] == [9, 4, 7, 30]
    wan = [step_level(i, 50, 6, 4, 6, 3) for i in range(50)]
    assert [i + 1 for i, lv in enumerate(wan) if lv == REFRESH] == list(range(7, 44, 6))
    assert [i + 1 for i, lv in enumerate(wan) if lv == MODERATE_STEP] == list(range(10, 47, 6))
    assert wan.count(FULL) == 10 and wan.count(ACTIVE_STEP) == 26


def test_ideal_speedup_from_token_flops():
    cost = TokenCost(linear_per_token=10.0, self_attn_per_pair=1.0, always_computed=2)
    levels = torch.tensor([1, 1, 2, 3])
    plan = JanoPlan((FULL, REFRESH, ACTIVE_STEP, MODERATE_STEP), levels)
    full = 10 * 6 + 6 * 6  # q = k = 4 + 2 text
    step1 = 10 * 3 + 3 * 6  # one active token + 2 text queries, all 6 keys
    step2 = 10 * 4 + 4 * 6
    assert plan.token_counts() == [4, 4, 1, 2]
    assert plan.ideal_speedup(cost) == pytest.approx(4 * full / (2 * full + step1 + step2))
    assert "ideal speedup" in plan.describe(cost) and "1 2" in plan.describe(cost)


# ---- (d) all blocks active = full sampling; the sampler follows its plan ----------------------------


SMALL_FLUX = get_preset("flux-dev").replace(warmup_steps=3, cooldown_steps=2, static_interval=5, medium_interval=2)
SMALL_WAN = get_preset("wan").replace(warmup_steps=3, cooldown_steps=2, static_interval=4, medium_interval=2,
                                      block_size=(1, 2, 2))


@pytest.mark.parametrize("make, config", [(flux_field, SMALL_FLUX), (flux_cfg_field, SMALL_FLUX), (wan_field, SMALL_WAN)],
                         ids=["flux", "flux-cfg", "wan"])
def test_all_blocks_active_equals_full_sampling(make, config):
    field, noise, sigmas = make()
    full = generate(field, noise, sigmas, method="full")
    everything_active = config.replace(static_thresh=-1.0, medium_thresh=-1.0)
    jano = generate(field, noise, sigmas, method="jano", config=everything_active)
    assert jano.report.ideal_speedup == pytest.approx(1.0)
    assert rel_err(jano.tokens, full.tokens) <= 1e-6


@pytest.mark.parametrize("make, config", [(flux_field, SMALL_FLUX), (flux_cfg_field, SMALL_FLUX), (wan_field, SMALL_WAN)],
                         ids=["flux", "flux-cfg", "wan"])
def test_sampler_computes_what_the_plan_reports(make, config):
    field, noise, sigmas = make()
    seen = []
    calls = []

    def spy(x, sigma, *, token_index=None, kv_caches=None):
        calls.append(x.shape[1] if token_index is None else token_index.numel())
        return field(x, sigma, token_index=token_index, kv_caches=kv_caches)

    result = generate(spy, noise, sigmas, method="jano", config=config, layout=field,
                      callback=lambda s: seen.append(s["level"]), log=lambda text: seen.append(text))
    report = result.report
    assert report.plan is not None and isinstance(seen[config.warmup_steps], str)  # plan logged after warm-up
    counts = report.token_counts
    assert [n for n in counts if n > 0] == calls  # steps with nothing to compute skip the model
    assert report.ideal_speedup > 1.0 and len(report.step_seconds) == len(sigmas) - 1
    assert set(report.token_levels.unique().tolist()) <= {1, 2, 3}
    assert report.token_levels.numel() == noise.shape[1]


def test_hold_frozen_latents_ablation_keeps_frozen_tokens_fixed():
    field, noise, sigmas = flux_field()
    states = []
    config = SMALL_FLUX.replace(hold_frozen_latents=True, static_thresh=0.3, medium_thresh=0.6)
    result = generate(field, noise, sigmas, method="jano", config=config, callback=lambda s: states.append(s))
    moved_frozen = False
    for a, b in zip(states, states[1:]):
        if a["computed"] is not None:
            frozen = torch.ones(noise.shape[1], dtype=torch.bool)
            frozen[a["computed"]] = False
            assert torch.equal(a["x"][:, frozen], b["x"][:, frozen])
            moved_frozen = moved_frozen or frozen.any().item()
    assert moved_frozen, "the test needs at least one partial step with frozen tokens"
    default = generate(field, noise, sigmas, method="jano", config=config.replace(hold_frozen_latents=False))
    assert not torch.equal(result.tokens, default.tokens)


# ---- DDIM adapter: Jano runs on an epsilon model through EpsToVelocity -----------------------------


def test_jano_through_the_ddim_adapter():
    field, noise, _ = flux_field()

    def eps_model(x_t, t, *, token_index=None, kv_caches=None):  # read the Flux output as an epsilon prediction
        return field(x_t, t / 1000, token_index=token_index, kv_caches=kv_caches)

    from jano_ref.runtime.sampling import ddim_sigmas

    alphas = linear_beta_alphas_cumprod()
    sigmas, _ = ddim_sigmas(alphas, 16)
    adapter = EpsToVelocity(eps_model, alphas)
    with torch.no_grad():
        reference = sample_euler(adapter, noise.double(), sigmas)
    active = SMALL_FLUX.replace(static_thresh=-1.0, medium_thresh=-1.0)
    same = generate(adapter, noise.double(), sigmas, method="jano", config=active, layout=field)
    assert rel_err(same.tokens, reference) <= 1e-6
    fast = generate(adapter, noise.double(), sigmas, method="jano", config=SMALL_FLUX, layout=field)
    assert fast.report.ideal_speedup > 1.0 and torch.isfinite(fast.tokens).all()


# ---- no global state ------------------------------------------------------------------------------

_SCRIPT = textwrap.dedent(
    """
    import sys, torch
    from tests.test_jano import flux_field, wan_field, SMALL_FLUX, SMALL_WAN
    from jano_ref import generate
    torch.set_num_threads(1)
    kind = sys.argv[1]
    make, cfg = (flux_field, SMALL_FLUX) if kind == "flux" else (wan_field, SMALL_WAN)
    field, noise, sigmas = make(seed=int(sys.argv[2]))
    torch.save(generate(field, noise, sigmas, method="jano", config=cfg).tokens, sys.argv[3])
    """
)


def test_generations_are_independent_of_process_history(tmp_path):
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # same thread count as the fresh processes, so results can be bit-identical
    try:
        in_process = {}
        for kind, seed in [("flux", 0), ("wan", 0), ("flux", 0), ("flux", 1), ("wan", 1), ("wan", 0)]:
            make, cfg = (flux_field, SMALL_FLUX) if kind == "flux" else (wan_field, SMALL_WAN)
            field, noise, sigmas = make(seed=seed)
            out = generate(field, noise, sigmas, method="jano", config=cfg).tokens
            if (kind, seed) in in_process:  # the same generation again, after others ran in between
                assert torch.equal(out, in_process[(kind, seed)])
            in_process[(kind, seed)] = out
    finally:
        torch.set_num_threads(threads)
    for kind, seed in [("flux", 1), ("wan", 0)]:
        path = tmp_path / f"{kind}{seed}.pt"
        subprocess.run([sys.executable, "-c", _SCRIPT, kind, str(seed), str(path)], check=True,
                       cwd=str(__import__("pathlib").Path(__file__).parent.parent))
        assert torch.equal(torch.load(path), in_process[(kind, seed)])


# ---- presets ----------------------------------------------------------------------------------------


def test_presets_carry_the_published_numbers_and_cite_them():
    from jano_ref import JANO_PRESETS

    flux, wan = JANO_PRESETS["flux-dev"], JANO_PRESETS["wan"]
    assert (flux.warmup_steps, flux.cooldown_steps, flux.static_thresh, flux.medium_thresh, flux.static_interval,
            flux.medium_interval, flux.alpha, flux.d_strength, flux.d_distance, flux.block_size) == (
        7, 2, 0.2, 0.4, 12, 4, 0.0, 0.8, 2.0, None)
    assert (wan.warmup_steps, wan.cooldown_steps, wan.static_thresh, wan.medium_thresh, wan.static_interval,
            wan.medium_interval, wan.alpha, wan.d_strength, wan.d_distance, wan.block_size) == (
        6, 4, 0.2, 0.4, 6, 3, 0.7, 0.8, 1.0, (7, 6, 8))
    rows = {  # Appendix B: (static thresh, static interval, moderate thresh, moderate interval)
        "flux-b": [(0.1, 8, 0.5, 5), (0.2, 10, 0.5, 3), (0.3, 10, 0.6, 3)],
        "wan1.3b-b": [(0.1, 3, 0.3, 2), (0.15, 6, 0.4, 4), (0.4, 6, 0.6, 4)],
        "wan14b-b": [(0.1, 6, 0.3, 3), (0.15, 6, 0.4, 4), (0.4, 6, 0.6, 4)],
    }
    for prefix, values in rows.items():
        for r, row in enumerate(values, start=1):
            c = JANO_PRESETS[f"{prefix}{r}"]
            assert (c.static_thresh, c.static_interval, c.medium_thresh, c.medium_interval) == row
            assert "Appendix B" in c.source
    assert all(c.source for c in JANO_PRESETS.values())
    # the warm-up stack of the official scripts' runs: Flux's timed runs 7 velocities; Wan the noise + 6 velocities
    assert not flux.include_noise and wan.include_noise and JANO_PRESETS["wan-2x"].include_noise
    assert JANO_PRESETS["wan-no-noise"] == wan.replace(include_noise=False, source=JANO_PRESETS["wan-no-noise"].source)
    assert all(c.contour_std_correction == 1 for c in JANO_PRESETS.values())  # the official torch.std
    with pytest.raises(KeyError, match="flux-dev"):
        get_preset("nope")
    with pytest.raises(ValueError, match="warm-up"):
        flux.replace(warmup_steps=1)
    with pytest.raises(ValueError, match="contour_std_correction"):
        flux.replace(contour_std_correction=2)


@pytest.mark.parametrize("correction", [0, 1])
def test_the_contour_std_correction_and_the_noise_reach_the_analyzer(monkeypatch, correction):
    import jano_ref.jano.sampler as sampler

    seen = []

    def analyze(warmup, grid, **settings):
        seen.append((warmup.shape[0], settings["std_correction"]))
        return real(warmup, grid, **settings)

    real = sampler.analyze
    monkeypatch.setattr(sampler, "analyze", analyze)
    field, noise, sigmas = wan_field()
    for include_noise in (False, True):
        config = SMALL_WAN.replace(contour_std_correction=correction, include_noise=include_noise)
        generate(field, noise, sigmas, method="jano", config=config)
    assert seen == [(3, correction), (4, correction)]  # K = warmup_steps velocities, + 1 with the noise
