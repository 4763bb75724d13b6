"""Jano's cache memory: the byte formula against real caches, the planner, offload (same bits through the prefetch
path), the smaller modes (hidden: exact to float rounding; bf16: lossy, bounded), the memory budget, and the CLI."""

import json

import pytest
import torch

from jano_ref import generate, get_preset
from jano_ref.jano.analyzer import BlockGrid
from jano_ref.jano.cache import CACHE_MODES, CacheOptions, CacheReport, LevelKVCache
from jano_ref.jano.levels import token_levels
from jano_ref.jano.memory import (
    block_token_counts, fit_to_budget, geometry_of, geometry_of_layout, official_tokens, planned_cache,
)
from jano_ref.jano.offload import OffloadedEntries
from jano_ref.jano.plan import ACTIVE_STEP, MODERATE_STEP, REFRESH, computed_tokens
from jano_ref.lab.cli import main
from jano_ref.runtime.fields import FluxVelocity, WanVelocity
from models import build_model

from .helpers import flux_cfg_field, randomize_, rel_err, wan_field

PROMPT = "a red striped circle on a flat background"


def flux32():
    """Flux with guidance (two branches) on a 32x32 latent: 256 tokens, Flux blocks of one token each."""
    field, noise, sigmas = flux_cfg_field(seed=1, size=32)
    config = get_preset("flux-dev").replace(warmup_steps=3, cooldown_steps=1, static_interval=6, medium_interval=3,
                                            static_thresh=0.3, medium_thresh=0.6)
    return field, noise, sigmas, config


def wan12():
    """wan-test with guidance, 48 tokens in 12 blocks of 4."""
    field, noise, sigmas = wan_field(seed=2)
    config = get_preset("wan").replace(warmup_steps=3, cooldown_steps=1, static_interval=4, medium_interval=2,
                                       block_size=(1, 4, 4), static_thresh=0.3, medium_thresh=0.6)
    return field, noise, sigmas, config


def _jano(field, noise, sigmas, config, **cache):
    return generate(field, noise, sigmas, method="jano", config=config, cache=CacheOptions(**cache) if cache else None)


# ---- accounting and planner ---------------------------------------------------------------------------------------


@pytest.mark.parametrize("make", [flux32, wan12])
@pytest.mark.parametrize("mode", CACHE_MODES)
def test_cache_bytes_follow_the_formula_per_level_layer_and_branch(make, mode, one_thread_no_grad):
    field, noise, sigmas, config = make()
    run = _jano(field, noise, sigmas, config, mode=mode)
    p = field.model.params
    layers, heads, dim = ((p.depth + p.depth_single_blocks, p.num_heads, p.hidden_size) if hasattr(p, "depth")
                          else (p.num_layers, p.num_heads, p.dim))
    levels = run.report.token_levels
    n_static, n_moderate = int((levels == 1).sum()), int((levels == 2).sum())
    assert n_static > 0 and n_moderate > 0 and int((levels == 3).sum()) > 0  # all three levels take part
    tensors, element = (1, 4) if mode == "hidden" else (2, 2 if mode == "bf16" else 4)
    per_token = tensors * layers * heads * (dim // heads) * element * 2  # x 2 branches (CFG)
    report = run.report.cache
    assert report.total == run.report.cache_bytes == per_token * (n_static + n_moderate)
    assert report.by_level == {"static": per_token * n_static, "moderate": per_token * n_moderate}
    assert report.by_layer == {layer: report.total // layers for layer in range(layers)}
    assert report.by_branch == {"cond": report.total // 2, "uncond": report.total // 2}
    assert report.resident == report.total and not report.offloaded
    # the planner's formula, from the model's parameters only, gives the same number
    assert geometry_of_layout(field).total_bytes(n_static + n_moderate, mode) == report.total
    assert geometry_of(p, torch.float32, 2).total_bytes(n_static + n_moderate, mode) == report.total


def test_planner_counts_the_official_models_at_their_official_sizes():
    assert official_tokens("flux-dev", 1024, 1024) == 64 * 64  # 8x autoencoder, 2x2 packing
    assert official_tokens("wan2.1-1.3b", 480, 832, 81) == 21 * 30 * 52  # (4, 8, 8) VAE, (1, 2, 2) patches
    assert official_tokens("wan2.1-14b", 720, 1280, 81) == 21 * 45 * 80
    plan = planned_cache("wan2.1-14b", 720, 1280, 81)  # bf16, CFG, worst case: every token frozen
    assert plan.geometry.total_bytes(plan.cached_tokens) == 2 * 40 * 75600 * 40 * 128 * 2 * 2
    assert plan.total_mb("hidden") == plan.total_mb() / 2
    assert plan.offloaded_mb() == plan.total_mb() / 40 / 2 * 2  # two layers of one branch
    flux = planned_cache("flux-dev", 1024, 1024, frozen=0.5)  # one branch: guidance is distilled
    assert flux.geometry.total_bytes(flux.cached_tokens) == 2 * 57 * 2048 * 24 * 128 * 2
    with pytest.raises(ValueError, match="between 0 and 1"):
        planned_cache("flux-dev", 1024, 1024, frozen=1.5)


# ---- offload --------------------------------------------------------------------------------------------------------


def test_offload_takes_each_layer_from_the_prefetch_and_gives_the_same_bits(one_thread_no_grad):
    """Storage and compute both on the CPU still go through the store / fetch / prefetch bookkeeping."""
    model = randomize_(build_model("wan-test", num_layers=3), seed=3)
    g = torch.Generator().manual_seed(3)
    field = WanVelocity(model, torch.randn(1, 5, 24, generator=g), torch.randn(1, 3, 24, generator=g), (2, 4, 4))
    x, sigma = torch.randn(1, 8, 16, generator=g), torch.tensor(0.5)
    levels = torch.tensor([1, 1, 2, 3, 1, 2, 3, 2])
    for mode in ("exact", "hidden"):
        plain = {b: LevelKVCache(levels, CacheOptions(mode)) for b in field.branches}
        moved = {b: LevelKVCache(levels, CacheOptions(mode, offload="cpu")) for b in field.branches}
        for level in (REFRESH, ACTIVE_STEP, MODERATE_STEP, ACTIVE_STEP):
            index = computed_tokens(levels, level)
            outs = [field(x, sigma, token_index=index, kv_caches={b: c.at(level) for b, c in caches.items()})
                    for caches in (plain, moved)]
            assert torch.equal(*outs), (mode, level)
        entries = moved["cond"].entries
        assert isinstance(entries, OffloadedEntries) and entries.stream is None and not entries.pin  # no CUDA here
        # two active steps (2 levels per layer) and one moderate step (1 level): layer 0 is fetched on demand, every
        # later layer was prefetched while the previous one ran, and nothing prefetched is left over
        assert entries.fetches == 3 * (2 + 2 + 1) and entries.prefetched == 2 * (2 + 2 + 1) and not entries.ahead
        assert CacheReport.of(moved, "cpu").total == CacheReport.of(plain, "cpu").total


@pytest.mark.parametrize("mode", ["exact", "hidden"])
def test_generation_with_offload_is_bit_identical(mode, one_thread_no_grad):
    field, noise, sigmas, config = wan12()
    plain = _jano(field, noise, sigmas, config, mode=mode)
    moved = _jano(field, noise, sigmas, config, mode=mode, offload="cpu")
    assert torch.equal(plain.tokens, moved.tokens)
    assert moved.report.cache.total == plain.report.cache.total and not moved.report.cache.offloaded  # CPU: no-op


def test_offload_window_is_two_layers_of_one_branch_when_the_cache_leaves_the_device():
    caches = {b: LevelKVCache(torch.tensor([1, 2, 3]), CacheOptions(offload="cpu")) for b in ("cond", "uncond")}
    for b, c in caches.items():
        for layer in range(4):
            c.entries.entries[("static", layer)] = (torch.zeros(1, 1, 1, 8), torch.zeros(1, 1, 1, 8))
    assert CacheReport.of(caches, "cpu").resident == 2 * 4 * 64  # not moved: everything stays
    assert CacheReport.of(caches, "cuda").resident == 2 * 64  # moved: two layers of 64 B
    assert CacheReport.of(caches, "cuda").total == 2 * 4 * 64


# ---- the smaller modes ----------------------------------------------------------------------------------------------


def _cached_vs_full(field, x, sigma, levels, mode):
    """Largest relative error of the level-2 and level-1 forwards against the full one, on the cond branch alone
    (guidance would amplify float32 rounding by its scale), and the cache."""
    if isinstance(field, WanVelocity):
        one = WanVelocity(field.model, field.context, None, field.latent_fhw)
    else:
        one = FluxVelocity(field.model, field.cond, field.latent_hw)
    cache = LevelKVCache(levels, CacheOptions(mode))
    full = one(x, sigma, kv_caches={"cond": cache.at(REFRESH)})
    errors = []
    for level in (MODERATE_STEP, ACTIVE_STEP):
        index = computed_tokens(levels, level)
        errors.append(rel_err(one(x, sigma, token_index=index, kv_caches={"cond": cache.at(level)}), full[:, index]))
    return max(errors), cache


@pytest.mark.parametrize("make", [flux32, wan12])
def test_hidden_mode_recomputes_the_frozen_keys_to_float_rounding(make, one_thread_no_grad):
    """The hidden mode projects the cached inputs of the frozen rows again at every use. The projection is the same
    arithmetic on fewer rows, so a matrix product of another shape may round differently: compared with a 1e-5
    relative tolerance (float32 rounding through a few layers), not for equality."""
    field, noise, sigmas, _ = make()
    levels = torch.randint(1, 4, (noise.shape[1],), generator=torch.Generator().manual_seed(4))
    error, cache = _cached_vs_full(field, noise, sigmas[3], levels, "hidden")
    assert error <= 1e-5
    assert all(len(e) == 1 and e[0].ndim == 3 for e in cache.static.values())  # one [B, n, dim] tensor per level


@pytest.mark.parametrize("make", [flux32, wan12])
def test_hidden_mode_generation_matches_the_exact_cache(make, one_thread_no_grad):
    field, noise, sigmas, config = make()
    exact, hidden = (_jano(field, noise, sigmas, config, mode=m) for m in ("exact", "hidden"))
    assert rel_err(hidden.tokens, exact.tokens) <= 1e-5  # float rounding only (see the test above)
    assert hidden.report.cache.total * 2 == exact.report.cache.total


def test_bf16_mode_halves_a_float32_cache_and_loses_only_bf16_rounding(one_thread_no_grad):
    field, noise, sigmas, _ = wan12()
    levels = torch.randint(1, 4, (noise.shape[1],), generator=torch.Generator().manual_seed(5))
    error, cache = _cached_vs_full(field, noise, sigmas[3], levels, "bf16")
    exact_error, exact = _cached_vs_full(field, noise, sigmas[3], levels, "exact")
    # bf16 keeps 8 significant bits (relative rounding <= 2**-9 ~ 2e-3 per element): lossy, but within that
    assert exact_error <= 1e-5 < error <= 2e-3
    assert {t.dtype for e in cache.static.values() for t in e} == {torch.bfloat16}
    assert cache.nbytes() * 2 == exact.nbytes()


def test_hidden_mode_needs_a_model_that_hands_over_rows():
    hook = LevelKVCache(torch.tensor([1, 3]), CacheOptions("hidden")).at(REFRESH)
    with pytest.raises(TypeError, match="extend_kv_rows"):
        hook.extend_kv(0, torch.zeros(1, 1, 2, 4), torch.zeros(1, 1, 2, 4))
    with pytest.raises(ValueError, match="unknown cache mode"):
        CacheOptions("fp4")


# ---- the budget ----------------------------------------------------------------------------------------------------


def test_block_token_counts_match_the_token_level_map():
    for grid, patch in ((BlockGrid((1, 6, 6), (1, 4, 4)), (1, 2, 2)), (BlockGrid((2, 6, 8), (1, 3, 3)), (1, 2, 2)),
                        (BlockGrid((3, 8, 8), (2, 4, 2)), (1, 2, 2))):
        counts = block_token_counts(grid, patch)
        for b in range(grid.num_blocks):  # each block frozen on its own, through levels.token_levels
            levels = torch.full((grid.num_blocks,), 3)
            levels[b] = 1
            assert int(counts[b]) == int((token_levels(levels.reshape(grid.counts), grid, patch) == 1).sum())


def test_fit_promotes_the_highest_scoring_frozen_blocks_first():
    levels, scores = torch.tensor([[[1, 2, 1, 3, 2]]]), torch.tensor([[[0.1, 0.5, 0.3, 0.9, 0.4]]])
    identity = lambda bl: bl.flatten()  # noqa: E731  (one token per block)
    assert fit_to_budget(levels, scores, identity, 4)[1] == 0
    fitted, promoted = fit_to_budget(levels, scores, identity, 2)
    assert promoted == 2 and fitted.flatten().tolist() == [1, 3, 1, 3, 3]
    assert fit_to_budget(levels, scores, identity, 0)[0].flatten().tolist() == [3] * 5


def test_budget_no_plan_can_meet_is_refused_before_the_first_step(one_thread_no_grad):
    field, noise, sigmas, config = flux32()
    calls = []

    def spy(x, sigma, **kwargs):
        calls.append(sigma)
        return field(x, sigma, **kwargs)

    # one token in one layer of one branch costs 2 x 64 x 4 B: a budget of 1e-4 MiB (105 B) holds none
    with pytest.raises(ValueError, match="smallest cache of any Jano plan") as error:
        generate(spy, noise, sigmas, method="jano", config=config, layout=field, cache=CacheOptions(max_cache_mb=1e-4))
    assert calls == [] and "--kv-cache-mode hidden" in str(error.value)


def test_budget_is_met_by_making_the_highest_scoring_frozen_blocks_active(one_thread_no_grad):
    field, noise, sigmas, config = flux32()
    free = _jano(field, noise, sigmas, config)
    budget = free.report.cache.total / 2**20 / 2
    fitted = _jano(field, noise, sigmas, config, max_cache_mb=budget)
    assert 0 < fitted.report.cache.resident <= budget * 2**20 and fitted.report.promoted_blocks > 0
    before, after = free.report.block_levels, fitted.report.block_levels
    promoted = (before < 3) & (after == 3)
    assert int(promoted.sum()) == fitted.report.promoted_blocks and torch.equal(after[~promoted], before[~promoted])
    scores = free.report.complexity.enhanced
    assert scores[promoted].min() >= scores[(after < 3)].max()
    roomy = _jano(field, noise, sigmas, config, max_cache_mb=2 * free.report.cache.total / 2**20)
    assert roomy.report.promoted_blocks == 0 and torch.equal(roomy.tokens, free.tokens)


# ---- the command line ----------------------------------------------------------------------------------------------


def test_cli_prints_the_cache_and_peak_memory_and_refuses_an_impossible_budget(tmp_path, capsys):
    args = ["generate", PROMPT, "--random-weights", "--steps", "10", "--warmup", "1", "--repeats", "1"]
    assert main([*args, "--kv-offload", "cpu", "--kv-cache-mode", "hidden", "--out", str(tmp_path / "a")]) == 0
    out = capsys.readouterr().out
    assert out.count("--kv-offload cpu: the model runs on cpu") == 1
    assert "peak memory (peak RSS" in out and "KV cache (hidden)" in out
    with pytest.raises(SystemExit, match="--max-cache-mb: max_cache_mb=0.001"):
        main([*args, "--max-cache-mb", "0.001", "--out", str(tmp_path / "b")])
    assert not (tmp_path / "b").exists()  # refused before anything ran
    with pytest.raises(SystemExit, match="add --method jano"):
        main([*args, "--method", "full", "--kv-cache-mode", "bf16", "--out", str(tmp_path / "c")])
    assert json.loads((tmp_path / "a" / "summary.json").read_text())["method"] == "jano"


def test_memory_command_prints_the_official_table(capsys):
    from jano_ref.lab.eval.benchmarks import main as benchmarks

    benchmarks(["memory"])
    rows = [line for line in capsys.readouterr().out.splitlines() if line.startswith("| ") and "GiB" in line]
    assert [r.split(" | ")[:3] for r in rows] == [["| flux-dev", "1024x1024", "4096"],
                                                  ["| wan2.1-1.3b", "832x480x81", "32760"],
                                                  ["| wan2.1-14b", "1280x720x81", "75600"]]
    with pytest.raises(SystemExit):
        benchmarks(["memory", "--model", "tiny-wan"])


def test_bench_passes_cache_options_and_keeps_old_benches_valid():
    from jano_ref.lab.eval.bench import BenchConfig

    assert BenchConfig().identity() == dict(model="tiny-flux", steps=50, warmup=1, repeats=3, device="cpu",
                                            dtype="float32")  # what benches written before these options hold
    cfg = BenchConfig(kv_cache_mode="hidden", max_cache_mb=3.0)
    assert cfg.identity()["kv_cache_mode"] == "hidden" and cfg.identity()["max_cache_mb"] == 3.0
    assert "kv_offload" not in cfg.identity() and cfg.cache_options() == CacheOptions("hidden", None, 3.0)
    with pytest.raises(ValueError, match="unknown cache mode"):
        BenchConfig(kv_cache_mode="fp4")
