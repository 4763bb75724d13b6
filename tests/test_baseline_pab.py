"""PAB: the broadcast schedule, exact reuse, per-branch state and the FLOP meter, on the analytic field and the tiny
random models."""

import pytest
import torch

from jano_ref.baselines import get_baseline_preset, resolve, sweep
from jano_ref.baselines.common import sample_with_hooks
from jano_ref.baselines.pab import KNOB, PRESETS, SWEEP, PABConfig, PABHooks, sample_pab
from jano_ref.runtime.fields import BlockCost
from jano_ref.runtime.sampling import guidance_mix, sample_euler

from .helpers import AnalyticField, flux_cfg_field, wan_field

SIGMAS = torch.linspace(1, 0, 13)  # sigma_i = 1 - i/12: steps 3..10 lie inside (0.1, 0.8)


pytestmark = pytest.mark.usefixtures("one_thread_no_grad")


def _computes(step: int, sigma: float, every: int, window) -> bool:
    """The rule written out independently of the module: compute unless inside the window off the range."""
    inside = window[0] < 1000 * sigma < window[1]
    return not (inside and step % every != 0)


class CrossField(AnalyticField):
    """AnalyticField with a cross-attention as well (attention to a constant), like a Wan block."""

    def block_costs(self):
        return [BlockCost(self_attn=self.rows, cross_attn=self.rows, mlp=self.rows, rest=self.rows, rows=self.rows)
                ] * self.depth

    def _block(self, branch, i, s, h):
        self.calls.append((branch, i, "block"))

        def attend():
            self.calls.append((branch, i, "attention"))
            return self.attn_scale * s.mean(dim=1, keepdim=True).expand_as(s)

        def cross():
            self.calls.append((branch, i, "cross"))
            return 0.1 * s.pow(2).mean(dim=1, keepdim=True).expand_as(s)

        def mlp(rows):
            self.calls.append((branch, i, "mlp"))
            return self.mlp_scale * rows

        return s + h.attention(i, "self", attend) + h.attention(i, "cross", cross) + h.mlp(i, s, mlp)


def _calls_per_step(field, noise, sigmas, config):
    marks = []
    tokens, report = sample_pab(field, noise, sigmas, config, callback=lambda info: marks.append(len(field.calls)))
    steps = [field.calls[a:b] for a, b in zip([0] + marks[:-1], marks)]
    return tokens, report, steps


@pytest.mark.parametrize("make", [flux_cfg_field, wan_field])
def test_ranges_of_one_never_reuse_and_presets_do(make):
    field, noise, sigmas = make()
    reference = sample_euler(field, noise, sigmas)
    tokens, report = sample_pab(field, noise, sigmas, PABConfig(1, 1))
    assert torch.equal(tokens, reference)
    assert set(report.decisions) == {"compute"} and report.ideal_speedup == pytest.approx(1.0)

    tokens, report = sample_pab(field, noise, sigmas, get_baseline_preset("pab", "pab"))
    assert not torch.equal(tokens, reference)  # the hooks reach the model
    assert ((tokens - reference).norm() / reference.norm()) < 0.05
    assert report.ideal_speedup > 1.0
    reused = {d for d in report.decisions if d != "compute"}
    assert reused == ({"reuse self"} if make is flux_cfg_field else {"reuse cross", "reuse self+cross"})


@pytest.mark.parametrize("every", [2, 3])
def test_schedule_reuse_and_meter_on_an_analytic_field(every):
    noise = torch.randn(1, 8, 3, generator=torch.Generator().manual_seed(0))
    field = AnalyticField(depth=3)
    tokens, report, steps = _calls_per_step(field, noise, SIGMAS, PABConfig(every))
    expected = [i for i in range(12) if _computes(i, float(SIGMAS[i]), every, (100, 800))]
    if every == 2:
        assert expected == [0, 1, 2, 4, 6, 8, 10, 11]  # pins the open window and the phase
    assert [i for i, calls in enumerate(steps) if any(c[2] == "attention" for c in calls)] == expected
    for i, calls in enumerate(steps):
        kinds = [c[2] for c in calls]
        assert kinds.count("block") == kinds.count("mlp") == 3
        assert kinds.count("attention") == (3 if i in expected else 0)
        assert report.step_flops[i] == 8 * len(calls)  # every part costs one FLOP per row, 8 rows
    # exact values: replay the rule by hand, the reused attention being the last computed one
    assert torch.equal(tokens, _replay(field, noise, SIGMAS, every))


def _replay(field: AnalyticField, noise, sigmas, every, shared=False):
    """Euler over the analytic field with PAB written out: one attention cache per branch (or one for both)."""
    caches = {b: {} for b in field.branches}
    if shared:
        caches = dict.fromkeys(field.branches, {})
    x = noise.clone()
    for i in range(len(sigmas) - 1):
        sigma = sigmas[i]
        outs = {}
        for b in field.branches:
            s = (x if b == "cond" else -x) + float(sigma)
            for layer in range(field.depth):
                if _computes(i, float(sigma), every, (100, 800)) or layer not in caches[b]:
                    caches[b][layer] = field.attn_scale * s.mean(dim=1, keepdim=True).expand_as(s)
                s = s + caches[b][layer] + field.mlp_scale * s
            outs[b] = s
        v = outs["cond"] if len(outs) == 1 else guidance_mix(outs["cond"], outs["uncond"], field.guide_scale)
        x = x + (sigmas[i + 1] - sigma) * v
    return x


def test_reused_output_is_the_stored_one():
    noise = torch.randn(1, 8, 3, generator=torch.Generator().manual_seed(1))
    field = AnalyticField(depth=2)
    seen = []  # (step, layer, returned, last real output)

    class Recording(PABHooks):
        real = {}

        def attention(self, layer, kind, run):
            def recorded():
                self.real[layer] = run()
                return self.real[layer]
            out = super().attention(layer, kind, recorded)
            seen.append((self.step, layer, out, self.real[layer]))
            return out

    sample_with_hooks(field, noise, SIGMAS, lambda: Recording(field.block_costs(), PABConfig(3)), method="pab",
                      config=None)
    reused = [(step, out, real) for step, _, out, real in seen if not _computes(step, float(SIGMAS[step]), 3,
                                                                                 (100, 800))]
    assert reused and all(out is real for _, out, real in reused)


def test_cross_attention_has_its_own_range_and_window():
    noise = torch.randn(1, 8, 3, generator=torch.Generator().manual_seed(2))
    config = PABConfig(2, 3, (100.0, 800.0), (100.0, 900.0))
    field = CrossField(depth=2)
    _, report, steps = _calls_per_step(field, noise, SIGMAS, config)
    for i, calls in enumerate(steps):
        kinds = [c[2] for c in calls]
        sigma = float(SIGMAS[i])
        assert kinds.count("attention") == (2 if _computes(i, sigma, 2, (100, 800)) else 0), i
        assert kinds.count("cross") == (2 if _computes(i, sigma, 3, (100, 900)) else 0), i
        assert report.step_flops[i] == 8 * len(calls)
    # sigma 0.8333 (step 2) is inside the cross window only, and 2 % 3 != 0: cross reused, self computed
    assert report.decisions[2] == "reuse cross"


def test_wan_cross_hook_follows_the_cross_range():
    field, noise, sigmas = wan_field()
    config = get_baseline_preset("pab", "pab")
    counts = []  # per (step, kind): how many layers ran the real attention

    class Counting(PABHooks):
        def attention(self, layer, kind, run):
            def counted():
                counts.append((self.step, kind))
                return run()
            return super().attention(layer, kind, counted)

    sample_with_hooks(field, noise, sigmas, lambda: Counting(field.block_costs(), config), method="pab", config=None)
    layers = len(field.block_costs())
    for i in range(len(sigmas) - 1):
        sigma = float(sigmas[i])
        for kind, every, window in (("self", 2, (100, 800)), ("cross", 5, (100, 900))):
            expected = 2 * layers if _computes(i, sigma, every, window) else 0  # two guidance branches
            assert counts.count((i, kind)) == expected, (i, kind)
    assert (len(sigmas) - 1) * 2 * layers * 2 > len(counts)  # some attention was reused


def test_cfg_branches_keep_their_own_cache():
    noise = torch.randn(1, 8, 3, generator=torch.Generator().manual_seed(3))
    field = AnalyticField(depth=2, branches=("cond", "uncond"))
    tokens, _ = sample_pab(field, noise, SIGMAS, PABConfig(3))
    assert torch.equal(tokens, _replay(field, noise, SIGMAS, 3))
    # one cache for both branches would reuse the uncond attention in the cond pass: a different result
    assert not torch.allclose(_replay(field, noise, SIGMAS, 3, shared=True), tokens, rtol=1e-3, atol=1e-3)


def test_presets_cite_sources_and_bad_configs_say_how_to_fix():
    assert next(iter(PRESETS)) == "pab"
    for name, config in PRESETS.items():
        assert ("VideoSys" in config.source or "diffusers" in config.source), name
    assert KNOB == "self_range" and SWEEP[0] == 1 and len(set(SWEEP)) == len(SWEEP)
    assert [label for label, _ in sweep("pab")] == [f"self_range={v}" for v in SWEEP]
    assert resolve("pab", "self_range=4").self_range == 4
    with pytest.raises(ValueError, match="self_range must be an integer >= 1"):
        PABConfig(0)
    with pytest.raises(ValueError, match="cross_range must be an integer >= 1"):
        PABConfig(2, 1.5)
    with pytest.raises(ValueError, match=r"lo < hi.*1000 \* sigma"):
        PABConfig(2, self_window=(800.0, 100.0))
