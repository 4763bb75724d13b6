"""TeaCache: the skip rule on a field with known blocks, per-branch state, the FLOP meter, and calibration."""

import dataclasses

import numpy as np
import pytest
import torch

from jano_ref.baselines import default_preset, get_baseline_preset, sweep
from jano_ref.baselines.common import relative_l1, sample_with_hooks
from jano_ref.baselines.teacache import (
    KNOB, PRESETS, SWEEP, TeaCacheConfig, TeaCacheHooks, collect_pairs, decide, fit_coefficients, rescale,
    sample_teacache,
)
from jano_ref.lab.tiny.calibrate import calibrate
from jano_ref.runtime.sampling import sample_euler
from jano_ref.pipelines.tiny import weights_dir

from .helpers import AnalyticField, flux_cfg_field, wan_field

IDENTITY = (0.0, 0.0, 0.0, 1.0, 0.0)  # rescale(d) == d exactly
SIGMAS = torch.linspace(1.0, 0.0, 13)  # 12 steps


def noise(seed=0, rows=8, dim=4):
    return torch.randn(1, rows, dim, generator=torch.Generator().manual_seed(seed))


def modulated(x, sigma, branch="cond"):
    """AnalyticField's block-0 modulated input: its stream (x or -x, plus sigma) times (1 + sigma)."""
    s = (x if branch == "cond" else -x) + float(sigma)
    return s * (1 + float(sigma))


def by_hand(mods, thresh):
    """TeaCache's rule with the identity rescale, written out: first / last compute; else accumulate the change
    against the previous step, skip below the threshold, compute and reset otherwise."""
    acc, out = 0.0, []
    for i, m in enumerate(mods):
        if i in (0, len(mods) - 1):
            acc = 0.0
            out.append("compute")
            continue
        prev = mods[i - 1]
        acc += float((m - prev).abs().mean() / prev.abs().mean())
        if acc < thresh:
            out.append("skip")
        else:
            acc = 0.0
            out.append("compute")
    return out


def run_recorded(field, x, config):
    """sample_teacache, plus each step's model input and output and the field calls each step made."""
    steps, marks = [], [0]

    def callback(info):
        steps.append(info)
        marks.append(len(field.calls))

    tokens, report = sample_teacache(field, x, SIGMAS, config, callback=callback)
    calls = [field.calls[a:b] for a, b in zip(marks, marks[1:])]
    return tokens, report, steps, calls


@pytest.mark.parametrize("make", [flux_cfg_field, wan_field])
def test_threshold_zero_is_the_uncached_sampler(make):
    field, x, sigmas = make()
    reference = sample_euler(field, x, sigmas)
    # a negative polynomial would make the official rule skip at threshold 0; ours must not
    tokens, report = sample_teacache(field, x, sigmas, TeaCacheConfig(0.0, (0.0, 0.0, 0.0, -1.0, 0.0)))
    assert torch.equal(tokens, reference)
    assert report.decisions == ["compute"] * (len(sigmas) - 1)
    assert report.ideal_speedup == pytest.approx(1.0)


@pytest.mark.parametrize("make", [flux_cfg_field, wan_field])
def test_a_large_threshold_skips_the_middle_of_real_models(make):
    field, x, sigmas = make()
    sigmas = sigmas[::2]
    tokens, report = sample_teacache(field, x, sigmas, TeaCacheConfig(1e9, IDENTITY))
    assert report.decisions == ["compute"] + ["skip"] * (len(sigmas) - 3) + ["compute"]
    assert torch.isfinite(tokens).all() and not torch.equal(tokens, sample_euler(field, x, sigmas))
    assert report.ideal_speedup == pytest.approx((len(sigmas) - 1) / 2, rel=1e-6)


def test_skip_logic_is_exact_on_an_analytic_field():
    field = AnalyticField(depth=3)
    x = noise()
    thresh = 0.35
    tokens, report, steps, calls = run_recorded(field, x, TeaCacheConfig(thresh, IDENTITY))
    mods = [modulated(s["x"], s["sigma"]) for s in steps]
    expected = by_hand(mods, thresh)
    assert report.decisions == expected
    # a mix of both (a skip run ended by the accumulated change, a compute run), so the test can tell them apart
    assert expected == ["compute"] * 5 + ["skip", "skip", "compute", "compute", "skip", "skip", "compute"]
    per_compute = [(b, i, part) for i in range(3) for b, part in
                   [("cond", "block"), ("cond", "attention"), ("cond", "mlp")]]
    for decision, made in zip(expected, calls):
        assert sorted(made) == (sorted(per_compute) if decision == "compute" else [])
    # a skipped step returns its stack input plus the residual of the last computed step, exactly
    last = None
    for decision, s in zip(expected, steps):
        stack_in = s["x"] + float(s["sigma"])
        if decision == "compute":
            last = s["velocity"] - (s["x"] + float(s["sigma"]))
        else:
            assert torch.equal(s["velocity"], stack_in + last)


def test_skipped_steps_spend_nothing():
    x = noise()
    _, full = sample_teacache(AnalyticField(depth=3), x, SIGMAS, TeaCacheConfig(0.0, IDENTITY))
    _, cached = sample_teacache(AnalyticField(depth=3), x, SIGMAS, TeaCacheConfig(0.35, IDENTITY))
    computed = cached.decisions.count("compute")
    assert 2 < computed < len(cached.decisions)
    for decision, flops, reference in zip(cached.decisions, cached.step_flops, full.step_flops):
        assert flops == (reference if decision == "compute" else 0.0)
    # AnalyticField has no cross-attention, so even the uncached run meters 4/3 of the spent FLOPs
    assert cached.ideal_speedup / full.ideal_speedup == pytest.approx(len(cached.decisions) / computed)


def test_cfg_branches_keep_their_own_state():
    x = noise(seed=3)
    thresh = 0.3

    def per_branch(make_hooks):
        field = AnalyticField(depth=2, branches=("cond", "uncond"))
        steps, marks = [], [0]

        def callback(info):
            steps.append(info)
            marks.append(len(field.calls))

        sample_with_hooks(field, x, SIGMAS, make_hooks, method="teacache", config=None, callback=callback)
        calls = [field.calls[a:b] for a, b in zip(marks, marks[1:])]
        made = {b: ["compute" if any(c[0] == b for c in step) else "skip" for step in calls]
                for b in field.branches}
        expected = {b: by_hand([modulated(s["x"], s["sigma"], b) for s in steps], thresh) for b in field.branches}
        return made, expected

    config = TeaCacheConfig(thresh, IDENTITY)
    costs = AnalyticField(depth=2).block_costs()
    made, expected = per_branch(lambda: TeaCacheHooks(costs, config))
    assert made == expected
    assert made["cond"] != made["uncond"]  # the branches really decide differently here
    assert "skip" in made["cond"] and "skip" in made["uncond"]
    shared = TeaCacheHooks(costs, config)  # the bug this guards against: one state for both branches
    made, expected = per_branch(lambda: shared)
    assert made != expected


def test_decide_follows_the_official_order():
    config = TeaCacheConfig(1.0, IDENTITY)
    assert decide(0, 10, 5.0, None, config) == (True, 0.0)
    assert decide(9, 10, 0.0, 0.1, config) == (True, 0.0)  # the last step computes even below the threshold
    assert decide(3, 10, 0.5, 0.4, config) == (False, pytest.approx(0.9))  # accumulate, then compare
    assert decide(3, 10, 0.5, 0.6, config) == (True, 0.0)  # the triggering change is not carried over
    assert rescale((1.0, -2.0, 3.0), 2.0) == float(np.poly1d([1.0, -2.0, 3.0])(2.0))


def test_fit_coefficients_recovers_a_polynomial():
    truth = (120.0, -40.0, 6.0, 0.5, 0.01)
    x = np.linspace(0.01, 0.3, 60)
    y = np.poly1d(truth)(x)
    assert np.allclose(fit_coefficients(x, y), truth, rtol=1e-6, atol=1e-8)
    assert len(fit_coefficients(x, y, degree=2)) == 3
    with pytest.raises(ValueError, match="one output change per input change"):
        fit_coefficients(x, y[:-1])
    with pytest.raises(ValueError, match="more than 4 pairs"):
        fit_coefficients(x[:4], y[:4])


def test_collect_pairs_measures_block0_input_and_branch_output():
    x = noise(seed=1)
    field = AnalyticField(depth=2)
    steps = []
    sample_euler(field, x, SIGMAS, callback=steps.append)
    inputs, outputs = collect_pairs(AnalyticField(depth=2), x, SIGMAS)
    mods = [modulated(s["x"], s["sigma"]) for s in steps]
    assert np.array_equal(inputs, [relative_l1(b, a) for a, b in zip(mods, mods[1:])])
    vs = [s["velocity"] for s in steps]
    assert np.array_equal(outputs, [relative_l1(b, a) for a, b in zip(vs, vs[1:])])

    cfg = AnalyticField(depth=2, branches=("cond", "uncond"))
    inputs, outputs = collect_pairs(cfg, x, SIGMAS)
    n = len(SIGMAS) - 2  # one pair per step after the first, per branch
    assert inputs.shape == outputs.shape == (2 * n,)
    steps = []
    sample_euler(cfg, x, SIGMAS, callback=steps.append)
    cond = [AnalyticField(depth=2)(s["x"], s["sigma"]) for s in steps]  # the cond branch alone
    assert np.allclose(outputs[:n], [relative_l1(b, a) for a, b in zip(cond, cond[1:])], rtol=1e-5)
    uncond = [modulated(s["x"], s["sigma"], "uncond") for s in steps]
    assert np.allclose(inputs[n:], [relative_l1(b, a) for a, b in zip(uncond, uncond[1:])], rtol=1e-6)


def test_collect_pairs_on_a_real_cfg_model_matches_single_branch_runs():
    field, x, sigmas = flux_cfg_field()
    sigmas = sigmas[::4]
    inputs, outputs = collect_pairs(field, x, sigmas)
    steps = []
    sample_euler(field, x, sigmas, callback=steps.append)
    n = len(sigmas) - 2
    for k, alone in enumerate([dataclasses.replace(field, uncond=None),
                               dataclasses.replace(field, cond=field.uncond, uncond=None)]):
        vs = [alone(s["x"], s["sigma"]) for s in steps]
        assert np.allclose(outputs[k * n:(k + 1) * n], [relative_l1(b, a) for a, b in zip(vs, vs[1:])], rtol=1e-4)


@pytest.mark.skipif(not (weights_dir() / "tiny-flux.safetensors").exists(), reason="no tiny-flux weights")
def test_calibrate_fits_the_shipped_tiny_flux():
    coefficients = calibrate("tiny-flux", prompts=1, steps=6)  # 5 pairs per branch, 10 in all
    assert len(coefficients) == 5 and np.isfinite(coefficients).all()
    with pytest.raises(KeyError, match="tiny-flux"):
        calibrate("tiny-sd")


def test_presets_cite_sources_and_sweep():
    assert default_preset("teacache") == next(iter(PRESETS))
    for name, config in PRESETS.items():
        assert config.source and len(config.coefficients) == 5, name
        assert get_baseline_preset("teacache", name) is config
    for name in ("teacache-tiny-flux", "teacache-tiny-wan"):
        assert "calibrate" in PRESETS[name].source
    assert "teacache_flux.py" in PRESETS["teacache-flux-dev"].source
    assert "teacache_generate.py" in PRESETS["teacache-wan2.1-1.3b"].source
    assert KNOB == "rel_l1_thresh" and list(SWEEP) == sorted(SWEEP) and SWEEP[0] > 0
    labelled = sweep("teacache")
    assert [c.rel_l1_thresh for _, c in labelled] == list(SWEEP)


def test_config_errors_say_what_to_do():
    with pytest.raises(ValueError, match="rel_l1_thresh must be"):
        TeaCacheConfig(-0.1, IDENTITY)
    with pytest.raises(ValueError, match="calibrate"):
        TeaCacheConfig(0.1, ())
