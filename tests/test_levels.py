"""Tests for jano_ref.jano.levels: three-level classification, block -> token levels in the Flux and Wan token orders
(majority vote, ties to the higher level), and the threshold search for a target speedup."""

from collections import Counter
from dataclasses import replace

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from jano_ref.jano.analyzer import BlockGrid, flux_block_grid
from jano_ref.jano.levels import (
    ACTIVE,
    MODERATE,
    STATIC,
    Level,
    classify,
    default_candidates,
    latent_levels,
    patch_majority,
    search_thresholds,
    token_levels,
)
from models.flux import pack
from models.wan import WAN_PRESETS, WanModel


def random_levels(shape, seed):
    return torch.randint(1, 4, shape, generator=torch.Generator().manual_seed(seed))


def majority_high_tie(values):
    """Reference vote: the most common level, the higher level on a tie."""
    counts = Counter(int(v) for v in values)
    return max(counts, key=lambda level: (counts[level], level))


# ----------------------------------------------------------------------------------------------------------------------
# classify
# ----------------------------------------------------------------------------------------------------------------------


def test_level_values():
    assert (int(STATIC), int(MODERATE), int(ACTIVE)) == (1, 2, 3) and list(Level) == [STATIC, MODERATE, ACTIVE]


def test_classify_boundaries_go_to_the_lower_level():
    s = torch.tensor([-0.1, 0.0, 0.2, 0.2 + 1e-9, 0.3, 0.4, 0.4 + 1e-9, 1.3], dtype=torch.float64)
    assert classify(s, 0.2, 0.4).tolist() == [1, 1, 1, 2, 2, 2, 3, 3]
    assert classify(s, 0.3, 0.3).tolist() == [1, 1, 1, 1, 1, 3, 3, 3]  # equal thresholds: no moderate block
    assert classify(s.float().reshape(2, 4), 0.2, 0.4).shape == (2, 4)
    with pytest.raises(ValueError, match="must be <= medium_thresh"):
        classify(s, 0.5, 0.4)


# ----------------------------------------------------------------------------------------------------------------------
# Token levels
# ----------------------------------------------------------------------------------------------------------------------


def test_patch_majority_tie_rule():
    cells = torch.tensor(
        [
            [3, 3, 1, 1],  # tie 3/1 -> 3
            [1, 1, 2, 3],  # majority 1
            [1, 2, 2, 3],  # majority 2
            [1, 1, 2, 2],  # tie 1/2 -> 2
            [1, 2, 3, 3],  # majority 3
            [2, 2, 2, 2],
        ]
    )
    # Each row becomes one (1, 2, 2) patch: lay the rows out as a [1, 2, 12] latent.
    latent = cells.reshape(6, 2, 2).permute(1, 0, 2).reshape(1, 2, 12)
    assert patch_majority(latent).reshape(-1).tolist() == [3, 1, 2, 2, 3, 2]
    with pytest.raises(ValueError, match="not divisible by the patch"):
        patch_majority(torch.ones(1, 3, 4, dtype=torch.long))


@settings(max_examples=30, deadline=None)
@given(
    h2=st.integers(1, 8),
    w2=st.integers(1, 8),
    bh=st.integers(1, 5),
    bw=st.integers(1, 5),
    seed=st.integers(0, 2**16),
)
def test_flux_token_levels_follow_pack_order(h2, w2, bh, bw, seed):
    h, w = 2 * h2, 2 * w2  # Flux latents are even
    grid = BlockGrid((1, h, w), (1, bh, bw))
    blocks = random_levels(grid.counts, seed)
    cell_map = latent_levels(blocks, grid)[0]  # [H, W]
    packed = pack(cell_map[None, None].float())[0]  # [L, 4]: the 2x2 cells of each token, tokens in Flux order
    expected = [majority_high_tie(token.tolist()) for token in packed]
    assert token_levels(blocks, grid).tolist() == expected
    assert len(expected) == (h // 2) * (w // 2)


def test_flux_official_grid_tokens_are_uniform():
    grid = flux_block_grid(32, 48)  # blocks (1, 2, 3): bw odd, so some tokens straddle two blocks
    blocks = random_levels(grid.counts, 1)
    cell_map = latent_levels(blocks, grid)
    packed = pack(cell_map.float()[None])[0]  # any single channel of the packed map; here C = 1
    mixed = (packed != packed[:, :1]).any(dim=1)
    assert mixed.any()  # the vote matters on this grid
    even = flux_block_grid(128, 128)  # the official 1024^2 setting: (1, 8, 8) blocks, every token uniform
    blocks = random_levels(even.counts, 2)
    packed = pack(latent_levels(blocks, even).float()[None])[0]
    assert torch.equal(token_levels(blocks, even), packed[:, 0].long())
    assert torch.all(packed == packed[:, :1])


@settings(max_examples=20, deadline=None)
@given(
    t=st.integers(1, 4),
    h2=st.integers(1, 5),
    w2=st.integers(1, 5),
    block=st.tuples(st.integers(1, 3), st.integers(1, 5), st.integers(1, 5)),
    patch_t=st.sampled_from([1, 2]),
    seed=st.integers(0, 2**16),
)
def test_wan_token_levels_follow_patchify_order(t, h2, w2, block, patch_t, seed):
    t = t * patch_t
    params = replace(WAN_PRESETS["wan-test"], patch_size=(patch_t, 2, 2), num_layers=0)
    model = WanModel(params)
    grid = BlockGrid((t, 2 * h2, 2 * w2), block)
    blocks = random_levels(grid.counts, seed)
    cell_map = latent_levels(blocks, grid)
    tokens = model.patchify(cell_map[None, None].float())[0]  # [L, pt*ph*pw] with C = 1
    expected = [majority_high_tie(token.tolist()) for token in tokens]
    assert token_levels(blocks, grid, params.patch_size).tolist() == expected


def test_wan_official_grid_tokens_are_uniform():
    grid = BlockGrid((21, 60, 104), (7, 6, 8))
    blocks = random_levels(grid.counts, 3)
    levels = token_levels(blocks, grid)
    assert levels.shape == (21 * 30 * 52,)
    # Each block holds 7 x 3 x 4 = 84 whole tokens.
    per_block = torch.bincount(blocks.reshape(-1), minlength=4)[1:]
    assert torch.equal(torch.bincount(levels, minlength=4)[1:], per_block * 84)


# ----------------------------------------------------------------------------------------------------------------------
# Threshold search
# ----------------------------------------------------------------------------------------------------------------------

COST = {1: 0.1, 2: 0.4, 3: 1.0}  # toy relative cost per block and level


def toy_speedup(levels):
    cost = sum(COST[int(lv)] * int((levels == int(lv)).sum()) for lv in Level)
    return levels.numel() / cost


def _random_scores(seed, shape=(1, 6, 7)):
    return torch.rand(shape, generator=torch.Generator().manual_seed(seed), dtype=torch.float64)


@settings(max_examples=20, deadline=None)
@given(target=st.floats(1.0, 4.0), seed=st.integers(0, 2**16))
def test_search_meets_target_and_keeps_the_most_active_blocks(target, seed):
    scores = _random_scores(seed)
    choice = search_thresholds(scores, toy_speedup, target)
    assert choice.speedup >= target and choice.static_thresh <= choice.medium_thresh
    assert torch.equal(choice.levels, classify(scores, choice.static_thresh, choice.medium_thresh))
    assert choice.speedup == toy_speedup(choice.levels)
    best = (int((choice.levels == 3).sum()), int((choice.levels == 2).sum()))
    grid = default_candidates().tolist()
    for i, s in enumerate(grid):
        for m in grid[i:]:
            levels = classify(scores, s, m)
            if toy_speedup(levels) >= target:
                assert (int((levels == 3).sum()), int((levels == 2).sum())) <= best


def test_search_with_custom_candidates_and_impossible_target():
    scores = _random_scores(7)
    choice = search_thresholds(scores, toy_speedup, 1.5, candidates=[0.5, 0.1, 0.3])
    assert {choice.static_thresh, choice.medium_thresh} <= {0.1, 0.3, 0.5}
    best = max(toy_speedup(classify(scores, s, m)) for s in (0.1, 0.3, 0.5) for m in (0.1, 0.3, 0.5) if s <= m)
    with pytest.raises(ValueError, match=f"best achievable is {best:.4g}"):
        search_thresholds(scores, toy_speedup, best + 0.01, candidates=[0.1, 0.3, 0.5])
    with pytest.raises(ValueError, match="empty"):
        search_thresholds(scores, toy_speedup, 1.5, candidates=[])


def test_search_evaluates_each_level_map_once():
    scores = torch.tensor([[[0.0, 0.5, 1.0]]], dtype=torch.float64)
    seen = []

    def counting(levels):
        seen.append(levels.clone())
        return toy_speedup(levels)

    search_thresholds(scores, counting, 1.0)
    keys = [tuple(lv.reshape(-1).tolist()) for lv in seen]
    assert len(keys) == len(set(keys))
    assert (1, 2, 3) in keys and (1, 1, 1) in keys
