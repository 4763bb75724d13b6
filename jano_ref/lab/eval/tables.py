"""What a bench's ``results.json`` becomes for people: the results table, each method's PSNR / LPIPS frontier against
measured speedup (``pareto.png``), and the best run of every method near a target speedup (the matched table)."""

from __future__ import annotations

import math

import numpy as np

from ..plot import xy_chart


def _fmt(value, spec: str) -> str:
    return "-" if value is None or (isinstance(value, float) and math.isnan(value)) else format(value, spec)


def run_label(run: dict) -> str:
    if run["method"] == "steps":
        return f"steps ({run['params']['steps']})"
    return run["method"] if run["preset"] == "-" else f"{run['method']} / {run['preset']}"


def kid_text(run: dict, key: str = "kid") -> str:
    """KID x 10^3 (``key`` "kid") or its difference from the full run's (``"kid_vs_full"``) with its spread over
    subsets, e.g. "41.2 ± 26.5"; "-" if not measured."""
    if run.get(key) is None:
        return "-"
    return f"{1e3 * run[key]:+.1f} ± {1e3 * run[key + '_std']:.1f}" if key == "kid_vs_full" else \
        f"{1e3 * run[key]:.1f} ± {1e3 * run[key + '_std']:.1f}"


def agreement_text(run: dict) -> str:
    """Caption colour / shape agreement of the quality pass's samples, e.g. "100% / 86%"; "-" if not measured."""
    if run.get("caption_colour_n") is None:
        return "-"
    return f"{run['caption_colour_n']:.0%} / {run['caption_shape_n']:.0%}"


def quality_note(results: dict) -> str:
    """One sentence on how KID and the N-prompt agreement were measured (empty without a quality pass)."""
    q = results.get("quality")
    if not q:
        return ""
    sets = f", in {q['sets']} sets of {q['prompts']}" if q["sets"] > 1 else ""
    return (f"KID x 10^3 (unbiased, polynomial kernel, on LPIPS-AlexNet features) of {q['samples']} untimed samples "
            f"({q['samples']} evaluation prompts{sets}, one noise seed each) against {q['reference']} renders of an "
            f"independent draw of the data generator's scenes: mean ± std over {q['subsets']} subsets of "
            f"{q['subset_size']}. The same "
            f"estimator on {q['samples']} other renders (its zero) gives {1e3 * q['data_kid']:.1f} ± "
            f"{1e3 * q['data_kid_std']:.1f}; the full run's own KID is the floor a faster run can expect. ΔKID is a "
            f"run's KID minus the full run's on the same subsets (same prompts, noise and reference pictures), far less "
            f"noisy than either. Caption colour / shape agreement over the same {q['samples']} samples.")


def results_markdown(results: dict) -> str:
    """The table of results.md (also used for the README). With a quality pass (``results["quality"]``) it gains a
    KID column, and the caption column counts the quality pass's samples instead of the bench's few prompts."""
    q = results.get("quality")
    caption = f"caption colour / shape ({q['samples']} samples)" if q else "caption colour / shape"
    lines = [
        f"{results['model']} on {results['device']} ({results['dtype']}, {results['threads']} threads), "
        f"{results['steps']} steps, {len(results['prompts'])} prompts x {len(results['seeds'])} seed(s); latency = "
        f"median of {results['repeats']} timed runs after {results['warmup']} warm-up, median over prompts.",
        *(["", quality_note(results)] if q else []),
        "",
        "| run | latency (s) | speedup | ideal | PSNR (dB) | SSIM | LPIPS | tokens computed | "
        + ("KID x10^3 | ΔKID vs full | " if q else "") + f"{caption} |",
        "|---|---|---|---|---|---|---|---|---|" + ("---|---|" if q else ""),
    ]
    for r in results["runs"]:
        agreement = agreement_text(r) if q else f"{r['caption_colour']:.0%} / {r['caption_shape']:.0%}"
        lines.append(
            f"| {run_label(r)} | {_fmt(r['latency_s'], '.3f')} | {_fmt(r['speedup'], '.2f')}x | "
            f"{_fmt(r['ideal_speedup'], '.2f')}x | {_fmt(r['psnr'], '.2f')} | {_fmt(r['ssim'], '.3f')} | "
            f"{_fmt(r['lpips'], '.3f')} | {_fmt(r['token_fraction'], '.0%')} | "
            + (f"{kid_text(r)} | {kid_text(r, 'kid_vs_full')} | " if q else "") + f"{agreement} |"
        )
    return "\n".join(lines) + "\n"


def frontier(points: list[tuple[float, float]], *, higher_is_better: bool = True) -> list[tuple[float, float]]:
    """The (speedup, quality) points no other point beats on both axes, by increasing speedup."""
    sign = 1 if higher_is_better else -1
    best = []
    for x, y in sorted(points, key=lambda p: (-p[0], -sign * p[1])):  # fastest first
        if not best or sign * y > sign * best[-1][1]:
            best.append((x, y))
    return best[::-1]


def pareto_chart(results: dict) -> np.ndarray:
    """PSNR (top) and LPIPS (bottom) against measured speedup: each method's frontier (full is the reference)."""
    panels = []
    for key, label, higher in (("psnr", "PSNR vs full (dB)", True), ("lpips", "LPIPS vs full", False)):
        points: dict[str, list[tuple[float, float]]] = {}
        for r in results["runs"]:
            if r[key] is not None and r["speedup"] is not None:
                points.setdefault(r["method"], []).append((r["speedup"], r[key]))
        series = {m: tuple(map(list, zip(*frontier(p, higher_is_better=higher)))) for m, p in points.items()}
        if not series:
            series = {"(no accelerated runs yet)": ([1.0], [float("nan")])}
        panels.append(xy_chart(series, title=f"{results['model']}: {key.upper()} vs measured speedup, frontier per "
                               f"method ({results['steps']} steps)", xlabel="measured speedup (x)", ylabel=label))
    return np.concatenate(panels, axis=0)


TARGETS = (1.5, 2.0, 3.0)  # the matched table's target speedups


def best_near(results: dict, method: str, target: float, tolerance: float = 0.15) -> dict | None:
    """The method's run with the best PSNR among those whose *measured* speedup is within ``tolerance`` (relative)
    of ``target``; None if no run of it got there."""
    near = [r for r in results["runs"] if r["method"] == method and r["speedup"] is not None
            and r["psnr"] is not None and abs(r["speedup"] / target - 1) <= tolerance]
    return max(near, key=lambda r: r["psnr"], default=None)


def matched_runs(results: dict, targets: tuple[float, ...] = TARGETS, tolerance: float = 0.15) -> set[tuple[str, str]]:
    """(method, preset) of every run ``matched_table`` shows."""
    methods = dict.fromkeys(r["method"] for r in results["runs"])
    picked = (best_near(results, m, t, tolerance) for m in methods for t in targets)
    return {(r["method"], r["preset"]) for r in picked if r is not None}


def matched_table(results: dict, targets: tuple[float, ...] = TARGETS, tolerance: float = 0.15) -> str:
    """Markdown: per method and target speedup, ``best_near``; "-" where no run of that method got there."""
    methods = [m for m in dict.fromkeys(r["method"] for r in results["runs"]) if m != "full"]
    q = results.get("quality")
    what = "PSNR / SSIM / LPIPS" + (", ΔKID x10^3 vs full, colour / shape" if q else "")
    lines = ["| method | " + " | ".join(f"~{t:g}x: run, speedup, {what}" for t in targets) + " |",
             "|---|" + "---|" * len(targets)]
    for m in methods:
        cells = []
        for t in targets:
            r = best_near(results, m, t, tolerance)
            if r is None:
                cells.append("-")
                continue
            name = run_label(r).split(" / ", 1)[-1]  # the preset, or "steps (N)"
            text = f"{name}, {r['speedup']:.2f}x, {r['psnr']:.2f} / {_fmt(r['ssim'], '.3f')} / {_fmt(r['lpips'], '.3f')}"
            if q:
                text += f", {kid_text(r, 'kid_vs_full')}, {agreement_text(r)}"
            cells.append(text)
        lines.append(f"| {m} | " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"
