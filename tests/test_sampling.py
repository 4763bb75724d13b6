"""Tests for jano_ref.runtime.sampling: flow schedules vs diffusers, the Euler sampler, CFG, and the DDIM eps ->
velocity
adapter (parity with diffusers DDIMScheduler at eta = 0, and exactness on a Gaussian toy with closed forms)."""

import math

import numpy as np
import pytest
import torch
from diffusers import DDIMScheduler, FlowMatchEulerDiscreteScheduler
from hypothesis import given, settings
from hypothesis import strategies as st

from jano_ref.runtime.sampling import (
    EpsToVelocity,
    alpha_bar_to_timestep,
    classifier_free_guidance,
    ddim_sigmas,
    flow_to_vp,
    flow_to_vp_state,
    flux_mu,
    flux_schedule,
    linear_beta_alphas_cumprod,
    sample_euler,
    time_shift,
    vp_to_flow,
    vp_to_flow_state,
    wan_schedule,
)

F64 = torch.float64


def rel_err(actual: torch.Tensor, expected: torch.Tensor) -> float:
    return ((actual.double() - expected.double()).norm() / expected.double().norm()).item()


def latte_ddim(**overrides) -> DDIMScheduler:
    """diffusers DDIMScheduler with Latte-1's betas (models.md section 5)."""
    config = dict(
        beta_schedule="linear",
        beta_start=1e-4,
        beta_end=0.02,
        clip_sample=False,
        set_alpha_to_one=True,
        prediction_type="epsilon",
    )
    return DDIMScheduler(**{**config, **overrides})


def make_eps_model(channels: int, seed: int = 0):
    """Deterministic, nonlinear, timestep-dependent stand-in for an eps network on [B, C, F, H, W] latents."""
    g = torch.Generator().manual_seed(seed)
    mix = torch.randn(channels, channels, generator=g, dtype=F64) / math.sqrt(channels)
    bias = torch.randn(channels, generator=g, dtype=F64)

    def eps_model(x, t):
        t = torch.as_tensor(t, dtype=x.dtype)
        shape = (1, channels) + (1,) * (x.ndim - 2)
        mixed = torch.einsum("oc,bc...->bo...", mix.to(x.dtype), x)
        return 0.7 * mixed + 0.2 * torch.tanh(x) + torch.sin(t / 150) * bias.to(x.dtype).view(shape)

    return eps_model


# ----------------------------------------------------------------------------------------------------------------------
# Flow schedules
# ----------------------------------------------------------------------------------------------------------------------


def test_flux_mu_published_constants():
    assert flux_mu(256) == pytest.approx(0.5, abs=1e-12)
    assert flux_mu(4096) == pytest.approx(1.15, abs=1e-12)
    assert flux_mu(1024) == pytest.approx(0.63, abs=1e-12)  # models.md 1.9


def test_time_shift_endpoints_and_identity():
    t = torch.linspace(0, 1, 11, dtype=F64)
    out = time_shift(1.15, 1.0, t)
    assert not torch.isnan(out).any()
    assert out[0].item() == 0.0 and out[-1].item() == 1.0
    assert (out[1:] > 0).all() and (out.diff() > 0).all()
    torch.testing.assert_close(time_shift(0.0, 1.0, t), t, rtol=1e-15, atol=1e-15)  # mu = 0: identity


@pytest.mark.parametrize("num_steps", [1, 4, 28, 50])
@pytest.mark.parametrize("image_seq_len", [256, 1024, 4080, 4096])
def test_flux_schedule_shape_endpoints_monotone(num_steps, image_seq_len):
    sigmas = flux_schedule(num_steps, image_seq_len)
    assert sigmas.dtype == torch.float32 and sigmas.shape == (num_steps + 1,)
    assert sigmas[0].item() == 1.0 and sigmas[-1].item() == 0.0
    assert (sigmas.diff() < 0).all()
    # the shift moves every interior point towards noise
    assert (sigmas[1:-1] > torch.linspace(1, 0, num_steps + 1)[1:-1]).all()


@pytest.mark.parametrize("num_steps", [4, 7, 50])
def test_flux_schedule_unshifted_is_linspace(num_steps):
    torch.testing.assert_close(
        flux_schedule(num_steps, 4096, shift=False), torch.linspace(1, 0, num_steps + 1), rtol=0, atol=1e-7
    )


@pytest.mark.parametrize("num_steps", [1, 4, 28, 50])
@pytest.mark.parametrize("image_seq_len", [256, 1024, 4096])
def test_flux_schedule_matches_diffusers(num_steps, image_seq_len):
    # FluxPipeline: sigmas = linspace(1, 1/N, N) through FlowMatchEulerDiscreteScheduler with dynamic shifting.
    scheduler = FlowMatchEulerDiscreteScheduler(
        shift=3.0,
        use_dynamic_shifting=True,
        base_shift=0.5,
        max_shift=1.15,
        base_image_seq_len=256,
        max_image_seq_len=4096,
    )
    scheduler.set_timesteps(sigmas=np.linspace(1.0, 1 / num_steps, num_steps), mu=flux_mu(image_seq_len))
    ours = flux_schedule(num_steps, image_seq_len)
    assert scheduler.sigmas.shape == ours.shape
    torch.testing.assert_close(ours[:-1], scheduler.sigmas[:-1], rtol=0, atol=1e-6)
    assert scheduler.sigmas[-1].item() == ours[-1].item() == 0.0


@pytest.mark.parametrize("num_steps", [1, 10, 50])
@pytest.mark.parametrize("shift", [1.0, 3.0, 5.0, 12.0])
def test_wan_schedule_matches_diffusers(num_steps, shift):
    # Reference: diffusers FlowMatchEulerDiscreteScheduler(shift=...) fed Wan's unshifted grid linspace(1, 0, N+1)[:N]
    # (Wan2.1 fm_solvers.get_sampling_sigmas); its own default grid double-shifts sigma_min, so pass sigmas.
    scheduler = FlowMatchEulerDiscreteScheduler(shift=shift)
    scheduler.set_timesteps(sigmas=np.linspace(1.0, 0.0, num_steps + 1)[:-1])
    ours = wan_schedule(num_steps, shift)
    assert ours.dtype == torch.float32 and ours[0].item() == 1.0 and ours[-1].item() == 0.0
    torch.testing.assert_close(ours, scheduler.sigmas, rtol=0, atol=1e-6)


@settings(max_examples=50, deadline=None)
@given(num_steps=st.integers(2, 100), shift=st.floats(1.0, 20.0))
def test_wan_schedule_scales_odds_by_shift(num_steps, shift):
    # Independent form of the Wan shift: odds sigma / (1 - sigma) are multiplied by `shift`.
    base = torch.linspace(1, 0, num_steps + 1, dtype=F64)
    odds = shift * base[1:-1] / (1 - base[1:-1])
    expected = torch.cat([base[:1], odds / (1 + odds), base[-1:]])
    # the schedule is float32: rounding to nearest in [0, 1] is at most half an ulp of 1, 2**-24
    torch.testing.assert_close(wan_schedule(num_steps, shift).double(), expected, rtol=0, atol=2**-24)


# ----------------------------------------------------------------------------------------------------------------------
# Euler sampler and CFG
# ----------------------------------------------------------------------------------------------------------------------


def test_sample_euler_constant_velocity_is_exact():
    x = torch.randn(2, 3, 5, generator=torch.Generator().manual_seed(0))
    c = torch.randn(2, 3, 5, generator=torch.Generator().manual_seed(1))
    out = sample_euler(lambda x, sigma: c, x, flux_schedule(13, 1024))
    torch.testing.assert_close(out, x - c, rtol=0, atol=1e-6)  # the step sizes telescope to 0 - 1


def test_sample_euler_linear_ode_matches_discrete_solution():
    lam = -0.7  # v = lam * x  =>  Euler gives x_N = x_0 * prod(1 + lam * dt_i)
    sigmas = wan_schedule(20, 5.0)
    x = torch.randn(4, 8, generator=torch.Generator().manual_seed(0))
    out = sample_euler(lambda x, sigma: lam * x, x, sigmas)
    factor = torch.prod(1 + lam * sigmas.double().diff())
    torch.testing.assert_close(out.double(), x.double() * factor, rtol=1e-6, atol=0)


def test_sample_euler_bit_identical_to_naive_loop_and_callback():
    eps_model = make_eps_model(4)
    model = lambda x, sigma: eps_model(x, sigma * 1000)  # noqa: E731  any nonlinear sigma-dependent field
    sigmas = flux_schedule(9, 1024)
    x = torch.randn(2, 4, 3, 5, 5, generator=torch.Generator().manual_seed(0))

    naive = x
    for i in range(len(sigmas) - 1):
        naive = naive + (sigmas[i + 1] - sigmas[i]) * model(naive, sigmas[i])

    seen = []

    def checked_model(x, sigma):
        assert isinstance(sigma, torch.Tensor) and sigma.ndim == 0
        return model(x, sigma)

    out = sample_euler(checked_model, x, sigmas, callback=seen.append)
    assert out.dtype == x.dtype and torch.equal(out, naive)
    assert [info["i"] for info in seen] == list(range(9))
    assert torch.equal(torch.stack([info["sigma"] for info in seen]), sigmas[:-1])
    assert torch.equal(torch.stack([info["sigma_next"] for info in seen]), sigmas[1:])
    assert torch.equal(seen[0]["x"], x)
    for info in seen:
        assert torch.equal(info["velocity"], model(info["x"], info["sigma"]))


def test_sample_euler_bf16_state_does_not_lose_small_updates():
    # 50 steps of dt * v = +0.002 on x = 1: each is below half a bf16 ulp above 1 (2**-8), so a bf16 state never
    # moves, while the true answer is 1.1.
    x = torch.ones(8, dtype=torch.bfloat16)
    v = torch.full((8,), -0.1, dtype=torch.bfloat16)
    sigmas = torch.linspace(1, 0, 51)
    naive = x
    for i in range(50):
        naive = naive + (sigmas[i + 1] - sigmas[i]) * v
    assert torch.equal(naive, x)
    out = sample_euler(lambda x, sigma: v, x, sigmas)
    assert out.dtype == torch.bfloat16
    torch.testing.assert_close(out.float(), torch.full((8,), 1 - v[0].item()), rtol=0, atol=2**-8)  # half ulp


def test_classifier_free_guidance():
    g = torch.Generator().manual_seed(0)
    x, vc, vu = (torch.randn(3, 7, generator=g) for _ in range(3))
    sigma = torch.tensor(0.5)
    cond, uncond = (lambda x, s: vc), (lambda x, s: vu)
    torch.testing.assert_close(classifier_free_guidance(cond, uncond, 1.0)(x, sigma), vc, rtol=1e-6, atol=1e-6)
    torch.testing.assert_close(classifier_free_guidance(cond, uncond, 0.0)(x, sigma), vu, rtol=1e-6, atol=1e-6)
    torch.testing.assert_close(
        classifier_free_guidance(cond, uncond, 5.0)(x, sigma), 5 * vc - 4 * vu, rtol=1e-5, atol=1e-5
    )


def test_cfg_on_adapted_models_equals_eps_space_cfg():
    table = linear_beta_alphas_cumprod()
    eps_c, eps_u = make_eps_model(4, seed=1), make_eps_model(4, seed=2)
    eps_cfg = lambda x, t: eps_u(x, t) + 7.5 * (eps_c(x, t) - eps_u(x, t))  # noqa: E731  Latte-style
    z = torch.randn(2, 4, 2, 3, 3, generator=torch.Generator().manual_seed(0), dtype=F64)
    s = torch.tensor(0.63, dtype=F64)
    guided = classifier_free_guidance(EpsToVelocity(eps_c, table), EpsToVelocity(eps_u, table), 7.5)
    torch.testing.assert_close(guided(z, s), EpsToVelocity(eps_cfg, table)(z, s), rtol=1e-10, atol=1e-10)


# ----------------------------------------------------------------------------------------------------------------------
# DDIM adapter: coordinate change
# ----------------------------------------------------------------------------------------------------------------------


def test_linear_beta_table_against_diffusers_and_published_constants():
    ours = linear_beta_alphas_cumprod()
    assert ours.shape == (1000,) and ours.dtype == F64
    assert ours[0].item() == pytest.approx(0.9999, rel=1e-12)
    assert ours[-1].item() == pytest.approx(4.04e-5, rel=2e-3)  # models.md 5: abar_999 ~ 4.04e-5
    assert (ours.diff() < 0).all()
    # diffusers builds the same product in float32: 1000 roundings of 2**-24 bound its relative error by ~6e-5.
    reference = latte_ddim().alphas_cumprod.double()
    assert ((ours - reference).abs() / ours).max().item() < 1000 * 2**-24


@settings(max_examples=200, deadline=None)
@given(alpha_bar=st.floats(1e-6, 1 - 1e-9), seed=st.integers(0, 2**16))
def test_coordinate_change_round_trip(alpha_bar, seed):
    g = torch.Generator().manual_seed(seed)
    x0, eps = torch.randn(2, 3, 4, generator=g, dtype=F64), torch.randn(2, 3, 4, generator=g, dtype=F64)
    a, b = math.sqrt(alpha_bar), math.sqrt(1 - alpha_bar)
    x_t = a * x0 + b * eps
    s = vp_to_flow(torch.tensor(alpha_bar, dtype=F64))
    z = vp_to_flow_state(x_t, alpha_bar)
    torch.testing.assert_close(z, (1 - s) * x0 + s * eps, rtol=1e-12, atol=1e-12)  # z is a flow state
    x_back, alpha_bar_back = flow_to_vp(z, s)
    assert alpha_bar_back.item() == pytest.approx(alpha_bar, rel=1e-12)
    torch.testing.assert_close(x_back, x_t, rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(flow_to_vp_state(z, s), x_t, rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("table_source", ["ours", "diffusers"])
def test_integer_timesteps_survive_the_round_trip(table_source):
    table = linear_beta_alphas_cumprod() if table_source == "ours" else latte_ddim().alphas_cumprod
    s = vp_to_flow(table.double())
    _, alpha_bar = flow_to_vp(torch.zeros(()), s)
    t = alpha_bar_to_timestep(alpha_bar, table)
    err = (t - torch.arange(1000, dtype=F64)).abs().max().item()
    assert err < 1e-6, err


def test_alpha_bar_to_timestep_interpolates_and_clamps():
    table = linear_beta_alphas_cumprod()
    mid = 0.25 * table[10] + 0.75 * table[11]
    assert alpha_bar_to_timestep(mid, table).item() == pytest.approx(10.75, abs=1e-9)
    assert alpha_bar_to_timestep(torch.tensor(1.0, dtype=F64), table).item() == 0.0
    assert alpha_bar_to_timestep(torch.tensor(1e-9, dtype=F64), table).item() == 999.0
    batch = alpha_bar_to_timestep(table[[999, 3, 500]], table)
    torch.testing.assert_close(batch, torch.tensor([999.0, 3.0, 500.0], dtype=F64), rtol=0, atol=1e-6)


def test_adapter_at_data_end_and_eps_channels():
    table = linear_beta_alphas_cumprod()
    eps_model = make_eps_model(4)
    seen_t = []

    def latte_like(x, t):  # eps || learned variance on the channel axis
        seen_t.append(t)
        eps = eps_model(x, t)
        return torch.cat([eps, torch.full_like(eps, 1e6)], dim=1)

    z = torch.randn(2, 4, 2, 3, 3, generator=torch.Generator().manual_seed(0), dtype=F64)
    v = EpsToVelocity(latte_like, table, eps_channels=4)(z, torch.tensor(0.0, dtype=F64))
    # s = 0: a = 1, b = 0, x_t = z, x0_hat = z, so v = eps_hat - z, evaluated at t = 0 (clamped).
    assert torch.isfinite(v).all() and seen_t[0].item() == 0.0
    torch.testing.assert_close(v, eps_model(z, seen_t[0]) - z, rtol=1e-14, atol=1e-14)


def test_ddim_timesteps_match_diffusers():
    for spacing in ["leading", "trailing", "linspace"]:
        for offset in [0, 1]:
            for n in [1, 7, 25, 30, 50, 333, 1000]:
                if spacing == "leading" and offset == 1 and n == 1000:
                    continue  # timestep 1000 is outside the table; covered below
                scheduler = latte_ddim(timestep_spacing=spacing, steps_offset=offset)
                scheduler.set_timesteps(n)
                sigmas, timesteps = ddim_sigmas(
                    scheduler.alphas_cumprod, n, timestep_spacing=spacing, steps_offset=offset
                )
                assert torch.equal(timesteps, scheduler.timesteps), (spacing, offset, n)
                assert sigmas.shape == (n + 1,) and sigmas[-1].item() == 0.0 and (sigmas.diff() < 0).all()
    with pytest.raises(ValueError):
        ddim_sigmas(linear_beta_alphas_cumprod(), 1000, steps_offset=1)


# ----------------------------------------------------------------------------------------------------------------------
# DDIM adapter: parity with diffusers DDIMScheduler (eta = 0)
# ----------------------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("table_dtype, tol", [(torch.float32, 1e-6), (F64, 1e-12)])
@pytest.mark.parametrize("step_index", [0, 1, 12, 23, 24])
def test_one_ddim_step_is_one_euler_step(step_index, table_dtype, tol):
    scheduler = latte_ddim()
    # float32 is diffusers' own table; a float64 copy removes its float32 coefficient rounding and so checks the
    # algebra to ~1e-14.
    scheduler.alphas_cumprod = scheduler.alphas_cumprod.to(table_dtype)
    scheduler.set_timesteps(25)
    eps_model = make_eps_model(4)
    sigmas, timesteps = ddim_sigmas(scheduler.alphas_cumprod, 25)
    t = scheduler.timesteps[step_index]
    x_t = torch.randn(2, 4, 3, 4, 4, generator=torch.Generator().manual_seed(step_index), dtype=F64)
    expected = scheduler.step(eps_model(x_t, t), t, x_t).prev_sample

    s, s_next = sigmas[step_index], sigmas[step_index + 1]
    z = vp_to_flow_state(x_t, scheduler.alphas_cumprod[t])
    z_next = z + (s_next - s) * EpsToVelocity(eps_model, scheduler.alphas_cumprod)(z, s)
    err = rel_err(flow_to_vp_state(z_next, s_next), expected)
    assert err < tol, err


DDIM_LOOP_CONFIGS = [
    dict(timestep_spacing="leading", steps_offset=0, set_alpha_to_one=True),
    dict(timestep_spacing="leading", steps_offset=1, set_alpha_to_one=False),  # SD-style config
    dict(timestep_spacing="trailing", steps_offset=0, set_alpha_to_one=True),  # 25 divides 1000: same grid
]


@pytest.mark.parametrize("config", DDIM_LOOP_CONFIGS, ids=lambda c: "-".join(str(v) for v in c.values()))
def test_ddim_loop_matches_sample_euler(config):
    num_steps = 25
    scheduler = latte_ddim(**config)
    scheduler.set_timesteps(num_steps)
    eps_model = make_eps_model(4)
    x_T = torch.randn(2, 4, 3, 4, 4, generator=torch.Generator().manual_seed(0), dtype=F64)

    x = x_T
    for t in scheduler.timesteps:
        x = scheduler.step(eps_model(x, t), t, x).prev_sample

    seen_t = []

    def recording_eps_model(x, t):
        seen_t.append(t.item())
        return eps_model(x, t)

    table = scheduler.alphas_cumprod
    sigmas, timesteps = ddim_sigmas(table, num_steps, **config)
    z = vp_to_flow_state(x_T, table[timesteps[0]])
    z = sample_euler(EpsToVelocity(recording_eps_model, table), z, sigmas)
    ours = flow_to_vp_state(z, sigmas[-1])

    t_err = np.abs(np.array(seen_t) - scheduler.timesteps.numpy()).max()
    assert t_err < 1e-6, t_err
    err = rel_err(ours, x)
    assert err < 1e-5, err


# ----------------------------------------------------------------------------------------------------------------------
# DDIM adapter: Gaussian toy with closed forms
# ----------------------------------------------------------------------------------------------------------------------
# Data x0 ~ N(mu, sd^2) per dimension, eps ~ N(0, 1) independent.
# VP: x_t = a x0 + b eps is Gaussian with mean a mu, variance a^2 sd^2 + b^2, and Cov(eps, x_t) = b, so
#     E[eps | x_t] = b (x_t - a mu) / (a^2 sd^2 + b^2).
# Flow: z = (1 - s) x0 + s eps has mean (1 - s) mu, variance (1 - s)^2 sd^2 + s^2, Cov(eps - x0, z) = s - (1 - s) sd^2:
#     E[eps - x0 | z] = -mu + (s - (1 - s) sd^2) / ((1 - s)^2 sd^2 + s^2) * (z - (1 - s) mu).
# (Same as d/ds of the transport map z_s = m(s) + std(s) n: m' + (std'/std)(z - m).)


def exact_eps_model(mu, sd, table):
    def eps_model(x_t, t):
        # abar(t): linear interpolation of the table in t, written independently of alpha_bar_to_timestep.
        t = t.double().clamp(0, len(table) - 1)
        lo = t.floor().long().clamp(max=len(table) - 2)
        alpha_bar = torch.lerp(table[lo], table[lo + 1], t - lo)
        a, b = alpha_bar.sqrt(), (1 - alpha_bar).sqrt()
        return b * (x_t - a * mu) / (a**2 * sd**2 + b**2)

    return eps_model


def exact_velocity(z, s, mu, sd):
    return -mu + (s - (1 - s) * sd**2) / ((1 - s) ** 2 * sd**2 + s**2) * (z - (1 - s) * mu)


TABLE = linear_beta_alphas_cumprod()
S_MIN, S_MAX = vp_to_flow(TABLE[0]).item(), vp_to_flow(TABLE[-1]).item()


@settings(max_examples=200, deadline=None)
@given(
    mu=st.floats(-3, 3),
    sd=st.floats(0.05, 3),
    s=st.floats(S_MIN, S_MAX),
    seed=st.integers(0, 2**16),
)
def test_adapter_recovers_exact_gaussian_velocity(mu, sd, s, seed):
    g = torch.Generator().manual_seed(seed)
    x0 = mu + sd * torch.randn(64, generator=g, dtype=F64)
    z = (1 - s) * x0 + s * torch.randn(64, generator=g, dtype=F64)
    v = EpsToVelocity(exact_eps_model(mu, sd, TABLE), TABLE)(z, torch.tensor(s, dtype=F64))
    expected = exact_velocity(z, s, mu, sd)
    assert rel_err(v, expected) < 1e-6


def test_gaussian_toy_velocity_is_the_transport_derivative():
    # Independent check of the closed form: finite difference of z_s = (1 - s) mu + std(s) n along fixed n.
    mu, sd, h = 0.7, 1.3, 1e-6
    n = torch.randn(32, generator=torch.Generator().manual_seed(0), dtype=F64)

    def transport(s):
        return (1 - s) * mu + math.sqrt((1 - s) ** 2 * sd**2 + s**2) * n

    for s in [0.05, 0.3, 0.5, 0.9]:
        derivative = (transport(s + h) - transport(s - h)) / (2 * h)
        torch.testing.assert_close(exact_velocity(transport(s), s, mu, sd), derivative, rtol=1e-7, atol=1e-7)
