"""TeaCache (Liu et al., "Timestep Embedding Tells: It's Time to Cache for Video Diffusion Model", CVPR'25,
arXiv 2411.19108; code ali-vilab/TeaCache): skip the whole block stack while the rescaled change of block 0's
modulated input stays small.

Each step, per guidance branch, block 0's adaLN-modulated input m_t (``Hooks.block``'s ``modulated()``; Flux: the
image rows, Wan: the video tokens) is compared with m_{t-1} of the previous step, computed or skipped. A per-model
polynomial f turns that relative L1 change into an estimate of the change of the model output, and the estimates
are summed. While the sum stays below ``rel_l1_thresh`` the step adds the cached residual (stack output minus stack
input of the last computed step) at block 0 and runs no block; otherwise it computes everything, stores the new
residual and resets the sum. The first and last steps always compute. ``rel_l1_thresh=0`` never skips.

The polynomial only means something for the model it was fitted on: ``calibrate`` fits it for our tiny models
(``collect_pairs`` + ``fit_coefficients``), and the published FLUX / Wan presets are for the real models.

Where this differs from the official scripts (TeaCache4FLUX/teacache_flux.py, TeaCache4Wan2.1/teacache_generate.py):

- Signal: the FLUX script reads block 0's modulated image input, as here; the Wan script reads the timestep
  embedding ``e`` (``e0`` with ``--use_ret_steps``), which is the same for both guidance branches and every prompt.
  We use block 0's modulated input for Wan too (the paper's signal, and the one hook both models offer), so the
  published Wan coefficients were fitted on another signal than the one they rescale here.
- Threshold 0 never skips, even where a polynomial is negative (the official comparison would skip).
- Each guidance branch keeps its own state, like the Wan script's even / odd counters; FLUX.1-dev runs one pass.
- The residual covers the whole stream (Flux: text rows too); the head reads only the image rows, so the output
  is the official one. ``--use_ret_steps`` (first 5 steps always computed, ``e0`` signal) is not offered.
"""

from __future__ import annotations

import copy
import math
from dataclasses import dataclass
from typing import Sequence

import numpy as np
import torch
from torch import Tensor

from models.layers import PassThrough

from ..runtime.sampling import sample_euler
from .common import StackSkipHooks, relative_l1, sample_with_hooks


@dataclass(frozen=True)
class TeaCacheConfig:
    rel_l1_thresh: float  # skip while the accumulated rescaled change stays below this; 0 never skips
    coefficients: tuple[float, ...]  # rescale polynomial, numpy.poly1d order (highest power first)
    source: str = ""

    def __post_init__(self) -> None:
        if not (math.isfinite(self.rel_l1_thresh) and self.rel_l1_thresh >= 0):
            raise ValueError(f"rel_l1_thresh must be a finite number >= 0 (0 never skips), got {self.rel_l1_thresh}")
        if len(self.coefficients) == 0 or not all(math.isfinite(c) for c in self.coefficients):
            raise ValueError(f"coefficients must be a non-empty tuple of finite floats, highest power first (e.g. "
                             f"from `jano calibrate`, jano_ref.lab.tiny.calibrate), got {self.coefficients!r}")


# Tiny-model polynomials, fitted on the shipped weights by the calls named in the presets' sources.
_TINY_FLUX = (-1.16805320e03, 3.93668255e02, -2.15850647e01, 2.38557323e-01, 1.35245147e-02)
_TINY_WAN = (4.95204845e01, -1.57370826e01, 5.78706170e00, -2.85024362e-01, 2.04335050e-02)
# Published polynomials of the real models (numpy.poly1d order).
_FLUX_DEV = (4.98651651e02, -2.83781631e02, 5.58554382e01, -3.82021401e00, 2.64230861e-01)
_WAN_1_3B = (2.39676752e03, -1.31110545e03, 2.01331979e02, -8.29855975e00, 1.37887774e-01)

PRESETS: dict[str, TeaCacheConfig] = {
    "teacache-tiny-flux": TeaCacheConfig(
        0.03, _TINY_FLUX,
        'coefficients = `jano calibrate tiny-flux` (8 prompts, 50 steps, seed 0; weights/tiny-flux.safetensors '
        "sha256 de1b4552de77d227...); threshold 0.03 = about 2x (24 of 50 steps computed on evaluation prompts 0 and "
        "1), the operating point of the official FLUX default (0.6, 2.0x)"),
    "teacache-tiny-wan": TeaCacheConfig(
        0.035, _TINY_WAN,
        "coefficients = `jano calibrate tiny-wan` (lab.tiny.calibrate: 8 prompts, 50 steps, seed 0) on "
        "weights/tiny-wan.safetensors sha256 8c62193b0107bf45...; threshold 0.035 = about 2x (25 of 50 steps computed "
        "on evaluation prompts 0 and 1), the operating point of the official Wan 1.3B command (0.08, about 2x)"),
    "teacache-flux-dev": TeaCacheConfig(
        0.6, _FLUX_DEV,
        "FLUX.1-dev: coefficients TeaCache4FLUX/teacache_flux.py L113 (ali-vilab/TeaCache@7c10efc); threshold 0.6 = "
        "the script's rel_l1_thresh (line 320 per TeaCache4FLUX/README.md: 0.25/0.4/0.6/0.8 give 1.5/1.8/2.0/2.25x)"),
    "teacache-flux-dev-jano": TeaCacheConfig(
        0.2, _FLUX_DEV,
        "FLUX.1-dev at the threshold of Jano's own TeaCache baseline (chen-yy20/Jano assets, 1.55x; "
        "notes/peers.md section 3.1); coefficients TeaCache4FLUX/teacache_flux.py L113"),
    "teacache-wan2.1-1.3b": TeaCacheConfig(
        0.08, _WAN_1_3B,
        "Wan2.1 T2V 1.3B: coefficients TeaCache4Wan2.1/teacache_generate.py, generate(), the '1.3B' branch without "
        "--use_ret_steps; threshold 0.08 = TeaCache4Wan2.1/README.md T2V-1.3B command (table: 0.05/0.07/0.08). "
        "Fitted on the time embedding, not block 0's modulated input (see module docstring)"),
    "teacache-wan2.1-1.3b-jano": TeaCacheConfig(
        0.1, _WAN_1_3B,
        "Wan2.1 1.3B at the threshold of Jano's own TeaCache baseline (chen-yy20/Jano assets, 1.56x; "
        "notes/peers.md section 3.1); coefficients as teacache-wan2.1-1.3b"),
}
KNOB = "rel_l1_thresh"
# tiny-flux, evaluation prompts 0-1: 0.01 computes all 50 steps, 0.015 32, 0.03 24, 0.05 17, 0.4 four.
SWEEP = (0.015, 0.02, 0.03, 0.05, 0.08, 0.12, 0.2, 0.4)


def rescale(coefficients: Sequence[float], distance: float) -> float:
    """The polynomial estimate of the output change from the input change, ``numpy.poly1d(coefficients)(distance)``
    (TeaCache4FLUX/teacache_flux.py L113-115; the paper's Sec. 3.3 "rescaling")."""
    return float(np.polyval(np.asarray(coefficients, dtype=np.float64), distance))


def decide(step: int, num_steps: int, accumulated: float, distance: float | None, config: TeaCacheConfig
           ) -> tuple[bool, float]:
    """(compute?, new accumulator) for one step of one branch, in the official order
    (TeaCache4FLUX/teacache_flux.py L109-120; Wan's teacache_forward keeps one such state per guidance branch):

    - the first and last steps compute and reset the accumulator to 0 (``distance`` is None on the first);
    - otherwise add ``rescale(distance)`` first, then skip if the sum is below ``rel_l1_thresh``, else compute and
      reset to 0 -- so the change that triggers a compute is not carried into the next interval.

    ``rel_l1_thresh=0`` always computes, even where a fitted polynomial goes negative (the official code would then
    skip); that keeps threshold 0 the uncached model.
    """
    if step == 0 or step >= num_steps - 1 or distance is None:
        return True, 0.0
    accumulated += rescale(config.coefficients, distance)
    if config.rel_l1_thresh > 0 and accumulated < config.rel_l1_thresh:
        return False, accumulated
    return True, 0.0


class TeaCacheHooks(StackSkipHooks):
    """One guidance branch's TeaCache state. The modulated input is compared with the previous *step's*
    (``previous_modulated_input`` is updated on skipped steps too, teacache_flux.py L121); a skip adds the residual
    of the last *computed* step (L128-130)."""

    first_skipped = 0  # the decision is made before block 0 runs

    def __init__(self, costs, config: TeaCacheConfig) -> None:
        super().__init__(costs)
        self.config = config
        self.previous: Tensor | None = None  # block 0's modulated input at the previous step
        self.accumulated = 0.0

    def block(self, layer, x, run, modulated):
        if layer == 0:
            m = self.keep(modulated())
            # no residual yet (a first step) counts as no distance: compute and reset; so does a step that may not
            # reuse (under Jano: one that computes frozen tokens too, as the official jano_teacache_forward decides)
            fresh = self.previous is None or self.residual is None or not self.reusable
            distance = None if fresh else relative_l1(m, self.previous)
            compute, self.accumulated = decide(self.step, self.num_steps, self.accumulated, distance, self.config)
            self.skipping = not compute
            self.previous = m
        return self.skip_or_run(layer, x, run, modulated)


def sample_teacache(field, x: Tensor, sigmas: Tensor, config: TeaCacheConfig, *, callback=None):
    """Euler sampling with TeaCache per guidance branch; returns (tokens, BaselineReport)."""
    costs = field.block_costs()
    return sample_with_hooks(field, x, sigmas, lambda: TeaCacheHooks(costs, config), method="teacache",
                             config=config, callback=callback, describe=lambda h: "skip" if h.skipping else "compute")


# ---- calibration: fit the rescale polynomial of a model ------------------------------------------------------------


class _Recorder(PassThrough):
    """Computes everything and keeps the last forward's block-0 modulated input and stack output."""

    def __init__(self, depth: int) -> None:
        self.depth = depth
        self.modulated: Tensor | None = None
        self.stack_output: Tensor | None = None

    def block(self, layer, x, run, modulated):
        if layer == 0:
            self.modulated = modulated()
        out = run(x)
        if layer == self.depth - 1:
            self.stack_output = out
        return out


class _Replay(PassThrough):
    """Runs no block: returns a recorded stack output at block 0 and passes it through the rest."""

    def __init__(self, stack_output: Tensor) -> None:
        self.stack_output = stack_output

    def block(self, layer, x, run, modulated):
        return self.stack_output if layer == 0 else x


def branch_velocities(field, x: Tensor, sigma: Tensor, recorders: dict[str, _Recorder], guided: Tensor
                      ) -> dict[str, Tensor]:
    """Each guidance branch's own model output at (x, sigma), given the guided output and the branches' recorded
    stack outputs. A field mixes its branches as ``guidance_mix(cond, uncond, guide_scale)``; a copy with
    guide_scale 1 (0) gives the cond (uncond) output, and replaying the recorded stack outputs makes that cost
    only the heads."""
    branches = tuple(getattr(field, "branches", ("cond",)))
    if branches == ("cond",):
        return {"cond": guided}
    if branches != ("cond", "uncond") or not hasattr(field, "guide_scale"):
        raise ValueError(f"collect_pairs reads per-branch outputs of fields with branches ('cond',) or "
                         f"('cond', 'uncond') mixed by a guide_scale attribute; got branches {branches} on "
                         f"{type(field).__name__}")
    replay = {b: _Replay(r.stack_output) for b, r in recorders.items()}
    out = {}
    for branch, scale in (("cond", 1.0), ("uncond", 0.0)):
        view = copy.copy(field)
        view.guide_scale = scale
        out[branch] = view(x, sigma, hooks=replay)
    return out


def collect_pairs(field, noise: Tensor, sigmas: Tensor) -> tuple[np.ndarray, np.ndarray]:
    """One uncached Euler run (``sampling.sample_euler``'s trajectory); returns (input_changes, output_changes):
    one pair per step after the first and per guidance branch, branch by branch in ``field.branches`` order.

    The input change is TeaCache's signal: block 0's modulated input, relative L1 against the previous step. The
    output change is that of the branch's own model output (its velocity, before guidance mixing), relative L1
    against the previous step: what the official fits use ("model output", ali-vilab/TeaCache issue #2), and what
    the threshold bounds. (The stack output is a poorer stand-in: on tiny-flux its step-to-step change is 2-4x the
    velocity's late in sampling, where the input embedding of x_t dominates it.)
    """
    depth = len(field.block_costs())
    branches = tuple(getattr(field, "branches", ("cond",)))
    recorders = {b: _Recorder(depth) for b in branches}
    history: dict[str, list[tuple[Tensor, Tensor]]] = {b: [] for b in branches}  # (modulated input, velocity)
    inputs: dict[str, list[float]] = {b: [] for b in branches}
    outputs: dict[str, list[float]] = {b: [] for b in branches}

    def model(x: Tensor, sigma: Tensor) -> Tensor:
        guided = field(x, sigma, hooks=recorders)
        velocities = branch_velocities(field, x, sigma, recorders, guided)
        for b in branches:
            now = (recorders[b].modulated, velocities[b])
            if history[b]:
                before = history[b][-1]
                inputs[b].append(relative_l1(now[0], before[0]))
                outputs[b].append(relative_l1(now[1], before[1]))
            history[b][-1:] = [now]  # only the previous step is needed
        return guided

    with torch.no_grad():
        sample_euler(model, noise, sigmas)
    return (np.asarray([c for b in branches for c in inputs[b]], dtype=np.float64),
            np.asarray([c for b in branches for c in outputs[b]], dtype=np.float64))


def fit_coefficients(input_changes, output_changes, degree: int = 4) -> tuple[float, ...]:
    """Least-squares polynomial from input changes to output changes, ``numpy.polyfit(x, y, degree)`` over all
    steps of all calibration runs (how the official coefficients were made: ali-vilab/TeaCache issue #2).
    Returns ``degree + 1`` floats, highest power first (``numpy.poly1d`` order, as ``TeaCacheConfig`` wants)."""
    x = np.asarray(input_changes, dtype=np.float64).ravel()
    y = np.asarray(output_changes, dtype=np.float64).ravel()
    if x.shape != y.shape:
        raise ValueError(f"need one output change per input change, got {x.size} inputs and {y.size} outputs; "
                         "pass the two arrays collect_pairs returns")
    if x.size <= degree:
        raise ValueError(f"a degree-{degree} fit needs more than {degree} pairs, got {x.size}; calibrate on more "
                         "steps or prompts")
    if not (np.isfinite(x).all() and np.isfinite(y).all()):
        raise ValueError("input / output changes contain nan or inf; check the model's outputs are finite")
    return tuple(float(c) for c in np.polyfit(x, y, degree))
