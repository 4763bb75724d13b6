"""The README results section writer and the model card, on synthetic results and random weights."""

import json
from pathlib import Path

import pytest
from safetensors.torch import save_file

from jano_ref.lab.eval import report
from jano_ref.lab.eval.analysis import StudyResult
from jano_ref.lab.tiny.card import smoothed, write_card
from jano_ref.pipelines.tiny import load_model


def _results(jano_psnr=30.0, random_psnr=25.0, steps_psnr=28.0, speedup=1.8, ideal=1.9):
    run = dict(params={}, ssim=0.9, lpips=0.1, token_fraction=0.5, peak_mem_mb=1.0, caption_colour=1.0,
               caption_shape=1.0, cells=2)
    return dict(model="tiny-flux", device="cpu", dtype="float32", threads=2, steps=50, prompts=["a", "b"], seeds=[0],
                warmup=1, repeats=3, runs=[
                    dict(run, method="full", preset="-", latency_s=2.0, speedup=1.0, ideal_speedup=1.0, psnr=None),
                    dict(run, method="jano", preset="flux-dev", latency_s=2.0 / speedup, speedup=speedup,
                         ideal_speedup=ideal, psnr=jano_psnr),
                    dict(run, method="random-levels", preset="flux-dev", latency_s=1.1, speedup=1.8,
                         ideal_speedup=ideal, psnr=random_psnr),
                    dict(run, method="steps", preset="flux-dev", params={"steps": 26}, latency_s=1.0, speedup=2.0,
                         ideal_speedup=1.92, psnr=steps_psnr),
                ])


def test_target_lines_state_what_was_measured():
    lines = report.target_lines("tiny-flux", _results(), "flux-dev")
    assert "= 0.95 (meets the 0.9 target)" in lines[0]
    assert any("beats random level maps" in l and "25.00" in l for l in lines)
    assert any("beats uniform step reduction" in l for l in lines)
    worse = report.target_lines("tiny-flux", _results(jano_psnr=20.0, speedup=1.0), "flux-dev")
    assert "misses" in worse[0] and sum("does not beat" in l for l in worse) == 2


def test_readme_section_is_replaced_between_markers(tmp_path, monkeypatch):
    readme = tmp_path / "README.md"
    readme.write_text(f"intro\n{report.BEGIN}\nold\n{report.END}\noutro\n")
    monkeypatch.setattr(report, "run_model", lambda model, out, quick: (_results(), _FakeStudy()))
    (tmp_path / "res").mkdir()
    report.regenerate(readme, tmp_path / "res", models=("tiny-flux",))
    text = readme.read_text()
    assert text.startswith("intro\n") and text.endswith("outro\n") and "old" not in text
    assert "| jano / flux-dev |" in text and "res/tiny-flux/pareto.png" in text
    readme.write_text("no markers")
    with pytest.raises(ValueError, match="no results markers"):
        report.regenerate(readme, tmp_path / "res", models=("tiny-flux",))


class _FakeStudy:
    model, prompts, steps, block = "tiny-flux", ["a"], 50, (1, 4, 4)
    rho, p_value, blocks, median_prompt_rho, warmup_steps = 0.5, 1e-3, 64, 0.4, [2, 3]
    accuracy = {"jano_vs_complexity": [0.5, 0.6], "fft_vs_complexity": [0.3, 0.4]}


def test_smoothed_is_a_trailing_mean():
    assert smoothed([1.0, 3.0, 5.0, 7.0], 2) == [1.0, 2.0, 4.0, 6.0]


def test_model_card_from_a_checkpoint(tmp_path):
    model = load_model("tiny-flux", random_weights=True)
    save_file(model.state_dict(), str(tmp_path / "tiny-flux.safetensors"))
    config = dict(steps=3, batch_size=2, lr=1e-3, seed=0, caption_dropout=0.1, warmup_steps=1, grad_clip=1.0,
                  ema_decay=0.999, t_sampling="uniform")
    (tmp_path / "log.json").write_text(json.dumps(dict(config=config, step=3, losses=[1.0, 0.5, 0.25], seconds=6.0)))
    card = write_card("tiny-flux", tmp_path, tmp_path / "log.json", prompts=2, steps=3, grid=2).read_text()
    assert f"{sum(p.numel() for p in model.parameters()):,} parameters" in card and "| colour agrees |" in card
    assert "t ~ uniform." in card and "--t-sampling uniform --out DIR" in card  # the run's own noise levels
    assert "--precision fp32" in card  # a setting the log predates is stated at the default it ran with
    assert report.placeholders(card) == []
    for name in ("tiny-flux_loss.png", "tiny-flux_samples.png", "tiny-flux.agreement.json"):
        assert (tmp_path / name).exists()
    agreement = json.loads((tmp_path / "tiny-flux.agreement.json").read_text())
    assert agreement["prompts"] == 2 and 0 <= agreement["colour"] <= 1


def test_rerunning_one_model_keeps_the_other_models_section(tmp_path, monkeypatch):
    readme = tmp_path / "README.md"
    wan_section = "### tiny-wan\n\nold wan table\n"
    readme.write_text(f"intro\n{report.BEGIN}\n\n### tiny-flux\n\nold flux table\n\n{wan_section}\n{report.END}\noutro\n")
    monkeypatch.setattr(report, "run_model", lambda model, out, quick: (_results(), _FakeStudy()))
    (tmp_path / "res").mkdir()
    report.regenerate(readme, tmp_path / "res", models=("tiny-flux",))
    text = readme.read_text()
    assert "old flux table" not in text and "| jano / flux-dev |" in text
    assert "old wan table" in text and text.index("### tiny-flux") < text.index("### tiny-wan")
    assert text.startswith("intro\n") and text.endswith("outro\n")


def test_edits_made_to_the_readme_during_a_run_are_kept(tmp_path, monkeypatch):
    readme = tmp_path / "README.md"
    readme.write_text(f"intro\n{report.BEGIN}\nold\n{report.END}\noutro\n")

    def run_model_while_someone_edits(model, out, quick):
        readme.write_text(readme.read_text().replace("intro\n", "intro\nedited during the run\n"))
        return _results(), _FakeStudy()

    monkeypatch.setattr(report, "run_model", run_model_while_someone_edits)
    (tmp_path / "res").mkdir()
    report.regenerate(readme, tmp_path / "res", models=("tiny-flux",))
    text = readme.read_text()
    assert text.startswith("intro\nedited during the run\n") and "| jano / flux-dev |" in text and "old" not in text


# ---- no unfilled placeholders in what is shipped or written ----------------------------------------------------------

ROOT = Path(__file__).resolve().parents[1]


def test_the_placeholder_check_finds_template_fields_in_prose_only():
    assert report.placeholders("tiny-wan draws the colour; WAN_STATUS") == ["WAN_STATUS"]
    assert report.placeholders("measured {speedup:.2f}x, then {results['steps']} steps; TODO") == [
        "{speedup:.2f}", "{results['steps']}", "TODO"]
    prose = ("Flux at 1024² and CPU fp32, Eq. 15, FLUX.1, (T, H, W), `JANO_PRESETS` and `ATEN_CPU_CAPABILITY=default`;"
             "\n```bash\nPYTHONPATH=$PWD python -c 'print({1: 2})'\n```\n")
    assert report.placeholders(prose) == []


def test_shipped_markdown_has_no_unfilled_placeholders():
    files = [ROOT / "README.md", *sorted((ROOT / "weights").glob("*.md")),
             *sorted((ROOT / "notebooks" / "results").glob("*/*.md"))]
    assert len(files) >= 5
    for path in files:
        assert report.placeholders(path.read_text()) == [], path.relative_to(ROOT)


@pytest.mark.parametrize("model", list(report.PLANS))
def test_the_section_written_from_the_shipped_results_has_no_placeholders(model):
    out = ROOT / "notebooks" / "results" / model
    results = json.loads((out / "results.json").read_text())
    study = StudyResult(**json.loads((out / "study.json").read_text()))
    section = report.model_section(model, results, study, out, ROOT)
    assert f"### {model}" in section and report.placeholders(section) == []


def test_regenerate_refuses_to_leave_a_placeholder(tmp_path, monkeypatch):
    readme = tmp_path / "README.md"
    readme.write_text(f"intro; WAN_STATUS\n{report.BEGIN}\nold\n{report.END}\noutro\n")
    monkeypatch.setattr(report, "run_model", lambda model, out, quick: pytest.fail("must refuse before the run"))
    with pytest.raises(ValueError, match="WAN_STATUS"):
        report.regenerate(readme, tmp_path / "res", models=("tiny-flux",))
    readme.write_text(f"intro\n{report.BEGIN}\nold\n{report.END}\noutro\n")
    monkeypatch.setattr(report, "run_model", lambda model, out, quick: (_results(), _FakeStudy()))
    monkeypatch.setattr(report, "model_section", lambda *args: "### tiny-flux\n\nspeedup SPEEDUP_OF_JANO\n")
    (tmp_path / "res").mkdir()
    with pytest.raises(ValueError, match="SPEEDUP_OF_JANO"):
        report.regenerate(readme, tmp_path / "res", models=("tiny-flux",))
    assert readme.read_text() == f"intro\n{report.BEGIN}\nold\n{report.END}\noutro\n"  # left as it was


def _with_quality(results: dict) -> dict:
    """Synthetic quality-pass fields (x 10^-3): jit worse than steps by 40, jano best by PSNR but worse by KID."""
    def q(run, kid, vs_full_std=0.002):
        return dict(run, kid=kid, kid_std=0.026, kid_sets=[kid], kid_vs_full=kid - 0.045, kid_vs_full_std=vs_full_std,
                    quality_samples=64, caption_colour_n=1.0, caption_shape_n=0.8)

    runs = {r["method"]: r for r in results["runs"]}
    jit = dict(runs["steps"], method="jit", preset="jit-4x", params={}, speedup=3.5, ideal_speedup=4.3, psnr=18.0)
    steps12 = dict(runs["steps"], preset="12", params={"steps": 12}, speedup=4.2, ideal_speedup=4.2, psnr=34.0)
    results["runs"] = [q(runs["full"], 0.045, 0.0), q(runs["jano"], 0.070), q(runs["random-levels"], 0.050),
                       q(runs["steps"], 0.044), q(jit, 0.085, 0.026), q(steps12, 0.043)]
    results["quality"] = dict(prompts=64, sets=1, samples=64, reference=256, subsets=100, subset_size=32,
                              data_kid=0.0001, data_kid_std=0.023)
    return results


def test_quality_lines_state_jit_against_steps_and_where_the_rankings_disagree():
    lines = report.quality_lines("tiny-flux", _with_quality(_results()))
    assert lines[0].startswith("- KID x 10^3 of jit/jit-4x, 85.0 (vs full +40.0 ± 26.0), is worse by 42.0 x 10^-3 than")
    assert "steps (12): 43.0 (vs full -2.0 ± 2.0)" in lines[0]
    at_2x = next(l for l in lines if l.startswith("- ~2x"))
    # jano has the best PSNR (30 dB) but a KID 26 higher than steps (28 dB), beyond either paired spread
    assert "by PSNR: jano / flux-dev > steps (26) > random-levels / flux-dev" in at_2x
    assert "by KID (lower is better): steps (26) < random-levels / flux-dev < jano / flux-dev" in at_2x
    assert "jano / flux-dev > steps (26) by PSNR, but its KID is higher by 26.0" in at_2x
    assert "steps (26) > random-levels" not in at_2x.split("disagree")[1]  # agreeing pairs are not listed
    assert report.quality_lines("tiny-flux", _results()) == []  # no quality pass, no lines


def test_readme_section_shows_kid_when_the_bench_measured_it(tmp_path, monkeypatch):
    readme = tmp_path / "README.md"
    readme.write_text(f"intro\n{report.BEGIN}\nold\n{report.END}\noutro\n")
    monkeypatch.setattr(report, "run_model", lambda model, out, quick: (_with_quality(_results()), _FakeStudy()))
    (tmp_path / "res").mkdir()
    text = report.regenerate(readme, tmp_path / "res", models=("tiny-flux",))
    assert "| KID x10^3 | ΔKID vs full | caption colour / shape (64 samples) |" in text
    assert "| jano / flux-dev |" in text and "| 70.0 ± 26.0 | +25.0 ± 2.0 | 100% / 80% |" in text
    assert "ΔKID x10^3 vs full, colour / shape" in text and "- KID x 10^3 of jit/jit-4x" in text
    plan = report.PLANS["tiny-flux"]
    assert (plan.bench_config("tiny-flux", 6).quality, plan.bench_config("tiny-flux", 2, 4).quality) == (64, 4)
    assert plan.bench_config("tiny-flux", 6).quality_scope == "matched"
