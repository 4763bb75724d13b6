"""Jano's three-level map: block scores -> static / moderate / active blocks -> per-token levels.

Official ``generate_mask`` in ``jano/mask_manager/*_mask_manager.py`` (notes §6): a block is static (1) if its
enhanced score S <= static_thresh, moderate (2) if static_thresh < S <= medium_thresh, active (3) otherwise. The
block map is broadcast to latent cells and then to the model's tokens; it is computed once after the warm-up and kept
for the rest of sampling. Official thresholds (static, medium): Flux (0.2, 0.4), Wan (0.2, 0.4) in the paper era and
(0.2, 0.6) in the latest code.

The paper also mentions choosing thresholds for a target speedup; the official code only hard-codes them.
``search_thresholds`` does that search against a caller-supplied speedup model, so this module stays independent of
any cost model.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import IntEnum
from typing import Callable, Sequence

import torch
from torch import Tensor

from .analyzer import BlockGrid

__all__ = [
    "ACTIVE",
    "MODERATE",
    "STATIC",
    "Level",
    "ThresholdChoice",
    "classify",
    "default_candidates",
    "latent_levels",
    "patch_majority",
    "search_thresholds",
    "token_levels",
]


class Level(IntEnum):
    """Refresh class of a block/token: static tokens are recomputed least often, active tokens every step."""

    STATIC = 1
    MODERATE = 2
    ACTIVE = 3


STATIC, MODERATE, ACTIVE = Level.STATIC, Level.MODERATE, Level.ACTIVE


def classify(scores: Tensor, static_thresh: float, medium_thresh: float) -> Tensor:
    """Scores -> long levels of the same shape: S <= static -> 1; static < S <= medium -> 2; S > medium -> 3.

    A score equal to a threshold goes to the lower (less computed) level, as in the official ``generate_mask``.
    """
    if not static_thresh <= medium_thresh:
        raise ValueError(
            f"static_thresh ({static_thresh}) must be <= medium_thresh ({medium_thresh}): static blocks are the "
            "lowest scores; swap them (official Flux: 0.2, 0.4)"
        )
    levels = torch.full(scores.shape, int(ACTIVE), dtype=torch.long, device=scores.device)
    levels[scores <= medium_thresh] = int(MODERATE)
    levels[scores <= static_thresh] = int(STATIC)
    return levels


def latent_levels(block_levels: Tensor, grid: BlockGrid) -> Tensor:
    """[nt, nh, nw] block levels -> [T, H, W] cell levels: each cell takes its block's level, padding cropped."""
    return grid.expand(block_levels)


def patch_majority(cell_levels: Tensor, patch: Sequence[int] = (1, 2, 2)) -> Tensor:
    """[T, H, W] cell levels -> [T/pt, H/ph, W/pw]: the most common level in each (pt, ph, pw) patch.

    Ties go to the HIGHER (more often computed) level: a token that is half active must not be frozen, which is the
    safe side for quality. (Official Wan ``transform_mask`` takes an argmax over counts, which breaks ties toward the
    lower level, and Flux asserts uniform tokens; with the official even block sizes every token is uniform, so all
    three agree there.)
    """
    pt, ph, pw = (int(p) for p in patch)
    t, h, w = cell_levels.shape
    if t % pt or h % ph or w % pw:
        raise ValueError(
            f"latent (T, H, W) = {(t, h, w)} is not divisible by the patch {(pt, ph, pw)}; the model patchifies "
            "such latents only after padding them, so pad the latent first"
        )
    patches = cell_levels.reshape(t // pt, pt, h // ph, ph, w // pw, pw).permute(0, 2, 4, 1, 3, 5).flatten(3)
    counts = torch.stack([(patches == int(lv)).sum(-1) for lv in Level], dim=-1)  # [..., 3] for levels 1, 2, 3
    # Lexicographic (count, level): scaling the count by 4 > number of levels lets the level index break ties upward.
    key = counts * 4 + torch.arange(len(Level), device=counts.device)
    return key.argmax(dim=-1) + int(STATIC)


def token_levels(block_levels: Tensor, grid: BlockGrid, patch: Sequence[int] = (1, 2, 2)) -> Tensor:
    """[nt, nh, nw] block levels -> [L] long per-token levels, in the model's token order.

    Tokens are the (pt, ph, pw) patches of the latent in row-major (F', H', W') order: ``models.wan.WanModel.patchify``
    with patch (1, 2, 2); ``models.flux.pack`` (2x2 packing, row-major over (H/2, W/2)) is the T = 1 case of the same
    order, so Flux uses patch (1, 2, 2) too. A token whose cells disagree takes their majority level (ties upward).
    """
    return patch_majority(latent_levels(block_levels, grid), patch).reshape(-1)


# ----------------------------------------------------------------------------------------------------------------------
# Threshold search
# ----------------------------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class ThresholdChoice:
    static_thresh: float
    medium_thresh: float
    levels: Tensor  # block levels, shape of the scores
    speedup: float  # speedup_of(levels)


def default_candidates() -> Tensor:
    """0.00, 0.05, ..., 1.00 (float64): the range of min-max normalised scores, containing the official values 0.2,
    0.4 and 0.6. Enhanced scores above 1 stay above every candidate, so those blocks are never static; pass a wider
    grid (or the distinct score values, which realise every possible split) to allow it."""
    return torch.arange(21, dtype=torch.float64) / 20


def search_thresholds(
    scores: Tensor,
    speedup_of: Callable[[Tensor], float],
    target_speedup: float,
    candidates: Sequence[float] | Tensor | None = None,
) -> ThresholdChoice:
    """Pick (static_thresh <= medium_thresh) from ``candidates`` reaching ``target_speedup`` with the most work kept.

    ``speedup_of(block_levels) -> float`` gets the block-level map (shape of ``scores``; use ``token_levels`` inside
    it for a token cost model). Among all candidate pairs with speedup >= target, the choice keeps the most active
    blocks, then the most moderate blocks, then the highest speedup, then the lowest thresholds. Each distinct level
    map is evaluated once. Raises ValueError with the best achievable speedup if no pair reaches the target.
    """
    grid = default_candidates() if candidates is None else torch.as_tensor(candidates, dtype=torch.float64)
    values = sorted(set(grid.reshape(-1).tolist()))
    if not values:
        raise ValueError("candidates is empty: pass at least one threshold value")
    speedups: dict[bytes, float] = {}
    best: tuple | None = None  # (key, choice)
    best_any: tuple[float, float, float] | None = None  # (speedup, static, medium) for the error message
    for i, s in enumerate(values):
        for m in values[i:]:
            levels = classify(scores, s, m)
            fingerprint = levels.cpu().numpy().tobytes()
            if fingerprint not in speedups:
                speedups[fingerprint] = float(speedup_of(levels))
            speedup = speedups[fingerprint]
            if best_any is None or speedup > best_any[0]:
                best_any = (speedup, s, m)
            if speedup < target_speedup:
                continue
            active, moderate = int((levels == int(ACTIVE)).sum()), int((levels == int(MODERATE)).sum())
            key = (active, moderate, speedup, -s, -m)
            if best is None or key > best[0]:
                best = (key, ThresholdChoice(s, m, levels, speedup))
    if best is None:
        top, s, m = best_any  # type: ignore[misc]
        raise ValueError(
            f"no candidate thresholds reach speedup {target_speedup:g}; the best achievable is {top:.4g} "
            f"(static_thresh={s:g}, medium_thresh={m:g}) over {len(values)} candidate values in "
            f"[{values[0]:g}, {values[-1]:g}]; lower the target, or pass candidates that reach higher scores "
            f"(max score {float(scores.max()):.4g})"
        )
    return best[1]
