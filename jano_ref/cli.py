"""The ``jano`` command (also ``python -m jano_ref``).

    jano generate "a red circle" [--model flux-test] [--steps 20] [--seed 0] [--out out]
    jano models

Until trained weights ship in ``weights/``, ``generate`` samples from a randomly initialised small model
with hashed stand-in text features: it exercises the whole pipeline (conditioning, schedule, Euler
sampler, model forward) and says so, but the picture has no meaning.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import torch

import models
from models.flux import latent_size

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

    start = time.perf_counter()
    with torch.inference_mode():
        tokens = sample_euler(field, field.to_tokens(noise), sigmas)
    elapsed = time.perf_counter() - start
    latent = field.to_latent(tokens)[0]  # [C, T, H, W]

    frames = [write_png(out / f"sample_frame{i:02d}.png", latent_preview(latent[:, i])) for i in range(latent.shape[1])]
    summary = dict(
        model=args.model, prompt=args.prompt, steps=args.steps, seed=args.seed, tokens=int(tokens.shape[1]),
        denoise_seconds=round(elapsed, 3), files=[str(f) for f in frames], random_weights=True,
    )
    (out / "summary.json").write_text(json.dumps(summary, indent=2))
    print(RANDOM_WEIGHT_NOTICE.format(model=args.model), file=sys.stderr)
    print(f"{args.model}: {args.steps} Euler steps over {tokens.shape[1]} tokens in {elapsed:.2f} s")
    print(f"wrote {', '.join(str(f) for f in frames)} and {out / 'summary.json'}")
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
    gen.add_argument("--steps", type=int, default=20)
    gen.add_argument("--seed", type=int, default=0, help="noise seed")
    gen.add_argument("--weight-seed", type=int, default=0, help="seed of the random weights")
    gen.add_argument("--size", type=int, default=256, help="image side in pixels (latent = size/8)")
    gen.add_argument("--frames", type=int, default=3, help="latent frames (wan only)")
    gen.add_argument("--out", default="out")
    gen.set_defaults(func=_generate)

    sub.add_parser("models", help="list model presets").set_defaults(func=_models)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    return args.func(args)
