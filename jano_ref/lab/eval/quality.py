"""The quality pass of ``jano bench --quality N``: every run's samples judged as samples, whether or not they equal
the dense one (what JiT's paper and most users judge by), beside the bench's same-noise PSNR / SSIM / LPIPS.

For each run (method and preset) the bench draws one untimed sample for each of ``K x N`` evaluation prompts
(``evaluation_scenes(K * N)``: the bench's own prompts first), in ``K = --quality-sets`` sets of ``N``; prompt ``j``
gets noise seed ``j``, as in the model cards. Every sample has its own prompt: samples that shared a prompt (several
noise seeds per prompt) would be more alike than independent draws, and KID's within-set term would count them
(measured on tiny-flux: three noise seeds on the same 64 prompts, pooled, gave 53 x 10^-3 where each alone gave 47,
42, 43). Every sample is scored twice:

* KID (``distribution.kid`` on ``distribution.alex_features``) of all the run's samples against renders of the
  data generator, and of each set alone; and its difference from the full run's KID on *paired* subsets (the
  same prompts, noise and reference pictures in both), which separates runs far better than either KID's spread;
* caption agreement (``data.caption_agreement``: does the picture show the prompt's colour and shape?).

**The reference is an independent draw of scenes** (``evaluation_scenes(M, seed=1)``, ``M = 4 x`` the samples), not
the renders of the prompts' own scenes. The unbiased estimator assumes the two sets are independent; a sample and
the render of its own scene share a caption, so they are closer than two random pictures, and the cross term,
which counts each such pair once, would pull KID down by about ``2 / N`` times that excess similarity (a bias that
shrinks with N and differs between methods as they follow the caption more or less). With an independent draw the
estimate is unbiased for the distance between the model's samples and the data as a whole, and since rendering is
cheap the reference can be several times larger than the sample set, which cuts its share of the variance. All
runs share the prompts, the noise and the reference, so their KIDs are paired: differences between runs are less
noisy than each KID's spread suggests.

Two floors are stored: the full run's own KID (how far the model itself is from its data; the best an accelerated
run can expect) and ``data_kid``, a third independent draw of renders (seed 2, as many as the samples) against the
reference: the estimator's zero at this sample count.

What a run of ``results.json`` gains (KID in its own units; the tables print it x 10^3; None where the run's cells
are missing, e.g. outside ``--quality-scope``):

* ``kid``, ``kid_std``: KID of all the run's samples against the reference, mean and std over 100 subsets of half
  the samples (``subset_size``);
* ``kid_sets``: the KID of each set of N alone (their spread is the spread of KID at N samples);
* ``kid_vs_full``, ``kid_vs_full_std``: the run's KID minus the full run's on the same subsets, mean and std;
* ``quality_samples``: K x N;
* ``caption_colour_n``, ``caption_shape_n``: the fraction of those samples whose colour / shape reads as the prompt's.

The top-level ``quality`` says how they were measured (prompts per set, sets, scope, reference size, features, subsets)
and holds the estimator's zero (``data_kid``, ``data_kid_std``).

One cell per run and set, ``DIR/quality/METHOD__PRESET__nN__setR.safetensors`` (features ``[N, d]``, colour and
shape hits ``[N]``), written atomically; a resumed bench skips the cells that exist. The reference features are
cached beside them.
"""

from __future__ import annotations

import json
import statistics
from dataclasses import dataclass
from pathlib import Path

import torch
from safetensors import safe_open
from safetensors.torch import load_file, save

from ...pipelines.tiny import SPECS
from ..imageio import write_bytes
from ..tiny.data import evaluation_scenes, render_video
from .distribution import alex_features, kid, kid_subsets, mean_std
from .metrics import LPIPS

REFERENCE_SEED = 1  # evaluation_scenes seed of the reference renders (the prompts use 0)
DATA_SEED = 2  # evaluation_scenes seed of the renders that measure the estimator's zero
REFERENCE_FACTOR = 4  # reference renders per sample
KID_SUBSETS = 100
RUN_FIELDS = ("kid", "kid_std", "kid_sets", "kid_vs_full", "kid_vs_full_std", "quality_samples", "caption_colour_n",
              "caption_shape_n")  # what a run of results.json gains (None where its cells are missing)
FEATURES = ("LPIPS AlexNet relu1-5, unit-normalised over channels, averaged over space, each layer scaled by "
            "sqrt(1152 / 5), concatenated (frames of a clip concatenated in order)")


def subset_size(samples: int) -> int:
    """KID subsets hold half the samples, so that the std over subsets includes the sampling of the run's own set
    (with all of them every subset would hold the same samples and only the reference would vary)."""
    return max(2, samples // 2)


@dataclass
class QualityCell:
    """One run's samples for one set of N prompts: KID features and caption hits, in prompt order."""

    features: torch.Tensor  # [N, d] float32
    colour: list[bool]
    shape: list[bool]
    info: dict  # method, preset, prompts ([first, last] index in evaluation_scenes = noise seed), steps, params

    def save(self, path: Path) -> Path:
        tensors = {"features": self.features.contiguous(), "colour": torch.tensor(self.colour, dtype=torch.uint8),
                   "shape": torch.tensor(self.shape, dtype=torch.uint8)}
        return write_bytes(path, save(tensors, metadata={"info": json.dumps(self.info)}))

    @classmethod
    def load(cls, path: Path) -> QualityCell:
        tensors = load_file(str(path))
        with safe_open(str(path), "pt") as f:
            info = json.loads(f.metadata()["info"])
        return cls(tensors["features"], tensors["colour"].bool().tolist(), tensors["shape"].bool().tolist(), info)


def cell_path(folder: Path, method: str, preset: str, prompts: int, index: int) -> Path:
    """Set ``index`` of ``prompts`` prompts: evaluation prompts ``index * prompts`` to ``(index + 1) * prompts - 1``."""
    return folder / f"{method}__{preset}__n{prompts:03d}__set{index}.safetensors"


def rendered_features(model: str, count: int, seed: int, net: LPIPS, folder: Path) -> torch.Tensor:
    """Features of ``count`` renders of ``evaluation_scenes(count, seed=seed)`` at the model's size (cached in
    ``folder``)."""
    path = folder / f"data__s{seed}__n{count:04d}.safetensors"
    if path.exists():
        return load_file(str(path))["features"]
    spec = SPECS[model]
    frames = spec.frames or 1
    scenes = evaluation_scenes(count, video=spec.is_video, frames=frames, seed=seed)
    pixels = torch.stack([as_sample(render_video(s, spec.image_size, frames), spec.is_video) for s in scenes])
    features = alex_features(pixels.to(net.device), net)
    write_bytes(path, save({"features": features.contiguous()}))
    return features


def as_sample(pixels: torch.Tensor, video: bool) -> torch.Tensor:
    """A decoded ``[3, T, H, W]`` generation as one KID sample: the clip, or its single frame ``[3, H, W]``."""
    return pixels if video else pixels[:, 0]


def run_fields(cells: list[QualityCell], reference: torch.Tensor, full: list[QualityCell] | None = None) -> dict:
    """What a run of ``results.json`` gains from its quality cells (one per set, in order). ``full``: the full run's
    cells of the same sets, for the paired difference ``kid_vs_full``."""
    features = torch.cat([c.features for c in cells])
    size = subset_size(len(features))
    values = kid_subsets(features, reference, KID_SUBSETS, size)
    mean, std = mean_std(values)
    per_set = [kid(c.features, reference, KID_SUBSETS, subset_size(len(c.features)))[0] for c in cells]
    delta = delta_std = None
    if full is not None:  # the same sizes and default generator draw the same subsets: the difference is paired
        base = kid_subsets(torch.cat([c.features for c in full]), reference, KID_SUBSETS, size)
        delta, delta_std = mean_std([v - b for v, b in zip(values, base)])
    colour = [h for c in cells for h in c.colour]
    shape = [h for c in cells for h in c.shape]
    return dict(kid=mean, kid_std=std, kid_sets=per_set, kid_vs_full=delta, kid_vs_full_std=delta_std,
                quality_samples=len(features), caption_colour_n=statistics.fmean(colour),
                caption_shape_n=statistics.fmean(shape))


def summary(prompts: int, sets: int, scope: str, reference: torch.Tensor, data: torch.Tensor) -> dict:
    """``results.json``'s top-level ``quality``: how the quality pass measured, and the estimator's zero."""
    samples = prompts * sets
    zero, zero_std = kid(data, reference, subsets=KID_SUBSETS, subset_size=subset_size(samples))
    return dict(prompts=prompts, sets=sets, scope=scope, samples=samples, reference=len(reference),
                reference_scenes=f"evaluation_scenes({len(reference)}, seed={REFERENCE_SEED})", features=FEATURES,
                feature_dim=reference.shape[1], subsets=KID_SUBSETS, subset_size=subset_size(samples),
                data_kid=zero, data_kid_std=zero_std)
