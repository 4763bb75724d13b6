"""``jano bench``: every method on the same prompts and seeds, with one timer and one metric code path.

    jano bench --model tiny-flux --methods full,jano,random-levels,steps --presets flux-dev --prompts 8 --out bench/

Methods (a run is a method and a preset):

* ``full``           every token at every step (the reference; speedup 1).
* ``jano``           Jano with a named preset (``jano_ref.jano.config.PRESETS``).
* ``random-levels``  Jano's schedule, but the block levels of each generation are shuffled at random: the same
                     fractions of static / moderate / active blocks in the wrong places (Jano §6.5 ablation).
* ``jit``            JiT with a named preset (``jano_ref.jit.PRESETS``: its own step count and Beta-warped
                     timesteps); speedup and quality are against the same 50-step full run (JiT §5.1).
* ``teacache``, ``fbcache``, ``pab``, ``toca``, ``ras``
                     the caching baselines (``jano_ref.baselines``) with a named preset or a sweep label
                     ``knob=value``; ``--sweep`` runs each over its knob (``SWEEP`` in its module).
* ``steps``          uniform step reduction: full compute with fewer steps. Preset ``P`` (a Jano preset) takes
                     round(steps / ideal speedup of jano/P) steps, i.e. the same compute as Jano; an integer
                     preset takes that many steps.
* ``jano+teacache``, ``jano+fbcache``, ``jano+pab``
                     Jano with a step cache on top (``jano_ref.combined``), at each Jano preset with the step
                     cache's default for the model, or a label ``JANO@STEP`` (``flux-dev@rel_l1_thresh=0.05``);
                     ``--sweep`` runs the step cache's knob over its ``SWEEP`` at the first Jano preset.

Timing covers the denoising loop only (text encoding and decoding excluded, as the paper does): ``--warmup``
untimed runs, then the median of ``--repeats`` timed runs, per prompt and seed. The runs of one prompt and seed
are timed *interleaved*: every round times each of them once, full compute included, so a slow stretch of the
machine (other load, clock changes) lands on all of them alike instead of on whichever ran last. A cell keeps
the full run's timings from its own rounds; its speedup is their median over its own median, and a run's speedup
is the median of its cells' speedups (its latency, the median of its cells' medians). Quality (PSNR, SSIM, LPIPS
against the full run on the same prompt and seed, in pixel space, per frame for video) is a mean over prompts
and seeds.

The cells of one (prompt, seed) are written atomically to ``DIR/cells/`` when its rounds finish; re-running
skips the cells that exist (re-timing full alongside the missing ones), so an interrupted bench resumes.
``DIR/results.json``, ``results.md`` and ``pareto.png`` are rebuilt from the cells at the end of every invocation.

``--quality N`` adds a quality pass after the timed cells (``quality.py``): every run draws one untimed sample for each
of N evaluation prompts (K x N with ``--quality-sets K``); its KID against renders of the data generator, its KID
difference from the full run on paired subsets, and its caption agreement over those samples go into
``results.json`` (``kid``, ``kid_std``, ``kid_sets``, ``kid_vs_full``, ``kid_vs_full_std``, ``quality_samples``,
``caption_colour_n``, ``caption_shape_n``; how they were measured in the top-level ``quality``) and into the tables.
``--quality-scope matched`` limits the pass to the runs the tables show: every run that is not a caching baseline or
a jano+ combination, and each baseline's and combination's runs in the matched-speedup table (the others get None).
Its cells are written to ``DIR/quality/`` and resume the same way.
"""

from __future__ import annotations

import json
import statistics
from dataclasses import asdict, dataclass, field
from pathlib import Path

import torch
from safetensors.torch import load_file, save_file

from ... import baselines, combined
from ...jano.cache import CacheOptions
from ...jano.config import PRESETS as JANO_PRESETS
from ...jit import PRESETS as JIT_PRESETS
from ..tiny.data import caption_agreement
from ...generate import Generation, cost_against_full, generate
from ..imageio import write_png, write_text
from .metrics import LPIPS, frame_metrics
from . import quality as qp
from .distribution import alex_features
from ..progress import Progress
from .study import shuffled_levels
from .tables import matched_runs, matched_table, pareto_chart, results_markdown
from ...runtime.timing import interleaved_rounds, timed_runs
from ...pipelines.tiny import SPECS, load_model, prepare
from ..tiny.data import evaluation_scenes

BENCH_METHODS = ("full", "jano", "random-levels", "jit", *baselines.BASELINES, "steps", *combined.COMBINATIONS)
JANO_RUNS = ("jano", "random-levels", *combined.COMBINATIONS)  # the runs with Jano's plan and KV cache
QUALITY_SCOPES = ("all", "matched")


@dataclass
class BenchConfig:
    model: str = "tiny-flux"
    methods: tuple[str, ...] = ("full", "jano")
    presets: tuple[str, ...] | None = None  # Jano / JiT / baseline presets (default: the model's own)
    prompts: int = 8
    seeds: tuple[int, ...] = (0,)
    steps: int = 50
    warmup: int = 1
    repeats: int = 3
    device: str = "cpu"
    dtype: str = "float32"
    sweep: bool = False  # baselines: every value of their knob
    kv_cache_mode: str = "exact"  # Jano's KV cache (jano.cache.CacheOptions); the defaults leave old benches valid
    kv_offload: str | None = None
    max_cache_mb: float | None = None
    quality: int = 0  # prompts of the quality pass (KID, caption agreement); 0 = no quality pass
    quality_sets: int = 1  # sets of `quality` prompts each (all different): K x N samples per run
    quality_scope: str = "all"  # "all" runs, or "matched": the non-baseline runs and the baselines' matched-table runs

    def __post_init__(self) -> None:
        self.cache_options()  # validates the cache settings
        unknown = [m for m in self.methods if m not in BENCH_METHODS]
        if unknown:
            raise ValueError(f"unknown method(s) {unknown}; choose from {', '.join(BENCH_METHODS)}")
        if self.model not in SPECS:
            raise ValueError(f"unknown model {self.model!r}; choose one of {', '.join(SPECS)}")
        if self.repeats < 3:
            raise ValueError(f"repeats={self.repeats}: a median needs at least 3 timed runs")
        if self.quality and (self.quality < 4 or self.quality_sets < 1):
            raise ValueError(f"quality={self.quality} in {self.quality_sets} set(s): the quality pass needs at least 4 "
                             "prompts (KID subsets hold half the samples) and one set; quality=0 turns it off")
        if self.quality_scope not in QUALITY_SCOPES:
            raise ValueError(f"quality_scope={self.quality_scope!r}; choose one of {', '.join(QUALITY_SCOPES)}")
        if self.presets is None:
            self.presets = (SPECS[self.model].jano_preset,) + (("jit-4x",) if "jit" in self.methods else ())
        for p in self.presets:
            if (p not in JANO_PRESETS and p not in JIT_PRESETS and not p.isdigit()
                    and not any(baselines.accepts(m, p) for m in baselines.BASELINES
                                if m in self.methods or "=" not in p)
                    and not any(combined.accepts(m, p) for m in combined.COMBINATIONS if m in self.methods)):
                raise ValueError(f"unknown preset {p!r}: use a Jano preset ({', '.join(JANO_PRESETS)}), a JiT preset "
                                 f"({', '.join(JIT_PRESETS)}), a baseline preset or knob=value label, for the "
                                 "steps method a step count, or for a jano+ method JANO_PRESET@STEP_CACHE_SETTING")

    def baseline_runs(self, method: str) -> list[str]:
        """A baseline's presets: the ones named for it, its sweep with ``sweep``, else its default for the model."""
        named = [p for p in self.presets if baselines.accepts(method, p)]
        swept = [label for label, _ in baselines.sweep(method, self.model)] if self.sweep else []
        chosen = named + [label for label in swept if label not in named]
        return chosen or [baselines.default_preset(method, self.model)]

    def combined_runs(self, method: str) -> list[str]:
        """A jano+ method's labels: the ones named for it, each Jano preset with the step cache's default for the
        model, and with ``sweep`` the step cache's knob over its values at the first Jano preset."""
        named = [p for p in self.presets if "@" in p and combined.accepts(method, p)]
        jano = [p for p in self.presets if p in JANO_PRESETS]
        chosen = named + [combined.resolve(method, p, self.model, p)[0] for p in jano]
        if self.sweep and jano:
            chosen += combined.sweep(method, jano[0], self.model)
        return list(dict.fromkeys(chosen))

    def cache_options(self) -> CacheOptions:
        return CacheOptions(self.kv_cache_mode, self.kv_offload, self.max_cache_mb)

    def identity(self) -> dict:
        """What a cell's numbers depend on (prompts, methods and presets may grow between invocations). Cache
        settings count only when they are not the defaults, so benches written before they existed stay valid."""
        cache = {k: v for k, v in dict(kv_cache_mode=self.kv_cache_mode, kv_offload=self.kv_offload,
                                       max_cache_mb=self.max_cache_mb).items() if v != getattr(BenchConfig, k)}
        return dict(model=self.model, steps=self.steps, warmup=self.warmup, repeats=self.repeats,
                    device=self.device, dtype=self.dtype, **cache)

    def runs(self) -> list[tuple[str, str]]:
        """(method, preset) pairs in execution order: full first, steps after the Jano runs it matches."""
        accepts = {"jano": JANO_PRESETS, "random-levels": JANO_PRESETS, "jit": JIT_PRESETS}
        out = []
        for m in (m for m in BENCH_METHODS if m in self.methods):
            if m == "full":
                out.append(("full", "-"))
            elif m == "steps":
                out += [(m, p) for p in self.presets if p in JANO_PRESETS or p.isdigit()]
            elif m in baselines.BASELINES:
                out += [(m, p) for p in self.baseline_runs(m)]
            elif m in combined.COMBINATIONS:
                out += [(m, p) for p in self.combined_runs(m)]
            else:
                out += [(m, p) for p in self.presets if p in accepts[m]]
        return out


# ---- cells --------------------------------------------------------------------------------------------------------


@dataclass
class Cell:
    method: str
    preset: str
    prompt_index: int
    seed: int
    prompt: str
    params: dict
    seconds: list[float]
    ideal_speedup: float
    token_fraction: float
    peak_mem_mb: float | None
    psnr: float | None = None
    ssim: float | None = None
    lpips: float | None = None
    caption: dict = field(default_factory=dict)
    full_seconds: list[float] | None = None  # the full run's timings from the same interleaved rounds
    cache_mb: float | None = None  # Jano's KV cache (MiB, every branch); 0 for full; None where not measured

    @property
    def latency_s(self) -> float:
        return statistics.median(self.seconds)

    @property
    def speedup(self) -> float | None:
        """Against the full run timed in the same rounds (None for cells written before pairing existed)."""
        return statistics.median(self.full_seconds) / self.latency_s if self.full_seconds else None


def cell_name(method: str, preset: str, prompt_index: int, seed: int) -> str:
    return f"{method}__{preset}__p{prompt_index:03d}__s{seed}"


class Bench:
    """Runs the cells of one ``BenchConfig`` into ``out`` (see the module docstring)."""

    def __init__(self, cfg: BenchConfig, out: str | Path, *, progress: bool = True) -> None:
        self.cfg, self.out, self.progress = cfg, Path(out), progress
        self.device = torch.device(cfg.device)
        self.dtype = getattr(torch, cfg.dtype)
        self.cells_dir = self.out / "cells"
        self.cells_dir.mkdir(parents=True, exist_ok=True)
        self._check_identity()
        self.spec = SPECS[cfg.model]
        self.scenes = evaluation_scenes(cfg.prompts, video=self.spec.is_video, frames=self.spec.frames or 1)
        self.prompts = [s.caption for s in self.scenes]
        self._model = None
        self._ideals: dict[tuple[str, int, int], float] = {}
        self._lpips = None
        self.quality_dir = self.out / "quality"

    def _check_identity(self) -> None:
        path = self.out / "bench.json"
        mine = self.cfg.identity()
        if path.exists():
            theirs = json.loads(path.read_text())
            if theirs != mine:
                raise ValueError(f"{self.out} holds cells of another bench {theirs}, not {mine}; use another --out "
                                 "or delete the folder to start over")
        else:
            write_text(path, json.dumps(mine, indent=1))

    @property
    def model(self):
        if self._model is None:
            self._model = load_model(self.cfg.model, device=self.device, dtype=self.dtype)
        return self._model

    @property
    def lpips_net(self) -> LPIPS:
        if self._lpips is None:
            self._lpips = LPIPS(device=self.device)
        return self._lpips

    def run(self) -> dict:
        self.check_budget()
        groups = [(i, s) for i in range(len(self.prompts)) for s in self.cfg.seeds]
        pending = {g: [(m, p) for m, p in self.cfg.runs() if not self._cell_path(m, p, *g).exists()] for g in groups}
        per_run = self.cfg.warmup + self.cfg.repeats  # generations per run and prompt; full always runs as reference
        total = sum((len(r) + (("full", "-") not in r)) * per_run for r in pending.values() if r)
        with Progress(total, f"bench {self.cfg.model} (generations)", enabled=self.progress) as bar:
            for (i, seed), runs in pending.items():
                if runs:
                    self._run_group(runs, i, seed, bar)
        if self.cfg.quality:
            self._quality_pass()
        return self.write_results()

    def check_budget(self) -> None:
        """A cache budget no Jano plan can meet is refused before any generation (every prompt has the same shape)."""
        from ...jano.sampler import cache_budget

        options = self.cfg.cache_options()
        jano = [combined.split_label(p)[0] for m, p in self.cfg.runs() if m in JANO_RUNS]
        if options.max_cache_mb is None or not jano:
            return
        setup = prepare(self.cfg.model, self.prompts[0], steps=self.cfg.steps, model=self.model)
        for preset in jano:
            cache_budget(setup.field, JANO_PRESETS[preset], options, self.device)

    # one prompt and seed: its runs, timed in interleaved rounds
    def _steps_for(self, method: str, preset: str) -> tuple[int, dict]:
        if method == "jit":
            return JIT_PRESETS[preset].num_steps, {}
        if method != "steps":
            return self.cfg.steps, {}
        if preset.isdigit():
            return int(preset), {"steps": int(preset)}
        ideal = statistics.fmean(self._jano_ideal(preset, i, s) for i in range(len(self.prompts)) for s in self.cfg.seeds)
        n = max(1, round(self.cfg.steps / ideal))
        return n, {"steps": n, "matches": f"jano/{preset}", "jano_ideal_speedup": ideal}

    def _jano_ideal(self, preset: str, i: int, seed: int) -> float:
        """jano/preset's ideal speedup on one prompt: from its cell, else from one untimed generation (the plan is
        deterministic, so the timed cell will report the same)."""
        cell = self.load_cell("jano", preset, i, seed)
        if cell is not None:
            return cell.ideal_speedup
        if (preset, i, seed) not in self._ideals:
            setup = prepare(self.cfg.model, self.prompts[i], steps=self.cfg.steps, seed=seed, model=self.model)
            run = generate(setup.field, setup.noise, setup.sigmas, method="jano", config=JANO_PRESETS[preset],
                           cache=self.cfg.cache_options())
            self._ideals[(preset, i, seed)] = run.report.ideal_speedup
        return self._ideals[(preset, i, seed)]

    def _job(self, method: str, preset: str, i: int, seed: int, prompt: str | None = None):
        """(setup, params, a no-argument function that generates once) for one run on prompt i (its text is the
        bench's prompt i unless ``prompt`` is given)."""
        steps, params = self._steps_for(method, preset)
        prompt = self.prompts[i] if prompt is None else prompt
        setup = prepare(self.cfg.model, prompt, steps=steps, seed=seed, model=self.model)
        kwargs: dict = dict(method="full")
        sigmas = setup.sigmas
        if method in baselines.BASELINES:
            config = baselines.resolve(method, preset, self.cfg.model)
            kwargs = dict(method=method, config=config)
            params = {k: v for k, v in asdict(config).items() if k != "source"}
        elif method == "jit":
            config = JIT_PRESETS[preset]
            kwargs = dict(method="jit", config=config)
            params = {k: v for k, v in asdict(config).items() if k != "source"}
            sigmas = None  # sample_jit then uses the preset's own Beta-warped steps
        elif method in combined.COMBINATIONS:
            _, config = combined.resolve(method, preset, self.cfg.model, self.spec.jano_preset)
            kwargs = dict(method=method, config=config, cache=self.cfg.cache_options())
            params = combined.params(config)
        elif method in ("jano", "random-levels"):
            config = JANO_PRESETS[preset]
            kwargs = dict(method="jano", config=config, cache=self.cfg.cache_options())
            params = {k: v for k, v in asdict(config).items() if k != "source"}
            if method == "random-levels":
                kwargs["level_map"] = lambda levels: shuffled_levels(
                    levels, torch.Generator(levels.device).manual_seed(1_000_003 * seed + i))

        def once() -> Generation:
            return generate(setup.field, setup.noise, sigmas, **kwargs)

        return setup, params, once

    def _run_group(self, runs: list[tuple[str, str]], i: int, seed: int, bar: Progress) -> list[Cell]:
        """Warm up every run of prompt i (and full, always: it is the timing reference), then ``repeats`` rounds
        that time each once, then score and write the cells."""
        timed = [("full", "-")] + [r for r in runs if r != ("full", "-")]
        jobs = {r: self._job(*r, i, seed) for r in timed}
        results: dict[tuple[str, str], Generation] = {}
        peaks: dict[tuple[str, str], float | None] = {}
        seconds: dict[tuple[str, str], list[float]] = {r: [] for r in timed}
        for r, (_, _, once) in jobs.items():
            results[r], _, peaks[r] = timed_runs(once, self.cfg.warmup, 0, self.device)
            bar.update(self.cfg.warmup, note=f"prompt {i} warm-up")
        rounds = interleaved_rounds({r: job[2] for r, job in jobs.items()}, self.cfg.repeats, self.device,
                                    on_run=lambda k: bar.update(note=f"prompt {i} round {k + 1}/{self.cfg.repeats}"))
        for r, (last, times) in rounds.items():
            results[r] = last
            seconds[r] = times
        cells = []
        full_seconds = seconds[("full", "-")]
        for method, preset in timed:
            if (method, preset) not in runs:
                continue
            setup, params, _ = jobs[(method, preset)]
            run = results[(method, preset)]
            ideal, fraction = cost_against_full(run.report, self.cfg.steps, setup.noise.shape[1])
            pixels = setup.decode(run.tokens).transpose(0, 1).contiguous()  # [T, 3, H, W]
            cell = Cell(method, preset, i, seed, self.prompts[i], params, seconds[(method, preset)], float(ideal),
                        float(fraction), peaks[(method, preset)], full_seconds=full_seconds,
                        cache_mb=_cache_mb(method, run.report))
            cell.caption = caption_agreement(pixels.transpose(0, 1), self.scenes[i])
            if method == "full":
                save_file({"pixels": pixels.cpu()}, str(self._pixels_path(i, seed)))
            else:
                reference = load_file(str(self._pixels_path(i, seed)))["pixels"].to(pixels.device)
                m = frame_metrics(pixels.float(), reference.float(), net=self.lpips_net)
                cell.psnr, cell.ssim, cell.lpips = m["psnr"], m["ssim"], m["lpips"]
            write_text(self._cell_path(method, preset, i, seed), json.dumps(asdict(cell), indent=1))
            cells.append(cell)
        return cells

    # the quality pass: untimed samples of every run, scored as samples (quality.py)
    def quality_runs(self) -> list[tuple[str, str]]:
        """The runs the quality pass covers (``quality_scope``); "matched" reads the timed cells, so it is known
        only once they are written."""
        runs = self.cfg.runs()
        if self.cfg.quality_scope == "all":
            return runs
        shown = matched_runs(aggregate(self.cfg, self.prompts, self.load_cell, device=str(self.device)))
        swept = (*baselines.BASELINES, *combined.COMBINATIONS)  # methods run over a knob: only the shown settings
        return [(m, p) for m, p in runs if m not in swept or (m, p) in shown]

    def _quality_pass(self) -> None:
        n = self.cfg.quality
        pending = [(m, p, r) for m, p in self.quality_runs() for r in range(self.cfg.quality_sets)
                   if not qp.cell_path(self.quality_dir, m, p, n, r).exists()]
        if not pending:
            return
        scenes = evaluation_scenes(n * self.cfg.quality_sets, video=self.spec.is_video, frames=self.spec.frames or 1)
        with Progress(len(pending) * n, f"bench {self.cfg.model} quality (samples)", enabled=self.progress) as bar:
            for method, preset, r in pending:
                samples, colour, shape = [], [], []
                for j in range(r * n, (r + 1) * n):  # prompt j, noise seed j
                    setup, params, once = self._job(method, preset, j, j, prompt=scenes[j].caption)
                    pixels = setup.decode(once().tokens)  # [3, T, H, W]
                    hits = caption_agreement(pixels, scenes[j])
                    samples.append(qp.as_sample(pixels, self.spec.is_video))
                    colour.append(hits["colour"])
                    shape.append(hits["shape"])
                    bar.update(note=f"{method} / {preset}, set {r}")
                info = dict(method=method, preset=preset, prompts=[r * n, (r + 1) * n - 1],
                            steps=self._steps_for(method, preset)[0], params=params)
                cell = qp.QualityCell(alex_features(torch.stack(samples), self.lpips_net), colour, shape, info)
                cell.save(qp.cell_path(self.quality_dir, method, preset, n, r))

    def _quality_results(self, results: dict) -> None:
        """Add the quality pass's fields to ``results`` (None for a run whose quality cells are missing)."""
        n, sets = self.cfg.quality, self.cfg.quality_sets
        samples = n * sets
        reference = qp.rendered_features(self.cfg.model, qp.REFERENCE_FACTOR * samples, qp.REFERENCE_SEED,
                                         self.lpips_net, self.quality_dir)
        data = qp.rendered_features(self.cfg.model, samples, qp.DATA_SEED, self.lpips_net, self.quality_dir)
        results["quality"] = qp.summary(n, sets, self.cfg.quality_scope, reference, data)

        def cells(method: str, preset: str) -> list[qp.QualityCell] | None:
            paths = [qp.cell_path(self.quality_dir, method, preset, n, r) for r in range(sets)]
            return [qp.QualityCell.load(p) for p in paths] if all(p.exists() for p in paths) else None

        full = cells("full", "-")
        for run in results["runs"]:
            mine = cells(run["method"], run["preset"])
            run.update(qp.run_fields(mine, reference, full) if mine else dict.fromkeys(qp.RUN_FIELDS))

    def _cell_path(self, method: str, preset: str, i: int, seed: int) -> Path:
        return self.cells_dir / f"{cell_name(method, preset, i, seed)}.json"

    def _pixels_path(self, i: int, seed: int) -> Path:
        return self.cells_dir / f"{cell_name('full', '-', i, seed)}.pixels.safetensors"

    def load_cell(self, method: str, preset: str, i: int, seed: int) -> Cell | None:
        path = self._cell_path(method, preset, i, seed)
        return Cell(**json.loads(path.read_text())) if path.exists() else None

    # results
    def write_results(self) -> dict:
        results = aggregate(self.cfg, self.prompts, self.load_cell, device=str(self.device))
        if self.cfg.quality:
            self._quality_results(results)
        write_text(self.out / "results.json", json.dumps(results, indent=1))
        write_text(self.out / "results.md", results_markdown(results) + "\nBest PSNR at matched measured speedup "
                   "(within 15 %):\n\n" + matched_table(results))
        write_png(self.out / "pareto.png", pareto_chart(results))
        return results


def _cache_mb(method: str, report) -> float | None:
    """Jano's KV cache of a run in MiB (0 for full compute with all or fewer steps, which caches nothing; None for
    methods whose caches this does not measure)."""
    if method in ("full", "steps"):
        return 0.0
    if method in JANO_RUNS:
        return 0.0 if report.cache is None else report.cache.mb
    return None


def aggregate(cfg: BenchConfig, prompts: list[str], load_cell, *, device: str) -> dict:
    """results.json: latency = median over prompts and seeds of each cell's median; quality = mean."""
    runs = []
    full_latency = None
    for method, preset in cfg.runs():
        cells = [load_cell(method, preset, i, s) for i in range(len(prompts)) for s in cfg.seeds]
        cells = [c for c in cells if c is not None]
        if not cells:
            continue
        latency = statistics.median(c.latency_s for c in cells)
        if method == "full":
            full_latency = latency

        def mean(key: str) -> float | None:
            values = [getattr(c, key) for c in cells if getattr(c, key) is not None]
            return statistics.fmean(values) if values else None

        paired = [c.speedup for c in cells]
        if all(x is not None for x in paired):
            speedup = statistics.median(paired)  # each cell against the full run of its own rounds
        else:  # cells from before interleaved timing: latencies measured at different times
            speedup = None if full_latency is None else full_latency / latency
        runs.append(dict(
            method=method, preset=preset, params=cells[0].params, latency_s=latency, speedup=speedup,
            ideal_speedup=mean("ideal_speedup"), psnr=mean("psnr"), ssim=mean("ssim"), lpips=mean("lpips"),
            token_fraction=mean("token_fraction"),
            peak_mem_mb=max((c.peak_mem_mb for c in cells if c.peak_mem_mb is not None), default=None),
            cache_mb=max((c.cache_mb for c in cells if c.cache_mb is not None), default=None),
            caption_colour=statistics.fmean(c.caption.get("colour", False) for c in cells),
            caption_shape=statistics.fmean(c.caption.get("shape", False) for c in cells),
            cells=len(cells),
        ))
    return dict(model=cfg.model, device=device, dtype=cfg.dtype, steps=cfg.steps, prompts=prompts,
                seeds=list(cfg.seeds), warmup=cfg.warmup, repeats=cfg.repeats, threads=torch.get_num_threads(),
                torch=torch.__version__, runs=runs)
