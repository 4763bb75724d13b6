"""Model cards for the shipped tiny models (``jano card tiny-flux``): config, data, steps, loss curve, sample grid and
measured caption agreement, written next to the weights.

    jano card tiny-flux --weights weights/ --train-log runs/tiny-flux/tiny-flux.train.json

The caption agreement is measured, not claimed: ``data.caption_agreement`` reads colour and shape off each sample
(the data generator knows the truth of every evaluation prompt) with full-compute sampling.
"""

from __future__ import annotations

import dataclasses
import json
import statistics
from pathlib import Path

import numpy as np
import torch

import models

from .data import caption_agreement, evaluation_scenes, render_video
from ...generate import generate
from ..imageio import pixels_to_uint8, write_png
from ..plot import image_grid, xy_chart
from ..progress import Progress
from .train import TrainConfig
from ...pipelines.tiny import SPECS, load_model, prepare


def smoothed(values: list[float], window: int) -> list[float]:
    """Trailing moving average (the first points average what there is)."""
    out, total = [], 0.0
    for i, v in enumerate(values):
        total += v - (values[i - window] if i >= window else 0.0)
        out.append(total / min(i + 1, window))
    return out


def measure_captions(name: str, model, *, prompts: int, steps: int, guide_scale: float | None = None,
                     progress: bool = True) -> tuple[dict, list]:
    """Colour / shape agreement of full-compute samples of ``prompts`` evaluation prompts (seed = prompt index)."""
    spec = SPECS[name]
    scenes = evaluation_scenes(prompts, video=spec.is_video, frames=spec.frames or 1)
    hits, samples = [], []
    with Progress(len(scenes), f"{name} caption agreement", enabled=progress) as bar:
        for i, scene in enumerate(scenes):
            setup = prepare(name, scene.caption, steps=steps, seed=i, model=model, guide_scale=guide_scale)
            pixels = setup.decode(generate(setup.field, setup.noise, setup.sigmas, method="full").tokens)
            hits.append(caption_agreement(pixels, scene))
            samples.append((scene.caption, pixels))
            bar.update()
    agreement = dict(colour=statistics.fmean(h["colour"] for h in hits), shape=statistics.fmean(h["shape"] for h in hits),
                     both=statistics.fmean(h["colour"] and h["shape"] for h in hits), prompts=prompts, steps=steps,
                     guide_scale=SPECS[name].guide_scale if guide_scale is None else guide_scale)
    return agreement, samples


def reader_references(name: str, prompts: int) -> tuple[dict, dict]:
    """What ``caption_agreement`` scores on the evaluation prompts for uniform noise (chance) and for the renderer's
    own pictures (the reader's ceiling): ({"colour", "shape"} rates, same for the truth)."""
    spec = SPECS[name]
    scenes = evaluation_scenes(prompts, video=spec.is_video, frames=spec.frames or 1)
    g = torch.Generator().manual_seed(0)
    frames = spec.frames or 1

    def rates(pictures) -> dict:
        hits = [caption_agreement(p, s) for p, s in zip(pictures, scenes)]
        return {k: statistics.fmean(h[k] for h in hits) for k in ("colour", "shape")}

    noise = [torch.rand(3, frames, spec.image_size, spec.image_size, generator=g) for _ in scenes]
    rendered = [render_video(s, spec.image_size, frames) for s in scenes]
    return rates(noise), rates(rendered)


def _tile(pixels: torch.Tensor, scale: int = 2) -> np.ndarray:
    """[3, T, H, W] -> the frames side by side, uint8, enlarged."""
    return np.concatenate([pixels_to_uint8(pixels[:, t], scale) for t in range(pixels.shape[1])], axis=1)


def train_command(name: str, c: dict, steps: int) -> str:
    """The ``jano train`` command line that reproduces (or resumes) a logged run: every setting that must match.
    ``c``: the run's full config (``write_card`` fills the settings its log predates)."""
    return (f"jano train {name} --steps {steps} --batch-size {c['batch_size']} --lr {c['lr']} --seed {c['seed']} "
            f"--checkpoint-every {c['checkpoint_every']} --precision {c['precision']} "
            f"--t-sampling {c['t_sampling']} --out DIR")


def write_card(name: str, weights_dir: str | Path, train_log: str | Path, *, prompts: int = 32, steps: int = 50,
               grid: int = 12) -> Path:
    """Write ``NAME.md``, ``NAME_loss.png`` and ``NAME_samples.png`` into ``weights_dir``; returns the card path."""
    weights_dir = Path(weights_dir)
    log = json.loads(Path(train_log).read_text())
    # settings a log predates ran at their defaults (e.g. precision "fp32", t_sampling "logit-normal")
    cfg, losses = dataclasses.asdict(TrainConfig(model=name)) | log["config"], log["losses"]
    model = load_model(name, weights=weights_dir / f"{name}.safetensors")
    spec = SPECS[name]
    window = max(1, len(losses) // 50)
    write_png(weights_dir / f"{name}_loss.png", xy_chart(
        {f"loss (mean of {window} steps)": (list(range(1, len(losses) + 1)), smoothed(losses, window))},
        title=f"{name}: rectified-flow training loss", xlabel="step", ylabel="MSE", markers=False))
    agreement, samples = measure_captions(name, model, prompts=prompts, steps=steps)
    chance, truth = reader_references(name, prompts)
    tiles = [_tile(p) for _, p in samples[:grid]]
    labels = [c.split(" on a ")[0].removeprefix("a ") for c, _ in samples[:grid]]  # fits under a 128 px tile
    cols = 4 if spec.is_video else 6
    write_png(weights_dir / f"{name}_samples.png", image_grid(tiles, cols=min(cols, len(tiles)), labels=labels))
    n_params = sum(p.numel() for p in model.parameters())
    size_mb = (weights_dir / f"{name}.safetensors").stat().st_size / 1e6
    params = models.PRESETS[name]
    card = f"""# {name}

A small config of our own {"Wan2.1" if spec.is_video else "Flux"} DiT (`models.PRESETS["{name}"]`), trained from scratch with
rectified flow on the procedural captioned {"clips" if spec.is_video else "pictures"} of `jano_ref/lab/tiny/data.py`, so that
Jano and the other methods have real content to work on offline. Not a general-purpose generator.

- **Weights**: `{name}.safetensors` ({size_mb:.1f} MB, {n_params:,} parameters, float32, the EMA of the training
  weights). Load with `jano_ref.pipelines.tiny.load_model("{name}")`.
- **Architecture**: `{params}`.
- **Inputs**: {spec.image_size}x{spec.image_size} px{f" x {spec.frames} frames" if spec.is_video else ""}, through the
  fixed space-to-depth "autoencoder" (`models.autoencoder.SpaceToDepth(2)`, pixels in [0, 1] -> latents in [-1, 1]);
  captions through `models.tiny_text.TinyTextEncoder` (16 tokens).
- **Sampling defaults** (`jano_ref.pipelines.tiny.SPECS`): classifier-free guidance {spec.guide_scale}, Euler,
  {"Wan sigma shift " + str(spec.shift) if spec.is_video else "the Flux resolution-dependent shift"}.

## Training

Command: `{train_command(name, cfg, log["step"])}`
(resumable; config below is the saved `{name}.train.json`).

- Data: `jano_ref.lab.tiny.data.make_batch` with seed `{cfg["seed"]} * 1_000_003 + step` (a new batch every step, never
  repeated), caption dropout {cfg["caption_dropout"]} (for classifier-free guidance).
- Steps: {log["step"]} x batch {cfg["batch_size"]}, AdamW lr {cfg["lr"]} ({cfg["warmup_steps"]}-step warm-up), grad clip
  {cfg["grad_clip"]}, EMA {cfg["ema_decay"]} (with warm-up), t ~ {cfg["t_sampling"]}.
- Wall time: {log["seconds"] / 60:.0f} min on the machine that trained it (2 CPU cores), as logged by `jano train`.
- Final loss (mean of the last 100 steps): {statistics.fmean(losses[-100:]):.4f}.

![loss]({name}_loss.png)

## Samples and caption agreement

{agreement["prompts"]} evaluation prompts (`jano_ref.lab.tiny.data.evaluation_scenes`, seeds training never draws), one
sample each (noise seed = prompt index), {agreement["steps"]} full-compute Euler steps, guidance
{agreement["guide_scale"]}. `jano_ref.lab.tiny.data.caption_agreement` reads the {"middle frame's " if spec.is_video else ""}colour and shape:

| colour agrees | shape agrees | both |
|---|---|---|
| {agreement["colour"]:.0%} | {agreement["shape"]:.0%} | {agreement["both"]:.0%} |

(The same reader on the same {agreement["prompts"]} prompts scores {chance["colour"]:.0%} colour / {chance["shape"]:.0%} shape on
uniform noise, the chance level, and {truth["colour"]:.0%} / {truth["shape"]:.0%} on the renderer's own pictures.)
Reproduce: `jano card {name} --weights weights/ --train-log weights/{name}.train.json --prompts {agreement["prompts"]} --steps {agreement["steps"]}`.

![samples]({name}_samples.png)
"""
    path = weights_dir / f"{name}.md"
    path.write_text(card)
    (weights_dir / f"{name}.agreement.json").write_text(json.dumps(agreement, indent=1))
    return path
