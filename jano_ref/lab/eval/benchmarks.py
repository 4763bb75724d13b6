"""Micro-benchmarks of the Jano core (not tests: they time, they do not assert).

    python -m jano_ref.benchmarks analyzer         # analyzer cost at Flux-1024^2 and Wan-1.3B latent sizes
    python -m jano_ref.benchmarks cached-forward   # measured vs ideal speedup of the cached forward
    python -m jano_ref.benchmarks fixed-cost       # the per-call cost token skipping cannot remove, on tiny-flux
    python -m jano_ref.benchmarks fixed-cost --profile   # and where it goes (torch.profiler, ops grouped by kind)
    python -m jano_ref.benchmarks memory           # Jano's KV cache of the official models at official sizes (no run)
    python -m jano_ref.benchmarks memory --model wan2.1-14b --frames 81 --height 720 --width 1280 --frozen 0.7
    python -m jano_ref.benchmarks cache-modes --model tiny-wan   # exact / offload / hidden / bf16 cache: MiB, s, PSNR
    python -m jano_ref.benchmarks real-shape --model flux-dev|wan2.1-1.3b   # the official pipelines' stages on
                                                   # random weights of the real architecture (lab/eval/real_shape.py)

Each figure is the median of ``--repeats`` runs after one warm-up run, on whatever device ``--device`` names
(``memory`` only computes: ``jano_ref.jano.memory``).
"""

from __future__ import annotations

import argparse
import statistics
import time
from dataclasses import dataclass
from typing import Callable

import torch

from models import build_model

from ...jano.analyzer import analyze, flux_block_grid
from ...jano.cache import CacheOptions, LevelKVCache
from ...jano.config import PRESETS
from ...jano.memory import OFFICIAL_MODELS, PlannedCache, planned_cache
from ...runtime.fields import FluxConditioning, FluxVelocity, WanVelocity
from ...jano.plan import REFRESH, JanoPlan, computed_tokens
from ...runtime.timing import interleaved_rounds, synchronize, timed_runs


def median_seconds(fn: Callable[[], object], repeats: int, device: torch.device) -> float:
    """Median of ``repeats`` timed calls after one warm-up call (``timing.timed_runs``)."""
    return statistics.median(timed_runs(fn, 1, repeats, device)[1])


def _flux_field(device, dtype, latent: int, **overrides) -> FluxVelocity:
    model = build_model("flux-test", device=device, dtype=dtype, **overrides)
    p = model.params
    cond = FluxConditioning(torch.randn(1, 16, p.context_in_dim, device=device, dtype=dtype),
                            torch.randn(1, p.vec_in_dim, device=device, dtype=dtype))
    return FluxVelocity(model, cond, (latent, latent))


def _forward_seconds(field: FluxVelocity, num_tokens: int, repeats: int, device, dtype) -> float:
    x = torch.randn(1, num_tokens, field.model.params.in_channels, device=device, dtype=dtype)
    with torch.inference_mode():
        return median_seconds(lambda: field(x, torch.tensor(0.5, device=device)), repeats, device)


def bench_analyzer(repeats: int, device: torch.device, dtype: torch.dtype) -> None:
    flux_cfg, wan_cfg = PRESETS["flux-dev"], PRESETS["wan"]
    cases = [
        # name, warm-up velocities [K, C, T, H, W], grid, settings, real-size forward FLOPs
        ("Flux 1024^2 (16x1x128x128, K=7)", (7, 16, 1, 128, 128), flux_block_grid(128, 128), flux_cfg,
         FluxVelocity(build_model("flux-dev", device="meta"), FluxConditioning(torch.empty(1, 512, 4096, device="meta"),
                      torch.empty(1, 768, device="meta")), (128, 128)).token_cost().forward_flops(4096, 4096)),
        ("Wan-1.3B 832x480x81 (16x21x60x104, K=6)", (6, 16, 21, 60, 104), (7, 6, 8), wan_cfg,
         2 * WanVelocity(build_model("wan2.1-1.3b", device="meta"), torch.empty(1, 1, 4096), torch.empty(1, 1, 4096),
                         (21, 60, 104)).token_cost().forward_flops(32760, 32760)),
    ]
    # The small model's achieved FLOP rate turns a real model's FLOPs into a same-device time estimate.
    small = _flux_field(device, dtype, 32)
    small_s = _forward_seconds(small, 256, repeats, device, dtype)
    rate = small.token_cost().forward_flops(256, 256) / small_s
    print(f"device {device}, {dtype}; one full forward of flux-test at 256 tokens: {small_s * 1e3:.2f} ms "
          f"({rate / 1e9:.1f} GFLOP/s achieved)")
    print("| latent | analyzer | / small forward | real-size forward estimate | analyzer / real forward |")
    print("|---|---|---|---|---|")
    for name, shape, grid, cfg, real_flops in cases:
        warmup = torch.randn(shape, device=device, dtype=torch.float32)
        seconds = median_seconds(
            lambda: analyze(warmup, grid, alpha=cfg.alpha, d_strength=cfg.d_strength, d_distance=cfg.d_distance,
                            std_correction=cfg.contour_std_correction),
            repeats, device,
        )
        real_s = real_flops / rate
        print(f"| {name} | {seconds * 1e3:.1f} ms | {seconds / small_s:.1f}x | {real_s:.0f} s | {seconds / real_s:.2e} |")


def bench_cached_forward(repeats: int, device: torch.device, dtype: torch.dtype, latent: int) -> None:
    """Full vs level-2 vs level-1 forwards on a random-weight Flux, and the whole flux-dev plan at 50 steps."""
    field = _flux_field(device, dtype, latent, hidden_size=256, num_heads=4, axes_dim=[16, 24, 24], depth=2,
                        depth_single_blocks=4)
    n = (latent // 2) ** 2
    g = torch.Generator().manual_seed(0)
    levels = torch.multinomial(torch.tensor([0.4, 0.3, 0.3]), n, replacement=True, generator=g).add(1).to(device)
    cache = LevelKVCache(levels)
    x = torch.randn(1, n, field.model.params.in_channels, device=device, dtype=dtype)
    sigma = torch.tensor(0.5, device=device)
    cost = field.token_cost()
    seconds = {}
    with torch.inference_mode():
        for level in (REFRESH, 2, 1):
            index = computed_tokens(levels, level)
            hook = {"cond": cache.at(level)}
            seconds[level] = median_seconds(lambda: field(x, sigma, token_index=index, kv_caches=hook), repeats, device)
    cfg = PRESETS["flux-dev"]
    plan = JanoPlan.build(levels, 50, warmup=cfg.warmup_steps, cooldown=cfg.cooldown_steps,
                          static_interval=cfg.static_interval, medium_interval=cfg.medium_interval)
    full_total = seconds[REFRESH] * 50
    plan_total = sum(seconds[3 if lv == 0 else lv] for lv in plan.step_levels)
    print(f"device {device}, {dtype}; Flux hidden 256, 2+4 blocks, {n} image tokens + 16 text; levels "
          f"{int((levels == 1).sum())} static / {int((levels == 2).sum())} moderate / {int((levels == 3).sum())} active")
    print("| forward | computed tokens | measured | measured speedup | ideal speedup |")
    print("|---|---|---|---|---|")
    for level, name in ((REFRESH, "full"), (2, "level 2"), (1, "level 1")):
        k = n if level == REFRESH else int(computed_tokens(levels, level).numel())
        ideal = cost.forward_flops(n, n) / cost.forward_flops(k, n)
        print(f"| {name} | {k} | {seconds[level] * 1e3:.1f} ms | {seconds[REFRESH] / seconds[level]:.2f}x | {ideal:.2f}x |")
    print(f"| flux-dev plan, 50 steps | {sum(plan.token_counts())} total | {plan_total:.2f} s | "
          f"{full_total / plan_total:.2f}x | {plan.ideal_speedup(cost):.2f}x |")


@dataclass
class FixedCost:
    """``fixed_cost``'s measurements: per computed-token count, the median seconds of one level-1 velocity call; the
    fit ``a + b * FLOPs``; and the Jano plan of one prompt priced with and without ``a``, next to its measurement."""

    counts: list[int]
    seconds: list[float]
    a: float  # seconds per call whatever it computes
    b: float  # seconds per token FLOP
    full_call: float  # the fit at all tokens
    token_ideal: float  # the plan's ideal speedup from token FLOPs (what Jano reports)
    fixed_ideal: float  # the same plan with ``a`` added to every step
    measured: float  # full's median latency over Jano's, interleaved runs


def fixed_cost(setup, preset: str, repeats: int, device: torch.device, calls_per_timing: int = 20) -> FixedCost:
    """Fit the time of one level-1 velocity call (every guidance branch, frozen tokens' K/V from the cache) as
    ``a + b * token FLOPs`` over several computed-token counts. ``a`` is what a call costs whatever it computes
    (kernel launches and framework overhead); the token-FLOP ideal speedup leaves it out, so it bounds how close a
    small model's measured speedup can come to that ideal. ``setup`` is a ``tiny.prepare`` result."""
    import numpy as np

    from ...generate import generate

    field, x = setup.field, setup.noise
    n = x.shape[1]
    cost = field.token_cost()
    counts = sorted({1, n // 16, n // 8, n // 4, n // 2, 3 * n // 4, n})
    with torch.inference_mode():
        calls = [level_one_call(setup, k, device) for k in counts]
        # rounds over all counts (interleaved, so a load drift hits every count alike); round 0 warms up
        times: list[list[float]] = [[] for _ in counts]
        for r in range(repeats + 1):
            for call, out in zip(calls, times):
                synchronize(device)
                start = time.perf_counter()
                for _ in range(calls_per_timing):
                    call()
                synchronize(device)
                if r:
                    out.append((time.perf_counter() - start) / calls_per_timing)
        seconds = [statistics.median(t) for t in times]
        runs: dict[str, list[float]] = {m: [] for m in ("full", "jano")}
        for r in range(repeats + 1):  # interleaved too
            for m in runs:
                g = generate(field, x, setup.sigmas, method=m, config=preset)
                if r:
                    runs[m].append(g.seconds)
                if m == "jano":
                    plan = g.report.plan
    flops = np.array([cost.forward_flops(k, n) for k in counts])
    (a, b), *_ = np.linalg.lstsq(np.stack([np.ones_like(flops), flops], 1), np.array(seconds), rcond=None)
    return FixedCost(counts, seconds, float(a), float(b), float(a + b * cost.forward_flops(n, n)),
                     plan.ideal_speedup(cost), fixed_cost_ideal(plan.token_counts(), n, cost, float(a), float(b)),
                     statistics.median(runs["full"]) / statistics.median(runs["jano"]))


def fixed_cost_ideal(token_counts: list[int], num_tokens: int, cost, a: float, b: float) -> float:
    """Ideal speedup of a plan (tokens computed per step) when every step costs ``a + b * token FLOPs``: with
    ``a = 0`` it is the token-FLOP ideal (``JanoPlan.ideal_speedup``); a larger ``a`` pulls it towards 1."""
    full = a + b * cost.forward_flops(num_tokens, num_tokens)
    return full * len(token_counts) / sum(a + b * cost.forward_flops(k, num_tokens) for k in token_counts)


def level_one_call(setup, computed: int, device: torch.device) -> Callable[[], object]:
    """One level-1 velocity call of ``setup`` (every guidance branch) computing ``computed`` random tokens, the
    others' K/V from a cache filled by a refresh call first; run it under ``torch.inference_mode``."""
    field, x = setup.field, setup.noise
    n = x.shape[1]
    sigma = setup.sigmas[len(setup.sigmas) // 5]
    levels = torch.ones(n, dtype=torch.long, device=device)
    levels[torch.randperm(n, generator=torch.Generator().manual_seed(computed))[:computed].to(device)] = 3
    caches = {b: LevelKVCache(levels) for b in field.branches}
    field(x, sigma, kv_caches={b: c.at(REFRESH) for b, c in caches.items()})  # fills the caches
    hooks = {b: c.at(1) for b, c in caches.items()}
    index = computed_tokens(levels, 1)
    return lambda: field(x, sigma, token_index=index, kv_caches=hooks)


# What an op does, for ``profile_call``'s breakdown (aten names; anything else counts as "elementwise and other").
OP_KINDS = {
    "matmul": ("aten::addmm", "aten::mm", "aten::bmm", "aten::matmul", "aten::linear", "aten::baddbmm"),
    "copies and gathers": ("aten::cat", "aten::copy_", "aten::index", "aten::index_select", "aten::index_copy",
                           "aten::index_copy_", "aten::_to_copy", "aten::clone", "aten::stack", "aten::contiguous"),
    "views and allocation": ("aten::as_strided", "aten::view", "aten::slice", "aten::narrow", "aten::select",
                             "aten::expand", "aten::transpose", "aten::t", "aten::empty", "aten::empty_strided",
                             "aten::reshape", "aten::unsqueeze", "aten::squeeze", "aten::flatten", "aten::unflatten",
                             "aten::split", "aten::chunk", "aten::to", "aten::view_as_complex", "aten::view_as_real",
                             "aten::detach", "aten::alias", "aten::permute", "aten::_unsafe_view", "aten::resize_",
                             "aten::empty_like", "aten::unbind", "aten::lift_fresh", "aten::result_type"),
}


def op_kind(name: str) -> str:
    """``OP_KINDS`` group of an aten op name; attention kernels by name; the rest "elementwise and other"."""
    if "scaled_dot_product" in name or "flash_attention" in name:
        return "attention"
    return next((kind for kind, names in OP_KINDS.items() if name in names), "elementwise and other")


@dataclass
class CallProfile:
    """``profile_call``: per call, the self CPU seconds and the number of aten ops of each kind (``op_kind``)."""

    seconds: dict[str, float]
    ops: dict[str, float]

    @property
    def total(self) -> float:
        return sum(self.seconds.values())


def profile_call(call: Callable[[], object], calls: int = 20) -> CallProfile:
    """Where one call's time goes: ``torch.profiler`` over ``calls`` calls, each aten op's self CPU time grouped
    by ``op_kind`` (op self times exclude their children, so the groups add up to the time spent inside ops; the
    rest of a call's wall time is Python and module overhead)."""
    from torch.profiler import ProfilerActivity, profile

    call()  # warm-up outside the profile
    with profile(activities=[ProfilerActivity.CPU]) as prof:
        for _ in range(calls):
            call()
    seconds: dict[str, float] = {}
    ops: dict[str, float] = {}
    for event in prof.key_averages():
        if not event.key.startswith("aten::"):
            continue
        kind = op_kind(event.key)
        seconds[kind] = seconds.get(kind, 0.0) + event.self_cpu_time_total * 1e-6 / calls
        ops[kind] = ops.get(kind, 0.0) + event.count / calls
    return CallProfile(seconds, ops)


def print_profiles(setup, r: FixedCost, device: torch.device, calls: int = 20) -> None:
    """The fewest and the most computed tokens of ``fixed_cost``: wall time (from its timings) and the op groups."""
    with torch.inference_mode():
        profiles = {k: profile_call(level_one_call(setup, k, device), calls) for k in (r.counts[0], r.counts[-1])}
    kinds = sorted({kind for p in profiles.values() for kind in p.seconds}, key=lambda kind: -profiles[
        r.counts[0]].seconds.get(kind, 0.0))
    print(f"torch.profiler, self CPU time per call (median wall time from the table above; {calls} calls profiled):")
    print("| per call | " + " | ".join(f"{k} computed tokens" for k in profiles) + " |")
    print("|---|" + "---|" * len(profiles))
    walls = dict(zip(r.counts, r.seconds))
    print("| wall time | " + " | ".join(f"{walls[k] * 1e3:.2f} ms" for k in profiles) + " |")
    for kind in kinds:
        print(f"| {kind} | " + " | ".join(f"{p.seconds.get(kind, 0.0) * 1e3:.2f} ms ({p.ops.get(kind, 0.0):.0f} ops)"
                                         for p in profiles.values()) + " |")
    print("| all aten ops | " + " | ".join(f"{p.total * 1e3:.2f} ms ({sum(p.ops.values()):.0f} ops)"
                                          for p in profiles.values()) + " |")


def bench_fixed_cost(repeats: int, device: torch.device, dtype: torch.dtype, model_name: str, prompt: str,
                     preset: str, profile: bool = False) -> FixedCost:
    from ...pipelines.tiny import load_model, prepare

    setup = prepare(model_name, prompt, model=load_model(model_name, device=device, dtype=dtype))
    r = fixed_cost(setup, preset, repeats, device)
    cost = setup.field.token_cost()
    n = setup.noise.shape[1]
    print(f"device {device}, {dtype}, {torch.get_num_threads()} threads; {model_name}, {n} tokens, "
          f"{len(setup.field.branches)} guidance branch(es) per call")
    print("| computed tokens | measured call | fit a + b*FLOPs |")
    print("|---|---|---|")
    for k, t in zip(r.counts, r.seconds):
        print(f"| {k} | {t * 1e3:.2f} ms | {(r.a + r.b * cost.forward_flops(k, n)) * 1e3:.2f} ms |")
    print(f"fixed cost a = {r.a * 1e3:.2f} ms per call = {r.a / r.full_call:.0%} of a full call "
          f"({r.full_call * 1e3:.2f} ms by the fit)")
    print(f"jano/{preset} on {prompt!r}: token-FLOP ideal {r.token_ideal:.2f}x; with the fixed cost "
          f"{r.fixed_ideal:.2f}x; measured {r.measured:.2f}x (median of {repeats}, interleaved with full); measured / "
          f"token-FLOP ideal {r.measured / r.token_ideal:.2f}, measured / fixed-cost ideal "
          f"{r.measured / r.fixed_ideal:.2f}")
    if profile:
        print_profiles(setup, r, device)
    return r


# ---- memory -------------------------------------------------------------------------------------------------------

# (height, width, frames) each official model is run at; the README table lists the first three
OFFICIAL_SIZES = {"flux-dev": (1024, 1024, 1), "wan2.1-1.3b": (480, 832, 81), "wan2.1-14b": (720, 1280, 81),
                  "flux-schnell": (1024, 1024, 1)}


def _size(mib: float) -> str:
    return f"{mib / 1024:.1f} GiB" if mib >= 1024 else f"{mib:.1f} MiB"


def memory_table(plans: list[PlannedCache]) -> str:
    """Markdown: each plan's cache in every mode, and what the device holds with ``--kv-offload cpu``."""
    lines = ["| model | size | tokens | cached | layers x heads x head_dim | dtype, branches | exact | hidden | "
             "exact, offloaded: on the device | hidden, offloaded: on the device |", "|---" * 10 + "|"]
    for p in plans:
        g = p.geometry
        lines.append(
            f"| {p.model} | {p.size} | {p.tokens} | {p.cached_tokens} | {g.layers} x {g.heads} x {g.head_dim} | "
            f"{str(g.dtype).removeprefix('torch.')}, {g.branches} | {_size(p.total_mb())} | {_size(p.total_mb('hidden'))} | "
            f"{_size(p.offloaded_mb())} | {_size(p.offloaded_mb('hidden'))} |")
    return "\n".join(lines)


def bench_memory(model: str | None, height: int | None, width: int | None, frames: int | None, frozen: float,
                 dtype: torch.dtype, branches: int | None) -> list[PlannedCache]:
    if model is None:
        plans = [planned_cache(m, *size, frozen=frozen, dtype=dtype, branches=branches)
                 for m, size in list(OFFICIAL_SIZES.items())[:3]]
    else:
        h, w, f = OFFICIAL_SIZES[model]
        plans = [planned_cache(model, height or h, width or w, frames or f, frozen=frozen, dtype=dtype,
                               branches=branches)]
    what = "every token static or moderate: the worst case of any preset" if frozen == 1 else f"{frozen:.0%} of tokens static or moderate"
    print(f"Jano KV cache, computed from the model parameters (jano_ref.jano.memory; {what}). Bytes = 2 (K and V; 1 for "
          "the hidden mode) x layers x cached tokens x heads x head_dim x bytes per element x branches; offloaded, the "
          "device holds two layers of one branch.")
    print(memory_table(plans))
    return plans


@dataclass
class ModeRun:
    name: str
    cache_mb: float
    seconds: float  # wall clock
    cpu_seconds: float  # this process's CPU time: less sensitive than the wall clock to other load on a shared machine
    psnr_vs_exact: float  # pixels against the exact cache's (inf: identical)
    max_abs_vs_exact: float  # token latents
    identical: bool


def cache_modes(setup, preset: str, repeats: int, device: torch.device) -> list[ModeRun]:
    """Jano with each cache variant on one prompt, timed in interleaved rounds (one warm-up each), against the exact
    cache: its cache size, median wall and CPU seconds, PSNR of the decoded pixels and the largest token difference.
    Full compute is the last row, for scale (its PSNR is Jano's own loss)."""
    from ...generate import generate
    from .metrics import psnr

    variants = {"exact": CacheOptions(), "exact, --kv-offload cpu": CacheOptions(offload="cpu"),
                "hidden": CacheOptions("hidden"), "bf16": CacheOptions("bf16"), "full compute": None}

    def once(options):
        method = "full" if options is None else "jano"
        return lambda: generate(setup.field, setup.noise, setup.sigmas, method=method, config=preset, cache=options)

    runs = {name: once(options) for name, options in variants.items()}
    for run in runs.values():
        timed_runs(run, 1, 0, device)
    cpu: dict[str, list[float]] = {name: [] for name in runs}

    def cpu_timed(name: str):
        def run():
            start = time.process_time()
            result = runs[name]()
            cpu[name].append(time.process_time() - start)
            return result
        return run

    results = interleaved_rounds({name: cpu_timed(name) for name in runs}, repeats, device)
    exact = results["exact"][0]
    pixels = lambda tokens: setup.decode(tokens).transpose(0, 1)  # noqa: E731  [T, 3, H, W]
    out = []
    for name, (run, seconds) in results.items():
        cache = getattr(run.report, "cache", None)
        out.append(ModeRun(name, 0.0 if cache is None else cache.mb, statistics.median(seconds),
                           statistics.median(cpu[name]),
                           float(psnr(pixels(run.tokens), pixels(exact.tokens)).mean()),
                           float((run.tokens.float() - exact.tokens.float()).abs().max()),
                           torch.equal(run.tokens, exact.tokens)))
    return out


def bench_cache_modes(repeats: int, device: torch.device, dtype: torch.dtype, model_name: str, prompt: str,
                      preset: str, steps: int) -> list[ModeRun]:
    from ...pipelines.tiny import load_model, prepare

    setup = prepare(model_name, prompt, steps=steps, model=load_model(model_name, device=device, dtype=dtype))
    rows = cache_modes(setup, preset, repeats, device)
    exact = rows[0]
    print(f"device {device}, {dtype}, {torch.get_num_threads()} threads; {model_name} jano/{preset}, {steps} steps, "
          f"{prompt!r}; median of {repeats} interleaved rounds")
    print("| cache | MiB | wall s | CPU s | CPU time vs exact | PSNR vs exact | max abs token diff | bit-identical |")
    print("|---|---|---|---|---|---|---|---|")
    for r in rows:
        print(f"| {r.name} | {r.cache_mb:.2f} | {r.seconds:.3f} | {r.cpu_seconds:.3f} | "
              f"{r.cpu_seconds / exact.cpu_seconds:.2f}x | "
              f"{r.psnr_vs_exact:.2f} dB | {r.max_abs_vs_exact:.2e} | {'yes' if r.identical else 'no'} |")
    return rows


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m jano_ref.benchmarks", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("which", choices=["analyzer", "cached-forward", "fixed-cost", "memory", "cache-modes",
                                          "real-shape"])
    parser.add_argument("--repeats", type=int, default=None, help="timed runs (default 3; real-shape 1)")
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--dtype", default=None, choices=["float32", "bfloat16"],
                        help="default float32 (memory: bfloat16, as the official models run; real-shape: bfloat16 "
                        "on CUDA)")
    parser.add_argument("--latent", type=int, default=96, help="cached-forward: latent side (tokens = (side/2)^2)")
    parser.add_argument("--model", default=None, help="fixed-cost, cache-modes: tiny-flux (default) or tiny-wan; "
                        "memory: an official model (default: flux-dev, wan2.1-1.3b and wan2.1-14b at official sizes); "
                        "real-shape: flux-dev (default) or wan2.1-1.3b")
    parser.add_argument("--prompt", default="a red striped circle on a flat background", help="fixed-cost: the prompt")
    parser.add_argument("--preset", default=None, help="fixed-cost, cache-modes: Jano preset (default: the model's own)")
    parser.add_argument("--steps", type=int, default=None, help="cache-modes, real-shape: denoising steps (default 50)")
    parser.add_argument("--height", type=int, default=None, help="memory: pixels (default: the model's official size)")
    parser.add_argument("--width", type=int, default=None)
    parser.add_argument("--frames", type=int, default=None, help="memory: video frames, 4n + 1 (default 81)")
    parser.add_argument("--frozen", type=float, default=1.0,
                        help="memory: share of static + moderate tokens (default 1: the worst case)")
    parser.add_argument("--branches", type=int, default=None, help="memory: guidance branches (default: Wan 2, Flux 1)")
    parser.add_argument("--size", default=None, choices=["reduced", "full"],
                        help="real-shape: full (default on a GPU) or reduced (default on a CPU) architecture and size")
    parser.add_argument("--warmup", type=int, default=1, help="real-shape: untimed runs per method")
    parser.add_argument("--profile", action="store_true", help="fixed-cost: where a call's time goes "
                        "(torch.profiler, aten ops grouped by kind) at the fewest and the most computed tokens")
    args = parser.parse_args(argv)
    device = torch.device(args.device)
    torch.manual_seed(0)
    if args.which == "real-shape":
        from .real_shape import MODELS, bench_real_shape

        model = args.model or "flux-dev"
        if model not in MODELS:
            parser.error(f"real-shape runs {' or '.join(MODELS)}, not {model}")
        bench_real_shape(model, args.size, device, args.dtype and getattr(torch, args.dtype), args.steps,
                         args.repeats or 1, args.warmup)
        return
    dtype = getattr(torch, args.dtype or ("bfloat16" if args.which == "memory" else "float32"))
    repeats = args.repeats or 3
    if args.which in ("fixed-cost", "cache-modes"):
        from ...pipelines.tiny import SPECS

        model = args.model or "tiny-flux"
        if model not in SPECS:
            parser.error(f"--model {model}: {args.which} runs a tiny model; choose one of {', '.join(SPECS)}")
        preset = args.preset or SPECS[model].jano_preset
    if args.which == "analyzer":
        bench_analyzer(repeats, device, dtype)
    elif args.which == "fixed-cost":
        bench_fixed_cost(repeats, device, dtype, model, args.prompt, preset, args.profile)
    elif args.which == "cache-modes":
        bench_cache_modes(repeats, device, dtype, model, args.prompt, preset, args.steps or 50)
    elif args.which == "memory":
        if args.model is not None and args.model not in OFFICIAL_MODELS:
            parser.error(f"--model {args.model}: the planner covers the official models: {', '.join(OFFICIAL_MODELS)}")
        bench_memory(args.model, args.height, args.width, args.frames, args.frozen, dtype, args.branches)
    else:
        bench_cached_forward(repeats, device, dtype, args.latent)


if __name__ == "__main__":
    main()
