"""Train the tiny Flux / Wan models with rectified flow on the procedural data (``jano train``).

    jano train tiny-flux --steps 2000 --out weights/     # resumable: re-running continues from the last checkpoint

Loss: E || v(x_t, t) - (eps - x0) ||^2 with x_t = (1 - t) x0 + t eps (the flow convention of ``sampling.py``),
t ~ logit-normal (SD3, Esser et al. 2024, §3.1) or uniform (rectified flow, Liu et al. 2022), captions dropped
to "" with probability ``caption_dropout`` so the model also learns the unconditional velocity that classifier-free guidance needs (Ho & Salimans 2022). An exponential moving average
of the weights is what gets shipped.

Checkpoints are safetensors only (never pickle): ``NAME.safetensors`` (EMA weights, the shipped file),
``NAME.state.safetensors`` (raw weights and AdamW moments, for resuming) and ``NAME.train.json`` (config,
step, loss curve). Data for step k is drawn from seed ``seed * 1_000_003 + k``, so a resumed run sees exactly
the batches an uninterrupted one would.
"""

from __future__ import annotations

import dataclasses
import json
import math
import os
import time
from dataclasses import dataclass, field
from pathlib import Path

import torch
from safetensors.torch import load_file, save_file
from torch import Tensor

import models
from models.autoencoder import SpaceToDepth
from models.flux import image_ids, pack, text_ids

from .data import make_batch
from ..imageio import write_text
from models.tiny_text import TinyTextEncoder


PRECISIONS = {"fp32": None, "bf16": torch.bfloat16}  # autocast dtype per precision name


@dataclass
class TrainConfig:
    model: str = "tiny-flux"
    steps: int = 2000
    batch_size: int = 64
    lr: float = 3e-4
    warmup_steps: int = 100  # linear learning-rate warm-up
    weight_decay: float = 0.0
    grad_clip: float = 1.0
    ema_decay: float = 0.999
    caption_dropout: float = 0.1
    image_size: int = 64  # pixels; SpaceToDepth(2) halves it
    frames: int = 4  # video models only
    seed: int = 0
    checkpoint_every: int = 100
    text_tokens: int = 16
    # "bf16": matmuls under torch.autocast(bfloat16), weights, AdamW state and EMA stay float32 (mixed precision).
    # About 1.5x faster per step on a CPU with AVX512-BF16 (0.52 vs 0.78 s at tiny-flux batch 32 here).
    precision: str = "fp32"
    # "uniform" puts 10 % of the samples at t > 0.9 against logit-normal's 1.4 %; a model conditioned through
    # cross-attention only (Wan) needs them to learn the caption's mean picture, the x0 it predicts from pure noise.
    t_sampling: str = "logit-normal"

    def __post_init__(self) -> None:
        if self.precision not in PRECISIONS:
            raise ValueError(f"precision={self.precision!r}; expected one of {sorted(PRECISIONS)}")
        if self.t_sampling not in T_SAMPLINGS:
            raise ValueError(f"t_sampling={self.t_sampling!r}; expected one of {list(T_SAMPLINGS)}")

    @property
    def is_video(self) -> bool:
        return isinstance(models.PRESETS[self.model], models.WanParams)


@dataclass
class TrainState:
    step: int = 0
    losses: list[float] = field(default_factory=list)
    seconds: float = 0.0


def logit_normal_t(batch: int, generator: torch.Generator) -> Tensor:
    """t = sigmoid(n), n ~ N(0, 1): more weight on intermediate noise levels (SD3 §3.1)."""
    return torch.sigmoid(torch.randn(batch, generator=generator))


def uniform_t(batch: int, generator: torch.Generator) -> Tensor:
    """t ~ U(0, 1), every noise level alike (rectified flow, Liu et al. 2022)."""
    return torch.rand(batch, generator=generator)


T_SAMPLINGS = {"logit-normal": logit_normal_t, "uniform": uniform_t}  # TrainConfig.t_sampling -> sampler


def ema_decay_at(step: int, max_decay: float) -> float:
    """EMA decay with warm-up, min(max_decay, (1 + k) / (10 + k)): a short run's average is not dominated by the
    random initial weights (0.999 ** 1000 would still give them 37 % of the weight)."""
    return min(max_decay, (1 + step) / (10 + step))


def flow_matching_loss(model, cfg: TrainConfig, pixels: Tensor, captions: list[str], encoder: TinyTextEncoder,
                       generator: torch.Generator) -> Tensor:
    """Mean squared error between the predicted and the true velocity eps - x0 on one batch."""
    ae = SpaceToDepth(2)
    x0 = ae.encode(pixels)
    b = x0.shape[0]
    t = T_SAMPLINGS[cfg.t_sampling](b, generator)
    eps = torch.randn(x0.shape, generator=generator)
    t_b = t.view(b, *([1] * (x0.ndim - 1)))
    x_t = (1 - t_b) * x0 + t_b * eps
    target = eps - x0
    if cfg.is_video:
        p = model.params
        context = encoder.wan_batch(captions, p.text_dim, cfg.text_tokens)
        pred = model(x_t, t * 1000, context)
        return torch.nn.functional.mse_loss(pred, target)
    p = model.params
    txt, y = encoder.flux_batch(captions, p.context_in_dim, p.vec_in_dim, cfg.text_tokens)
    h, w = x0.shape[-2:]
    pred = model(pack(x_t), image_ids(h, w), txt, text_ids(txt.shape[1]), t, y)
    return torch.nn.functional.mse_loss(pred, pack(target))


def _paths(out: Path, name: str) -> tuple[Path, Path, Path]:
    return out / f"{name}.safetensors", out / f"{name}.state.safetensors", out / f"{name}.train.json"


def _atomic_save(tensors: dict[str, Tensor], path: Path, metadata: dict[str, str] | None = None) -> None:
    tmp = path.with_suffix(path.suffix + ".tmp")
    save_file({k: v.detach().contiguous() for k, v in tensors.items()}, str(tmp), metadata=metadata)
    os.replace(tmp, path)


def save_checkpoint(out: Path, cfg: TrainConfig, state: TrainState, model, ema, optimizer) -> None:
    weights, resume, log = _paths(out, cfg.model)
    _atomic_save(ema.state_dict(), weights, {"model": cfg.model, "step": str(state.step)})
    tensors = {f"param/{k}": v for k, v in model.state_dict().items()}
    names = dict(model.named_parameters())
    index = {id(p): n for n, p in names.items()}
    for p, s in optimizer.state.items():
        tensors[f"exp_avg/{index[id(p)]}"] = s["exp_avg"]
        tensors[f"exp_avg_sq/{index[id(p)]}"] = s["exp_avg_sq"]
        tensors[f"opt_step/{index[id(p)]}"] = torch.as_tensor(s["step"], dtype=torch.float64).reshape(1)
    _atomic_save(tensors, resume)
    write_text(log, json.dumps(dict(config=dataclasses.asdict(cfg), **dataclasses.asdict(state)), indent=1))


def load_checkpoint_state(out: Path, cfg: TrainConfig, model, ema, optimizer) -> TrainState:
    weights, resume, log = _paths(out, cfg.model)
    if not (weights.exists() and resume.exists() and log.exists()):
        return TrainState()
    saved = json.loads(log.read_text())
    # a setting added after the log was written ran at its default then (e.g. precision="fp32")
    defaults = {f.name: f.default for f in dataclasses.fields(TrainConfig)}
    theirs = {k: saved["config"].get(k, defaults[k]) for k in defaults}
    mine = dataclasses.asdict(cfg) | {"steps": theirs["steps"]}
    if theirs != mine:
        differ = ", ".join(f"{k}: saved {theirs[k]!r}, now {v!r}" for k, v in mine.items() if theirs[k] != v)
        raise ValueError(f"{log} was written with another config ({differ}); use another --out or the same "
                         "settings (only --steps may change when resuming)")
    tensors = load_file(str(resume))
    model.load_state_dict({k[len("param/"):]: v for k, v in tensors.items() if k.startswith("param/")})
    ema.load_state_dict(load_file(str(weights)))
    for name, p in model.named_parameters():
        if f"exp_avg/{name}" in tensors:
            optimizer.state[p] = dict(
                step=tensors[f"opt_step/{name}"].reshape(()).float(),
                exp_avg=tensors[f"exp_avg/{name}"], exp_avg_sq=tensors[f"exp_avg_sq/{name}"],
            )
    return TrainState(step=saved["step"], losses=saved["losses"], seconds=saved["seconds"])


def train(cfg: TrainConfig, out: str | Path, *, log=print) -> TrainState:
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    torch.manual_seed(cfg.seed)  # initial weights
    model = models.build_model(cfg.model).train()
    ema = models.build_model(cfg.model).eval()
    ema.load_state_dict(model.state_dict())
    ema.requires_grad_(False)
    optimizer = torch.optim.AdamW(model.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)
    state = load_checkpoint_state(out, cfg, model, ema, optimizer)
    if state.step:
        log(f"resuming {cfg.model} from step {state.step}")
    encoder = TinyTextEncoder()
    start = time.perf_counter() - state.seconds
    while state.step < cfg.steps:
        k = state.step
        seed = cfg.seed * 1_000_003 + k
        pixels, captions, _ = make_batch(cfg.batch_size, seed, size=cfg.image_size,
                                         frames=cfg.frames if cfg.is_video else None)
        g = torch.Generator().manual_seed(seed)
        drop = torch.rand(len(captions), generator=g) < cfg.caption_dropout
        captions = ["" if d else c for c, d in zip(captions, drop.tolist())]
        for group in optimizer.param_groups:
            group["lr"] = cfg.lr * min(1.0, (k + 1) / cfg.warmup_steps)
        autocast = PRECISIONS[cfg.precision]
        with torch.autocast("cpu", dtype=autocast or torch.bfloat16, enabled=autocast is not None):
            loss = flow_matching_loss(model, cfg, pixels, captions, encoder, g)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), cfg.grad_clip)
        optimizer.step()
        with torch.no_grad():
            decay = ema_decay_at(k, cfg.ema_decay)
            for e, p in zip(ema.parameters(), model.parameters()):
                e.lerp_(p, 1 - decay)
        state.step += 1
        state.losses.append(loss.item())
        state.seconds = time.perf_counter() - start
        if state.step % cfg.checkpoint_every == 0 or state.step == cfg.steps:
            save_checkpoint(out, cfg, state, model, ema, optimizer)
            recent = state.losses[-cfg.checkpoint_every:]
            eta = state.seconds / state.step * (cfg.steps - state.step) if state.step else math.nan
            log(f"[{state.step}/{cfg.steps}] loss {sum(recent) / len(recent):.4f}  "
                f"{state.seconds / 60:.1f} min elapsed, ~{eta / 60:.1f} min left")
    return state
