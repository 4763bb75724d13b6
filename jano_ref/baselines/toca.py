"""ToCa, token-wise feature caching (Zou et al., "Accelerating Diffusion Transformers with Token-wise Feature
Caching", ICLR'25, arXiv 2410.05317; code Shenyi-Z/ToCa): between full steps, reuse every attention output and
recompute the MLP of only the highest-scoring fraction of the tokens.

    full step     the first ``full_first`` steps, then every ``interval`` steps (ToCa's ``fresh_threshold``): every
                  layer computes everything and caches its attention output(s), its MLP output and MLP input, and
                  resets every token's staleness to 0
    partial step  attention (self and, in Wan, cross) returns the cached output; the MLP scores its rows, computes
                  the top ``int(fresh_ratio * rows)`` of them, writes them into the cache and returns the cache,
                  so the other rows keep the output of the step they were last computed; every row's staleness
                  goes up by one, the recomputed rows' back to 0

Sources (Shenyi-Z/ToCa): ``flux-ToCa/src/flux/modules/layers.py`` (the FLUX blocks' 'full' and 'ToCa' branches),
``flux-ToCa/.../cache_functions/{cal_type,cache_init,cache_cutfresh,score_evaluate,update_cache}.py``,
``DiT-ToCa/cache_functions/{cache_cutfresh,score_evaluate,update_cache}.py``, the README; notes ``peers.md`` §3.2.
In the final version only the MLP is refreshed token-wise: DiT-ToCa ``update_cache.py`` marks its partial-attention
branch "not used in the final version", and flux-ToCa's partial step reads the attention from the cache.

Score: what we use instead of the attention map
-----------------------------------------------
ToCa ranks tokens by ``normalize(s1) + soft_fresh_weight * staleness / fresh_threshold`` (``score_evaluate.py``),
with s1 the attention each token receives (the softmax map of the last full step averaged over heads and
queries), L2-normalised over the tokens (``scores.attn_score``); DiT-ToCa then adds ``spatial_bonus`` times the
score to the best token of every 2x2 patch of the token grid (``local_selection_with_bonus(score, 0.6, 2)``; the
FLUX code comments this out).
Our models use fused attention (SDPA) that never forms the map, and the hooks see attention outputs only, so s1 is
replaced by a content term the MLP hook sees: the change of the row's MLP input since its cached output was computed,
``||h_i - h_cached_i||``. That is the quantity that makes the cached row wrong (the MLP is Lipschitz, so the error of
reusing it is bounded by a constant times that change), it costs one subtraction and one norm per row (about 1/(8d)
of the MLP it decides about), and it is exactly 0 for a row whose input did not move. ToCa's score is an importance
("tokens that others attend to"), ours an error estimate; both are kept in ToCa's form: L2-normalised over the rows,
plus the same staleness term with the same weight, plus the same 2x2 spatial bonus over the image rows (Flux text
rows get none). DiT-ToCa lists a cosine-similarity score of the same spirit (``scores.similarity_score``) and drops it
for its cost in their code; here it is one elementwise pass. Measured once on the shipped tiny-flux / tiny-wan
(30 steps, interval 4, fresh_ratio 0.1, three prompts): the change tracks each row's true reuse error closely
(correlation 0.91 / 0.87 over the rows), yet the final error is no lower than with random picks; and on one prompt
the final error grows with fresh_ratio (tiny-flux relative error 0.11 / 0.13 / 0.18 at 0 / 0.1 / 0.5): a refreshed
row's new MLP output no longer matches its reused attention.

Other choices, and how they differ from the published code
----------------------------------------------------------
*Schedule.* ``full_first`` (3) and ``interval`` follow flux-ToCa ``cal_type.py``: steps 0-2 full, then full whenever
``interval - 1`` partial steps have passed, i.e. at step 2 + k * interval. flux-ToCa's ``force_scheduler.py`` (which
may vary the interval over the steps, as DiT-ToCa's does) is not in our reference snapshot; we keep the interval the
README's preset names give (ToCa4 / 5 / 6) constant. One schedule for every layer.
*Ratio.* Every layer uses ``fresh_ratio``. flux-ToCa's ``fresh_ratio_scheduler('ToCa')`` scales it per layer by
``1.5 - layer / 27`` (layer index restarting in the single blocks; 27 is DiT-XL's last layer) and per stream by 0.4
(double) / 1.6 (single); that schedule is written for FLUX's 19 + 38 blocks and is not reproduced. The count is
``int(fresh_ratio * rows)`` as ToCa's, with a 1e-9 guard so that 0.29 * 100 counts as 29.
*Flux text rows.* In double blocks the text MLP is not hooked, so it is always computed (ToCa refreshes it
token-wise too); in single blocks text and image rows are ranked together, as in ToCa. The single blocks' cached
quantity is the GELU activation that ``linear2`` reads, and ``linear2`` runs over every row each step; ToCa caches
``linear2``'s output instead, which is the same value for a row whose activation and attention are both cached.
*Wan.* Cross-attention is reused at partial steps like self-attention (PixArt-ToCa refreshes it token-wise; our
attention hook computes all rows or none).
*Guidance.* Each guidance branch ranks its own rows (ToCa's attention score is also per batch row).
*Never reusing.* ``interval=1`` makes every step full. ``fresh_ratio=1`` does too: a step that refreshes every token
is a full step, attention included (ToCa's code would still reuse the attention; a ratio of 1 is none of its
settings). ``fresh_ratio=0`` reuses everything between full steps: ToCa's FORA mode, which makes only step 0 full
(``full_first=1``).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor

from .common import CacheHooks, sample_with_hooks


@dataclass(frozen=True)
class ToCaConfig:
    interval: int  # a full step every `interval` steps (ToCa fresh_threshold); 1 never reuses
    fresh_ratio: float  # fraction of MLP rows recomputed at a partial step; 1 makes every step full
    staleness_weight: float = 0.25  # ToCa soft_fresh_weight
    spatial_bonus: float = 0.0  # DiT-ToCa local_selection_with_bonus ratio (0.6); flux-ToCa: off
    full_first: int = 3  # the first steps are all full (flux-ToCa cal_type: steps 0-2)
    source: str = ""

    def __post_init__(self) -> None:
        for name in ("interval", "full_first"):
            value = getattr(self, name)
            if not isinstance(value, int) or value < 1:
                raise ValueError(f"{name} must be an integer >= 1, got {value!r}"
                                 + (" (interval 1 computes every step)" if name == "interval" else
                                    " (the first step must be full: the caches start empty)"))
        if not 0.0 <= self.fresh_ratio <= 1.0:
            raise ValueError(f"fresh_ratio must be in [0, 1] (the fraction of MLP rows recomputed at a partial "
                             f"step), got {self.fresh_ratio!r}")
        for name in ("staleness_weight", "spatial_bonus"):
            value = getattr(self, name)
            if not (math.isfinite(value) and value >= 0):
                raise ValueError(f"{name} must be a finite number >= 0 (0 switches the term off), got {value!r}")


_FLUX = ("flux-ToCa src/flux/modules/cache_functions/cache_init.py (fresh_ratio=0.1, soft_fresh_weight=0.25) and "
         "cal_type.py (steps 0-2 full)")
PRESETS: dict[str, ToCaConfig] = {
    "toca-flux-n4": ToCaConfig(4, 0.1, source="ToCa README FLUX.1-dev table, ToCa4-01 (fresh_threshold 4, "
                                              f"fresh_ratio 0.1; 2.84x latency, 50 steps); {_FLUX}"),
    "toca-flux-n5": ToCaConfig(5, 0.1, source=f"ToCa README FLUX.1-dev table, ToCa5-01 (3.14x); {_FLUX}"),
    "toca-flux-n6": ToCaConfig(6, 0.1, source=f"ToCa README FLUX.1-dev table, ToCa6-01 (3.57x); {_FLUX}"),
    "toca-dit": ToCaConfig(
        3, 0.07, 0.25, 0.6, 2,
        "ToCa README DiT-XL/2 DDIM-50 command (--fresh-threshold 3 --fresh-ratio 0.07 --soft-fresh-weight 0.25); "
        "DiT-ToCa cache_cutfresh.py local_selection_with_bonus(score, 0.6, 2); cal_type.py makes the first two "
        "denoising steps full at 50 steps (its step-dependent force_scheduler interval is not reproduced)"),
}
KNOB = "interval"
SWEEP = (2, 3, 4, 5, 6, 8)


def full_step(step: int, config: ToCaConfig) -> bool:
    """Whether every layer computes everything at this step: the first ``full_first`` steps, then one step in
    every ``interval`` (flux-ToCa cache_functions/cal_type.py); with ``fresh_ratio=1`` every step is full."""
    return (config.fresh_ratio >= 1.0 or step < config.full_first
            or (step - config.full_first + 1) % config.interval == 0)


def fresh_count(rows: int, ratio: float) -> int:
    """How many rows a partial step recomputes: ``int(ratio * rows)`` (ToCa cache_cutfresh.py ``topk``), with a
    1e-9 guard against 0.29 * 100 = 28.999999999999996."""
    return min(rows, int(ratio * rows + 1e-9))


def input_change(h: Tensor, cached: Tensor) -> Tensor:
    """[B, L]: ||h_i - h_cached_i||, how far each row's MLP input moved since its cached output was computed
    (our stand-in for ToCa's attention score s1, see the module docstring)."""
    return (h.float() - cached.float()).norm(dim=-1)


def toca_score(content: Tensor, staleness: Tensor, weight: float, interval: int) -> Tensor:
    """content L2-normalised over the rows, plus ``weight * staleness / interval`` (ToCa score_evaluate.py:
    ``normalize(s1) + soft_fresh_weight * cache_index / fresh_threshold``)."""
    return F.normalize(content, dim=-1) + weight * staleness.float() / interval


def patch_ids(grid: tuple[int, int, int], device) -> tuple[Tensor, int]:
    """For tokens in (t, h, w) row-major order: the id of the 2x2 patch of its frame holding each token, and the
    number of patches (odd sizes get narrower edge patches)."""
    t, h, w = grid
    ph, pw = -(-h // 2), -(-w // 2)
    tt, yy, xx = torch.meshgrid(*(torch.arange(n, device=device) for n in grid), indexing="ij")
    return ((tt * ph + yy // 2) * pw + xx // 2).flatten(), t * ph * pw


def spatial_bonus(score: Tensor, ids: Tensor, num_patches: int, ratio: float) -> Tensor:
    """Add ``ratio * score`` to the best-scoring token of every 2x2 patch (the first one on ties), so the refreshed
    tokens spread over the image (DiT-ToCa cache_cutfresh.py ``local_selection_with_bonus``, ToCa's s4)."""
    b, n = score.shape
    ids = ids.expand(b, n)
    best = score.new_full((b, num_patches), -math.inf).scatter_reduce(1, ids, score, "amax")
    position = torch.arange(n, device=score.device).expand(b, n)
    candidates = torch.where(score == best.gather(1, ids), position, n)
    first = torch.full((b, num_patches), n, device=score.device).scatter_reduce(1, ids, candidates, "amin")
    winner = torch.zeros_like(score).scatter(1, first, 1.0)
    return score + winner * score * ratio


def choose_fresh(score: Tensor, count: int) -> Tensor:
    """[B, count] indices of the highest scores (ToCa cache_cutfresh.py: argsort descending, first ``topk``); a
    stable sort, so ties go to the earlier row."""
    return torch.sort(score, dim=-1, descending=True, stable=True).indices[:, :count]


def _rows(x: Tensor, index: Tensor) -> Tensor:
    return x.gather(1, index[..., None].expand(-1, -1, x.shape[-1]))


def _put_rows(x: Tensor, index: Tensor, rows: Tensor) -> Tensor:
    """x with ``rows`` written at ``index`` along dim 1, out of place (a returned cache is never changed later)."""
    return x.scatter(1, index[..., None].expand(-1, -1, x.shape[-1]), rows)


class ToCaHooks(CacheHooks):
    """One guidance branch's ToCa state: per layer, the attention output(s), the MLP output and input of every row
    when it was last computed, and every row's staleness (ToCa ``cache_index``)."""

    def __init__(self, costs, config: ToCaConfig, grid: tuple[int, int, int] | None = None) -> None:
        super().__init__(costs)
        if config.spatial_bonus > 0 and grid is None:
            raise ValueError("spatial_bonus > 0 needs the field's token grid (T, H, W) to find 2x2 patches; pass "
                             "grid=field.token_grid, or use spatial_bonus=0")
        self.config = config
        self.grid = grid
        self.full = True
        self.attn: dict[tuple[int, str], Tensor] = {}
        self.mlp_out: dict[int, Tensor] = {}
        self.mlp_in: dict[int, Tensor] = {}
        self.staleness: dict[int, Tensor] = {}
        self.fresh: dict[int, Tensor] = {}  # the rows recomputed at the last partial step, per layer
        self._patches: tuple[Tensor, int] | None = None

    def begin_step(self, i: int, num_steps: int, sigma: float) -> None:
        super().begin_step(i, num_steps, sigma)
        self.full = full_step(i, self.config)

    def attention(self, layer, kind, run):
        key = (layer, kind)
        if not self.full and key in self.attn:
            return self.attn[key]
        self.attn[key] = super().attention(layer, kind, run)
        return self.attn[key]

    def mlp(self, layer, h, run):
        if self.full or layer not in self.mlp_out:
            out = super().mlp(layer, h, run)
            self.mlp_out[layer], self.mlp_in[layer] = out, h
            self.staleness[layer] = torch.zeros(h.shape[:2], dtype=torch.int32, device=h.device)
            return out
        index = choose_fresh(self.score(layer, h), fresh_count(h.shape[1], self.config.fresh_ratio))
        self.staleness[layer] = (self.staleness[layer] + 1).scatter(1, index, 0)
        self.fresh[layer] = index
        if index.shape[1] > 0:
            fresh = self.mlp_rows(layer, index.shape[1], run(_rows(h, index)))
            self.mlp_out[layer] = _put_rows(self.mlp_out[layer], index, fresh)
            self.mlp_in[layer] = _put_rows(self.mlp_in[layer], index, _rows(h, index))
        return self.mlp_out[layer]

    def score(self, layer: int, h: Tensor) -> Tensor:
        """[B, L] ToCa score of every MLP row of ``layer`` for the input ``h`` (before this step's update)."""
        c = self.config
        score = toca_score(input_change(h, self.mlp_in[layer]), self.staleness[layer], c.staleness_weight, c.interval)
        if c.spatial_bonus > 0:
            n_img = math.prod(self.grid)
            if score.shape[1] < n_img:
                raise ValueError(f"layer {layer}: the MLP has {score.shape[1]} rows but the token grid {self.grid} "
                                 f"has {n_img} tokens; the grid must be the field's token_grid")
            if self._patches is None:
                self._patches = patch_ids(self.grid, score.device)
            image = spatial_bonus(score[:, -n_img:], *self._patches, c.spatial_bonus)  # image rows come last
            score = torch.cat([score[:, :-n_img], image], dim=1)
        return score


def sample_toca(field, x: Tensor, sigmas: Tensor, config: ToCaConfig, *, callback=None):
    """Euler sampling with token-wise feature caching per guidance branch; returns (tokens, BaselineReport).
    ``decisions`` are "full" or "partial" per step."""
    costs, grid = field.block_costs(), getattr(field, "token_grid", None)
    return sample_with_hooks(field, x, sigmas, lambda: ToCaHooks(costs, config, grid), method="toca", config=config,
                             callback=callback, describe=lambda h: "full" if h.full else "partial")
