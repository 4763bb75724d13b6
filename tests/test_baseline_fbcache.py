"""The first-block cache and the shared cache machinery (CacheHooks metering, per-branch state, model hooks)."""

import pytest
import torch

from jano_ref.baselines import BASELINES, default_preset, get_baseline_preset, presets, sample_baseline, sweep
from jano_ref.baselines.common import CacheHooks, sample_with_hooks
from jano_ref.baselines.fbcache import FBCacheConfig, FBCacheHooks, sample_fbcache
from jano_ref.runtime.sampling import sample_euler
from models.layers import PassThrough

from .helpers import AnalyticField, flux_cfg_field, wan_field


@pytest.mark.parametrize("make", [flux_cfg_field, wan_field])
def test_hooks_that_compute_everything_change_nothing(make):
    field, noise, sigmas = make()
    reference = sample_euler(field, noise, sigmas)
    tokens, report = sample_with_hooks(field, noise, sigmas, lambda: CacheHooks(field.block_costs()),
                                       method="none", config=None)
    assert torch.equal(tokens, reference)
    assert report.ideal_speedup == pytest.approx(1.0)  # the meter sees every block part
    assert report.token_counts == [noise.shape[1]] * (len(sigmas) - 1)


@pytest.mark.parametrize("make", [flux_cfg_field, wan_field])
def test_models_call_every_hook(make):
    field, noise, sigmas = make()

    class Counting(PassThrough):
        def __init__(self):
            self.seen = []

        def block(self, layer, x, run, modulated):
            self.seen.append(("block", layer))
            assert modulated().shape[-1] == x.shape[-1]
            return run(x)

        def attention(self, layer, kind, run):
            self.seen.append((kind, layer))
            return run()

        def mlp(self, layer, h, run):
            self.seen.append(("mlp", layer))
            return run(h)

    hooks = {b: Counting() for b in field.branches}
    v = field(noise, sigmas[0], hooks=hooks)
    assert torch.equal(v, field(noise, sigmas[0]))
    n = len(field.block_costs())
    for h in hooks.values():
        assert [layer for kind, layer in h.seen if kind == "block"] == list(range(n))
        assert [layer for kind, layer in h.seen if kind == "mlp"] == list(range(n))
        assert {kind for kind, _ in h.seen} >= {"block", "self", "mlp"}


@pytest.mark.parametrize("make", [flux_cfg_field, wan_field])
def test_threshold_zero_never_skips(make):
    field, noise, sigmas = make()
    tokens, report = sample_fbcache(field, noise, sigmas, FBCacheConfig(0.0))
    assert torch.equal(tokens, sample_euler(field, noise, sigmas))
    assert set(report.decisions) == {"compute"}


def _expected_decisions(field: AnalyticField, noise, sigmas, threshold):
    """Replay the rule by hand on the analytic field: r_i = block 0's residual at step i (full computation)."""
    decisions, reference, x = [], None, noise.clone()
    tail = None
    for i in range(len(sigmas) - 1):
        s = x + float(sigmas[i])
        out0 = field._block("cond", 0, s, PassThrough())
        r = out0 - s
        skip = reference is not None and tail is not None and ((r - reference).abs().mean() / reference.abs().mean()
                                                                ) < threshold
        if skip:
            final = out0 + tail
        else:
            reference = r
            final = out0
            for layer in range(1, field.depth):
                final = field._block("cond", layer, final, PassThrough())
            tail = final - out0
        decisions.append("skip" if skip else "compute")
        x = x + (sigmas[i + 1] - sigmas[i]) * final
    return decisions, x


def test_skip_logic_on_an_analytic_field():
    torch.manual_seed(0)
    noise = torch.randn(1, 8, 3)
    sigmas = torch.linspace(1, 0, 13)
    for threshold in (0.05, 0.2, 0.6):
        expected, x_expected = _expected_decisions(AnalyticField(depth=3), noise, sigmas, threshold)
        field = AnalyticField(depth=3)
        tokens, report = sample_fbcache(field, noise, sigmas, FBCacheConfig(threshold))
        assert report.decisions == expected
        torch.testing.assert_close(tokens, x_expected, rtol=1e-6, atol=1e-6)
        # skipped steps run block 0 only; computed steps run all three
        blocks = [c for c in field.calls if c[2] == "block"]
        assert len(blocks) == 3 * expected.count("compute") + expected.count("skip")
        # the meter: block 0 costs 3 of 9 units (self attention, MLP, rest) on a skipped step
        assert report.ideal_speedup == pytest.approx(len(expected) / (expected.count("compute")
                                                                      + expected.count("skip") / 3))
    assert "skip" in _expected_decisions(AnalyticField(depth=3), noise, sigmas, 0.6)[0]  # the test sees skips


def test_cfg_branches_keep_their_own_cache():
    torch.manual_seed(1)
    noise = torch.randn(1, 8, 3)
    sigmas = torch.linspace(1, 0, 9)
    field = AnalyticField(depth=2, branches=("cond", "uncond"))
    made = []

    def make():
        made.append(FBCacheHooks(field.block_costs(), FBCacheConfig(0.3)))
        return made[-1]

    sample_with_hooks(field, noise, sigmas, make, method="fbcache", config=None)
    assert len(made) == 2 and made[0] is not made[1]
    # each branch's reference residual is its own: the uncond stream starts from -x, so they differ
    assert not torch.equal(made[0].reference, made[1].reference)


def test_registry_presets_and_sweep():
    assert set(BASELINES) == {"teacache", "fbcache", "pab", "toca", "ras"}
    for method in BASELINES:
        assert presets(method), method
        for name, config in presets(method).items():
            assert config.source, f"{method} preset {name} cites no source"
        labels = [label for label, _ in sweep(method)]
        assert len(labels) == len(set(labels)) >= 3
        assert get_baseline_preset(method, default_preset(method)) is presets(method)[default_preset(method)]
    with pytest.raises(KeyError, match="choose one of"):
        get_baseline_preset("fbcache", "nope")
    with pytest.raises(KeyError, match="unknown baseline"):
        presets("nope")


def test_sample_baseline_dispatches():
    field, noise, sigmas = wan_field()
    a, _ = sample_baseline(field, noise, sigmas, "fbcache", "fbcache-0.08")
    b, _ = sample_fbcache(field, noise, sigmas, get_baseline_preset("fbcache", "fbcache-0.08"))
    assert torch.equal(a, b)
