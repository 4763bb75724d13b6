"""The paper's analyses on the tiny models: per-prompt maps (``jano analyze``) and the many-prompt study (``jano study``).

Per prompt (``analyze_prompt``): one full-compute trajectory gives the ground truths (``study.convergence_map`` and
``study.fft_complexity_map`` of the final latent); one Jano run gives the analyzer's complexity, the level map and the
per-step token counts.

Over many prompts (``run_study``), on a common "study grid" of 4 x 4 latent cells per block (per frame block for
video: all frames, since the tiny videos are short), so an FFT per block has a spectrum to speak of:

* Jano §3: Spearman rho (and p-value) between ground-truth complexity and ground-truth convergence, pooled over every
  block of every prompt; the median of the per-prompt rhos is reported too.
* Jano Fig. 8: ``study.tercile_accuracy`` of the analyzer score after K warm-up steps, and of the FFT energy of the
  latent after K steps (the baseline), against each ground truth; the median over prompts, for every K.
"""

from __future__ import annotations

import json
import statistics
from dataclasses import dataclass, field
from pathlib import Path

import torch
from torch import Tensor

from ...jano.analyzer import BlockGrid, analyze
from ...jano.config import JanoConfig, get_preset
from ...generate import Generation, generate
from ..imageio import write_png, write_text
from ..plot import xy_chart
from ...jano.sampler import block_grid_for
from ..progress import Progress
from .study import convergence_map, fft_complexity_map, spearman, tercile_accuracy
from ...pipelines.tiny import SPECS, Setup, load_model, prepare
from ..tiny.data import evaluation_scenes

STUDY_BLOCK = (None, 4, 4)  # (frames -> all of them, rows, cols) in latent cells


@dataclass
class Trajectory:
    """A full-compute run with every intermediate state and velocity, as latents [S+1 | S, C, T, H, W]."""

    states: Tensor
    velocities: Tensor
    run: Generation


def full_trajectory(setup: Setup) -> Trajectory:
    states, velocities = [], []

    def record(info: dict) -> None:
        states.append(setup.latent(info["x"]).float())
        velocities.append(setup.latent(info["velocity"]).float())

    run = generate(setup.field, setup.noise, setup.sigmas, method="full", callback=record)
    states.append(setup.latent(run.tokens).float())
    return Trajectory(torch.stack(states), torch.stack(velocities), run)


def study_grid(latent_shape: tuple[int, int, int]) -> BlockGrid:
    t, h, w = latent_shape
    return BlockGrid((t, h, w), (t, STUDY_BLOCK[1], STUDY_BLOCK[2]))


@dataclass
class PromptAnalysis:
    """Maps of one prompt (all [nt, nh, nw] in their grid) and the Jano run that produced the level map."""

    setup: Setup
    trajectory: Trajectory
    jano: Generation
    grid: BlockGrid  # Jano's analysis grid (complexity, levels)
    convergence: Tensor  # ground truth on Jano's grid
    fft_complexity: Tensor  # ground truth on the study grid (an FFT needs more than 2 x 2 cells)
    study_grid: BlockGrid
    correlations: dict = field(default_factory=dict)


def analyze_prompt(name: str, prompt: str, *, steps: int = 50, seed: int = 0, preset: str | JanoConfig | None = None,
                   model=None) -> PromptAnalysis:
    setup = prepare(name, prompt, steps=steps, seed=seed, model=model)
    config = get_preset(preset or setup.spec.jano_preset)
    trajectory = full_trajectory(setup)
    jano = generate(setup.field, setup.noise, setup.sigmas, method="jano", config=config)
    grid = block_grid_for(setup.field, config)
    sgrid = study_grid(tuple(trajectory.states.shape[2:]))
    convergence = convergence_map(trajectory.states, grid)
    fft = fft_complexity_map(trajectory.states[-1], sgrid)
    result = PromptAnalysis(setup, trajectory, jano, grid, convergence, fft, sgrid)
    score = jano.report.complexity.enhanced if jano.report.complexity is not None else None
    if score is not None:
        result.correlations["jano_vs_convergence"] = spearman(score, convergence)
    result.correlations["fft_vs_convergence"] = spearman(fft, convergence_map(trajectory.states, sgrid))
    return result


# ---- the study over many prompts ----------------------------------------------------------------------------------


@dataclass
class StudyResult:
    model: str
    prompts: list[str]
    steps: int
    block: tuple[int, int, int]
    rho: float  # pooled Spearman rho, GT complexity vs GT convergence (Jano §3)
    p_value: float
    blocks: int
    median_prompt_rho: float
    warmup_steps: list[int]
    # Fig. 8: median accuracy over prompts, per K, for {"jano", "fft"} x {"complexity", "convergence"} truths
    accuracy: dict[str, list[float]]

    def to_dict(self) -> dict:
        return dict(self.__dict__)


def run_study(name: str, *, prompts: int = 16, steps: int = 50, warmup_steps=(2, 3, 4, 5, 6, 7, 8), model=None,
              preset: str | None = None, progress: bool = True) -> StudyResult:
    """Jano §3 and Fig. 8 over ``prompts`` evaluation prompts (one seed each; seed = prompt index)."""
    spec = SPECS[name]
    model = model if model is not None else load_model(name)
    config = get_preset(preset or spec.jano_preset)
    scenes = evaluation_scenes(prompts, video=spec.is_video, frames=spec.frames or 1)
    pooled_fft, pooled_conv, prompt_rhos = [], [], []
    accuracy: dict[str, list[list[float]]] = {f"{m}_vs_{t}": [[] for _ in warmup_steps]
                                               for m in ("jano", "fft") for t in ("complexity", "convergence")}
    block = None
    with Progress(len(scenes), f"study {name}", enabled=progress) as bar:
        for i, scene in enumerate(scenes):
            setup = prepare(name, scene.caption, steps=steps, seed=i, model=model)
            traj = full_trajectory(setup)
            grid = study_grid(tuple(traj.states.shape[2:]))
            block = grid.block
            truth = {"complexity": fft_complexity_map(traj.states[-1], grid),
                     "convergence": convergence_map(traj.states, grid)}
            pooled_fft.append(truth["complexity"].flatten())
            pooled_conv.append(truth["convergence"].flatten())
            prompt_rhos.append(spearman(truth["complexity"], truth["convergence"])[0])
            for j, k in enumerate(warmup_steps):
                predicted = {
                    "jano": analyze(traj.velocities[:k], grid, alpha=config.alpha,
                                    d_strength=config.d_strength, d_distance=config.d_distance,
                                    std_correction=config.contour_std_correction).enhanced,
                    "fft": fft_complexity_map(traj.states[k], grid),
                }
                for m, score in predicted.items():
                    for t, target in truth.items():
                        accuracy[f"{m}_vs_{t}"][j].append(tercile_accuracy(score, target))
            bar.update()
    rho, p = spearman(torch.cat(pooled_fft), torch.cat(pooled_conv))
    finite = [r for r in prompt_rhos if r == r]
    return StudyResult(
        model=name, prompts=[s.caption for s in scenes], steps=steps, block=tuple(block), rho=rho, p_value=p,
        blocks=int(sum(x.numel() for x in pooled_fft)), median_prompt_rho=statistics.median(finite) if finite else float("nan"),
        warmup_steps=list(warmup_steps),
        accuracy={key: [statistics.median(v) for v in per_k] for key, per_k in accuracy.items()},
    )


def write_study(result: StudyResult, out: str | Path) -> list[Path]:
    """``study.json``, ``study.md`` and ``fig8.png`` (accuracy against K, chance line at 1/3) in ``out``."""
    out = Path(out)
    ks = result.warmup_steps
    chart = xy_chart({k.replace("_vs_", " vs "): (ks, v) for k, v in result.accuracy.items()},
                     title=f"{result.model}: recognition accuracy vs warm-up steps", xlabel="warm-up steps K",
                     ylabel="tercile accuracy", ylim=(0, 1), hlines={"chance": 1 / 3})
    return [write_text(out / "study.json", json.dumps(result.to_dict(), indent=1)),
            write_text(out / "study.md", study_markdown(result)), write_png(out / "fig8.png", chart)]


def study_markdown(result: StudyResult) -> str:
    ks = result.warmup_steps
    lines = [
        f"{result.model}: {len(result.prompts)} prompts, {result.steps} steps, blocks of {result.block} latent cells.",
        "",
        f"Jano §3: Spearman rho (GT complexity vs GT convergence, {result.blocks} blocks pooled) = {result.rho:.3f} "
        f"(p = {result.p_value:.2g}); median per-prompt rho = {result.median_prompt_rho:.3f}.",
        "",
        "Jano Fig. 8, median tercile accuracy over prompts (chance = 1/3):",
        "",
        "| predictor vs truth | " + " | ".join(f"K={k}" for k in ks) + " |",
        "|---|" + "---|" * len(ks),
    ]
    for key, values in result.accuracy.items():
        lines.append(f"| {key.replace('_vs_', ' vs ')} | " + " | ".join(f"{v:.2f}" for v in values) + " |")
    return "\n".join(lines) + "\n"
