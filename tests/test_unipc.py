"""UniPC multistep (Wan2.1's solver): the schedule and every step against diffusers ``UniPCMultistepScheduler``
configured as the Wan2.1-Diffusers scheduler, its order of accuracy on a Gaussian with a closed-form flow, and Jano,
JiT and ``generate`` running over it."""

import dataclasses
import itertools
import math

import numpy as np
import pytest
import torch
from diffusers import UniPCMultistepScheduler

from jano_ref import generate, get_preset
from jano_ref.jano.sampler import sample_jano
from jano_ref.jit.config import JiTConfig
from jano_ref.jit.sampler import sample_jit
from jano_ref.pipelines.tiny import load_model, prepare
from jano_ref.runtime.sampling import (
    UniPCSolver,
    make_solver,
    sample_euler,
    sample_unipc,
    wan_schedule,
    wan_unipc_sigmas,
)

from .helpers import rel_err, wan_field

F64 = torch.float64


@pytest.fixture(scope="module", autouse=True)
def one_thread():
    """One intra-op thread: these forwards are tiny, and on a busy machine OpenMP barriers cost more than they save."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def wan_diffusers_unipc(order: int = 2) -> UniPCMultistepScheduler:
    """The scheduler of the Wan2.1-T2V-*-Diffusers repos, at the T2V shift 5.0 of the official code."""
    return UniPCMultistepScheduler(
        solver_order=order, prediction_type="flow_prediction", use_flow_sigmas=True, flow_shift=5.0,
        final_sigmas_type="zero", lower_order_final=True, solver_type="bh2", predict_x0=True,
    )


def official_grid(num_steps: int) -> np.ndarray:
    """The unshifted grid of Wan2.1's FlowUniPCMultistepScheduler: linspace(sigma_max, 0, N + 1)[:-1], with
    sigma_max read back (``.item()``) from its float32 table, i.e. float32(0.999) as a Python float."""
    return np.linspace(torch.tensor(0.999, dtype=torch.float32).item(), 0.0, num_steps + 1)[:-1]


def random_field(dim: int = 4, seed: int = 0, dtype=F64):
    """A nonlinear, sigma-dependent velocity field on [B, L, dim] (so the multistep terms matter)."""
    g = torch.Generator().manual_seed(seed)
    mix = torch.randn(dim, dim, generator=g, dtype=F64) / math.sqrt(dim)
    bias = torch.randn(dim, generator=g, dtype=F64)

    def field(x, sigma):
        s = sigma.to(x.dtype)
        return torch.tanh(x @ mix.to(x.dtype)) * (1 + s) - 0.3 * x + s * s * bias.to(x.dtype)

    return field


def noise(shape=(1, 6, 4), seed=1, dtype=F64):
    return torch.randn(*shape, generator=torch.Generator().manual_seed(seed), dtype=dtype)


# ---- the schedule ----------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("num_steps", [1, 2, 7, 50])
def test_wan_unipc_sigmas_equal_the_official_grid_through_diffusers(num_steps):
    scheduler = wan_diffusers_unipc()
    scheduler.set_timesteps(sigmas=official_grid(num_steps))
    sigmas = wan_unipc_sigmas(num_steps)
    assert sigmas.dtype == scheduler.sigmas.dtype == torch.float32
    assert torch.equal(sigmas, scheduler.sigmas)  # same float64 shift, same float32 rounding: bit for bit
    # the model timesteps int64(sigma * 1000) of the official code (models.md 2.6: 999, 995, 991, ... at 50 steps)
    first = min(3, num_steps)
    assert torch.equal((sigmas[:first].double() * 1000).long(), scheduler.timesteps[:first])
    scheduler.set_timesteps(num_steps)  # diffusers' own grid, linspace(1, 1/1000, N + 1)[:-1], is another one
    assert not torch.equal(sigmas, scheduler.sigmas)
    assert sigmas[0] < 1 and sigmas[0] != wan_schedule(num_steps)[0]


# ---- every step against diffusers ------------------------------------------------------------------------------------


@pytest.mark.parametrize("order", [1, 2, 3])
@pytest.mark.parametrize("grid", ["official", "diffusers"])
def test_unipc_matches_diffusers_step_by_step(order, grid):
    """float64 on both sides (diffusers' sigmas cast to float64 after set_timesteps), so the comparison sees the
    algorithm, not float32 rounding of the coefficients: agreement is ~1e-15; the bound is 1e-6."""
    num_steps, field = 9, random_field()
    scheduler = wan_diffusers_unipc(order)
    scheduler.set_timesteps(sigmas=official_grid(num_steps)) if grid == "official" else scheduler.set_timesteps(
        num_steps)
    scheduler.sigmas = scheduler.sigmas.to(F64)
    x = noise()
    expected = [x]
    for i, t in enumerate(scheduler.timesteps):
        expected.append(scheduler.step(field(expected[-1], scheduler.sigmas[i]), t, expected[-1]).prev_sample)
    inputs = []
    out = sample_unipc(field, x, scheduler.sigmas, order=order, callback=lambda info: inputs.append(info["x"]))
    assert len(inputs) == num_steps
    for i, (ours, theirs) in enumerate(zip(inputs + [out], expected)):
        assert rel_err(ours, theirs) <= 1e-6, f"step {i}"


def test_unipc_solver_matches_diffusers_on_the_same_inputs():
    """The solver alone, fed diffusers' own states and velocities at every step (float64, 1e-6 as above)."""
    num_steps, field = 6, random_field(seed=3)
    scheduler = wan_diffusers_unipc()
    scheduler.set_timesteps(sigmas=official_grid(num_steps))
    scheduler.sigmas = scheduler.sigmas.to(F64)
    solver = UniPCSolver(scheduler.sigmas)
    x = noise(seed=4)
    for i, t in enumerate(scheduler.timesteps):
        v = field(x, scheduler.sigmas[i])
        ours = solver.step(i, x, v)
        x = scheduler.step(v, t, x).prev_sample
        assert rel_err(ours, x) <= 1e-6, f"step {i}"


def test_float32_unipc_matches_diffusers_float32():
    """Both in float32 over 20 official steps: the two compute their coefficients differently (float64 here,
    float32 there), measured ~5e-7 apart; bound 1e-5."""
    num_steps, field = 20, random_field(dtype=torch.float32)
    scheduler = wan_diffusers_unipc()
    scheduler.set_timesteps(sigmas=official_grid(num_steps))
    x = noise(dtype=torch.float32)
    expected = x
    for i, t in enumerate(scheduler.timesteps):
        expected = scheduler.step(field(expected, scheduler.sigmas[i]), t, expected).prev_sample
    out = sample_unipc(field, x, wan_unipc_sigmas(num_steps))
    assert out.dtype == torch.float32 and rel_err(out, expected) <= 1e-5


# ---- what UniPC is, independently of diffusers -----------------------------------------------------------------------


def test_first_order_unipc_is_euler():
    """On flow matching alpha_t (1 - e^{-h}) = 1 - sigma_t / sigma_s, so UniP-1 is x + (sigma_t - sigma_s) v; the
    corrector is then the only difference, and order 1 without history is Euler (float64, rounding only)."""
    field, x, sigmas = random_field(), noise(), wan_unipc_sigmas(8).to(F64)
    solver = UniPCSolver(sigmas, order=1)
    v = field(x, sigmas[0])
    assert rel_err(solver.step(0, x, v), x + (sigmas[1] - sigmas[0]) * v) <= 1e-14
    # a sigma of exactly 1 is fine (lambda = -inf there only enters r_k, taken at 1 - 1e-6)
    sigmas = wan_schedule(8).to(F64)
    assert sigmas[0] == 1
    out = sample_unipc(field, x, sigmas)
    assert torch.isfinite(out).all()


def test_unipc_converges_at_higher_order_than_euler():
    """Gaussian data x0 ~ N(0, diag(s2)): the probability-flow ODE is solved by x(sigma) = x(sigma_0) std(sigma) /
    std(sigma_0), std(sigma)^2 = (1 - sigma)^2 s2 + sigma^2, and the velocity is (x - E[x0 | x]) / sigma. Halving
    the step doubles Euler's accuracy (first order) and gains more than 4x with UniPC (measured ~8x, 20 -> 40)."""
    s2 = torch.tensor([0.25, 1.0, 4.0], dtype=F64).reshape(1, 3, 1)

    def field(x, sigma):
        sigma = sigma.to(F64)
        return (x - (1 - sigma) * s2 * x / ((1 - sigma) ** 2 * s2 + sigma**2)) / sigma

    x = noise((1, 3, 5), seed=7)
    errors = {}
    for n in (20, 40):
        sigmas = wan_unipc_sigmas(n).to(F64)
        exact = x * s2.sqrt() / ((1 - sigmas[0]) ** 2 * s2 + sigmas[0] ** 2).sqrt()
        errors[n] = rel_err(sample_unipc(field, x, sigmas), exact), rel_err(sample_euler(field, x, sigmas), exact)
    (u20, e20), (u40, e40) = errors[20], errors[40]
    assert u40 < e40 / 5
    assert u20 / u40 > 4 and e20 / e40 < 2.5


def test_restart_drops_the_history_and_steps_come_in_order():
    field, x, sigmas = random_field(), noise(), wan_unipc_sigmas(6).to(F64)
    solver = UniPCSolver(sigmas)
    for i in range(3):
        x_next = solver.step(i, x, v := field(x, sigmas[i]))
        if i == 2:
            assert rel_err(x_next, x + (sigmas[3] - sigmas[2]) * v) > 1e-6  # second order with corrector
        x = x_next
    with pytest.raises(ValueError, match="in order"):
        solver.step(5, x, field(x, sigmas[5]))
    solver.restart()
    v = field(x, sigmas[3])
    assert rel_err(solver.step(3, x, v), x + (sigmas[4] - sigmas[3]) * v) <= 1e-14  # first order, no corrector


def test_bad_sigmas_orders_and_solver_names_are_refused():
    with pytest.raises(ValueError, match="strictly decreasing"):
        UniPCSolver(torch.tensor([0.5, 0.8, 0.0]))
    with pytest.raises(ValueError, match="strictly decreasing"):
        UniPCSolver(torch.tensor([1.5, 0.5, 0.0]))
    with pytest.raises(ValueError, match="strictly decreasing"):
        UniPCSolver(torch.tensor([0.9, 0.0, 0.0]))
    with pytest.raises(ValueError, match="order"):
        UniPCSolver(wan_unipc_sigmas(4), order=0)
    with pytest.raises(ValueError, match="unknown solver 'heun'.*euler, unipc"):
        make_solver("heun", wan_unipc_sigmas(4))


# ---- Jano, JiT and generate over UniPC -------------------------------------------------------------------------------

SMALL_WAN = get_preset("wan").replace(warmup_steps=3, cooldown_steps=2, static_interval=4, medium_interval=2,
                                      block_size=(1, 2, 2))


def test_jano_with_a_full_plan_is_sample_unipc():
    """Warm-up over every step: every step is a full one, so Jano runs the very computation of sample_unipc (bit for
    bit); with every block active it computes all tokens through the index path (1e-6, as the Euler test)."""
    field, x, _ = wan_field()
    sigmas = wan_unipc_sigmas(6)
    with torch.no_grad():
        reference = sample_unipc(field, x, sigmas)
        all_warmup = SMALL_WAN.replace(warmup_steps=6)
        out, report = sample_jano(field, x, sigmas, all_warmup, solver="unipc")
        assert report.token_counts == [x.shape[1]] * 6 and torch.equal(out, reference)
        active = SMALL_WAN.replace(static_thresh=-1.0, medium_thresh=-1.0)
        out, report = sample_jano(field, x, sigmas, active, solver="unipc")
    assert report.plan is not None and report.ideal_speedup == pytest.approx(1.0)
    assert rel_err(out, reference) <= 1e-6


def test_hold_frozen_latents_over_unipc_keeps_frozen_tokens_fixed():
    field, x, _ = wan_field()
    states = []
    config = SMALL_WAN.replace(hold_frozen_latents=True, static_thresh=0.3, medium_thresh=0.6)
    held = generate(field, x, wan_unipc_sigmas(10), method="jano", config=config, solver="unipc",
                    callback=states.append)
    partial = 0
    for a, b in itertools.pairwise(states):
        if a["computed"] is not None:
            frozen = torch.ones(x.shape[1], dtype=torch.bool)
            frozen[a["computed"]] = False
            assert torch.equal(a["x"][:, frozen], b["x"][:, frozen])
            assert not torch.equal(a["x"][:, ~frozen], b["x"][:, ~frozen])
            partial += bool(frozen.any())
    assert partial, "the test needs at least one partial step with frozen tokens"
    moving = generate(field, x, wan_unipc_sigmas(10), method="jano", config=config.replace(hold_frozen_latents=False),
                      solver="unipc")
    assert not torch.equal(held.tokens, moving.tokens)


@pytest.fixture(scope="module")
def tiny_wan():
    """tiny-wan with seed-0 random weights, its own conditioning and guidance, on a 2 x 8 x 8-token latent."""
    setup = prepare("tiny-wan", "a red striped circle moving left", steps=10,
                    model=load_model("tiny-wan", random_weights=True))
    field = dataclasses.replace(setup.field, latent_fhw=(2, 16, 16))
    x = torch.randn(1, math.prod(field.token_grid), setup.noise.shape[-1], generator=torch.Generator().manual_seed(0))
    return field, x


def test_jano_over_unipc_on_tiny_wan_keeps_the_plan_cost(tiny_wan):
    """The same levels give the same plan, token counts and ideal speedup with either solver; the samples differ."""
    field, x = tiny_wan
    sigmas = wan_unipc_sigmas(10)
    config = SMALL_WAN
    g = torch.Generator().manual_seed(5)
    fixed = {}

    def level_map(block_levels):  # one seeded map with all three levels, whatever the warm-up saw
        if "levels" not in fixed:
            fixed["levels"] = torch.randint(1, 4, block_levels.shape, generator=g)
        return fixed["levels"]

    seen = []
    runs = {s: generate(field, x, sigmas, method="jano", config=config, level_map=level_map, solver=s,
                        callback=seen.append if s == "unipc" else None) for s in ("euler", "unipc")}
    euler, unipc = runs["euler"].report, runs["unipc"].report
    assert set(fixed["levels"].unique().tolist()) == {1, 2, 3}
    assert unipc.token_counts == euler.token_counts and unipc.ideal_speedup == euler.ideal_speedup > 1.0
    assert torch.isfinite(runs["unipc"].tokens).all()
    assert rel_err(runs["unipc"].tokens, runs["euler"].tokens) > 1e-3
    # UniPC consumed the assembled velocity (fresh rows for computed tokens, the last ones for frozen tokens) at
    # every step, as the official Wan code feeds its scheduler: replaying the solver on it gives the run bit for bit
    replay, state = UniPCSolver(sigmas), x
    for info, after in zip(seen, seen[1:] + [None]):
        state = replay.step(info["i"], state, info["velocity"])
        assert torch.equal(state, runs["unipc"].tokens if after is None else after["x"])
    assert any(info["computed"] is not None and 0 < len(info["computed"]) < x.shape[1] for info in seen)
    analyzed = generate(field, x, sigmas, method="jano", config=config, solver="unipc")  # levels from the analyzer
    assert analyzed.report.plan is not None and torch.isfinite(analyzed.tokens).all()


def test_generate_full_and_jit_over_unipc(tiny_wan):
    field, x = tiny_wan
    sigmas = wan_unipc_sigmas(4)
    with torch.no_grad():
        reference = sample_unipc(field, x, sigmas)
    full = generate(field, x, sigmas, method="full", solver="unipc")
    assert torch.equal(full.tokens, reference) and full.report.token_counts == [x.shape[1]] * 4
    dense = JiTConfig(num_steps=4, token_fractions=(1.0, 1.0, 1.0))
    jit = generate(field, x, sigmas, method="jit", config=dense, solver="unipc")
    assert rel_err(jit.tokens, reference) <= 1e-6  # every token active: JiT is the plain sampler


def test_jit_over_unipc_restarts_at_each_transition():
    """A transition moves new tokens outside the solver, so its step is first order (an Euler step of the state
    after the micro-flow) with no corrector; the steps before it are not."""
    field, x, _ = wan_field()
    config = JiTConfig(8, (0.4, 0.7, 1.0), stage_ends=(0.3, 0.6, 1.0), seed=2)
    steps = []
    out, report = sample_jit(field, x, wan_unipc_sigmas(8), config, solver="unipc", callback=steps.append)
    assert report.transition_steps == [2, 4] and torch.isfinite(out).all()
    for i in range(1, 7):
        now, after = steps[i], steps[i + 1]
        euler = now["x"] + (now["sigma_next"] - now["sigma"]) * now["velocity"]
        if i in report.transition_steps:
            assert rel_err(after["x"], euler) <= 1e-6
        else:
            assert rel_err(after["x"], euler) > 1e-4
    _, euler_report = sample_jit(field, x, wan_unipc_sigmas(8), config)
    assert euler_report.token_counts == report.token_counts


def test_generate_refuses_unknown_solvers_and_unipc_for_the_caching_baselines():
    field, x, sigmas = wan_field()
    with pytest.raises(ValueError, match="unknown solver 'dpm'"):
        generate(field, x, sigmas, method="full", solver="dpm")
    with pytest.raises(ValueError, match="Euler solver only"):
        generate(field, x, sigmas, method="teacache", config="tiny-wan", solver="unipc")


def test_wan_integer_timesteps_truncate_as_wan_unipc_does():
    """Wan2.1's UniPC feeds the model int64(1000 sigma): with integer_timesteps a sigma of 0.99549 is timestep 995,
    the same computation as sigma 0.995 exactly; without, the model sees 995.49 and answers differently. The official
    grid truncates alike from float32 and float64 sigmas (checked for 1-200 steps)."""
    from jano_ref.runtime.fields import WanVelocity
    from models import build_model

    torch.manual_seed(0)
    model = build_model("wan-test")
    context = torch.randn(1, 3, model.params.text_dim)
    field = WanVelocity(model, context, None, (1, 4, 4), integer_timesteps=True)
    x = field.to_tokens(torch.randn(1, model.params.in_dim, 1, 4, 4))
    with torch.no_grad():
        truncated = field(x, torch.tensor(0.99549))
        exact = field(x, torch.tensor(0.995))
        plain = WanVelocity(model, context, None, (1, 4, 4))(x, torch.tensor(0.99549))
    assert torch.equal(truncated, exact)
    assert not torch.allclose(truncated, plain, rtol=0, atol=1e-6)
    for n in (1, 10, 50, 200):
        s32 = wan_unipc_sigmas(n)[:-1].double()
        top = float(torch.tensor(0.999, dtype=torch.float32))
        s64 = torch.linspace(top, 0.0, n + 1, dtype=torch.float64)[:-1]
        s64 = 5.0 * s64 / (1 + 4.0 * s64)
        assert torch.equal((s32 * 1000).floor(), (s64 * 1000).floor())
