"""The ``jano`` command (also ``python -m jano_ref``).

    jano generate "a red striped circle on a flat background"     Jano vs full compute on tiny-flux, in seconds
    jano generate "a blue ring on a flat background moving left" --model tiny-wan --kv-cache-mode hidden --max-cache-mb 2
                                                                 the same with half the cache bytes, within 2 MiB
    jano analyze "a blue checkered square on a gradient background"   complexity, levels, token counts, ground truth
    jano study --model tiny-flux --prompts 16                    Jano §3 Spearman rho and Fig. 8 accuracies
    jano bench --model tiny-flux --methods full,jano,random-levels,steps --out bench/tiny-flux
    jano bench --methods full,jano,jit,teacache,toca,pab,ras,fbcache --sweep     the baselines' Pareto comparison
    jano bench --methods full,jano,teacache,jano+teacache,jano+fbcache --sweep   Jano with a step cache on top
    jano report                                                  regenerate the README results section
    jano calibrate tiny-flux                                     fit TeaCache's rescale polynomial for a tiny model
    jano train tiny-flux --out weights/                          (re)train a tiny model, resumable
    jano card tiny-flux                                          its model card (loss, samples, caption agreement)
    jano models                                                  list model presets
    jano generate "a cat" --model flux-dev --device cuda        the official models (weights from the Hub or --weights)
    jano fake-weights flux /tmp/flux                             small random weights in FLUX.1-dev's layout (CPU checks)

The tiny models are trained on procedural captioned pictures (``jano_ref.lab.tiny.data``): prompts read like
"a COLOUR [TEXTURE] SHAPE on a flat|gradient background" (videos add "moving left|right|up|down" or
"standing still"); colours red green blue yellow magenta cyan white, shapes circle square triangle ring cross,
textures striped checkered noisy scribbled.
"""

from __future__ import annotations

import argparse
import json
import signal
from dataclasses import replace
from datetime import timedelta
from pathlib import Path

import numpy as np
import torch

import models

from ..generate import JANO_METHODS, METHODS
from ..jano.cache import CacheOptions
from ..pipelines.real import SPECS as REAL_SPECS
from ..pipelines.tiny import SPECS, Setup, load_model, prepare
from ..runtime.sampling import SOLVERS
from .compare import compare, compare_with_full, memory_line, method_config, time_methods, timing_line, write_picture
from .compare import level_map_picture as _level_map_picture
from .imageio import staged_folder, write_png, write_text
from .plot import heatmap, image_grid, xy_chart
from .progress import Progress
from .tiny.data import caption_agreement, caption_truth
from .tiny.train import PRECISIONS, T_SAMPLINGS, TrainConfig, train

VIEW_SCALE = 4  # the tiny models draw 64 px pictures: write them enlarged (nearest neighbour) to be seen
REAL_ONLY = ("weights", "revision", "height", "width", "frames", "guidance", "negative_prompt", "text_cache")


def _write_picture(out: Path, stem: str, pixels: torch.Tensor) -> list[Path]:
    """pixels [3, T, H, W]: a PNG for an image; a GIF plus one PNG per frame for a video."""
    return write_picture(out, stem, pixels, VIEW_SCALE)


def level_map_picture(setup: Setup, pixels: torch.Tensor, token_levels: torch.Tensor, scale: int = VIEW_SCALE
                      ) -> np.ndarray:
    """The level of every token over the picture (every frame side by side for video)."""
    return _level_map_picture(setup, pixels, token_levels, scale)


def _device_args(p: argparse.ArgumentParser, dtype_default: str | None = "float32") -> None:
    p.add_argument("--device", default="cpu", help="cpu or cuda")
    p.add_argument("--dtype", default=dtype_default, choices=["float32", "bfloat16", "float16"],
                   help=None if dtype_default else "default: bfloat16 for the official models on CUDA, else float32")


def _load(args: argparse.Namespace):
    return load_model(args.model, device=args.device, dtype=getattr(torch, args.dtype or "float32"),
                      random_weights=getattr(args, "random_weights", False))


def _method_config(method: str, preset: str | None, model: str):
    """(preset name, config) for ``jano generate``; the default preset is the model's own."""
    jano_default = (REAL_SPECS[model] if model in REAL_SPECS else SPECS[model]).jano_preset
    try:
        return method_config(method, preset, model, jano_default)
    except ValueError as error:
        raise SystemExit(str(error)) from None


def _cache_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--kv-cache-mode", default="exact", choices=["exact", "hidden", "bf16"],
                   help="how Jano's KV cache stores frozen tokens: exact K/V; hidden = their attention input, K/V "
                   "recomputed at use (half the bytes); bf16 = K/V in bfloat16 (half of a float32 cache, lossy)")
    p.add_argument("--kv-offload", default=None, choices=["cpu"],
                   help="keep Jano's KV cache in host memory and bring each layer back just before its attention "
                   "(GPU only; on the CPU it changes nothing)")
    p.add_argument("--max-cache-mb", type=float, default=None,
                   help="the most device memory Jano's KV cache may hold, in MiB: frozen blocks are made active until "
                   "it fits; a budget no plan can meet is refused before the first step")


def _cache_options(args: argparse.Namespace, methods) -> CacheOptions | None:
    """Jano's cache options from the command line (None when all are the defaults); prints the one offload note."""
    from ..jano.offload import offload_note

    options = CacheOptions(args.kv_cache_mode, args.kv_offload, args.max_cache_mb)
    if options == CacheOptions():
        return None
    if not any(m in (*JANO_METHODS, "random-levels") for m in methods):
        raise SystemExit("--kv-cache-mode, --kv-offload and --max-cache-mb set Jano's KV cache; add --method jano")
    note = offload_note(options.offload, args.device)
    if note is not None:
        print(note)
    return options


def _check_budget(setup: Setup, preset, cache: CacheOptions | None, device: str) -> None:
    """Refuse a cache budget no plan can meet before any generation runs (full compute included)."""
    from ..combined import CombinedConfig
    from ..jano.config import get_preset
    from ..jano.sampler import cache_budget

    if cache is not None and cache.max_cache_mb is not None:
        try:
            config = preset.jano if isinstance(preset, CombinedConfig) else get_preset(preset)
            cache_budget(setup.field, config, cache, device)
        except ValueError as error:
            raise SystemExit(f"--max-cache-mb: {error}") from None


def _generate(args: argparse.Namespace) -> int:
    if args.model in REAL_SPECS:
        if args.parallel != "none":
            raise SystemExit("--parallel runs the tiny models; the official models run in one process")
        return _generate_real(args)
    given = [f"--{name.replace('_', '-')}" for name in REAL_ONLY if getattr(args, name) is not None]
    if given or args.allow_cpu or args.offline or args.no_text_cache:
        raise SystemExit(f"{', '.join(given) or '--allow-cpu / --offline'}: for the official models "
                         f"({', '.join(REAL_SPECS)}); {args.model} has its own size, weights and guidance "
                         "(--guide-scale)")
    args.steps = 50 if args.steps is None else args.steps
    if args.parallel == "none":
        return _generate_on(args, None)
    return _generate_parallel(args)


def _generate_parallel(args: argparse.Namespace) -> int:
    """``--parallel cfg|seq`` on every rank torchrun started: the settings must agree (checked before any work),
    rank 0 prints and writes, and a failed, killed or silent rank ends the job with a message and no results."""
    from ..runtime import parallel

    what = f"jano generate --parallel {args.parallel}"
    if args.method not in ("full", "jano"):
        raise SystemExit(f"{what}: runs --method full or jano; {args.method} keeps per-branch state that this "
                         "split does not share. Run it without --parallel")
    missing = parallel.missing_torchrun_env()
    if missing:
        raise SystemExit(f"{what}: {', '.join(missing)} not set; launch with torchrun, for example torchrun "
                         f"--nproc-per-node 2 -m jano_ref generate \"PROMPT\" --parallel {args.parallel}")
    settings = {k: v for k, v in vars(args).items() if k not in ("func", "out")}

    def stopped(signum, frame):  # torchrun ends every rank with SIGTERM once one of them has failed or was killed
        raise parallel.PeerFailure("stopped by torchrun (SIGTERM), which ends the job when a rank fails or is killed")

    previous = signal.signal(signal.SIGTERM, stopped)
    try:
        with parallel.distributed(args.device, timeout=timedelta(seconds=args.dist_timeout)) as group:
            try:
                parallel.check_same_settings(settings, group)
                return _generate_on(args, group)
            except parallel.SettingsMismatch as error:
                raise SystemExit(f"{what} (rank {group.rank}): {error}") from None
            except parallel.PeerFailure as failure:
                raise SystemExit(f"{what} (rank {group.rank}): {failure}; no results were written") from None
    finally:
        signal.signal(signal.SIGTERM, previous)


def _generate_on(args: argparse.Namespace, group) -> int:
    """One generation; ``group`` is None in one process, else this rank's ``runtime.parallel.Group``."""
    if group is not None:  # each rank computes on its own device (cuda:LOCAL_RANK on GPUs)
        args = argparse.Namespace(**{**vars(args), "device": str(group.device)})
    model = _load(args)
    setup = prepare(args.model, args.prompt, steps=args.steps, seed=args.seed, model=model, guide_scale=args.guide_scale)
    if group is not None:
        from ..runtime.parallel import parallel_field

        try:
            setup = replace(setup, field=parallel_field(setup.field, args.parallel, group))
        except ValueError as error:  # the model or the rank count does not fit the mode
            raise SystemExit(f"jano generate --parallel {args.parallel}: {error}") from None
    preset, config = _method_config(args.method, args.preset, args.model)
    methods = ["full"] if args.method == "full" else ["full", args.method]
    cache = _cache_options(args, [args.method])
    _check_budget(setup, config, cache, args.device)
    runs, median, peaks, wire = time_methods(setup, methods, preset, config, steps=args.steps, warmup=args.warmup,
                                             repeats=args.repeats, device=args.device, label=args.model,
                                             solver=args.solver or "euler", cache=cache, group=group)
    if group is not None and group.rank != 0:
        return 0  # rank 0 reports and writes
    out = Path(args.out)
    with staged_folder(out) as stage:
        files = _report_generation(args, setup, preset, methods, runs, median, peaks, wire, stage)
        files = [out / f.relative_to(stage) for f in files]
    print("wrote " + ", ".join(str(f) for f in files))
    return 0


def _report_generation(args, setup: Setup, preset, methods, runs, median, peaks, wire, out: Path) -> list[Path]:
    """Print the comparison and write the pictures and ``summary.json`` (last) into ``out``; the files written."""
    pixels = {m: setup.decode(r.tokens) for m, r in runs.items()}
    files = [f for m in methods for f in _write_picture(out, m, pixels[m])]
    summary = dict(model=args.model, prompt=args.prompt, steps=args.steps, seed=args.seed, method=args.method,
                   preset=preset if args.method != "full" else None, tokens=int(setup.noise.shape[1]),
                   random_weights=args.random_weights)
    truth = caption_truth(args.prompt)
    if truth is not None:
        summary["caption_agreement"] = {m: caption_agreement(p, truth) for m, p in pixels.items()}
    summary["denoise_seconds_median"] = median
    print(timing_line(args.model, args.steps, setup.noise.shape[1], args.repeats, args.warmup, median))
    print(memory_line(runs, peaks, args.device))
    if args.method != "full":
        files += _compare_with_full(args, setup, preset, runs[args.method].report, pixels, median, summary, out)
    if "caption_agreement" in summary:
        print("caption agreement (colour, shape): " + ", ".join(
            f"{m} {a['colour']}/{a['shape']}" for m, a in summary["caption_agreement"].items()))
    if args.random_weights:
        print("note: random weights (--random-weights): the pictures are meaningless; only the pipeline is exercised")
    if wire:
        summary["parallel"] = _print_wire(args, wire)
    final = Path(args.out)
    summary["files"] = [str(final / f.relative_to(out)) for f in files]
    return files + [write_text(out / "summary.json", json.dumps(summary, indent=2))]


def _print_wire(args, wire: dict[str, list[dict[str, float]]]) -> dict:
    """Print the bytes each rank sent per step (``runtime.parallel.WireMeter``); their summary entry."""
    ranks = len(next(iter(wire.values())))
    print(f"--parallel {args.parallel} over {ranks} ranks; payload bytes each rank sent per step (mean over steps; "
          "measured by counting what the code hands to the collectives):")
    for method, per_rank in wire.items():
        print(f"  {method}: " + "; ".join(
            f"rank {r} {b.get('total', 0) / 1024:.1f} KiB (" + ", ".join(
                f"{k} {v / 1024:.1f}" for k, v in b.items() if k != "total") + ")"
            for r, b in enumerate(per_rank)))
    return dict(mode=args.parallel, world_size=ranks, bytes_per_step=wire)


def _compare_with_full(args, setup: Setup, preset, report, pixels, median, summary: dict, out: Path) -> list[Path]:
    """Print what the method did and how it compares with full compute; add it to ``summary``; the files written."""
    lines, fields, files = compare_with_full(setup, args.method, preset, report, pixels, median, steps=args.steps,
                                             out=out, view_scale=VIEW_SCALE, max_cache_mb=args.max_cache_mb)
    for line in lines:
        print(line)
    summary.update(fields)
    return files


def _generate_real(args: argparse.Namespace) -> int:
    """``jano generate --model flux-dev|flux-schnell|wan2.1-1.3b|wan2.1-14b``: the official models from a weights
    folder or the Hub. Everything that can be refused (missing extra, weights, a GPU-sized job on a CPU, a size the
    model cannot make) is refused before any network runs."""
    from models.configs import ConfigError
    from models.loading import CheckpointError
    from ..pipelines import real
    from ..pipelines.weights import WeightsError, is_repo_id, resolve

    spec = real.SPECS[args.model]
    if args.random_weights or args.guide_scale is not None:
        raise SystemExit(f"{'--random-weights' if args.random_weights else '--guide-scale'} is for the tiny models; "
                         f"for {args.model} write random weights with `jano fake-weights {spec.family} DIR` and pass "
                         "--weights DIR, and set guidance with --guidance")
    if spec.guidance is None and args.guidance is not None:
        raise SystemExit(f"{args.model} has no guidance input (it is timestep-distilled); drop --guidance")
    if spec.family == "flux" and (args.frames not in (None, 1) or args.negative_prompt is not None):
        raise SystemExit(f"{args.model} makes one image from one prompt: --frames and --negative-prompt are for Wan")
    device = torch.device(args.device)
    dtype = getattr(torch, args.dtype) if args.dtype else real.default_dtype(device)
    loops = (args.warmup + args.repeats) * (1 if args.method == "full" else 2)
    size = dict(height=args.height, width=args.width, frames=args.frames, steps=args.steps)
    try:
        _require_real_extras(spec.is_video)
        if args.weights is None or is_repo_id(args.weights):  # a download: size the job before fetching
            real.check_cpu_job(real.estimate(args.model, None, dtype=dtype, loops=loops, **size), device,
                               allow=args.allow_cpu)
        files = resolve(args.model, args.weights, revision=args.revision, local_files_only=args.offline or None)
        real.check_cpu_job(real.estimate(args.model, files, dtype=dtype, loops=loops, **size), device,
                           allow=args.allow_cpu)
        text_cache = False if args.no_text_cache else args.text_cache
        setup = real.prepare(args.model, args.prompt, files=files, guidance=args.guidance, seed=args.seed,
                             device=device, dtype=dtype, negative_prompt=args.negative_prompt, text_cache=text_cache,
                             **size)
    except (WeightsError, CheckpointError, ConfigError, real.JobTooLarge, ImportError, ValueError) as err:
        raise SystemExit(f"jano generate --model {args.model}: {err}") from None
    height, width, frames = setup.size
    steps = len(setup.sigmas) - 1
    what = "random weights (jano fake-weights)" if setup.random_weights else "weights"
    from ..baselines import BASELINES

    solver = (args.solver or setup.solver) + (" (the caching baselines step with Euler)" if args.method in BASELINES
                                              else "")
    print(f"{args.model} from {what} {files.source}: {width}x{height}" + (f"x{frames} frames" if frames else "")
          + f", {steps} steps, solver {solver}, {device.type} {str(dtype).removeprefix('torch.')}")
    print(f"text encoding {setup.stage_seconds['text_encoding']:.2f} s (embedding cache: {setup.text_cache}), "
          f"transformer load {setup.stage_seconds['load_transformer']:.2f} s")
    out = Path(args.out)
    result = compare(setup, args.method, args.preset, label=args.model, steps=steps, warmup=args.warmup,
                     repeats=args.repeats, device=device, out=out, view_scale=1, fps=spec.fps, echo=print,
                     cache=_cache_options(args, [args.method]), solver=args.solver)
    decode = setup.decoder.seconds
    print(f"decoding {np.median(decode):.2f} s per {'video' if frames else 'picture'}")
    summary = dict(model=args.model, prompt=args.prompt, weights=files.source, height=height, width=width,
                   frames=frames, steps=steps, seed=args.seed, method=args.method, preset=result.preset,
                   tokens=int(setup.noise.shape[1]), solver=setup.solver,
                   device=device.type,
                   dtype=str(dtype).removeprefix("torch."), random_weights=setup.random_weights,
                   text_cache=setup.text_cache,
                   stage_seconds=dict(setup.stage_seconds, decode=float(np.median(decode))),
                   stage_peak_mb=setup.stage_peak_mb, **result.summary)
    if setup.random_weights:
        print("note: random weights (written by jano fake-weights): the pictures are meaningless; only the pipeline "
              "is exercised")
    files_written = result.files + [out / "summary.json"]
    summary["files"] = [str(f) for f in result.files]
    (out / "summary.json").write_text(json.dumps(summary, indent=2, ensure_ascii=False))
    print("wrote " + ", ".join(str(f) for f in files_written))
    return 0


def _require_real_extras(video: bool) -> None:
    """The ``real`` extra: tokenizers (always) and PyAV (videos are also written as MP4)."""
    from models.tokenization import _import_tokenizers

    from .imageio import import_av

    _import_tokenizers()
    if video:
        import_av()


def _fake_weights(args: argparse.Namespace) -> int:
    from .fake_weights import KINDS, write_fake_weights

    try:
        files = write_fake_weights(args.kind, args.dir, seed=args.seed)
    except ImportError as err:
        raise SystemExit(str(err)) from None
    model = KINDS[args.kind]
    print(f"wrote {len(files)} files to {args.dir}: RANDOM weights in the layout of the official {model} repo "
          "(small shapes; the pictures they draw mean nothing). Try the real-model pipeline with them:")
    print(f'  jano generate "a cat" --model {model} --weights {args.dir}')
    return 0


def _analyze(args: argparse.Namespace) -> int:
    from .eval.analysis import analyze_prompt

    model = _load(args)
    with Progress(1, "analyze (full trajectory + Jano run)") as bar:
        result = analyze_prompt(args.model, args.prompt, steps=args.steps, seed=args.seed, preset=args.preset,
                                model=model)
        bar.update()
    out = Path(args.out)
    report = result.jano.report
    full_pixels = result.setup.decode(result.trajectory.run.tokens)
    jano_pixels = result.setup.decode(result.jano.tokens)

    def maps(values: torch.Tensor, title: str) -> np.ndarray:
        frames = [heatmap(values[i].cpu().numpy(), title=f"{title}" + (f" (frame block {i})" if len(values) > 1 else ""),
                          cell=24) for i in range(values.shape[0])]
        return frames[0] if len(frames) == 1 else image_grid(frames, cols=len(frames))

    files = []
    if report.complexity is not None:
        files.append(write_png(out / "complexity.png", maps(report.complexity.enhanced, "Jano complexity")))
        files.append(write_png(out / "levels.png", level_map_picture(result.setup, jano_pixels, report.token_levels)))
    files.append(write_png(out / "convergence.png", maps(result.convergence, "GT convergence")))
    files.append(write_png(out / "fft_complexity.png", maps(result.fft_complexity, "GT complexity (FFT)")))
    counts = report.token_counts or [result.setup.noise.shape[1]] * args.steps
    steps = list(range(len(counts)))
    files.append(write_png(out / "token_counts.png", xy_chart(
        {"full": (steps, [result.setup.noise.shape[1]] * len(steps)), "jano": (steps, counts)},
        title=f"tokens computed per step ({args.model}, {report.config.source.split(' ')[0] if report.config.source else ''})",
        xlabel="step", ylabel="tokens", markers=False)))
    files += _write_picture(out, "full", full_pixels) + _write_picture(out, "jano", jano_pixels)
    summary = dict(
        model=args.model, prompt=args.prompt, steps=args.steps, seed=args.seed,
        thresholds=report.thresholds, ideal_speedup=report.ideal_speedup, token_counts=counts,
        spearman={k: dict(rho=v[0], p=v[1]) for k, v in result.correlations.items()},
        complexity=None if report.complexity is None else report.complexity.enhanced.tolist(),
        convergence=result.convergence.tolist(), fft_complexity=result.fft_complexity.tolist(),
    )
    (out / "analysis.json").write_text(json.dumps(summary, indent=1))
    for name, (rho, p) in result.correlations.items():
        print(f"Spearman {name.replace('_', ' ')}: rho {rho:.3f} (p = {p:.2g})")
    print("wrote " + ", ".join(str(f) for f in files + [out / "analysis.json"]))
    return 0


def _study(args: argparse.Namespace) -> int:
    from .eval.analysis import run_study, study_markdown, write_study

    result = run_study(args.model, prompts=args.prompts, steps=args.steps, model=_load(args), preset=args.preset)
    files = write_study(result, args.out)
    print(study_markdown(result))
    print("wrote " + ", ".join(str(f) for f in files))
    return 0


def _bench(args: argparse.Namespace) -> int:
    from .eval.bench import Bench, BenchConfig
    from .eval.tables import results_markdown

    methods = tuple(args.methods.split(","))
    cache = _cache_options(args, methods)
    cfg = BenchConfig(model=args.model, methods=methods,
                      presets=tuple(args.presets.split(",")) if args.presets else None, prompts=args.prompts,
                      seeds=tuple(int(s) for s in args.seeds.split(",")), steps=args.steps, warmup=args.warmup,
                      repeats=args.repeats, device=args.device, dtype=args.dtype, sweep=args.sweep,
                      kv_cache_mode=args.kv_cache_mode, kv_offload=args.kv_offload, max_cache_mb=args.max_cache_mb,
                      quality=args.quality, quality_sets=args.quality_sets, quality_scope=args.quality_scope)
    bench = Bench(cfg, args.out)
    try:
        bench.check_budget()
    except ValueError as error:
        raise SystemExit(f"--max-cache-mb: {error}") from None
    results = bench.run()
    print(results_markdown(results))
    what = "CUDA allocator peak" if torch.device(args.device).type == "cuda" else "peak RSS"
    print(f"memory (peak_mem_mb: {what} above the start of a run's first generation, max over cells; cache_mb: Jano's "
          f"KV cache{'' if cache is None else ', ' + cache.mode + (' offloaded' if cache.offload else '')}): " + "; ".join(
              f"{r['method']}/{r['preset']} peak {_mb(r.get('peak_mem_mb'))}, cache {_mb(r.get('cache_mb'))}"
              for r in results["runs"]))
    print(f"wrote {args.out}/results.json, results.md, pareto.png")
    return 0


def _mb(value: float | None) -> str:
    return "n/a" if value is None else f"{value:.2f} MiB"


def _report(args: argparse.Namespace) -> int:
    from .eval.report import regenerate

    out = args.out or ("out/report-quick" if args.quick else "notebooks/results")
    regenerate(args.readme, out, quick=args.quick, models=tuple(args.models.split(",")))
    return 0


def _train(args: argparse.Namespace) -> int:
    cfg = TrainConfig(model=args.model, steps=args.steps, batch_size=args.batch_size, lr=args.lr, seed=args.seed,
                      checkpoint_every=args.checkpoint_every, precision=args.precision,
                      t_sampling=args.t_sampling)
    state = train(cfg, args.out)
    print(f"{args.model}: {state.step} steps, final loss {state.losses[-1]:.4f}, {state.seconds / 60:.1f} min; "
          f"weights in {args.out}")
    return 0


def _calibrate(args: argparse.Namespace) -> int:
    from .tiny.calibrate import calibrate

    coefficients = calibrate(args.model, prompts=args.prompts, steps=args.steps, seed=args.seed, weights=args.weights)
    print(f"TeaCache rescale polynomial for {args.model} (numpy.poly1d order, highest power first; {args.prompts} "
          f"prompts x {args.steps} steps):")
    print("(" + ", ".join(f"{c:.8e}" for c in coefficients) + ")")
    return 0


def _card(args: argparse.Namespace) -> int:
    from .tiny.card import write_card

    path = write_card(args.model, args.weights, args.train_log or Path(args.weights) / f"{args.model}.train.json",
                      prompts=args.prompts, steps=args.steps)
    print(f"wrote {path}")
    return 0


def _models(_: argparse.Namespace) -> int:
    for name in models.model_names():
        print(f"{name:14s} {models.PRESETS[name]}")
    return 0


def _model_args(p: argparse.ArgumentParser, real: bool = False) -> None:
    p.add_argument("--model", default="tiny-flux", choices=sorted(SPECS) + (list(REAL_SPECS) if real else []))
    p.add_argument("--preset", default=None,
                   help="Jano preset (default: flux-dev for tiny-flux, wan for tiny-wan); with --method jit a JiT "
                   "preset (default jit-4x); with a baseline one of its presets or KNOB=VALUE (default: its "
                   "first preset, or the one fitted to the model); with jano+teacache / jano+fbcache / jano+pab "
                   "JANO_PRESET[@STEP_CACHE_PRESET or @KNOB=VALUE] (e.g. flux-dev@rel_l1_thresh=0.05); a wrong name "
                   "lists the choices")
    p.add_argument("--steps", type=int, default=None if real else 50,
                   help="default 50 (FLUX.1-schnell: 4)" if real else None)
    p.add_argument("--random-weights", action="store_true",
                   help="seeded random weights instead of the trained ones (pipeline checks only)")
    _device_args(p, dtype_default=None if real else "float32")


def _add_generate(sub) -> None:
    gen = sub.add_parser("generate", help="sample with Jano and with full compute; compare them")
    gen.add_argument("prompt")
    _model_args(gen, real=True)
    gen.add_argument("--method", default="jano", choices=METHODS)
    gen.add_argument("--solver", default=None, choices=list(SOLVERS),
                     help="the sampler of full compute, Jano and JiT (the caching baselines step with Euler); default: "
                     "the model's own (euler; unipc for wan2.1-1.3b / wan2.1-14b, as Wan2.1 samples)")
    gen.add_argument("--seed", type=int, default=0, help="noise seed")
    gen.add_argument("--guide-scale", type=float, default=None, help="classifier-free guidance (default: the model's)")
    gen.add_argument("--warmup", type=int, default=1, help="untimed runs per method before timing")
    gen.add_argument("--repeats", type=int, default=3, help="timed runs per method (the median is reported)")
    gen.add_argument("--out", default="out")
    gen.add_argument("--parallel", default="none", choices=["none", "cfg", "seq"],
                     help="under torchrun: cfg runs the guidance branches on 2 ranks, seq splits the tokens over the "
                     "ranks (Ulysses attention); only rank 0 prints and writes (README, Parallel generation)")
    gen.add_argument("--dist-timeout", type=float, default=600.0,
                     help="with --parallel: seconds a rank waits for the others before the job fails")
    _cache_args(gen)
    official = gen.add_argument_group("official models (--model " + "|".join(REAL_SPECS) + ")")
    official.add_argument("--weights", default=None,
                          help="a folder in the official Hub repo's layout, or a Hub repo id (default: the official "
                          "repo, through the Hugging Face cache); `jano fake-weights` writes a small random one")
    official.add_argument("--revision", default=None, help="Hub revision (branch, tag or commit) to pin")
    official.add_argument("--offline", action="store_true",
                          help="use the Hugging Face cache only (as HF_HUB_OFFLINE=1 does)")
    official.add_argument("--height", type=int, default=None, help="pixels (default 1024; Wan 480 / 720)")
    official.add_argument("--width", type=int, default=None, help="pixels (default 1024; Wan 832 / 1280)")
    official.add_argument("--frames", type=int, default=None, help="Wan video frames, 4n + 1 (default 81)")
    official.add_argument("--guidance", type=float, default=None,
                          help="FLUX.1-dev distilled guidance (default 3.5); Wan classifier-free guidance (5.0)")
    official.add_argument("--negative-prompt", default=None, help="Wan (default: Wan2.1's own negative prompt)")
    official.add_argument("--text-cache", default=None,
                          help="folder of cached prompt embeddings (default $JANO_CACHE or ~/.cache/jano_ref)")
    official.add_argument("--no-text-cache", action="store_true", help="encode the prompt without the cache")
    official.add_argument("--allow-cpu", action="store_true",
                          help="run a job estimated GPU-sized on the CPU anyway")
    gen.set_defaults(func=_generate)


def _add_fake_weights(sub) -> None:
    fake = sub.add_parser("fake-weights", help="write small RANDOM weights in an official repo's layout (pipeline "
                          "checks: `jano generate --model flux-dev --weights DIR` on a CPU in seconds)")
    fake.add_argument("kind", choices=["flux", "flux-schnell", "wan"],
                      help="flux: FLUX.1-dev's layout; flux-schnell; wan: Wan2.1-T2V-1.3B-Diffusers'")
    fake.add_argument("dir")
    fake.add_argument("--seed", type=int, default=0)
    fake.set_defaults(func=_fake_weights)


def _add_analyses(sub) -> None:
    ana = sub.add_parser("analyze", help="complexity map, level map, token counts and ground-truth convergence")
    ana.add_argument("prompt")
    _model_args(ana)
    ana.add_argument("--seed", type=int, default=0)
    ana.add_argument("--out", default="out/analyze")
    ana.set_defaults(func=_analyze)

    st = sub.add_parser("study", help="Jano §3 Spearman rho and Fig. 8 recognition accuracy over many prompts")
    _model_args(st)
    st.add_argument("--prompts", type=int, default=16)
    st.add_argument("--out", default="out/study")
    st.set_defaults(func=_study)


def _add_bench(sub) -> None:
    be = sub.add_parser("bench", help="every method on the same prompts and seeds (resumable)")
    be.add_argument("--model", default="tiny-flux", choices=sorted(SPECS))
    be.add_argument("--methods", default="full,jano", help="comma-separated: full, jano, random-levels, jit, "
                    "teacache, fbcache, pab, toca, ras, steps, jano+teacache, jano+fbcache, jano+pab")
    be.add_argument("--presets", default=None, help="comma-separated Jano, JiT and baseline presets or baseline "
                    "knob=value labels (each method takes its own; steps also takes step counts; the jano+ methods "
                    "run at each Jano preset, or take JANO_PRESET@STEP_CACHE_PRESET / JANO_PRESET@KNOB=VALUE)")
    be.add_argument("--sweep", action="store_true", help="run every baseline over its knob (the values in its module), "
                    "and each jano+ method over its step cache's knob at the first Jano preset")
    be.add_argument("--prompts", type=int, default=8)
    be.add_argument("--seeds", default="0", help="comma-separated noise seeds")
    be.add_argument("--steps", type=int, default=50)
    be.add_argument("--warmup", type=int, default=1)
    be.add_argument("--repeats", type=int, default=3)
    be.add_argument("--quality", type=int, default=0, metavar="N",
                    help="also draw N untimed samples per run (N evaluation prompts) and report their KID against the "
                         "data generator and their caption agreement (0 = off; resumable cells in OUT/quality/)")
    be.add_argument("--quality-sets", type=int, default=1, metavar="K",
                    help="K sets of N different prompts (K x N samples per run; the sets' KIDs show the spread)")
    be.add_argument("--quality-scope", default="all", choices=["all", "matched"],
                    help="runs of the quality pass: all, or those the tables show (non-baselines and each baseline's "
                         "matched-speedup runs)")
    be.add_argument("--out", default="bench")
    _device_args(be)
    _cache_args(be)
    be.set_defaults(func=_bench)

    rep = sub.add_parser("report", help="run the README benchmarks and analyses and rewrite its results section")
    rep.add_argument("--readme", default="README.md")
    rep.add_argument("--out", default=None, help="default notebooks/results (out/report-quick with --quick)")
    rep.add_argument("--models", default="tiny-flux,tiny-wan", help="comma-separated; the section lists these")
    rep.add_argument("--quick", action="store_true", help="few prompts (a smoke run, not for publishing)")
    rep.set_defaults(func=_report)


def _add_tiny_models(sub) -> None:
    cal = sub.add_parser("calibrate", help="fit TeaCache's rescale polynomial for a tiny model (full runs)")
    cal.add_argument("model", choices=["tiny-flux", "tiny-wan"])
    cal.add_argument("--prompts", type=int, default=8)
    cal.add_argument("--steps", type=int, default=50)
    cal.add_argument("--seed", type=int, default=0)
    cal.add_argument("--weights", default=None, help="a .safetensors file (default: weights/MODEL.safetensors)")
    cal.set_defaults(func=_calibrate)

    tr = sub.add_parser("train", help="train a tiny model on the procedural data (resumable)")
    tr.add_argument("model", choices=["tiny-flux", "tiny-wan"])
    tr.add_argument("--steps", type=int, default=2000)
    tr.add_argument("--batch-size", type=int, default=64)
    tr.add_argument("--lr", type=float, default=3e-4)
    tr.add_argument("--seed", type=int, default=0)
    tr.add_argument("--checkpoint-every", type=int, default=100)
    tr.add_argument("--precision", choices=list(PRECISIONS), default="fp32",
                    help="bf16: mixed-precision matmuls (float32 weights), ~1.5x faster on CPUs with AVX512-BF16")
    tr.add_argument("--t-sampling", choices=list(T_SAMPLINGS), default="logit-normal",
                    help="training noise levels: logit-normal (SD3) or uniform (more samples near pure noise)")
    tr.add_argument("--out", default="runs/train")
    tr.set_defaults(func=_train)

    card = sub.add_parser("card", help="write a tiny model's card: loss curve, samples, measured caption agreement")
    card.add_argument("model", choices=sorted(SPECS))
    card.add_argument("--weights", default="weights", help="folder with NAME.safetensors; the card is written there")
    card.add_argument("--train-log", default=None, help="NAME.train.json of the training run (default: in --weights)")
    card.add_argument("--prompts", type=int, default=32)
    card.add_argument("--steps", type=int, default=50)
    card.set_defaults(func=_card)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="jano", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="command", required=True)
    _add_generate(sub)
    _add_analyses(sub)
    _add_bench(sub)
    _add_tiny_models(sub)
    _add_fake_weights(sub)
    sub.add_parser("models", help="list model presets").set_defaults(func=_models)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    return args.func(args)
