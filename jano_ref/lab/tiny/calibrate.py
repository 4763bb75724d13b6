"""``jano calibrate``: fit TeaCache's rescale polynomial on full runs of a shipped tiny model (the published
coefficients were fitted on the real FLUX / Wan and mean nothing for ours)."""

from __future__ import annotations

import numpy as np

from ...baselines.teacache import collect_pairs, fit_coefficients
from ...pipelines.tiny import SPECS, load_model, prepare
from .data import evaluation_scenes

# The bench draws its prompts from evaluation_scenes(seed=0); calibrating on another stream keeps them disjoint.
CALIBRATION_SCENE_SEED = 1


def calibrate(model: str, prompts: int = 8, steps: int = 50, seed: int = 0, weights=None, *, device=None,
              degree: int = 4) -> tuple[float, ...]:
    """Fit TeaCache's rescale polynomial for a shipped tiny model (``jano_ref.pipelines.tiny``): ``collect_pairs`` on
    ``prompts`` captions of ``evaluation_scenes(prompts, seed=CALIBRATION_SCENE_SEED + seed)`` (noise seed
    ``seed + i`` for prompt i, ``steps`` Euler steps, the model's own guidance), pooled, then ``fit_coefficients``.
    ``weights``: a .safetensors file instead of ``weights/MODEL.safetensors``."""
    if model not in SPECS:
        raise KeyError(f"unknown tiny model {model!r}; choose one of {', '.join(SPECS)}")
    spec = SPECS[model]
    net = load_model(model, device=device, weights=weights)
    scenes = evaluation_scenes(prompts, video=spec.is_video, frames=spec.frames or 1,
                               seed=CALIBRATION_SCENE_SEED + seed)
    xs, ys = [], []
    for i, scene in enumerate(scenes):
        setup = prepare(model, scene.caption, steps=steps, seed=seed + i, model=net)
        x, y = collect_pairs(setup.field, setup.noise, setup.sigmas)
        xs.append(x)
        ys.append(y)
    return fit_coefficients(np.concatenate(xs), np.concatenate(ys), degree)
