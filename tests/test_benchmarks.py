"""The fixed-cost micro-benchmark: its pricing rule exactly, and one quick run of the measurement."""

import math

import pytest
import torch

from jano_ref.lab.eval.benchmarks import fixed_cost, fixed_cost_ideal, level_one_call, op_kind, profile_call
from jano_ref.jano.plan import JanoPlan
from jano_ref.runtime.cost import TokenCost
from jano_ref.pipelines.tiny import load_model, prepare


def _plan():
    levels = torch.tensor([1, 1, 1, 2, 2, 3, 3, 3] * 4)
    return JanoPlan.build(levels, 20, warmup=3, cooldown=2, static_interval=5, medium_interval=2)


def test_fixed_cost_ideal_is_the_token_ideal_without_a_fixed_cost_and_tends_to_one_with_a_large_one():
    plan, cost = _plan(), TokenCost(linear_per_token=1000.0, self_attn_per_pair=10.0, always_computed=4)
    counts, n = plan.token_counts(), plan.num_tokens
    assert fixed_cost_ideal(counts, n, cost, a=0.0, b=1e-9) == pytest.approx(plan.ideal_speedup(cost), rel=1e-12)
    ideals = [fixed_cost_ideal(counts, n, cost, a=a, b=1e-9) for a in (1e-6, 1e-4, 1.0)]
    assert plan.ideal_speedup(cost) > ideals[0] > ideals[1] > ideals[2] > 1.0
    assert ideals[2] == pytest.approx(1.0, abs=1e-3)


def test_fixed_cost_measures_every_count_and_prices_the_plan():
    torch.manual_seed(0)
    setup = prepare("tiny-flux", "a red striped circle on a flat background", steps=20,
                    model=load_model("tiny-flux", random_weights=True))
    r = fixed_cost(setup, "flux-dev", repeats=1, device=torch.device("cpu"), calls_per_timing=1)
    n = setup.noise.shape[1]
    assert r.counts[0] == 1 and r.counts[-1] == n and len(r.seconds) == len(r.counts)
    assert all(t > 0 for t in r.seconds) and r.measured > 0
    cost = setup.field.token_cost()
    assert r.full_call == pytest.approx(r.a + r.b * cost.forward_flops(n, n))
    assert math.isfinite(r.token_ideal) and r.token_ideal >= 1.0 and math.isfinite(r.fixed_ideal)


@pytest.mark.slow  # a few seconds each: random-weight encoders with the real vocabularies
@pytest.mark.parametrize("model", ["flux-dev", "wan2.1-1.3b"])
@pytest.mark.usefixtures("one_thread_no_grad")
def test_real_shape_times_every_stage(model, monkeypatch):
    """One quick run of `python -m jano_ref.benchmarks real-shape` at an even smaller size than REDUCED."""
    from jano_ref.lab.eval import real_shape

    smaller = dict(real_shape.REDUCED[model], size=(128, 128, None) if model == "flux-dev" else (32, 32, 5))
    smaller["decoder"] = dict(ch=32) if model == "flux-dev" else dict(base_dim=8)
    monkeypatch.setitem(real_shape.REDUCED, model, smaller)
    result = real_shape.run(model, size="reduced", device=torch.device("cpu"), dtype=torch.float32, steps=3,
                            methods=("full", "jano"), warmup=0)
    names = list(result.stages)
    assert names[:2] == ["text encoding", "transformer"] and names[-1] == "decoding"
    assert [n for n in names if n.startswith("denoising")] == ["denoising loop (3 steps), full",
                                                               "denoising loop (3 steps), jano"]
    assert all(s.seconds > 0 for s in result.stages.values())
    assert result.speedups["full"] == (1.0, 1.0) and result.speedups["jano"][1] == 1.0  # 3 steps: no plan, all full
    table = result.markdown()
    assert table.count("\n| ") == len(names) + 1 and "random weights" in table


def test_op_kinds_group_the_aten_ops_a_call_runs():
    assert op_kind("aten::addmm") == "matmul" and op_kind("aten::cat") == "copies and gathers"
    assert op_kind("aten::_scaled_dot_product_flash_attention_for_cpu") == "attention"
    assert op_kind("aten::as_strided") == "views and allocation" and op_kind("aten::gelu") == "elementwise and other"


def test_profile_call_counts_the_same_kernels_whatever_the_token_count():
    """The fixed cost in one line: computing 1 token or all of them launches the same matmuls (per layer and branch)."""
    torch.manual_seed(0)
    setup = prepare("tiny-flux", "a red striped circle on a flat background", steps=20,
                    model=load_model("tiny-flux", random_weights=True))
    n = setup.noise.shape[1]
    with torch.inference_mode():
        few, every = (profile_call(level_one_call(setup, k, torch.device("cpu")), calls=2) for k in (1, n))
    assert few.ops["matmul"] == every.ops["matmul"] > 0 and few.ops["attention"] == every.ops["attention"] > 0
    assert few.total > 0 and few.seconds["matmul"] > 0 and set(few.seconds) == set(few.ops)
