"""ToCa: the full / partial schedule, the token choice (score, top-k, spatial bonus), exact cache updates, per-branch
state and the FLOP meter, on the analytic field and the tiny random models."""

import pytest
import torch

from jano_ref.baselines import get_baseline_preset, resolve, sweep
from jano_ref.baselines.common import sample_with_hooks
from jano_ref.baselines.toca import (
    KNOB, PRESETS, SWEEP, ToCaConfig, ToCaHooks, patch_ids, sample_toca, spatial_bonus,
)
from jano_ref.runtime.sampling import sample_euler

from .helpers import AnalyticField, flux_cfg_field, wan_field

SIGMAS = torch.linspace(1, 0, 13)


pytestmark = pytest.mark.usefixtures("one_thread_no_grad")


def _noise(seed):
    return torch.randn(1, 8, 3, generator=torch.Generator().manual_seed(seed))


class Recording(ToCaHooks):
    """ToCaHooks that log, per MLP call, the state before it, the rows handed to the MLP and what came back; and,
    per attention call, the returned tensor and the last one really computed."""

    def __init__(self, *args, log, **kwargs):
        super().__init__(*args, **kwargs)
        self.log, self.real = log, {}

    def mlp(self, layer, h, run):
        partial = not self.full and layer in self.mlp_out
        before = dict(cached_in=self.mlp_in.get(layer), cached_out=self.mlp_out.get(layer),
                      staleness=self.staleness.get(layer))
        given = []

        def recorded(rows):
            given.append(rows)
            return run(rows)

        out = super().mlp(layer, h, recorded)
        self.log.append(dict(step=self.step, layer=layer, part="mlp", partial=partial, h=h, out=out, given=given,
                             staleness_after=self.staleness[layer], fresh=self.fresh.get(layer), **before))
        return out

    def attention(self, layer, kind, run):
        ran = []

        def recorded():
            ran.append(True)
            self.real[layer] = run()
            return self.real[layer]

        out = super().attention(layer, kind, recorded)
        self.log.append(dict(step=self.step, layer=layer, part="attention", ran=bool(ran), out=out,
                             real=self.real[layer]))
        return out


def _run(field, noise, config, sigmas=SIGMAS):
    log = []
    grid = getattr(field, "token_grid", None)
    tokens, report = sample_with_hooks(field, noise, sigmas,
                                       lambda: Recording(field.block_costs(), config, grid, log=log), method="toca",
                                       config=config, describe=lambda h: "full" if h.full else "partial")
    return tokens, report, log


def _expected_score(entry, config, grid=None):
    """ToCa's score written out independently: normalised input change + weight * staleness / interval, and the
    2x2 bonus (best token of each patch gets ``spatial_bonus`` times its score)."""
    change = (entry["h"] - entry["cached_in"]).norm(dim=-1)[0]
    score = change / change.norm().clamp_min(1e-12) + config.staleness_weight * entry["staleness"][0] / config.interval
    if config.spatial_bonus:
        t, hh, ww = grid
        for patch_rows in _patches(t, hh, ww):
            best = max(patch_rows, key=lambda r: (score[r].item(), -r))
            score[best] = score[best] * (1 + config.spatial_bonus)
    return score


def _patches(t, h, w):
    return [[(f * h + y) * w + x for y in range(y0, min(y0 + 2, h)) for x in range(x0, min(x0 + 2, w))]
            for f in range(t) for y0 in range(0, h, 2) for x0 in range(0, w, 2)]


@pytest.mark.parametrize("make", [flux_cfg_field, wan_field])
def test_never_reusing_settings_are_exact_and_presets_reuse(make):
    field, noise, sigmas = make()
    reference = sample_euler(field, noise, sigmas)
    for config in (ToCaConfig(1, 0.1), ToCaConfig(4, 1.0)):
        tokens, report = sample_toca(field, noise, sigmas, config)
        assert torch.equal(tokens, reference), config
        assert set(report.decisions) == {"full"} and report.ideal_speedup == pytest.approx(1.0)
    tokens, report = sample_toca(field, noise, sigmas, get_baseline_preset("toca", "toca-flux-n4"))
    assert not torch.equal(tokens, reference)
    assert ((tokens - reference).norm() / reference.norm()) < 0.05
    assert report.decisions[:3] == ["full"] * 3 and "partial" in report.decisions and report.ideal_speedup > 1.5


@pytest.mark.parametrize("interval, full_first, weight, full_steps", [
    (4, 3, 0.25, [0, 1, 2, 6, 10]), (3, 2, 0.25, [0, 1, 4, 7, 10]),
    (5, 1, 2.0, [0, 5, 10]),  # a heavy staleness term: long-stale rows win over changed ones
])
def test_schedule_token_choice_and_meter_on_an_analytic_field(interval, full_first, weight, full_steps):
    config = ToCaConfig(interval, 0.25, staleness_weight=weight, full_first=full_first)
    field = AnalyticField(depth=2)
    tokens, report, log = _run(field, _noise(0), config)
    assert [i for i, d in enumerate(report.decisions) if d == "full"] == full_steps
    attention = [e for e in log if e["part"] == "attention" and e["ran"]]
    assert sorted({e["step"] for e in attention}) == full_steps and len(attention) == 2 * len(full_steps)
    for e in log:
        if e["part"] == "attention":
            continue
        if not e["partial"]:  # full: all 8 rows computed, cache restarted
            assert len(e["given"]) == 1 and e["given"][0].shape[1] == 8 and not e["staleness_after"].any()
            continue
        chosen = sorted(e["fresh"][0].tolist())
        assert len(chosen) == 2  # int(0.25 * 8)
        score = _expected_score(e, config)
        assert chosen == sorted(torch.topk(score, 2).indices.tolist()), (e["step"], e["layer"])
        assert torch.equal(e["given"][0], e["h"][:, e["fresh"][0]])  # the MLP saw exactly the chosen rows
        others = [r for r in range(8) if r not in chosen]
        assert torch.equal(e["out"][:, chosen], field.mlp_scale * e["h"][:, chosen])
        assert torch.equal(e["out"][:, others], e["cached_out"][:, others])  # unchosen rows: the cached output
        expected_staleness = e["staleness"] + 1
        expected_staleness[:, chosen] = 0
        assert torch.equal(e["staleness_after"], expected_staleness)
    # FLOP meter: rest + attention cost 8 per layer when run, the MLP one per computed row
    for i, flops in enumerate(report.step_flops):
        mlp_rows = sum(g.shape[1] for e in log if e["step"] == i and e["part"] == "mlp" for g in e["given"])
        attn = sum(1 for e in attention if e["step"] == i)
        assert flops == 8 * 2 + 8 * attn + mlp_rows
    assert "partial" in report.decisions


def test_partial_steps_return_the_stored_attention():
    _, report, log = _run(AnalyticField(depth=3), _noise(1), ToCaConfig(4, 0.25))
    calls = [e for e in log if e["part"] == "attention"]
    assert [e["ran"] for e in calls] == [report.decisions[e["step"]] == "full" for e in calls]
    partial = [e for e in calls if not e["ran"]]
    # a partial step returns the output of the layer's last full step, unchanged (``real`` is that output)
    assert partial and all(e["out"] is e["real"] for e in partial)
    last_full = {}
    for e in calls:
        if e["ran"]:
            last_full[e["layer"]] = e["step"]
        else:
            assert report.decisions[last_full[e["layer"]]] == "full" and last_full[e["layer"]] < e["step"]


def test_spatial_bonus_and_patches():
    ids, n = patch_ids((1, 3, 3), "cpu")
    assert n == 4 and ids.tolist() == [0, 0, 1, 0, 0, 1, 2, 2, 3]  # odd sizes: narrower edge patches
    ids, n = patch_ids((2, 2, 2), "cpu")
    assert n == 2 and ids.tolist() == [0, 0, 0, 0, 1, 1, 1, 1]  # one patch per frame
    score = torch.tensor([[1.0, 3.0, 3.0, 0.5, 2.0, 1.0, 0.0, 0.25]])
    ids, n = patch_ids((1, 2, 4), "cpu")  # patches {0, 1, 4, 5} and {2, 3, 6, 7}
    out = spatial_bonus(score, ids, n, 0.5)
    assert out.tolist() == [[1.0, 4.5, 4.5, 0.5, 2.0, 1.0, 0.0, 0.25]]  # best of each patch gets +50 %

    # in the sampler: image rows ranked with the bonus, on a 1 x 2 x 4 grid
    config = ToCaConfig(4, 0.25, spatial_bonus=0.6)
    field = AnalyticField(depth=2)
    field.token_grid = (1, 2, 4)
    _, report, log = _run(field, _noise(2), config)
    partial = [e for e in log if e["part"] == "mlp" and e["partial"]]
    assert partial
    for e in partial:
        score = _expected_score(e, config, field.token_grid)
        assert sorted(e["fresh"][0].tolist()) == sorted(torch.topk(score, 2).indices.tolist())
    with pytest.raises(ValueError, match="token grid"):
        sample_toca(AnalyticField(depth=1), _noise(0), SIGMAS, config)


def test_cfg_branches_keep_their_own_cache():
    field = AnalyticField(depth=2, branches=("cond", "uncond"))
    noise, config = _noise(3), ToCaConfig(3, 0.25)
    tokens, _ = sample_toca(field, noise, SIGMAS, config)

    def manual(shared: bool):
        made = [ToCaHooks(field.block_costs(), config) for _ in range(1 if shared else 2)]
        hooks = {"cond": made[0], "uncond": made[-1]}
        step = lambda x, sigma: field(x, sigma, hooks=hooks)  # noqa: E731

        def model(x, sigma):
            for h in made:
                h.begin_step(model.i, len(SIGMAS) - 1, float(sigma))
            model.i += 1
            return step(x, sigma)
        model.i = 0
        return sample_euler(model, noise, SIGMAS)

    assert torch.equal(tokens, manual(shared=False))
    # one cache for both branches (uncond overwriting cond's rows and inputs) gives another result
    assert not torch.allclose(manual(shared=True), tokens, rtol=1e-3, atol=1e-3)


def test_presets_cite_sources_and_bad_configs_say_how_to_fix():
    assert next(iter(PRESETS)) == "toca-flux-n4"
    for name, config in PRESETS.items():
        assert "ToCa" in config.source and "README" in config.source, name
    assert (PRESETS["toca-flux-n4"].interval, PRESETS["toca-flux-n4"].fresh_ratio) == (4, 0.1)
    assert KNOB == "interval" and len(set(SWEEP)) == len(SWEEP) >= 3
    assert [label for label, _ in sweep("toca")] == [f"interval={v}" for v in SWEEP]
    assert resolve("toca", "interval=6").interval == 6
    with pytest.raises(ValueError, match="interval must be an integer >= 1"):
        ToCaConfig(0, 0.1)
    with pytest.raises(ValueError, match="fresh_ratio must be in"):
        ToCaConfig(4, 1.5)
    with pytest.raises(ValueError, match="caches start empty"):
        ToCaConfig(4, 0.1, full_first=0)
    with pytest.raises(ValueError, match="staleness_weight must be a finite number >= 0"):
        ToCaConfig(4, 0.1, staleness_weight=-1.0)
