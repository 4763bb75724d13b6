"""The ``jano`` command (also ``python -m jano_ref``).

    jano generate "a red circle" [--model flux-test] [--method jano|full] [--preset flux-dev] [--steps 20]
                                 [--seed 0] [--out out]
    jano models

Until trained weights ship in ``weights/``, ``generate`` samples from a randomly initialised small model
with hashed stand-in text features: it exercises the whole pipeline (conditioning, schedule, Euler
sampler, model forward) and says so, but the picture has no meaning.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import torch

import models
from models.flux import latent_size

from .config import PRESETS as JANO_PRESETS
from .generate import METHODS, generate
from .imageio import latent_preview, write_png
from .pipeline import FluxConditioning, FluxVelocity, WanVelocity
from .sampling import flux_schedule, sample_euler, wan_schedule
from .text import hashed_text_features

RANDOM_WEIGHT_NOTICE = (
    "note: {model} has random weights (no trained weights ship yet), and the prompt is turned into hashed "
    "stand-in features; the output shows that the pipeline runs, not a meaningful image."
)


def _generate(args: argparse.Namespace) -> int:
    torch.manual_seed(args.weight_seed)  # random weights are part of the model's identity: fix them
    model = models.build_model(args.model)
    p = model.params
    out = Path(args.out)
    g = torch.Generator().manual_seed(args.seed)

    if isinstance(model, models.Flux):
        h, w = latent_size(args.size, args.size)
        latent_channels = p.in_channels // 4
        cond = FluxConditioning(
            txt=hashed_text_features(args.prompt, 16, p.context_in_dim),
            y=hashed_text_features(args.prompt, 1, p.vec_in_dim, salt="pooled")[:, 0],
            guidance=3.5 if p.guidance_embed else None,
        )
        field = FluxVelocity(model, cond, (h, w))
        noise = torch.randn(1, latent_channels, h, w, generator=g)
        sigmas = flux_schedule(args.steps, field.token_grid[1] * field.token_grid[2], shift=p.guidance_embed)
    else:
        f, h, w = args.frames, args.size // 8, args.size // 8
        field = WanVelocity(
            model,
            context=hashed_text_features(args.prompt, 16, p.text_dim),
            context_uncond=hashed_text_features("", 16, p.text_dim),
            latent_fhw=(f, h, w),
        )
        noise = torch.randn(1, p.in_dim, f, h, w, generator=g)
        sigmas = wan_schedule(args.steps)

    preset = args.preset or ("flux-dev" if isinstance(model, models.Flux) else "wan")
    noise_tokens = field.to_tokens(noise)
    log = (lambda text: print(f"jano plan ({preset}):\n{text}")) if args.method == "jano" else None
    runs = {}
    if args.method != "full":  # the reference runs first, so the timed method does not pay the cold start alone
        runs["full"] = generate(field, noise_tokens, sigmas, method="full")
    result = runs[args.method] = generate(field, noise_tokens, sigmas, method=args.method, config=preset, log=log)

    files = []
    for method, run in runs.items():
        latent = field.to_latent(run.tokens)[0]  # [C, T, H, W]
        files += [write_png(out / f"{method}_frame{i:02d}.png", latent_preview(latent[:, i])) for i in range(latent.shape[1])]
    summary = dict(
        model=args.model, prompt=args.prompt, method=args.method, preset=preset if args.method == "jano" else None,
        steps=args.steps, seed=args.seed, tokens=int(noise_tokens.shape[1]), random_weights=True,
        denoise_seconds={m: round(r.seconds, 4) for m, r in runs.items()},
        ideal_speedup=round(result.report.ideal_speedup, 3), files=[str(f) for f in files],
    )
    if args.method != "full":
        full = runs["full"].tokens
        summary["measured_speedup"] = round(runs["full"].seconds / result.seconds, 3)
        summary["relative_error_vs_full"] = float((result.tokens - full).norm() / full.norm())
    (out / "summary.json").write_text(json.dumps(summary, indent=2))
    print(RANDOM_WEIGHT_NOTICE.format(model=args.model), file=sys.stderr)
    print(f"{args.model}, {args.method}: {args.steps} steps over {noise_tokens.shape[1]} tokens in {result.seconds:.2f} s")
    if args.method != "full":
        print(f"speedup vs full (one run each; see python -m jano_ref.benchmarks for medians): "
              f"measured {summary['measured_speedup']:.2f}x, ideal {summary['ideal_speedup']:.2f}x; "
              f"relative latent error vs full {summary['relative_error_vs_full']:.3g}")
    print(f"wrote {len(files)} PNG(s) and {out / 'summary.json'}")
    return 0


def _train(args: argparse.Namespace) -> int:
    from .train import TrainConfig, train

    cfg = TrainConfig(model=args.model, steps=args.steps, batch_size=args.batch_size, lr=args.lr, seed=args.seed,
                      checkpoint_every=args.checkpoint_every)
    state = train(cfg, args.out)
    print(f"{args.model}: {state.step} steps, final loss {state.losses[-1]:.4f}, {state.seconds / 60:.1f} min; "
          f"weights in {args.out}")
    return 0


def _models(_: argparse.Namespace) -> int:
    for name in models.model_names():
        print(f"{name:14s} {models.PRESETS[name]}")
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="jano", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="command", required=True)

    gen = sub.add_parser("generate", help="sample one image or video")
    gen.add_argument("prompt")
    gen.add_argument("--model", default="flux-test", choices=["flux-test", "wan-test"])
    gen.add_argument("--method", default="jano", choices=METHODS)
    gen.add_argument("--preset", default=None, choices=sorted(JANO_PRESETS),
                     help="Jano preset (default: flux-dev for Flux models, wan for Wan models)")
    gen.add_argument("--steps", type=int, default=20)
    gen.add_argument("--seed", type=int, default=0, help="noise seed")
    gen.add_argument("--weight-seed", type=int, default=0, help="seed of the random weights")
    gen.add_argument("--size", type=int, default=256, help="image side in pixels (latent = size/8)")
    gen.add_argument("--frames", type=int, default=3, help="latent frames (wan only)")
    gen.add_argument("--out", default="out")
    gen.set_defaults(func=_generate)

    tr = sub.add_parser("train", help="train a tiny model on the procedural data (resumable)")
    tr.add_argument("model", choices=["tiny-flux", "tiny-wan"])
    tr.add_argument("--steps", type=int, default=2000)
    tr.add_argument("--batch-size", type=int, default=64)
    tr.add_argument("--lr", type=float, default=3e-4)
    tr.add_argument("--seed", type=int, default=0)
    tr.add_argument("--checkpoint-every", type=int, default=100)
    tr.add_argument("--out", default="runs/train")
    tr.set_defaults(func=_train)

    sub.add_parser("models", help="list model presets").set_defaults(func=_models)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    return args.func(args)
