"""The shipped tiny models end to end: prompt -> velocity field, noise and schedule -> pixels.

    setup = prepare("tiny-flux", "a red striped circle on a flat background", steps=50, seed=0)
    run = generate(setup.field, setup.noise, setup.sigmas, method="jano", config=setup.spec.jano_preset)
    pixels = setup.decode(run.tokens)  # [3, F, H, W] in [0, 1]

``tiny-flux`` and ``tiny-wan`` are small configs of our own Flux and Wan modules trained by ``jano train`` on
the procedural data of ``jano_ref.lab.tiny.data``; their weights ship in ``weights/`` (model cards next to them).
They see pixels through ``models.autoencoder.SpaceToDepth`` and captions through ``models.tiny_text.TinyTextEncoder``,
so the Flux / Wan interfaces run unchanged. ``load_model(name, random_weights=True)`` gives the same architecture with seeded random
weights (no meaning, no file needed) for tests and pipeline checks.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import Tensor

import models
from models.autoencoder import SpaceToDepth
from models.tiny_text import TinyTextEncoder

from ..runtime.fields import FluxConditioning, FluxVelocity, WanVelocity
from ..runtime.sampling import flux_schedule, wan_schedule

WEIGHTS_ENV = "JANO_WEIGHTS"  # folder holding tiny-flux.safetensors / tiny-wan.safetensors


@dataclass(frozen=True)
class TinySpec:
    """How a tiny model is sampled. ``guide_scale`` is classifier-free guidance (the models were trained with
    10 % caption dropout); ``shift`` is the sigma shift (Flux: resolution-dependent ``flux_schedule`` when None)."""

    model: str
    image_size: int  # pixels per side
    frames: int | None  # pixel frames (= latent frames: SpaceToDepth does not compress time); None for images
    guide_scale: float
    jano_preset: str
    shift: float | None = None
    text_tokens: int = 16

    @property
    def is_video(self) -> bool:
        return self.frames is not None


SPECS: dict[str, TinySpec] = {
    "tiny-flux": TinySpec("tiny-flux", 64, None, guide_scale=4.0, jano_preset="flux-dev"),
    "tiny-wan": TinySpec("tiny-wan", 64, 4, guide_scale=4.0, jano_preset="wan", shift=3.0),
}


def weights_dir() -> Path:
    """``$JANO_WEIGHTS`` if set, else the repository's ``weights/`` folder."""
    env = os.environ.get(WEIGHTS_ENV)
    return Path(env) if env else Path(__file__).resolve().parents[2] / "weights"


def load_model(name: str, *, device=None, dtype=None, weights: str | Path | None = None, random_weights: bool = False):
    """Build ``name`` and load its trained weights (``weights`` = a .safetensors file; default
    ``weights_dir()/NAME.safetensors``), or give it seed-0 random weights (``random_weights=True``)."""
    _spec(name)
    if random_weights:
        with torch.random.fork_rng(devices=[]):  # random weights are part of the model's identity: fix them
            torch.manual_seed(0)
            model = models.build_model(name)
        return model.to(device=device, dtype=dtype)
    path = Path(weights) if weights is not None else weights_dir() / f"{name}.safetensors"
    if not path.exists():
        raise FileNotFoundError(
            f"no trained weights for {name} at {path}. They ship in the repository's weights/ folder; if you are "
            f"outside a clone, set {WEIGHTS_ENV}=/path/to/weights, or train them: jano train {name} --out weights/"
        )
    model = models.build_model(name, device="meta", dtype=dtype or torch.float32)
    return models.load_checkpoint(model, path, device=device)


@dataclass
class Setup:
    """One generation's inputs: the velocity field (model + conditioning), initial noise tokens and the schedule."""

    spec: TinySpec
    prompt: str
    field: FluxVelocity | WanVelocity
    noise: Tensor  # [1, L, D] tokens
    sigmas: Tensor

    def latent(self, tokens: Tensor) -> Tensor:
        """Tokens [1, L, D] -> latent [C, T, H, W]."""
        return self.field.to_latent(tokens)[0]

    def decode(self, tokens: Tensor) -> Tensor:
        """Tokens [1, L, D] -> pixels [3, T, H, W] in [0, 1] (float32)."""
        return SpaceToDepth(2).decode(self.latent(tokens).float()[None])[0]


def _spec(name: str) -> TinySpec:
    if name not in SPECS:
        raise KeyError(f"unknown tiny model {name!r}; choose one of {', '.join(SPECS)}")
    return SPECS[name]


def prepare(
    name: str,
    prompt: str,
    *,
    steps: int = 50,
    seed: int = 0,
    model=None,
    guide_scale: float | None = None,
    device=None,
    dtype=None,
) -> Setup:
    """Conditioning, noise (from ``seed``) and sigmas for one prompt. Pass ``model`` to reuse a loaded one."""
    spec = _spec(name)
    model = model if model is not None else load_model(name, device=device, dtype=dtype)
    device = next(model.parameters()).device
    scale = spec.guide_scale if guide_scale is None else guide_scale
    encoder = TinyTextEncoder()
    ae = SpaceToDepth(2)
    side = spec.image_size // ae.factor
    g = torch.Generator().manual_seed(seed)
    if isinstance(model, models.Flux):
        p = model.params
        txt, y = encoder.flux(prompt, p.context_in_dim, p.vec_in_dim, spec.text_tokens, device=device)
        txt_u, y_u = encoder.flux("", p.context_in_dim, p.vec_in_dim, spec.text_tokens, device=device)
        field = FluxVelocity(model, FluxConditioning(txt, y, None), (side, side),
                             uncond=FluxConditioning(txt_u, y_u, None), guide_scale=scale)
        noise = torch.randn(1, ae.latent_channels, side, side, generator=g)
        sigmas = flux_schedule(steps, (side // 2) ** 2, device=device)
    else:
        p = model.params
        context = encoder.wan(prompt, p.text_dim, spec.text_tokens, device=device)
        context_u = encoder.wan("", p.text_dim, spec.text_tokens, device=device)
        field = WanVelocity(model, context, context_u, (spec.frames, side, side), guide_scale=scale)
        noise = torch.randn(1, ae.latent_channels, spec.frames, side, side, generator=g)
        sigmas = wan_schedule(steps, spec.shift, device=device)
    dtype = next(model.parameters()).dtype
    return Setup(spec, prompt, field, field.to_tokens(noise.to(device=device, dtype=dtype)), sigmas)
