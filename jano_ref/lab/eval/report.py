"""``jano report``: run the README's benchmarks and analyses, then rewrite the README's results section.

    jano report                      # both tiny models, every method; resumable (bench cells are kept)
    jano report --quick --out /tmp/r # 2 prompts, prints the section, leaves the README alone (a smoke run)

Everything in the section comes from files this writes under ``--out`` (default ``notebooks/results/``):
``MODEL/results.json|md``, ``MODEL/pareto.png`` (``jano bench``) and ``MODEL/study.json|md``, ``MODEL/fig8.png``
(``jano study``).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

from .analysis import run_study, study_markdown, write_study
from ...baselines import BASELINES
from ...combined import COMBINATIONS
from .bench import Bench, BenchConfig
from .tables import TARGETS, best_near, matched_table, results_markdown, run_label

BEGIN = "<!-- results:begin (written by `jano report`; edits here are overwritten) -->"
END = "<!-- results:end -->"

# Unfilled template fields in markdown prose: an ALL_CAPS_NAME with an underscore (a placeholder such as WAN_STATUS
# left for a number), a {field} of a str.format / f-string that was never formatted, or a TODO-style marker. Code
# spans and fenced blocks are skipped: real constants and environment variables are written there, in backticks.
_CODE = re.compile(r"```.*?```|`[^`\n]*`", re.S)
_PLACEHOLDER = re.compile(r"\b[A-Z][A-Z0-9]*(?:_[A-Z0-9]+)+\b|\{[A-Za-z_][^{}\n]*\}|\b(?:TODO|TBD|FIXME|XXX)\b")


def placeholders(markdown: str) -> list[str]:
    """The unfilled template fields in ``markdown`` outside code (see ``_PLACEHOLDER``); [] when there are none."""
    return _PLACEHOLDER.findall(_CODE.sub("", markdown))


@dataclass(frozen=True)
class ModelPlan:
    """What the README reports for one model: Jano's official preset, (Flux) the paper's fastest Appendix B row and
    the matched-compute 2x variant; JiT's two presets with the paper's own comparison, full compute at 12 and 7
    steps (JiT §5.1); every caching baseline over its knob (``jano bench --sweep``); Jano with TeaCache and with the
    first-block cache on top, over the step cache's knob at the first preset. ``quality``: prompts of the bench's
    quality pass (KID, caption agreement), over the runs the tables show (``--quality-scope matched``)."""

    presets: tuple[str, ...]
    prompts: int
    study_prompts: int
    quality: int
    jit_presets: tuple[str, ...] = ("jit-4x", "jit-7x")
    jit_steps: tuple[str, ...] = ("12", "7")

    def bench_config(self, model: str, prompts: int, quality: int | None = None) -> BenchConfig:
        return BenchConfig(model=model, methods=("full", "jano", "random-levels", "jit", *BASELINES, "steps",
                                                 "jano+teacache", "jano+fbcache"),
                           presets=self.presets + self.jit_presets + self.jit_steps, prompts=prompts, sweep=True,
                           quality=self.quality if quality is None else quality, quality_scope="matched")


PLANS = {
    # quality 64: at 64 samples the paired KID difference of a run from the full run has a spread of ~2-10 x 10^-3
    # (steps 12 / steps 4 on tiny-flux), against differences of ~5-40 between the methods that matter.
    "tiny-flux": ModelPlan(("flux-dev", "flux-b3", "flux-dev-2x"), prompts=6, study_prompts=24, quality=64),
    # Fewer rows and prompts: a tiny-wan generation costs ~4x a tiny-flux one on CPU.
    "tiny-wan": ModelPlan(("wan", "wan-2x"), prompts=3, study_prompts=8, quality=32),
}
QUICK_QUALITY = 4  # --quick: the smallest quality pass the estimator accepts (a smoke run)


def _run(results: dict, method: str, preset: str) -> dict | None:
    return next((r for r in results["runs"] if r["method"] == method and r["preset"] == preset), None)


def target_lines(model: str, results: dict, default_preset: str) -> list[str]:
    """The issue's targets, checked on the measured numbers (stated, never asserted)."""
    lines = []
    jano = _run(results, "jano", default_preset)
    if jano and jano["speedup"]:
        ratio = jano["speedup"] / jano["ideal_speedup"]
        lines.append(f"- measured / ideal speedup, jano/{default_preset} at {results['steps']} steps: "
                     f"{jano['speedup']:.2f}x / {jano['ideal_speedup']:.2f}x = {ratio:.2f} "
                     f"({'meets' if ratio >= 0.9 else 'misses'} the 0.9 target)")
    for r in results["runs"]:
        if r["method"] != "jano":
            continue
        for other, what in (("random-levels", "random level maps of the same fractions (§6.5)"),
                            ("steps", "uniform step reduction at the same compute")):
            o = _run(results, other, r["preset"])
            if o and o["psnr"] is not None and r["psnr"] is not None:
                verdict = "beats" if r["psnr"] > o["psnr"] else "does not beat"
                lines.append(f"- jano/{r['preset']} PSNR {r['psnr']:.2f} dB {verdict} {what}: {o['psnr']:.2f} dB")
    return lines


def psnr_verdict(target: float, method: str, run: dict, other_method: str, other: dict) -> str:
    """One reading line: whether ``run`` keeps a higher PSNR than ``other`` near ``target`` measured speedup."""
    verdict = "keeps a higher" if run["psnr"] > other["psnr"] else "does not keep a higher"
    return (f"- at ~{target:g}x, {method}/{run['preset']} ({run['speedup']:.2f}x, {run['psnr']:.2f} dB) {verdict} "
            f"PSNR than {other_method}/{other['preset']} ({other['speedup']:.2f}x, {other['psnr']:.2f} dB)")


def baseline_lines(results: dict, target: float = 2.0, tolerance: float = 0.15) -> list[str]:
    """Issue target: at ~2x measured speedup, does Jano keep a higher PSNR than every caching baseline?"""
    jano = best_near(results, "jano", target, tolerance)
    if jano is None:
        return [f"- no Jano run measured within {tolerance:.0%} of {target:g}x, so the ~{target:g}x comparison has "
                "no Jano entry"]
    lines = []
    for method in BASELINES:
        other = best_near(results, method, target, tolerance)
        if other is None:
            lines.append(f"- {method}: no setting measured within {tolerance:.0%} of {target:g}x")
            continue
        lines.append(psnr_verdict(target, "jano", jano, method, other))
    return lines


def _kid(run: dict) -> str:
    if run["kid_vs_full"] is None:
        return f"{1e3 * run['kid']:.1f}"
    return f"{1e3 * run['kid']:.1f} (vs full {1e3 * run['kid_vs_full']:+.1f} ± {1e3 * run['kid_vs_full_std']:.1f})"


def quality_lines(model: str, results: dict) -> list[str]:
    """JiT's claim in our measure (KID at jit-Nx against full compute at the same step count), and where the fidelity
    ranking (PSNR against the full run) and the quality ranking (KID) of the matched table's runs disagree."""
    if not results.get("quality"):
        return []
    plan = PLANS[model]
    lines = []
    for jit_preset, steps in zip(plan.jit_presets, plan.jit_steps):
        jit, uniform = _run(results, "jit", jit_preset), _run(results, "steps", steps)
        if jit and uniform and jit["kid"] is not None and uniform["kid"] is not None:
            gap = 1e3 * (jit["kid"] - uniform["kid"])
            verdict = "is no worse than" if gap <= 0 else f"is worse by {gap:.1f} x 10^-3 than"
            lines.append(f"- KID x 10^3 of jit/{jit_preset}, {_kid(jit)}, {verdict} uniform step reduction at equal "
                         f"compute, steps ({steps}): {_kid(uniform)}")
    for target in TARGETS:
        picked = [best_near(results, m, target) for m in dict.fromkeys(r["method"] for r in results["runs"])
                  if m != "full"]
        picked = [r for r in picked if r is not None and r["kid"] is not None]
        if len(picked) < 2:
            continue
        by_psnr = sorted(picked, key=lambda r: -r["psnr"])
        by_kid = sorted(picked, key=lambda r: r["kid"])
        # A pair disagrees when the higher-PSNR run's KID is higher by more than twice the larger paired spread (at
        # 64 samples that is also about what re-drawing the noise moves a KID difference on tiny-flux: ~4 x 10^-3).
        spread = lambda r: r["kid_vs_full_std"] or 0.0
        clashes = [f"{run_label(a)} > {run_label(b)} by PSNR, but its KID is higher by {1e3 * (a['kid'] - b['kid']):.1f}"
                   for i, a in enumerate(by_psnr) for b in by_psnr[i + 1:]
                   if a["kid"] - b["kid"] > 2 * max(spread(a), spread(b))]
        lines.append(f"- ~{target:g}x, by PSNR: {' > '.join(run_label(r) for r in by_psnr)}; by KID (lower is "
                     f"better): {' < '.join(run_label(r) for r in by_kid)}; "
                     + ("the two rankings agree within twice the paired spread" if not clashes else
                        "they disagree: " + "; ".join(clashes)))
    return lines


def combination_lines(results: dict, targets: tuple[float, ...] = (2.0, 3.0), tolerance: float = 0.15) -> list[str]:
    """Issue target: at ~3x (and ~2x) measured speedup, does Jano with a step cache keep a higher PSNR than plain
    TeaCache?"""
    lines = []
    for target in targets:
        tea = best_near(results, "teacache", target, tolerance)
        for method in COMBINATIONS:
            mine = best_near(results, method, target, tolerance)
            if mine is None or tea is None:
                continue
            lines.append(psnr_verdict(target, method, mine, "teacache", tea))
    return lines


def model_section(model: str, results: dict, study, out: Path, readme_dir: Path) -> str:
    rel = lambda p: Path(p).resolve().relative_to(readme_dir.resolve()).as_posix()  # noqa: E731
    default = PLANS[model].presets[0]
    main = dict(results, runs=[r for r in results["runs"] if r["method"] not in (*BASELINES, *COMBINATIONS)])
    return "\n".join([
        f"### {model}",
        "",
        results_markdown(main),
        "Targets:",
        "",
        *target_lines(model, results, default),
        "",
        f"Every method at matched *measured* speedup (the best PSNR among its settings within 15 % of the target; "
        f"each baseline's full sweep is in [{out.name}/results.md]({rel(out / 'results.md')})):",
        "",
        matched_table(results),
        *baseline_lines(results),
        *quality_lines(model, results),
        *combination_lines(results),
        "",
        study_markdown(study),
        f"![{model} Pareto]({rel(out / 'pareto.png')}) ![{model} Fig. 8]({rel(out / 'fig8.png')})",
        "",
    ])


def run_model(model: str, out: Path, *, quick: bool) -> tuple[dict, object]:
    plan = PLANS[model]
    prompts, study_prompts = (2, 2) if quick else (plan.prompts, plan.study_prompts)
    results = Bench(plan.bench_config(model, prompts, QUICK_QUALITY if quick else None), out).run()
    study = run_study(model, prompts=study_prompts)
    write_study(study, out)
    return results, study


def regenerate(readme: str | Path, out: str | Path = "notebooks/results", *, quick: bool = False,
               models: tuple[str, ...] = tuple(PLANS)) -> str:
    """Run ``models`` and rewrite their subsections of the README's results section; the subsections of models not
    run this time are kept as they are (so one model can be re-run alone)."""
    readme, out = Path(readme), Path(out)
    if not quick:
        _read_with_markers(readme)  # fail before a long run, not after it
    sections = {}
    for model in models:
        results, study = run_model(model, out / model, quick=quick)
        sections[model] = model_section(model, results, study, out / model, readme.parent)
    if quick:
        body = "\n".join(sections.values())
        print(body)
        return body
    text = _read_with_markers(readme)  # again: a run takes tens of minutes, and the README may be edited meanwhile
    head, rest = text.split(BEGIN, 1)
    old, tail = rest.split(END, 1)
    kept = split_sections(old)
    order = list(PLANS) + [m for m in kept if m not in PLANS]
    body = "\n".join(sections.get(m) or kept[m] for m in order if m in sections or m in kept)
    new = f"{head}{BEGIN}\n\n{body}\n{END}{tail}"
    if placeholders(new):
        raise ValueError(f"the rewritten {readme} would keep unfilled placeholders {placeholders(new)}; fill them in "
                         f"(results section: the writer in {__name__}; elsewhere: by hand) and run again")
    readme.write_text(new)
    print(f"rewrote the {', '.join(sections)} results in {readme} from {out}")
    return body


def _read_with_markers(readme: Path) -> str:
    text = readme.read_text()
    if BEGIN not in text or END not in text:
        raise ValueError(f"{readme} has no results markers; add the two lines\n{BEGIN}\n{END}\nwhere the section goes")
    outside = text.split(BEGIN, 1)[0] + text.split(END, 1)[1]  # the section itself is rewritten
    if placeholders(outside):
        raise ValueError(f"{readme} holds unfilled placeholders {placeholders(outside)} outside the results section; "
                         "replace them with the real text first")
    return text


def split_sections(body: str) -> dict[str, str]:
    """The per-model subsections ("### MODEL" up to the next one) of a results section's text."""
    out: dict[str, str] = {}
    for chunk in ("\n" + body).split("\n### ")[1:]:
        name = chunk.split("\n", 1)[0].strip()
        out[name] = ("### " + chunk).strip("\n") + "\n"
    return out
