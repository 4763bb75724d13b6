"""A method against full compute on one setup: what ``jano generate`` runs, writes and prints, for any pipeline
(the tiny models, the official ones, a diffusers pipeline).

    setup = jano_ref.pipelines.real.prepare("flux-dev", "a cat", weights=DIR)  # or pipelines.diffusers.prepare(pipe)
    result = compare(setup, "jano", label="flux-dev", steps=50)
    print(result.report)            # the lines `jano generate` prints
    result.pixels["jano"]           # [3, F, H, W] in [0, 1]
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import numpy as np
import torch
from torch import Tensor

from ..generate import JANO_METHODS, Generation, cost_against_full, generate
from ..jano.config import PRESETS as JANO_PRESETS
from ..jit import PRESETS as JIT_PRESETS
from .imageio import pixels_to_uint8, write_gif, write_mp4, write_png
from .plot import image_grid, level_overlay
from .progress import Progress


@dataclass
class Comparison:
    """The runs of ``compare``: last generation and median denoising seconds per method, decoded pixels, the
    summary (``jano generate``'s summary.json fields), the printed lines and the files written."""

    method: str
    preset: str | None
    runs: dict[str, Generation]
    median: dict[str, float]
    pixels: dict[str, Tensor]
    summary: dict[str, Any] = field(default_factory=dict)
    lines: list[str] = field(default_factory=list)
    files: list[Path] = field(default_factory=list)

    @property
    def report(self) -> str:
        return "\n".join(self.lines)


def method_config(method: str, preset: str | None, model: str, jano_default: str):
    """(preset name, config) of ``method``; the default preset is the model's own (ValueError on a wrong name)."""
    from .. import combined
    from ..baselines import BASELINES, default_preset, resolve

    if method == "full":
        return None, None
    if method in combined.COMBINATIONS:
        try:
            return combined.resolve(method, preset, model, jano_default)
        except (KeyError, ValueError) as error:
            raise ValueError(f"--preset: {error.args[0]}") from None
    if method in BASELINES:
        try:
            return preset or default_preset(method, model), resolve(method, preset, model)
        except (KeyError, ValueError) as error:
            raise ValueError(f"--preset: {error.args[0]}") from None
    presets = JIT_PRESETS if method == "jit" else JANO_PRESETS
    preset = preset or ("jit-4x" if method == "jit" else jano_default)
    if preset not in presets:
        raise ValueError(f"--preset {preset} is not a {method} preset; choose one of {', '.join(presets)}")
    return preset, preset


def time_methods(setup, methods: list[str], preset, config, *, steps: int, warmup: int, repeats: int,
                 device, label: str, solver: str = "euler", cache=None, group=None):
    """Each method's last generation, its median denoising-loop seconds (``warmup`` untimed, ``repeats`` timed), the
    peak memory of its first run (``timing.PeakMemory``, MiB) and, split over ranks (``group``, a
    ``runtime.parallel.Group``), every rank's bytes sent per step (else empty): (runs, median, peaks, wire).
    JiT brings its own step count and Beta-warped timesteps (sigmas None); full keeps ``steps``. ``solver`` steps
    full compute, Jano and JiT (the baselines run Euler); ``cache`` (Jano's ``CacheOptions``) goes to the Jano run."""
    from ..runtime.timing import timed_runs

    sigmas = {m: None if m == "jit" else setup.sigmas for m in methods}
    counts = {m: JIT_PRESETS[preset].num_steps if m == "jit" else steps for m in methods}
    device = torch.device(device)
    meter = getattr(setup.field, "meter", None)
    runs, seconds, peaks, wire = {}, {}, {}, {}
    with Progress((warmup + repeats) * sum(counts.values()), f"{label} sampling",
                  enabled=group is None or group.rank == 0) as bar:
        for method in methods:
            def once(method=method):
                if meter is not None:
                    meter.reset()  # count the last run only
                return generate(setup.field, setup.noise, sigmas[method], method=method, config=config,
                                callback=lambda info: bar.update(note=method), solver=_solver_for(method, solver),
                                cache=cache if method in JANO_METHODS else None)
            runs[method], seconds[method], peaks[method] = timed_runs(once, warmup, repeats, device)
            if group is not None:
                from ..runtime.parallel import gather_per_step

                wire[method] = gather_per_step(meter, group)
    return runs, {m: float(np.median(s)) for m, s in seconds.items()}, peaks, wire


def _solver_for(method: str, solver: str) -> str:
    """The caching baselines step with Euler only (``generate`` refuses another solver for them)."""
    from ..baselines import BASELINES

    return "euler" if method in BASELINES else solver


def memory_line(runs: dict, peaks: dict, device) -> str:
    """Each method's peak memory (``timing.PeakMemory`` over its first run) and Jano's cache size."""
    what = "CUDA allocator peak" if torch.device(device).type == "cuda" else "peak RSS"
    parts = []
    for method, run in runs.items():
        peak = "n/a" if peaks[method] is None else f"{peaks[method]:.1f} MiB"
        cache = getattr(run.report, "cache", None)
        parts.append(f"{method} {peak}" + ("" if cache is None else f" ({cache.describe()})"))
    return f"peak memory ({what} above the start of the first run): " + "; ".join(parts)


def timing_line(label: str, steps: int, tokens: int, repeats: int, warmup: int, median: dict[str, float]) -> str:
    return (f"{label}: {steps} steps over {tokens} tokens; denoising loop median of {repeats} runs after {warmup} "
            "warm-up: " + ", ".join(f"{m} {s:.3f} s" for m, s in median.items()))


def compare_with_full(setup, method: str, preset, report, pixels: dict[str, Tensor], median: dict[str, float], *,
                      steps: int, out: Path | None, view_scale: int, max_cache_mb: float | None = None,
                      ) -> tuple[list[str], dict[str, Any], list[Path]]:
    """What the method did and how it compares with full compute: (printed lines, summary fields, files written)."""
    from .eval.metrics import frame_metrics

    lines, files = [], []
    quality = frame_metrics(pixels[method].transpose(0, 1), pixels["full"].transpose(0, 1))
    if method in JANO_METHODS:
        if out is not None and report.token_levels is not None:  # None when no step follows Jano's warm-up
            files.append(write_png(out / "levels.png",
                                   level_map_picture(setup, pixels[method], report.token_levels, view_scale)))
        lines.append(report.plan.describe(setup.field.token_cost()) if report.plan is not None
                     else "no plan (too few steps)")
        if max_cache_mb is not None and report.cache is not None:
            lines.append(f"--max-cache-mb {max_cache_mb:g}: {report.promoted_blocks} frozen block(s) made active to "
                         f"fit; the cache holds {report.cache.resident / 2**20:.2f} MiB on the device")
        if report.decisions:  # a step cache on top (jano+teacache, ...)
            counts = Counter(report.decisions)
            lines.append(f"step cache ({preset.split('@', 1)[1]}): "
                         + ", ".join(f"{n} steps {d}" for d, n in counts.items())
                         + " (cond branch; only steps that compute the active tokens alone may reuse)")
    elif method == "jit":
        lines.append(f"JiT {preset}: {len(report.token_counts)} steps, anchors per step {report.token_counts}")
    else:
        counts = Counter(report.decisions)
        lines.append(f"{method} ({preset}): " + ", ".join(f"{n} steps {d}" for d, n in counts.items())
                     + " (cond branch)")
    ideal, fraction = cost_against_full(report, steps, setup.noise.shape[1])
    summary = dict(measured_speedup=median["full"] / median[method], ideal_speedup=ideal, token_fraction=fraction,
                   **quality)
    lines.append(f"{method} ({preset}) vs full: measured speedup {summary['measured_speedup']:.2f}x, ideal "
                 f"{summary['ideal_speedup']:.2f}x; PSNR {quality['psnr']:.2f} dB, SSIM {quality['ssim']:.4f}, "
                 f"LPIPS {quality['lpips']:.4f}")
    return lines, summary, files


def compare(setup, method: str = "jano", preset: str | None = None, *, label: str, steps: int | None = None,
            warmup: int = 1, repeats: int = 3, device=None, out: str | Path | None = None, view_scale: int = 1,
            fps: int | None = None, echo: Callable[[str], None] | None = None, solver: str | None = None,
            cache=None) -> Comparison:
    """Run ``method`` and full compute on ``setup`` (same noise), decode both, and compare them as ``jano generate``
    does. ``label`` names the model in the report; ``out`` (optional) receives the pictures (PNG; GIF, PNG frames
    and, with ``fps``, MP4 for video) and Jano's level map; ``echo`` gets each report line as it is made."""
    steps = len(setup.sigmas) - 1 if steps is None else steps
    device = setup.noise.device if device is None else device
    jano_default = getattr(setup.spec, "jano_preset", "flux-dev")
    preset, config = method_config(method, preset, label, jano_default)
    methods = ["full"] if method == "full" else ["full", method]
    solver = solver or getattr(setup, "solver", "euler")
    runs, median, peaks, _ = time_methods(setup, methods, preset, config, steps=steps, warmup=warmup,
                                          repeats=repeats, device=device, label=label, solver=solver, cache=cache)
    out = None if out is None else Path(out)
    pixels = {m: setup.decode(r.tokens) for m, r in runs.items()}
    files = [] if out is None else [f for m in methods for f in write_picture(out, m, pixels[m], view_scale, fps)]
    result = Comparison(method, preset if method != "full" else None, runs, median, pixels, files=files)
    result.summary["denoise_seconds_median"] = median
    emit = echo or (lambda line: None)
    line = timing_line(label, steps, setup.noise.shape[1], repeats, warmup, median)
    result.lines.append(line)
    emit(line)
    line = memory_line(runs, peaks, device)
    result.lines.append(line)
    emit(line)
    result.summary["peak_mem_mb"] = peaks
    if method != "full":
        lines, summary, more = compare_with_full(setup, method, preset, runs[method].report, pixels, median,
                                                 steps=steps, out=out, view_scale=view_scale,
                                                 max_cache_mb=None if cache is None else cache.max_cache_mb)
        result.lines += lines
        for line in lines:
            emit(line)
        result.summary.update(summary)
        result.files += more
    return result


def write_picture(out: Path, stem: str, pixels: Tensor, scale: int, fps: int | None = None) -> list[Path]:
    """pixels [3, T, H, W]: a PNG for an image; a GIF plus one PNG per frame for a video (and an MP4 with ``fps``)."""
    frames = [pixels_to_uint8(pixels[:, t], scale) for t in range(pixels.shape[1])]
    if len(frames) == 1:
        return [write_png(out / f"{stem}.png", frames[0])]
    files = [write_gif(out / f"{stem}.gif", frames, duration_ms=250 if fps is None else round(1000 / fps))]
    if fps is not None:
        files.append(write_mp4(out / f"{stem}.mp4", frames, fps=fps))
    return files + [write_png(out / f"{stem}_frame{t:02d}.png", f) for t, f in enumerate(frames)]


def level_map_picture(setup, pixels: Tensor, token_levels: Tensor, scale: int) -> np.ndarray:
    """The level of every token over the picture (every frame side by side for video)."""
    t, h, w = setup.field.token_grid
    levels = token_levels.reshape(t, h, w).cpu().numpy()
    frame_of = lambda i: min(i * pixels.shape[1] // t, pixels.shape[1] - 1)  # noqa: E731
    tiles = [level_overlay(pixels_to_uint8(pixels[:, frame_of(i)], scale), levels[i], base=1) for i in range(t)]
    return tiles[0] if t == 1 else image_grid(tiles, cols=t, labels=[f"frame {i}" for i in range(t)])
