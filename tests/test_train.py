"""The tiny-model trainer: it learns, it checkpoints without pickle, and a resumed run equals an uninterrupted one."""

import json

import pytest
import torch
from safetensors.torch import load_file

from jano_ref.lab.tiny.train import TrainConfig, train


@pytest.mark.parametrize("model", ["tiny-flux", "tiny-wan"])
def test_resume_equals_uninterrupted_run(model, tmp_path):
    cfg = TrainConfig(model=model, steps=3, batch_size=2, checkpoint_every=1, warmup_steps=1)
    train(cfg, tmp_path / "straight", log=lambda _: None)
    train(TrainConfig(**{**cfg.__dict__, "steps": 2}), tmp_path / "resumed", log=lambda _: None)
    messages = []
    train(cfg, tmp_path / "resumed", log=messages.append)
    assert any("resuming" in m for m in messages)
    a = load_file(str(tmp_path / "straight" / f"{model}.safetensors"))
    b = load_file(str(tmp_path / "resumed" / f"{model}.safetensors"))
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    log = json.loads((tmp_path / "resumed" / f"{model}.train.json").read_text())
    assert log["step"] == 3 and len(log["losses"]) == 3


def test_loss_goes_down_on_a_short_run(tmp_path):
    cfg = TrainConfig(model="tiny-flux", steps=30, batch_size=8, checkpoint_every=30, warmup_steps=5, lr=1e-3)
    state = train(cfg, tmp_path, log=lambda _: None)
    first, last = sum(state.losses[:5]) / 5, sum(state.losses[-5:]) / 5
    assert last < 0.8 * first


def test_resuming_with_another_config_is_refused(tmp_path):
    train(TrainConfig(steps=1, batch_size=2, checkpoint_every=1), tmp_path, log=lambda _: None)
    with pytest.raises(ValueError, match=r"another config \(batch_size: saved 2, now 4\)"):
        train(TrainConfig(steps=2, batch_size=4, checkpoint_every=1), tmp_path, log=lambda _: None)


def test_ema_decay_warms_up_and_caps():
    from jano_ref.lab.tiny.train import ema_decay_at

    decays = [ema_decay_at(k, 0.999) for k in range(10_000)]  # reaches the cap at k = 8991
    assert decays[0] == 0.1  # the first average is mostly the freshly trained weights
    assert all(a <= b for a, b in zip(decays, decays[1:]))
    assert max(decays) == 0.999 and decays[-1] == 0.999


def test_bf16_mixed_precision_is_used_resumes_exactly_and_keeps_float32_weights(tmp_path):
    base = dict(model="tiny-flux", steps=2, batch_size=2, checkpoint_every=1, warmup_steps=1)
    fp32 = train(TrainConfig(**base), tmp_path / "fp32", log=lambda _: None)
    bf16 = train(TrainConfig(**base, precision="bf16"), tmp_path / "bf16", log=lambda _: None)
    # autocast really ran (the first loss differs from fp32's) and stays a faithful approximation of it
    assert bf16.losses[0] != fp32.losses[0]
    assert abs(bf16.losses[0] - fp32.losses[0]) < 0.02 * fp32.losses[0]
    weights = load_file(str(tmp_path / "bf16" / "tiny-flux.safetensors"))
    assert all(v.dtype == torch.float32 for v in weights.values())
    train(TrainConfig(**{**base, "steps": 1}, precision="bf16"), tmp_path / "resumed", log=lambda _: None)
    train(TrainConfig(**base, precision="bf16"), tmp_path / "resumed", log=lambda _: None)
    resumed = load_file(str(tmp_path / "resumed" / "tiny-flux.safetensors"))
    assert all(torch.equal(weights[k], resumed[k]) for k in weights)


def test_unknown_precision_is_refused():
    with pytest.raises(ValueError, match="precision='fp16'; expected one of"):
        TrainConfig(precision="fp16")


def test_a_log_written_before_a_setting_existed_resumes_at_its_default(tmp_path):
    cfg = TrainConfig(steps=1, batch_size=2, checkpoint_every=1, warmup_steps=1)
    train(cfg, tmp_path, log=lambda _: None)
    log_path = tmp_path / "tiny-flux.train.json"
    log = json.loads(log_path.read_text())
    del log["config"]["precision"]  # as the logs of the shipped models before the option was added
    log_path.write_text(json.dumps(log))
    messages = []
    train(TrainConfig(**{**cfg.__dict__, "steps": 2}), tmp_path, log=messages.append)
    assert any("resuming" in m for m in messages)
    with pytest.raises(ValueError, match="precision: saved 'fp32', now 'bf16'"):
        train(TrainConfig(**{**cfg.__dict__, "steps": 3, "precision": "bf16"}), tmp_path, log=lambda _: None)


def test_t_sampling_draws_the_documented_distributions():
    from jano_ref.lab.tiny.train import T_SAMPLINGS

    g = torch.Generator().manual_seed(0)
    uniform, logit_normal = T_SAMPLINGS["uniform"](200_000, g), T_SAMPLINGS["logit-normal"](200_000, g)
    assert 0 <= uniform.min() and uniform.max() < 1
    assert abs((uniform > 0.9).float().mean().item() - 0.10) < 0.005
    # P(sigmoid(n) > 0.9) = P(n > logit(0.9) = 2.197) = 1.40 % for n ~ N(0, 1)
    assert abs((logit_normal > 0.9).float().mean().item() - 0.0140) < 0.002
    with pytest.raises(ValueError, match="t_sampling='beta'; expected one of"):
        TrainConfig(t_sampling="beta")


def test_t_sampling_changes_training_and_is_part_of_the_resume_check(tmp_path):
    base = dict(model="tiny-wan", steps=2, batch_size=2, checkpoint_every=1, warmup_steps=1)
    a = train(TrainConfig(**base), tmp_path / "a", log=lambda _: None)
    b = train(TrainConfig(**base, t_sampling="uniform"), tmp_path / "b", log=lambda _: None)
    assert a.losses != b.losses
    with pytest.raises(ValueError, match="t_sampling: saved 'uniform', now 'logit-normal'"):
        train(TrainConfig(**{**base, "steps": 3}), tmp_path / "b", log=lambda _: None)
