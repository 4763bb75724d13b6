"""Jano with a step cache (jano+teacache, jano+fbcache, jano+pab): its reductions to its two parts, the reuse rule and
the FLOP accounting on a field with known blocks, per-branch state, and the labels the CLI and bench use."""

import json

import pytest
import torch

from jano_ref import combined
from jano_ref.baselines.fbcache import FBCacheConfig, sample_fbcache
from jano_ref.baselines.pab import PABConfig, sample_pab
from jano_ref.baselines.teacache import TeaCacheConfig, TeaCacheHooks, sample_teacache
from jano_ref.combined import CombinedConfig, sample_combined
from jano_ref.generate import generate
from jano_ref.jano.config import JanoConfig, get_preset
from jano_ref.jano.plan import ACTIVE_STEP
from jano_ref.pipelines.tiny import load_model

from .helpers import TokenAnalyticField, flux_cfg_field, wan_field

IDENTITY = (0.0, 0.0, 0.0, 1.0, 0.0)  # TeaCache rescale(d) == d
# three large steps (the warm-up) then small ones: the plain step caches compute the warm-up, which Jano never reuses
SIGMAS = torch.cat([torch.tensor([1.0, 0.75, 0.5]), torch.linspace(0.48, 0.3, 10), torch.tensor([0.0])])
FLUX = get_preset("flux-dev").replace(warmup_steps=3, cooldown_steps=1, static_interval=4, medium_interval=2)
WAN = get_preset("wan").replace(warmup_steps=3, cooldown_steps=1, static_interval=4, medium_interval=2,
                                block_size=(1, 2, 2))
NEVER = {"jano+teacache": TeaCacheConfig(0.0, IDENTITY), "jano+fbcache": FBCacheConfig(0.0), "jano+pab": PABConfig(1)}


def mixed_levels(block_levels):
    """Static, moderate and active blocks in turn, whatever the analyzer found (so every step level occurs)."""
    return (torch.arange(block_levels.numel()) % 3 + 1).reshape(block_levels.shape).to(block_levels.dtype)


def spy_on(field, calls):
    """The field, recording what every call computes (token_index) and whether it got step-cache hooks."""

    def spy(x, sigma, *, token_index=None, kv_caches=None, **hooks):
        calls.append((None if token_index is None else token_index.tolist(), kv_caches is None, sorted(hooks)))
        return field(x, sigma, token_index=token_index, kv_caches=kv_caches, **hooks)

    return spy


@pytest.mark.parametrize("make, jano", [(flux_cfg_field, FLUX), (wan_field, WAN)], ids=["flux-cfg", "wan"])
@pytest.mark.parametrize("method", combined.COMBINATIONS)
def test_a_step_cache_that_never_reuses_is_plain_jano(make, jano, method):
    field, noise, sigmas = make()
    plain_calls, calls = [], []
    plain = generate(spy_on(field, plain_calls), noise, sigmas, method="jano", config=jano, layout=field,
                     level_map=mixed_levels)
    run = generate(spy_on(field, calls), noise, sigmas, method=method, config=CombinedConfig(jano, NEVER[method]),
                   layout=field, level_map=mixed_levels)
    # bit-identical: the same model calls on the same tokens, the hooks only watching
    assert torch.equal(run.tokens, plain.tokens)
    assert [c[:2] for c in calls] == [c[:2] for c in plain_calls] and all(c[2] == ["hooks"] for c in calls)
    assert set(plain.report.token_levels.tolist()) == {1, 2, 3}  # frozen tokens of both levels took part
    assert run.report.decisions == ["compute"] * (len(sigmas) - 1)
    assert run.report.token_counts == plain.report.token_counts
    assert run.report.ideal_speedup == pytest.approx(plain.report.ideal_speedup, rel=1e-12)


# (combination, its step cache's config per test model, the plain step cache): settings where the plain one computes
# the three warm-up steps of SIGMAS and reuses after them (asserted below, so the test sees both)
PLAIN = [
    ("jano+teacache", {flux_cfg_field: TeaCacheConfig(0.1, IDENTITY), wan_field: TeaCacheConfig(0.1, IDENTITY)},
     sample_teacache),
    ("jano+fbcache", {flux_cfg_field: FBCacheConfig(0.15), wan_field: FBCacheConfig(0.05)}, sample_fbcache),
    ("jano+pab", {m: PABConfig(3, 2, (0.0, 490.0), (0.0, 490.0)) for m in (flux_cfg_field, wan_field)}, sample_pab),
]


@pytest.mark.parametrize("make, jano", [(flux_cfg_field, FLUX), (wan_field, WAN)], ids=["flux-cfg", "wan"])
@pytest.mark.parametrize("method, steps, sample_plain", PLAIN, ids=[p[0] for p in PLAIN])
def test_jano_computing_every_token_is_the_plain_step_cache(make, jano, method, steps, sample_plain):
    step = steps[make]
    field, noise, _ = make()
    tokens, plain = sample_plain(field, noise, SIGMAS, step)
    assert plain.decisions[:3] == ["compute"] * 3 and len(set(plain.decisions)) > 1
    every_token = jano.replace(static_thresh=-1.0, medium_thresh=-1.0)  # every block active: no token is frozen
    run = generate(field, noise, SIGMAS, method=method, config=CombinedConfig(every_token, step))
    # Bit-identical, as the computation is the same: with nothing frozen there is no KV cache, every step computes
    # every token (token_index None, or all of them in order, which gathers the same rows) and may be reused after
    # the warm-up, and the hooks keep every row.
    assert torch.equal(run.tokens, tokens)
    assert run.report.decisions == plain.decisions
    # token FLOPs x the spent share of block FLOPs = block FLOPs, up to float summation order
    assert run.report.ideal_speedup == pytest.approx(plain.ideal_speedup, rel=1e-12)


# ---- the rule and the FLOP accounting on a field with known blocks -------------------------------------------------

ANALYTIC = JanoConfig(warmup_steps=3, cooldown_steps=1, static_thresh=0.2, medium_thresh=0.4, static_interval=4,
                      medium_interval=2, alpha=0.0, d_strength=0.8, d_distance=1.0, block_size=(1, 1, 1))
STEPS12 = torch.linspace(1.0, 0.0, 13)


def analytic_run(step, depth=3, branches=("cond",), make_hooks=None):
    """jano+<step cache> on a TokenAnalyticField with mixed levels: (field, report, per-step callback infos, per-step
    field calls)."""
    field = TokenAnalyticField(depth=depth, branches=branches)
    x = torch.randn(1, field.rows, 4, generator=torch.Generator().manual_seed(5))
    method = {TeaCacheConfig: "jano+teacache", FBCacheConfig: "jano+fbcache"}[type(step)]
    steps, marks = [], [0]

    def callback(info):
        steps.append(info)
        marks.append(len(field.calls))

    if make_hooks is None:
        _, report = sample_combined(field, x, STEPS12, method, CombinedConfig(ANALYTIC, step), callback=callback,
                                    level_map=mixed_levels)
    else:  # the sampler with hooks made by the test
        from jano_ref.jano.sampler import sample_jano

        _, report = sample_jano(field, x, STEPS12, ANALYTIC, callback=callback, level_map=mixed_levels,
                                step_cache=make_hooks)
    return field, report, steps, [field.calls[a:b] for a, b in zip(marks, marks[1:])]


@pytest.mark.parametrize("step, skipped_blocks", [(TeaCacheConfig(1e9, IDENTITY), 3), (FBCacheConfig(1e9), 2)],
                         ids=["teacache", "fbcache"])
def test_reuse_rule_and_flop_accounting_on_an_analytic_field(step, skipped_blocks):
    depth = 3
    field, report, steps, calls = analytic_run(step, depth)
    plan, n = report.plan, field.rows
    last = len(steps) - 1
    # a threshold no change reaches: every step that computes only the active tokens reuses, except the last one
    expected = ["skip" if level == ACTIVE_STEP and i < last else "compute" for i, level in enumerate(plan.step_levels)]
    assert report.decisions == expected and "skip" in expected and expected[3:].count("compute") >= 3
    counts = plan.token_counts()
    assert len(set(counts)) == 3  # full, moderate + active, active alone: 16, 12 and 8 of 16 tokens
    for decision, made in zip(expected, calls):
        blocks = sorted({layer for _, layer, part in made if part == "block"})
        assert blocks == (list(range(depth - skipped_blocks)) if decision == "skip" else list(range(depth)))
    # the ideal speedup: full token FLOPs over the spent ones, a skipped step spending its unskipped blocks' share
    share = [(depth - skipped_blocks) / depth if d == "skip" else 1.0 for d in expected]
    assert report.token_counts == [round(c * s) for c, s in zip(counts, share)]
    assert report.ideal_speedup == pytest.approx(n * len(counts) / sum(c * s for c, s in zip(counts, share)))
    assert report.ideal_speedup > plan.ideal_speedup(field.token_cost())
    # a skipped step: the active tokens get their stack input plus the residual of the last computed step (the
    # analytic head is the identity); frozen tokens keep their last velocity
    active = torch.nonzero(report.token_levels == 3).flatten()
    frozen = torch.nonzero(report.token_levels < 3).flatten()
    residual = None
    for i, (decision, s) in enumerate(zip(expected, steps)):
        stack_in = s["x"][:, active] + float(s["sigma"])
        if decision == "compute":
            residual = s["velocity"][:, active] - stack_in
        elif skipped_blocks == depth:  # TeaCache: no block ran
            assert torch.equal(s["velocity"][:, active], stack_in + residual)
            assert torch.equal(s["velocity"][:, frozen], steps[i - 1]["velocity"][:, frozen])


def by_hand(steps, levels, active, thresh, sign):
    """The combination's TeaCache rule for one branch, written out: the change of block 0's modulated input over the
    active tokens ((sign * x + sigma) * (1 + sigma) on the analytic field) accumulates on steps that compute only
    them; every other step, and the first and the last, computes and resets."""
    acc, out, previous = 0.0, [], None
    for i, (s, level) in enumerate(zip(steps, levels)):
        sigma = float(s["sigma"])
        m = (sign * s["x"][:, active] + sigma) * (1 + sigma)
        if level != ACTIVE_STEP or i in (0, len(steps) - 1):
            acc = 0.0
            out.append("compute")
        else:
            acc += float((m - previous).abs().mean() / previous.abs().mean())
            if acc < thresh:
                out.append("skip")
            else:
                acc = 0.0
                out.append("compute")
        previous = m
    return out


def test_cfg_branches_keep_their_own_state():
    thresh = 0.3
    step = TeaCacheConfig(thresh, IDENTITY)
    field, report, steps, calls = analytic_run(step, depth=2, branches=("cond", "uncond"))
    levels = report.plan.step_levels
    active = torch.nonzero(report.token_levels == 3).flatten()
    made = {b: ["compute" if any(c[0] == b for c in step_calls) else "skip" for step_calls in calls]
            for b in field.branches}
    expected = {b: by_hand(steps, levels, active, thresh, sign) for b, sign in (("cond", 1), ("uncond", -1))}
    assert made == expected
    assert made["cond"] != made["uncond"]  # the branches really decide differently here
    assert "skip" in made["cond"] and "skip" in made["uncond"]
    assert report.decisions == made["cond"]
    # per step, each branch's share of the block FLOPs: 0 where it skipped
    assert [[float(d == "compute") for d in pair] for pair in zip(made["cond"], made["uncond"])] == report.step_shares
    # the bug this guards against: one state for both branches
    shared = TeaCacheHooks(field.block_costs(), step)
    _, _, steps, calls = analytic_run(step, depth=2, branches=("cond", "uncond"), make_hooks=lambda: shared)
    made = {b: ["compute" if any(c[0] == b for c in step_calls) else "skip" for step_calls in calls]
            for b in field.branches}
    assert made != {b: by_hand(steps, levels, active, thresh, sign) for b, sign in (("cond", 1), ("uncond", -1))}


def test_real_cfg_model_branches_keep_their_own_residuals():
    field, noise, sigmas = flux_cfg_field()
    made = []

    def make():
        made.append(TeaCacheHooks(field.block_costs(), TeaCacheConfig(0.3, IDENTITY)))
        return made[-1]

    from jano_ref.jano.sampler import sample_jano

    _, report = sample_jano(field, noise, sigmas, FLUX, level_map=mixed_levels, step_cache=make)
    assert len(made) == 2 and not torch.equal(made[0].residual, made[1].residual)
    active = int((report.token_levels == 3).sum())
    # what the hooks keep is the active tokens' rows (and the text rows of Flux's stream)
    assert made[0].residual.shape[1] == active + field.cond.txt.shape[1] and made[0].previous.shape[1] == active


# ---- labels, presets, errors ---------------------------------------------------------------------------------------


def test_labels_resolve_sweep_and_say_what_is_wrong():
    label, config = combined.resolve("jano+teacache", None, "tiny-flux", "flux-dev")
    assert label == "flux-dev@teacache-tiny-flux" and config.jano == get_preset("flux-dev")
    assert config.step.rel_l1_thresh == 0.03
    label, config = combined.resolve("jano+fbcache", "flux-b3@threshold=0.2", "tiny-flux", "flux-dev")
    assert label == "flux-b3@threshold=0.2" and config.step.threshold == 0.2 and config.jano == get_preset("flux-b3")
    labels = combined.sweep("jano+pab", "wan", "tiny-wan")
    assert labels[0] == "wan@self_range=1" and all(combined.accepts("jano+pab", label) for label in labels)
    assert not combined.accepts("jano+pab", "wan@threshold=0.1") and not combined.accepts("jano+teacache", "nope")
    assert combined.params(config)["step"] == {"threshold": 0.2}
    with pytest.raises(KeyError, match="not a Jano preset"):
        combined.resolve("jano+teacache", "teacache-tiny-flux", "tiny-flux", "flux-dev")
    with pytest.raises(ValueError, match="sweep knob is 'threshold'"):
        combined.resolve("jano+fbcache", "flux-dev@rel_l1_thresh=0.1", "tiny-flux", "flux-dev")
    with pytest.raises(ValueError, match="unknown combination"):
        combined.step_cache_of("jano+toca")


def test_generate_takes_a_label_and_jano_cache_options():
    from jano_ref.jano.cache import CacheOptions

    field, noise, sigmas = flux_cfg_field()
    by_label = generate(field, noise, sigmas, method="jano+teacache", config="flux-dev@rel_l1_thresh=0",
                        cache=CacheOptions(mode="bf16"))
    by_config = generate(field, noise, sigmas, method="jano+teacache", cache=CacheOptions(mode="bf16"),
                         config=CombinedConfig(get_preset("flux-dev"), TeaCacheConfig(0.0, (0.0,))))
    assert torch.equal(by_label.tokens, by_config.tokens) and by_label.report.cache.mode == "bf16"


# ---- the jano command ----------------------------------------------------------------------------------------------


def test_cli_generate_a_combination_and_reject_a_wrong_knob(tmp_path, capsys):
    from jano_ref.lab.cli import main

    assert main(["generate", "a red striped circle on a flat background", "--method", "jano+teacache", "--preset",
                 "flux-dev@rel_l1_thresh=0.5", "--random-weights", "--steps", "12", "--warmup", "0", "--repeats", "1",
                 "--out", str(tmp_path)]) == 0
    summary = json.loads((tmp_path / "summary.json").read_text())
    assert summary["preset"] == "flux-dev@rel_l1_thresh=0.5" and summary["ideal_speedup"] > 1
    assert (tmp_path / "jano+teacache.png").exists() and (tmp_path / "levels.png").exists()
    assert "step cache (rel_l1_thresh=0.5): " in capsys.readouterr().out
    with pytest.raises(SystemExit, match="sweep knob is 'rel_l1_thresh'"):
        main(["generate", "x", "--method", "jano+teacache", "--preset", "flux-dev@threshold=0.3", "--random-weights",
              "--out", str(tmp_path)])


def test_bench_runs_the_combinations_and_sweeps_them_at_the_first_jano_preset(tmp_path):
    from jano_ref import baselines
    from jano_ref.lab.eval.bench import Bench, BenchConfig

    cfg = BenchConfig(model="tiny-flux", methods=("full", "jano", "jano+fbcache"), presets=("flux-dev", "flux-b3"),
                      prompts=1, sweep=True)
    swept = [f"flux-dev@{label}" for label, _ in baselines.sweep("fbcache", "tiny-flux")]
    assert cfg.runs() == [("full", "-"), ("jano", "flux-dev"), ("jano", "flux-b3"),
                          ("jano+fbcache", "flux-dev@fbcache-0.05"), ("jano+fbcache", "flux-b3@fbcache-0.05"),
                          *[("jano+fbcache", label) for label in swept]]
    with pytest.raises(ValueError, match="JANO_PRESET@STEP_CACHE_SETTING"):
        BenchConfig(model="tiny-flux", methods=("full", "jano+teacache"), presets=("flux-dev@threshold=0.1",))
    cfg = BenchConfig(model="tiny-flux", methods=("full", "jano+teacache"), presets=("flux-dev@rel_l1_thresh=0.5",),
                      prompts=1, steps=12, warmup=1, repeats=3)
    bench = Bench(cfg, tmp_path, progress=False)
    bench._model = load_model("tiny-flux", random_weights=True)
    runs = {r["method"]: r for r in bench.run()["runs"]}
    run = runs["jano+teacache"]
    assert run["preset"] == "flux-dev@rel_l1_thresh=0.5" and run["params"]["step"]["rel_l1_thresh"] == 0.5
    assert run["params"]["jano"]["warmup_steps"] == 7 and run["cache_mb"] > 0 and run["ideal_speedup"] > 1
    assert 0 < run["psnr"] < float("inf") and (tmp_path / "pareto.png").exists()
