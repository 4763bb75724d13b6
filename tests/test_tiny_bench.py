"""Tiny-model setup, the bench (resumable, schema), the analyses and the remaining CLI commands, on random weights."""

import json

import pytest
import torch

from jano_ref.lab.eval.analysis import analyze_prompt, run_study
from jano_ref.lab.eval.bench import Bench, BenchConfig, cell_name
from jano_ref.lab.cli import main
from jano_ref.generate import generate
from jano_ref.lab.tiny.data import caption_truth, evaluation_scenes
from jano_ref.pipelines.tiny import load_model, prepare

RUN_KEYS = {"method", "preset", "params", "latency_s", "speedup", "ideal_speedup", "psnr", "ssim", "lpips",
            "token_fraction", "peak_mem_mb", "cache_mb"}
QUALITY_KEYS = {"kid", "kid_std", "kid_sets", "kid_vs_full", "kid_vs_full_std", "quality_samples",
                "caption_colour_n", "caption_shape_n"}


@pytest.fixture(scope="module")
def flux():
    return load_model("tiny-flux", random_weights=True)


def test_random_weights_are_seeded_and_leave_the_global_rng_alone():
    torch.manual_seed(123)
    before = torch.rand(1)
    torch.manual_seed(123)
    a = load_model("tiny-flux", random_weights=True)
    after = torch.rand(1)
    b = load_model("tiny-flux", random_weights=True)
    assert torch.equal(before, after)
    assert all(torch.equal(p, q) for p, q in zip(a.parameters(), b.parameters()))


def test_missing_weights_say_how_to_get_them(tmp_path, monkeypatch):
    monkeypatch.setenv("JANO_WEIGHTS", str(tmp_path))
    with pytest.raises(FileNotFoundError, match="jano train tiny-wan"):
        load_model("tiny-wan")


def test_prepare_shapes_and_decode(flux):
    setup = prepare("tiny-flux", "a red circle on a flat background", steps=4, seed=1, model=flux)
    assert setup.noise.shape == (1, 256, 48) and setup.sigmas.shape == (5,)
    assert setup.field.branches == ("cond", "uncond")
    pixels = setup.decode(setup.noise)
    assert pixels.shape == (3, 1, 64, 64) and pixels.min() >= 0 and pixels.max() <= 1
    wan = prepare("tiny-wan", "a red circle on a flat background moving up", steps=3,
                  model=load_model("tiny-wan", random_weights=True))
    assert wan.noise.shape[1] == 1024 and wan.decode(wan.noise).shape == (3, 4, 64, 64)


def test_caption_truth_and_evaluation_scenes():
    assert caption_truth("A Red striped circle, on a flat background").colour == "red"
    assert caption_truth("a picture of nothing") is None
    a, b = evaluation_scenes(5, video=False), evaluation_scenes(5, video=False)
    assert a == b and len({s.caption for s in a}) > 1


def test_random_level_map_keeps_fractions(flux):
    from jano_ref.lab.eval.study import shuffled_levels

    setup = prepare("tiny-flux", "a green cross on a gradient background", steps=12, model=flux)
    jano = generate(setup.field, setup.noise, setup.sigmas, method="jano")
    shuffled = generate(setup.field, setup.noise, setup.sigmas, method="jano",
                        level_map=lambda lv: shuffled_levels(lv, torch.Generator().manual_seed(0)))
    a, b = jano.report.block_levels, shuffled.report.block_levels
    assert torch.equal(torch.bincount(a.flatten()), torch.bincount(b.flatten())) and not torch.equal(a, b)
    assert not torch.equal(jano.tokens, shuffled.tokens)


def test_bench_schema_resume_and_step_matching(tmp_path, flux, monkeypatch):
    cfg = BenchConfig(model="tiny-flux", methods=("full", "jano", "random-levels", "steps"), presets=("flux-dev",),
                      prompts=2, steps=12, warmup=1, repeats=3)
    bench = Bench(cfg, tmp_path, progress=False)
    bench._model = flux
    results = bench.run()
    assert set(results) >= {"model", "device", "dtype", "steps", "prompts", "runs"} and len(results["prompts"]) == 2
    runs = {(r["method"], r["preset"]): r for r in results["runs"]}
    assert set(runs) == {("full", "-"), ("jano", "flux-dev"), ("random-levels", "flux-dev"), ("steps", "flux-dev")}
    for r in results["runs"]:
        assert RUN_KEYS <= set(r) and r["latency_s"] > 0
    assert runs[("full", "-")]["speedup"] == 1.0 and runs[("full", "-")]["psnr"] is None
    # timing is interleaved per prompt: every cell carries the full run's timings from its own rounds
    cells = [bench.load_cell(m, p, i, 0) for m, p in cfg.runs() for i in range(2)]
    for c in cells:
        assert len(c.seconds) == len(c.full_seconds) == 3
        assert c.full_seconds == bench.load_cell("full", "-", c.prompt_index, 0).seconds
    assert jano_speedup_is_median_of_cells(results, cells)
    jano = runs[("jano", "flux-dev")]
    assert jano["psnr"] > 0 and 0 < jano["token_fraction"] < 1
    assert jano["cache_mb"] > 0 and runs[("full", "-")]["cache_mb"] == 0.0  # Jano's KV cache, next to peak_mem_mb
    assert all(c.cache_mb is not None for c in cells)  # every cell of these methods carries it
    assert runs[("random-levels", "flux-dev")]["token_fraction"] == pytest.approx(jano["token_fraction"])
    steps = runs[("steps", "flux-dev")]
    assert steps["params"]["steps"] == round(12 / jano["ideal_speedup"])
    assert json.loads((tmp_path / "results.json").read_text()) == json.loads(json.dumps(results))
    assert (tmp_path / "results.md").read_text().count("\n|") >= 5
    assert (tmp_path / "pareto.png").read_bytes()[:4] == b"\x89PNG"
    # without --quality nothing of the quality pass appears
    assert "quality" not in results and not any(QUALITY_KEYS & set(r) for r in results["runs"])
    assert "KID" not in (tmp_path / "results.md").read_text()

    # resume: existing cells are not recomputed
    def fail(*a, **k):
        raise AssertionError("a finished cell was recomputed")

    monkeypatch.setattr(Bench, "_run_group", fail)
    again = Bench(cfg, tmp_path, progress=False).run()
    assert [r["psnr"] for r in again["runs"]] == [r["psnr"] for r in results["runs"]]
    # a lost cell is the only one recomputed (full is re-timed beside it as its reference, not rewritten)
    monkeypatch.undo()
    lost = tmp_path / "cells" / f"{cell_name('jano', 'flux-dev', 1, 0)}.json"
    lost.unlink()
    full_cell = (tmp_path / "cells" / f"{cell_name('full', '-', 1, 0)}.json").read_text()
    calls = []
    original = Bench._run_group
    monkeypatch.setattr(Bench, "_run_group", lambda self, runs, *a: calls.append((runs, *a[:2])) or original(self, runs, *a))
    resumed = Bench(cfg, tmp_path, progress=False)
    resumed._model = flux
    resumed.run()
    assert calls == [([("jano", "flux-dev")], 1, 0)] and lost.exists()
    assert (tmp_path / "cells" / f"{cell_name('full', '-', 1, 0)}.json").read_text() == full_cell
    with pytest.raises(ValueError, match="another bench"):
        Bench(BenchConfig(model="tiny-flux", steps=20), tmp_path)


def jano_speedup_is_median_of_cells(results, cells) -> bool:
    import statistics

    jano = next(r for r in results["runs"] if r["method"] == "jano")
    paired = [statistics.median(c.full_seconds) / statistics.median(c.seconds) for c in cells if c.method == "jano"]
    return jano["speedup"] == pytest.approx(statistics.median(paired), rel=1e-12)


def test_cells_from_before_interleaving_fall_back_to_latency_ratios():
    from jano_ref.lab.eval.bench import Cell, aggregate

    cfg = BenchConfig(model="tiny-flux", methods=("full", "jano"), presets=("flux-dev",), prompts=1, steps=12)

    def cell(method, preset, seconds, full_seconds=None):
        return Cell(method, preset, 0, 0, "p", {}, seconds, 1.0, 1.0, None, full_seconds=full_seconds)

    old = {("full", "-"): cell("full", "-", [2.0, 2.0, 2.0]), ("jano", "flux-dev"): cell("jano", "flux-dev", [1.0] * 3)}
    results = aggregate(cfg, ["p"], lambda m, p, i, s: old.get((m, p)), device="cpu")
    assert [r["speedup"] for r in results["runs"]] == [1.0, 2.0]
    new = {("full", "-"): cell("full", "-", [2.0] * 3, [2.0] * 3),
           ("jano", "flux-dev"): cell("jano", "flux-dev", [1.0] * 3, [3.0, 3.0, 4.0])}  # full was slower in its rounds
    results = aggregate(cfg, ["p"], lambda m, p, i, s: new.get((m, p)), device="cpu")
    assert [r["speedup"] for r in results["runs"]] == [1.0, 3.0]


def test_bench_config_errors():
    with pytest.raises(ValueError, match="unknown method"):
        BenchConfig(methods=("full", "magic"))
    with pytest.raises(ValueError, match="at least 3"):
        BenchConfig(repeats=2)


def test_analyze_prompt_maps(flux):
    result = analyze_prompt("tiny-flux", "a red checkered square on a flat background", steps=20, model=flux)
    assert result.trajectory.states.shape == (21, 12, 1, 32, 32)
    assert result.convergence.shape == result.jano.report.complexity.enhanced.shape == (1, 16, 16)
    assert result.fft_complexity.shape == (1, 8, 8)
    rho, p = result.correlations["fft_vs_convergence"]
    assert -1 <= rho <= 1 and 0 <= p <= 1


def test_study_runs_on_two_prompts(flux):
    result = run_study("tiny-flux", prompts=2, steps=16, warmup_steps=(2, 4), model=flux, progress=False)
    assert result.blocks == 2 * 64 and -1 <= result.rho <= 1
    assert set(result.accuracy) == {"jano_vs_complexity", "jano_vs_convergence", "fft_vs_complexity",
                                    "fft_vs_convergence"}
    assert all(len(v) == 2 and all(0 <= a <= 1 for a in v) for v in result.accuracy.values())


def test_cli_analyze_and_study(tmp_path, capsys):
    assert main(["analyze", "a red checkered square on a flat background", "--random-weights", "--steps", "16",
                 "--out", str(tmp_path / "a")]) == 0
    for name in ("complexity.png", "levels.png", "convergence.png", "fft_complexity.png", "token_counts.png",
                 "analysis.json"):
        assert (tmp_path / "a" / name).exists(), name
    assert main(["study", "--random-weights", "--prompts", "2", "--steps", "16", "--out", str(tmp_path / "s")]) == 0
    assert json.loads((tmp_path / "s" / "study.json").read_text())["blocks"] == 128
    assert "Spearman" in capsys.readouterr().out


def test_bench_runs_jit_against_the_full_run_and_naive_step_reduction(tmp_path, flux):
    cfg = BenchConfig(model="tiny-flux", methods=("full", "jit", "steps"), presets=("jit-7x", "7"), prompts=1,
                      steps=12, warmup=1, repeats=3)
    assert cfg.runs() == [("full", "-"), ("jit", "jit-7x"), ("steps", "7")]
    bench = Bench(cfg, tmp_path, progress=False)
    bench._model = flux
    runs = {r["method"]: r for r in bench.run()["runs"]}
    jit = runs["jit"]
    assert jit["params"]["num_steps"] == 11 and jit["psnr"] > 0
    # FLOPs ratio against the 12-step full run: fewer steps and fewer tokens per step
    assert jit["ideal_speedup"] > 12 / 11 and 0 < jit["token_fraction"] < 11 / 12
    assert runs["steps"]["params"] == {"steps": 7} and runs["steps"]["ideal_speedup"] == pytest.approx(12 / 7)


def test_cli_generate_jit(tmp_path, capsys):
    assert main(["generate", "a red striped circle on a flat background", "--method", "jit", "--preset", "jit-7x",
                 "--random-weights", "--steps", "12", "--out", str(tmp_path)]) == 0
    summary = json.loads((tmp_path / "summary.json").read_text())
    assert summary["preset"] == "jit-7x" and summary["ideal_speedup"] > 1 and (tmp_path / "jit.png").exists()
    assert "JiT jit-7x: 11 steps" in capsys.readouterr().out


def test_bench_sweeps_the_baselines_and_reports_a_matched_table(tmp_path, flux):
    from jano_ref import baselines
    from jano_ref.lab.eval.tables import frontier, matched_table

    cfg = BenchConfig(model="tiny-flux", methods=("full", "fbcache", "ras"), presets=("fbcache-0.08",), prompts=1,
                      steps=8, warmup=1, repeats=3, sweep=True)
    expected = [("fbcache", "fbcache-0.08")] + [("fbcache", label) for label, _ in baselines.sweep("fbcache")]
    assert cfg.runs()[0] == ("full", "-") and cfg.runs()[1:1 + len(expected)] == expected
    assert [p for m, p in cfg.runs() if m == "ras"] == [label for label, _ in baselines.sweep("ras", "tiny-flux")]
    cfg = BenchConfig(model="tiny-flux", methods=("full", "fbcache"), presets=("threshold=0", "threshold=0.5"),
                      prompts=1, steps=8, warmup=1, repeats=3)
    bench = Bench(cfg, tmp_path, progress=False)
    bench._model = flux
    results = bench.run()
    runs = {r["preset"]: r for r in results["runs"]}
    assert set(runs) == {"-", "threshold=0", "threshold=0.5"}
    never = runs["threshold=0"]
    assert never["params"]["threshold"] == 0 and never["ideal_speedup"] == pytest.approx(1.0)
    assert never["psnr"] == float("inf")  # never skipping reproduces the full run bit for bit
    assert RUN_KEYS <= set(runs["threshold=0.5"])
    assert "| fbcache |" in matched_table(results, targets=(1.0,), tolerance=10.0)
    assert "Best PSNR at matched measured speedup" in (tmp_path / "results.md").read_text()
    assert frontier([(1, 30), (2, 25), (1.5, 20), (3, 10)]) == [(1, 30), (2, 25), (3, 10)]
    assert frontier([(1, 0.1), (2, 0.3), (1.5, 0.4)], higher_is_better=False) == [(1, 0.1), (2, 0.3)]


def test_cli_generate_a_baseline_and_reject_a_wrong_knob(tmp_path, capsys):
    assert main(["generate", "a red striped circle on a flat background", "--method", "fbcache", "--preset",
                 "threshold=0.3", "--random-weights", "--steps", "8", "--out", str(tmp_path)]) == 0
    summary = json.loads((tmp_path / "summary.json").read_text())
    assert summary["preset"] == "threshold=0.3" and summary["ideal_speedup"] >= 1 and (tmp_path / "fbcache.png").exists()
    assert "fbcache (threshold=0.3):" in capsys.readouterr().out
    with pytest.raises(SystemExit, match="sweep knob is 'threshold'"):
        main(["generate", "x", "--method", "fbcache", "--preset", "ratio=0.3", "--random-weights", "--out",
              str(tmp_path)])


def test_bench_quality_pass_fields_cells_and_resume(tmp_path, flux, monkeypatch):
    """--quality: KID and N-prompt caption agreement per run, from cells that hold what they claim and resume."""
    from jano_ref.lab.eval import quality
    from jano_ref.lab.eval.distribution import alex_features, kid

    with pytest.raises(ValueError, match="at least 4 prompts"):
        BenchConfig(quality=2)
    cfg = BenchConfig(model="tiny-flux", methods=("full", "steps"), presets=("2",), prompts=1, steps=4, warmup=0,
                      repeats=3, quality=4, quality_sets=2)
    bench = Bench(cfg, tmp_path, progress=False)
    bench._model = flux
    results = bench.run()
    q = results["quality"]
    assert (q["prompts"], q["sets"], q["samples"], q["reference"], q["subset_size"], q["feature_dim"]) == \
        (4, 2, 8, 32, 4, 1152)
    assert abs(q["data_kid"]) < 1  # renders against renders: near the estimator's zero (random weights are not)
    runs = {r["method"]: r for r in results["runs"]}
    for method, run in runs.items():
        assert QUALITY_KEYS <= set(run) and run["quality_samples"] == 8 and len(run["kid_sets"]) == 2
        cells = [quality.QualityCell.load(quality.cell_path(tmp_path / "quality", method, run["preset"], 4, r))
                 for r in (0, 1)]
        reference = quality.rendered_features("tiny-flux", 32, quality.REFERENCE_SEED, bench.lpips_net,
                                              tmp_path / "quality")
        features = torch.cat([c.features for c in cells])
        assert (run["kid"], run["kid_std"]) == kid(features, reference, subsets=100, subset_size=4)
        assert run["caption_colour_n"] == sum(h for c in cells for h in c.colour) / 8
        assert run["kid"] > 10 * abs(q["data_kid"])  # random weights draw noise, not the data
    assert runs["full"]["kid"] != runs["steps"]["kid"] and runs["full"]["kid_vs_full"] == 0
    # paired subsets: the mean difference is the difference of the means
    assert runs["steps"]["kid_vs_full"] == pytest.approx(runs["steps"]["kid"] - runs["full"]["kid"], rel=1e-9)
    # row 1 of set 1 is the sample of evaluation prompt 5 with noise seed 5
    scene = evaluation_scenes(8, video=False)[5]
    setup = prepare("tiny-flux", scene.caption, steps=2, seed=5, model=flux)
    sample = setup.decode(generate(setup.field, setup.noise, setup.sigmas, method="full").tokens)[:, 0]
    steps_cell = quality.QualityCell.load(quality.cell_path(tmp_path / "quality", "steps", "2", 4, 1))
    torch.testing.assert_close(steps_cell.features[1], alex_features(sample[None], bench.lpips_net)[0])
    assert steps_cell.info["steps"] == 2 and steps_cell.info["prompts"] == [4, 7]
    md = (tmp_path / "results.md").read_text()
    assert "KID x10^3 | ΔKID vs full |" in md and "(8 samples)" in md and md.count(" ± ") >= 4

    # resume: nothing is generated again; a lost quality cell is the only one redrawn
    def fail(*a, **k):
        raise AssertionError("a finished cell was recomputed")

    monkeypatch.setattr(Bench, "_job", fail)
    again = Bench(cfg, tmp_path, progress=False).run()
    assert [r["kid"] for r in again["runs"]] == [r["kid"] for r in results["runs"]]
    monkeypatch.undo()
    lost = quality.cell_path(tmp_path / "quality", "full", "-", 4, 1)
    lost.unlink()
    calls = []
    original = Bench._job
    monkeypatch.setattr(Bench, "_job", lambda self, *a, **k: calls.append(a[:2]) or original(self, *a, **k))
    resumed = Bench(cfg, tmp_path, progress=False)
    resumed._model = flux
    assert [r["kid"] for r in resumed.run()["runs"]] == [r["kid"] for r in results["runs"]]
    assert calls == [("full", "-")] * 4 and lost.exists()


def test_cli_bench_quality_options(tmp_path, monkeypatch, capsys):
    import jano_ref.lab.eval.bench as bench_module

    monkeypatch.setattr(bench_module, "load_model", lambda name, **k: load_model(name, random_weights=True, **k))
    assert main(["bench", "--methods", "full", "--prompts", "1", "--steps", "2", "--warmup", "0", "--quality", "4",
                 "--quality-sets", "2", "--out", str(tmp_path)]) == 0
    results = json.loads((tmp_path / "results.json").read_text())
    assert results["quality"]["sets"] == 2 and results["runs"][0]["quality_samples"] == 8
    assert (tmp_path / "quality" / "full__-__n004__set1.safetensors").exists()
    assert "KID x10^3" in capsys.readouterr().out


def test_quality_scope_matched_covers_what_the_tables_show(tmp_path, monkeypatch):
    import jano_ref.lab.eval.bench as bench_module
    from jano_ref.lab.eval.tables import matched_runs

    def run(method, preset, speedup, psnr):
        return dict(method=method, preset=preset, speedup=speedup, psnr=psnr)

    results = dict(runs=[run("full", "-", 1.0, None), run("fbcache", "threshold=0.05", 1.2, 50.0),
                         run("fbcache", "threshold=0.1", 1.55, 40.0), run("fbcache", "threshold=0.12", 1.6, 35.0),
                         run("fbcache", "threshold=0.3", 2.9, 28.0), run("fbcache", "threshold=0.5", 4.0, 20.0),
                         run("steps", "12", 4.1, 30.0)])
    assert matched_runs(results) == {("fbcache", "threshold=0.1"), ("fbcache", "threshold=0.3")}
    cfg = BenchConfig(model="tiny-flux", methods=("full", "fbcache", "steps"),
                      presets=tuple(r["preset"] for r in results["runs"][1:]), prompts=1, steps=8, quality=4,
                      quality_scope="matched")
    monkeypatch.setattr(bench_module, "aggregate", lambda *a, **k: results)
    assert Bench(cfg, tmp_path, progress=False).quality_runs() == [
        ("full", "-"), ("fbcache", "threshold=0.1"), ("fbcache", "threshold=0.3"), ("steps", "12")]
    # a jano+ combination is swept like a baseline: only its shown settings get samples
    combo = [run("full", "-", 1.0, None), run("jano", "flux-dev", 1.5, 36.0),
             run("jano+teacache", "flux-dev@rel_l1_thresh=0.05", 2.0, 38.0),
             run("jano+teacache", "flux-dev@rel_l1_thresh=0.6", 9.0, 15.0)]
    cfg = BenchConfig(model="tiny-flux", methods=("full", "jano", "jano+teacache"),
                      presets=("flux-dev", "flux-dev@rel_l1_thresh=0.05", "flux-dev@rel_l1_thresh=0.6"), prompts=1,
                      steps=8, quality=4, quality_scope="matched")
    monkeypatch.setattr(bench_module, "aggregate", lambda *a, **k: dict(runs=combo))
    shown = Bench(cfg, tmp_path, progress=False).quality_runs()
    assert ("full", "-") in shown and ("jano", "flux-dev") in shown
    assert [r for r in shown if r[0] == "jano+teacache"] == [("jano+teacache", "flux-dev@rel_l1_thresh=0.05")]
    with pytest.raises(ValueError, match="quality_scope='some'"):
        BenchConfig(quality=4, quality_scope="some")
