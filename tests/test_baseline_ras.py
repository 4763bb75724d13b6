"""RAS (region-adaptive sampling): plain Euler at sample_ratio 1, exactness of the cached forward, the selection
rule and the starvation counter on hand-made scores, the schedule, the sampler's Euler update on a toy field,
per-branch K/V caches, the report and the presets."""

import math

import pytest
import torch

from jano_ref import generate
from jano_ref.baselines import default_preset, resolve, sweep
from jano_ref.baselines import ras
from jano_ref.baselines.ras import (
    PRESETS, RASConfig, RASKVCache, drop_schedule, next_selection, sample_ras, scale_step, select_band, split_drops,
    starved_scores, token_scores, tokens_to_drop,
)
from jano_ref.runtime.fields import FluxVelocity, WanVelocity
from jano_ref.runtime.cost import TokenCost
from jano_ref.runtime.sampling import sample_euler
from models.flux import unpack

from .helpers import flux_cfg_field, rel_err, wan_field

FIELDS = pytest.mark.parametrize("make", [flux_cfg_field, wan_field], ids=["flux-cfg", "wan"])


def _idx(values) -> torch.Tensor:
    return torch.tensor(values, dtype=torch.long)


# ---- sample_ratio = 1 is plain Euler ----------------------------------------------------------------------------


@FIELDS
def test_sample_ratio_one_is_bit_identical_to_euler(make):
    field, noise, sigmas = make()
    sigmas = sigmas[::2]  # 8 / 6 steps keep the file fast
    with torch.no_grad():
        reference = sample_euler(field, noise, sigmas)
        tokens, report = sample_ras(field, noise, sigmas, RASConfig(sample_ratio=1.0))
    assert torch.equal(tokens, reference)
    assert report.decisions == ["dense"] * (len(sigmas) - 1) and report.ideal_speedup == 1.0


# ---- the cached forward equals the full forward -----------------------------------------------------------------


def _single_branch_fields(field):
    """One single-branch field per guidance branch, so each branch's rows can be compared unguided."""
    if isinstance(field, FluxVelocity):
        return {"cond": FluxVelocity(field.model, field.cond, field.latent_hw),
                "uncond": FluxVelocity(field.model, field.uncond, field.latent_hw)}
    return {"cond": WanVelocity(field.model, field.context, None, field.latent_fhw),
            "uncond": WanVelocity(field.model, field.context_uncond, None, field.latent_fhw)}


@FIELDS
def test_cached_forward_equals_full_forward_per_branch(make):
    field, noise, sigmas = make()
    n = noise.shape[1]
    g = torch.Generator().manual_seed(3)
    x = noise + 0.3 * torch.randn(noise.shape, generator=g)
    sigma = sigmas[len(sigmas) // 2]
    with torch.no_grad():
        for branch, single in _single_branch_fields(field).items():
            cache = RASKVCache()
            full = single(x, sigma, kv_caches={"cond": cache.refresh()})
            assert torch.equal(full, single(x, sigma)), "the refresh hook must not change the forward"
            for _ in range(2):  # twice: the second subset reads rows the first one overwrote
                index = torch.randperm(n, generator=g)[: n // 3].sort().values
                out = single(x, sigma, token_index=index, kv_caches={"cond": cache.overwrite(index)})
                assert rel_err(out, full[:, index]) <= 1e-5, branch
            stale = RASKVCache()
            single(x + 0.5, sigma, kv_caches={"cond": stale.refresh()})  # K/V of another input: must differ
            out = single(x, sigma, token_index=index, kv_caches={"cond": stale.overwrite(index)})
            assert rel_err(out, full[:, index]) > 1e-3


def test_overwrite_needs_a_refresh_first_and_the_right_shape():
    k = torch.zeros(1, 2, 3, 4)
    with pytest.raises(RuntimeError, match="refresh"):
        RASKVCache().overwrite(_idx([0, 1, 2])).extend_kv(0, k, k)
    cache = RASKVCache()
    cache.refresh().extend_kv(0, torch.zeros(1, 2, 6, 4), torch.zeros(1, 2, 6, 4))
    with pytest.raises(ValueError, match="expected 2 tokens"):
        cache.overwrite(_idx([0, 5])).extend_kv(0, k, k)
    assert cache.nbytes() == 2 * 2 * 6 * 4 * 4


# ---- selection rule on hand-made scores -------------------------------------------------------------------------


def test_token_scores_by_hand():
    # C = 2 channels over a 2 x 4 latent: two 2x2 tokens. Token 0: pixels (0, 2), (0, 2), (0, 0), (0, 0);
    # token 1: (1, 4) everywhere. Unbiased std of two values = |a - b| / sqrt(2); norm = sqrt(a^2 + b^2).
    delta = torch.zeros(2, 1, 2, 4)
    delta[1, 0, 0, 0:2] = 2.0
    delta[0, 0, :, 2:] = 1.0
    delta[1, 0, :, 2:] = 4.0
    std = token_scores(delta, (1, 2, 2), "std")
    l2 = token_scores(delta, (1, 2, 2), "l2norm")
    assert torch.allclose(std, torch.tensor([2 * math.sqrt(2) / 4, 3 / math.sqrt(2)]))
    assert torch.allclose(l2, torch.tensor([1.0, math.sqrt(17)]))
    with pytest.raises(ValueError, match="l2norm"):
        token_scores(delta, (1, 2, 2), "mean")


@FIELDS
def test_token_scores_follow_the_models_token_order(make):
    """Flux packs channel-first and Wan channel-last: scores must come out in token order for both."""
    field, noise, _ = make()
    latent = field.to_latent(noise)[0]  # [C, T, H, W]
    pt, ph, pw = field.patch
    scale = torch.arange(noise.shape[1], dtype=torch.float32) + 1.0  # token j: every value times j + 1
    scores = token_scores(field.to_latent(noise * scale[None, :, None])[0], field.patch)
    per_token = latent.std(dim=0).reshape(latent.shape[1] // pt, pt, latent.shape[2] // ph, ph, -1, pw)
    expected = per_token.mean(dim=(1, 3, 5)).reshape(-1) * scale
    assert torch.allclose(scores, expected, rtol=1e-5)


SCORES = torch.tensor([5.0, 1.0, 7.0, 3.0, 8.0, 2.0, 6.0, 4.0])  # ascending: tokens 1 5 3 7 0 6 2 4


@pytest.mark.parametrize("high_ratio, computed", [
    (1.0, [1, 3, 5, 7]),  # the published default: drop the 4 highest (tokens 4 2 6 0)
    (0.5, [0, 3, 6, 7]),  # drop 2 lowest (1 5) and 2 highest (4 2)
    (0.3, [0, 3, 6, 7]),  # floor(4 * 0.7) = 2 from the bottom, the other 2 from the top
    (0.25, [0, 2, 6, 7]),  # 3 from the bottom (1 5 3), 1 from the top (4)
    (0.0, [0, 2, 4, 6]),  # drop the 4 lowest: compute the top band
])
def test_selection_band(high_ratio, computed):
    got, dropped = select_band(SCORES, 4, high_ratio)
    assert got.tolist() == computed
    assert sorted(dropped.tolist()) == sorted(set(range(8)) - set(computed))


def test_split_drops_always_drops_k():
    assert split_drops(4, 0.3) == (2, 2)  # the published code would drop int(1.2) = 1 from the top: 3 in all
    assert split_drops(8, 0.0) == (8, 0)  # published: indices[-0:] drops every token
    assert split_drops(8, 1.0) == (0, 8)
    assert split_drops(10, 0.3) == (7, 3)  # 10 * 0.7 = 7.000000000000001 in float
    assert split_drops(0, 0.5) == (0, 0)


def test_starvation_counter_by_hand():
    """Scale ln 2 doubles a score per drop. Step 1 (nothing dropped yet) drops the 4 lowest of SCORES' variant
    below: tokens 1 5 3 7. Step 2 sees 5 2 7 6 8 4 6.5 9: token 7 (4.5 -> 9) climbs into the computed band and
    token 0 (5) falls out."""
    config = RASConfig(high_ratio=0.0, starvation_scale=math.log(2))
    scores = torch.tensor([5.0, 1.0, 7.0, 3.0, 8.0, 2.0, 6.5, 4.5])
    count = torch.zeros(8)
    computed, dropped, count = next_selection(scores, count, 4, config)
    assert computed.tolist() == [0, 2, 4, 6] and dropped.tolist() == [1, 3, 5, 7]
    assert count.tolist() == [0, 1, 0, 1, 0, 1, 0, 1]
    assert torch.allclose(starved_scores(scores, count, config.starvation_scale),
                          torch.tensor([5.0, 2.0, 7.0, 6.0, 8.0, 4.0, 6.5, 9.0]))
    computed, dropped, count = next_selection(scores, count, 4, config)
    assert computed.tolist() == [2, 4, 6, 7] and dropped.tolist() == [0, 1, 3, 5]
    assert count.tolist() == [1, 2, 0, 2, 0, 2, 0, 1]
    no_starvation, _, _ = next_selection(scores, torch.zeros(8), 4, RASConfig(high_ratio=0.0, starvation_scale=0.0))
    assert no_starvation.tolist() == [0, 2, 4, 6]


def test_starvation_only_rotates_the_low_tail():
    """Fixed scores, 10 selections: dropping from the bottom (high_ratio 0) rotates tokens back in; dropping from
    the top (the default 1) keeps the same tokens dropped, since each drop raises their score further."""
    for high_ratio, rotates in [(0.0, True), (1.0, False)]:
        config = RASConfig(high_ratio=high_ratio, starvation_scale=0.5)
        count, seen = torch.zeros(8), set()
        for _ in range(10):
            computed, dropped, count = next_selection(SCORES, count, 3, config)
            seen.add(tuple(dropped.tolist()))
        assert (len(seen) > 1) == rotates, high_ratio


# ---- schedule ---------------------------------------------------------------------------------------------------


def test_schedule_reproduces_the_published_step_lists_and_scales():
    # ras_manager.skip_token_num_list: 0 (dense) before scheduler_start_step and at the reset steps
    lumina = drop_schedule(PRESETS["ras"], 30, 4096)
    assert [i for i, k in enumerate(lumina) if k == 0] == [0, 1, 2, 3, 12, 22] and set(lumina) == {0, 2048}
    sd3 = drop_schedule(PRESETS["ras-sd3"], 28, 4096)
    assert [i for i, k in enumerate(sd3) if k == 0] == [0, 1, 2, 3, 12, 20]
    assert PRESETS["ras"].steps_for(50) == (7, (20, 37), 50)
    assert PRESETS["ras-sd3"].steps_for(50) == (7, (21, 36), 50)
    assert PRESETS["ras"].steps_for(16) == (2, (6, 12), 16)
    assert PRESETS["ras"].steps_for(3)[0] == 1  # the first RAS step always follows a dense one
    start, resets, end = PRESETS["ras"].fractions
    assert start == pytest.approx(4 / 30) and resets == pytest.approx((0.4, 22 / 30)) and end == 1.0
    tail = RASConfig(end_step=27)
    assert [i for i, k in enumerate(drop_schedule(tail, 30, 16)) if k == 0][-4:] == [22, 27, 28, 29]
    assert scale_step(22, 30, 30) == 22 and scale_step(1, 2, 3) == 2  # 1.5 rounds up
    assert [tokens_to_drop(r, 10) for r in (1.0, 0.9, 0.5, 0.25, 0.01)] == [0, 1, 5, 7, 9]


def test_config_errors_say_what_to_do():
    for bad, match in [(dict(sample_ratio=0.0), "sample_ratio"), (dict(high_ratio=1.5), "high_ratio"),
                       (dict(metric="mean"), "std, l2norm"), (dict(start_step=0), "start_step"),
                       (dict(end_step=31), "end_step"), (dict(reset_steps=(30,)), "reset_steps")]:
        with pytest.raises(ValueError, match=match):
            RASConfig(**bad)
    field, noise, sigmas = wan_field()
    with pytest.raises(ValueError, match="one sample at a time"):
        sample_ras(field, noise.expand(2, -1, -1), sigmas, RASConfig())


# ---- the sampler on a toy field ---------------------------------------------------------------------------------


class ToyField:
    """v(x, sigma)[token] = A[token] * sigma + B[token], independent of x: fresh and stale velocities differ at
    every step, and the Euler sum can be written down. Two branches (the guided mix is the cond value); records
    every call's token_index and caches."""

    branches = ("cond", "uncond")
    patch = (1, 2, 2)
    latent_hw = (4, 8)  # 2 x 4 tokens of 4 channels x 2 x 2

    def __init__(self):
        g = torch.Generator().manual_seed(0)
        self.a, self.b = torch.randn(8, 16, generator=g), torch.randn(8, 16, generator=g)
        self.calls = []

    def velocity(self, sigma, index=None):
        v = self.a * float(sigma) + self.b
        return (v if index is None else v[index]).unsqueeze(0)

    def __call__(self, x, sigma, *, token_index=None, kv_caches=None):
        self.calls.append((token_index, kv_caches))
        return self.velocity(sigma, token_index)

    def token_cost(self):
        return TokenCost(linear_per_token=1.0, self_attn_per_pair=0.0)

    def to_latent(self, tokens):
        return unpack(tokens, *self.latent_hw).unsqueeze(2)


def test_sampler_on_a_toy_field():
    field = ToyField()
    x = torch.randn(1, 8, 16, generator=torch.Generator().manual_seed(1))
    sigmas = torch.linspace(1, 0, 11)
    config = RASConfig(sample_ratio=0.5, high_ratio=0.5, start_step=2, reset_steps=(6,), end_step=9,
                       schedule_steps=10, starvation_scale=0.3)
    seen = []
    tokens, report = sample_ras(field, x, sigmas, config, callback=seen.append)
    dense = [0, 1, 6, 9]
    assert report.decisions == ["dense" if i in dense else "ras 4/8" for i in range(10)]

    # replay by hand: selection from the previous step's dt * v, starvation counts, Euler with stale rows
    state, v_prev, count, chosen = x.clone(), None, torch.zeros(8), None
    for i, info in enumerate(seen):
        index, caches = field.calls[i]
        if i in dense:
            assert index is None and info["computed"] is None
            v = field.velocity(sigmas[i])
            assert (caches is not None) == (i + 1 not in dense and i + 1 < 10)  # refresh only before a RAS step
        else:
            assert torch.equal(index, chosen) and torch.equal(info["computed"], chosen)
            assert set(caches) == {"cond", "uncond"} and caches["cond"].cache is not caches["uncond"].cache
            v = v_prev.clone()
            v[:, chosen] = field.velocity(sigmas[i], chosen)
            kept = torch.ones(8, dtype=torch.bool)
            kept[chosen] = False
            assert torch.equal(info["velocity"][:, kept], v_prev[:, kept])  # dropped tokens keep their velocity
        assert torch.equal(info["velocity"], v)
        delta = (sigmas[i + 1] - sigmas[i]) * v
        state = state + delta
        if i + 1 < 10 and i + 1 not in dense:
            scores = token_scores(field.to_latent(delta)[0], field.patch, "std")
            chosen, dropped, count = next_selection(scores, count, 4, config)
        v_prev = v
    assert torch.equal(tokens, state)
    assert report.token_counts == [8 if i in dense else 4 for i in range(10)]
    assert report.ideal_speedup == pytest.approx(10 * 8 * 2 / (2 * (4 * 8 + 6 * 4)))
    assert len(report.step_seconds) == 10


# ---- separate K/V caches per guidance branch ----------------------------------------------------------------------


def test_cfg_branches_keep_separate_caches(monkeypatch):
    """Two RAS steps on a sigma plateau (dt = 0) see exactly the input the dense step cached, so RAS must equal
    plain Euler; one cache shared by cond and uncond would give the cond queries the uncond keys and break it."""
    field, noise, _ = flux_cfg_field()
    sigmas = torch.tensor([1.0, 0.8, 0.6, 0.6, 0.6, 0.3, 0.0])
    config = RASConfig(sample_ratio=0.5, start_step=3, reset_steps=(5,), end_step=6, schedule_steps=6)
    with torch.no_grad():
        reference = sample_euler(field, noise, sigmas)
        tokens, report = sample_ras(field, noise, sigmas, config)
        assert report.decisions.count("ras 32/64") == 2
        assert rel_err(tokens, reference) <= 1e-5
        shared = RASKVCache()
        monkeypatch.setattr(ras, "new_caches", lambda branches: dict.fromkeys(branches, shared))
        tokens, _ = sample_ras(field, noise, sigmas, config)
    assert rel_err(tokens, reference) > 1e-4


# ---- report -------------------------------------------------------------------------------------------------------


@FIELDS
def test_report_follows_the_schedule(make):
    field, noise, sigmas = make()
    sigmas = sigmas[::2]
    n, steps = noise.shape[1], len(sigmas) - 1
    config = resolve("ras", "sample_ratio=0.25")
    result = generate(field, noise, sigmas, method="ras", config=config)
    report = result.report
    drops = drop_schedule(config, steps, n)
    cost, branches = field.token_cost(), len(field.branches)
    full = cost.forward_flops(n, n) * branches
    assert report.full_step_flops == full
    assert report.step_flops == [cost.forward_flops(n - k, n) * branches for k in drops]
    assert report.decisions == ["dense" if k == 0 else f"ras {n - k}/{n}" for k in drops]
    text = cost.always_computed  # Flux text tokens are computed at every step
    assert report.token_counts == [round(n * (n - k + text) / (n + text)) for k in drops]
    assert report.ideal_speedup == pytest.approx(full * steps / sum(report.step_flops))
    assert report.ideal_speedup > 1.3 and torch.isfinite(result.tokens).all()


# ---- presets ------------------------------------------------------------------------------------------------------


def test_presets_cite_their_sources_and_the_sweep_resolves():
    assert default_preset("ras") == "ras" and list(PRESETS)[:2] == ["ras", "ras-sd3"]
    assert "ras_argparser.py" in PRESETS["ras"].source
    assert "Stable_Diffusion_3_example.sh" in PRESETS["ras-sd3"].source
    assert all(c.source.startswith("microsoft/RAS") for c in PRESETS.values())
    sd3 = PRESETS["ras-sd3"]
    assert (sd3.sample_ratio, sd3.high_ratio, sd3.start_step, sd3.reset_steps, sd3.end_step, sd3.schedule_steps,
            sd3.starvation_scale) == (0.5, 0.3, 4, (12, 20), 28, 28, 0.1)
    assert ras.KNOB == "sample_ratio" and max(ras.SWEEP) == 0.75 and min(ras.SWEEP) == 0.1
    labels = [label for label, _ in sweep("ras")]
    assert labels[0] == "sample_ratio=0.75" and [c.sample_ratio for _, c in sweep("ras")] == list(ras.SWEEP)
