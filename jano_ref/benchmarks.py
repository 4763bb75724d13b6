"""Micro-benchmarks of the Jano core (not tests: they time, they do not assert).

    python -m jano_ref.benchmarks analyzer         # analyzer cost at Flux-1024^2 and Wan-1.3B latent sizes
    python -m jano_ref.benchmarks cached-forward   # measured vs ideal speedup of the cached forward

Each figure is the median of ``--repeats`` runs after one warm-up run, on whatever device ``--device`` names.
"""

from __future__ import annotations

import argparse
import statistics
from typing import Callable

import torch

from models import build_model

from .analyzer import analyze, flux_block_grid
from .cache import LevelKVCache
from .config import PRESETS
from .pipeline import FluxConditioning, FluxVelocity, WanVelocity
from .plan import REFRESH, JanoPlan, computed_tokens
from .timing import timed_runs


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
            lambda: analyze(warmup, grid, alpha=cfg.alpha, d_strength=cfg.d_strength, d_distance=cfg.d_distance),
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


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m jano_ref.benchmarks", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("which", choices=["analyzer", "cached-forward"])
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--dtype", default="float32", choices=["float32", "bfloat16"])
    parser.add_argument("--latent", type=int, default=96, help="cached-forward: latent side (tokens = (side/2)^2)")
    args = parser.parse_args(argv)
    device, dtype = torch.device(args.device), getattr(torch, args.dtype)
    torch.manual_seed(0)
    if args.which == "analyzer":
        bench_analyzer(args.repeats, device, dtype)
    else:
        bench_cached_forward(args.repeats, device, dtype, args.latent)


if __name__ == "__main__":
    main()
