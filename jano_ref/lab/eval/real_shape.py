"""``python -m jano_ref.benchmarks real-shape --model flux-dev|wan2.1-1.3b``: the official pipelines' stages on
random weights of the real architecture, timed one by one.

Stages, each timed (device-synchronised) and measured for peak memory (``runtime.timing.PeakMemory``): text encoding
(T5 + CLIP, or umT5 for the prompt and the negative prompt, on random token ids of the real lengths), the denoising
loop (full compute, Jano, JiT: each warmed up, then timed in ``--repeats`` interleaved rounds, the median against
the ideal speedup each method reports), and decoding (FLUX.1 AE / Wan2.1 VAE, one latent frame at a time). Random
weights make the pictures meaningless and Jano's levels arbitrary; timings and memory depend on the shapes only.

``--size full`` (the default on a GPU): the official architectures and sizes (1024x1024 FLUX.1-dev; 832x480x81
Wan2.1-1.3B; 50 steps). ``--size reduced`` (the default on a CPU): the same architectures narrowed and shortened as
``REDUCED`` lists (head width 128, text lengths 512 and 77, latent channels and strides, 50 steps kept), at a
small size. At reduced size the per-call overhead that token skipping cannot remove weighs much more than at full
size (README, "fixed-cost"), so measured speedups there say little about a GPU run at full size.
"""

from __future__ import annotations

import contextlib
import gc
import statistics
import time
from dataclasses import dataclass, field

import torch

from models import build_model
from models.clip import CLIP_PRESETS, CLIPTextEncoder
from models.flux_ae import build_flux_ae
from models.t5 import T5_PRESETS, T5Encoder
from models.wan_vae import build_wan_vae

from ...generate import cost_against_full, generate
from ...jit import PRESETS as JIT_PRESETS
from ...pipelines.real import SPECS
from ...runtime.fields import FluxConditioning, FluxVelocity, WanVelocity
from ...runtime.sampling import flux_schedule, wan_schedule
from ...runtime.timing import PeakMemory, interleaved_rounds, synchronize, timed_runs

MODELS = ("flux-dev", "wan2.1-1.3b")
# What "reduced" changes; everything else is the official config (models.PRESETS, T5_PRESETS, CLIP_PRESETS, the AE
# and VAE presets). Widths shrink with the head width kept at 128; the DiT's text width follows the encoder's.
REDUCED = {
    "flux-dev": dict(dit=dict(hidden_size=128, num_heads=1, depth=1, depth_single_blocks=2, context_in_dim=512),
                     text=dict(d_model=512, d_ff=1280, num_heads=8, num_layers=2), clip=dict(num_hidden_layers=2),
                     decoder=dict(ch=32), size=(256, 256, None)),
    "wan2.1-1.3b": dict(dit=dict(dim=128, num_heads=1, ffn_dim=768, num_layers=2, text_dim=512),
                        text=dict(d_model=512, d_ff=1280, num_heads=8, num_layers=2), decoder=dict(base_dim=24),
                        size=(128, 128, 9)),
}


@dataclass
class StageResult:
    seconds: float
    peak_mb: float | None
    note: str = ""


@dataclass
class RealShapeResult:
    model: str
    size: str
    pixels: tuple[int, int, int | None]
    tokens: int
    steps: int
    stages: dict[str, StageResult] = field(default_factory=dict)
    speedups: dict[str, tuple[float, float]] = field(default_factory=dict)  # method -> (measured, ideal)

    def markdown(self) -> str:
        h, w, f = self.pixels
        lines = [f"{self.model} ({self.size} size, random weights), {w}x{h}" + (f"x{f} frames" if f else "")
                 + f", {self.tokens} tokens, {self.steps} steps",
                 "", "| stage | seconds | peak memory (MiB) | measured speedup | ideal speedup |",
                 "|---|---|---|---|---|"]
        for name, s in self.stages.items():
            measured, ideal = self.speedups.get(name.split(" ")[-1], (None, None))
            cells = [f"{measured:.2f}x" if measured else "", f"{ideal:.2f}x" if ideal else ""]
            peak = "n/a" if s.peak_mb is None else f"{s.peak_mb:.0f}"
            lines.append(f"| {name}{s.note} | {s.seconds:.3f} | {peak} | " + " | ".join(cells) + " |")
        return "\n".join(lines)


def run(model: str, *, size: str, device: torch.device, dtype: torch.dtype, steps: int | None = None,
        repeats: int = 1, warmup: int = 1, methods: tuple[str, ...] = ("full", "jano", "jit"), seed: int = 0
        ) -> RealShapeResult:
    spec = SPECS[model]
    reduced = REDUCED[model] if size == "reduced" else None
    height, width, frames = reduced["size"] if reduced else (spec.height, spec.width, spec.frames)
    steps = steps or spec.steps
    with torch.random.fork_rng(devices=[device] if device.type == "cuda" else []):
        torch.manual_seed(seed)
        text, text_stage = _encode_text(spec, reduced, device, dtype)
        with _default_dtype(dtype):  # initialise in the run's dtype: no float32 copy beside it
            start = time.perf_counter()
            dit = build_model(model, device=device, **(reduced["dit"] if reduced else {})).eval()
            synchronize(device)
            seconds = time.perf_counter() - start
        weights_mb = sum(t.numel() * t.element_size() for t in dit.state_dict().values()) / 2**20
        dit_stage = StageResult(seconds, weights_mb, " (random init; memory: its weights)")
        field_, latent_shape = _field(spec, dit, text, height, width, frames)
        g = torch.Generator().manual_seed(seed)
        noise = field_.to_tokens(torch.randn(1, *latent_shape, generator=g).to(device, dtype))
        sigmas = (flux_schedule(steps, noise.shape[1], device=device) if spec.family == "flux"
                  else wan_schedule(steps, spec.shift, device=device))
        result = RealShapeResult(model, size, (height, width, frames), noise.shape[1], steps)
        result.stages["text encoding"] = text_stage
        result.stages["transformer"] = dit_stage
        configs = {m: {"full": None, "jano": spec.jano_preset, "jit": "jit-4x"}[m] for m in methods}
        runs = {m: (lambda m=m: generate(field_, noise, None if m == "jit" else sigmas, method=m, config=configs[m]))
                for m in methods}
        with torch.inference_mode():
            peaks = {m: timed_runs(runs[m], max(warmup, 1), 0, device)[2] for m in methods}  # warm-up, memory
            # Timed in rounds, every method once per round, so that a busy stretch of the machine hits them alike.
            timed = interleaved_rounds(runs, repeats, device)
        medians = {m: statistics.median(seconds) for m, (_, seconds) in timed.items()}
        for m in methods:
            n_steps = JIT_PRESETS[configs[m]].num_steps if m == "jit" else steps
            note = f" ({configs[m]})" if configs[m] else ""
            result.stages[f"denoising loop ({n_steps} steps), {m}"] = StageResult(medians[m], peaks[m], note)
            ideal, _ = cost_against_full(timed[m][0].report, steps, noise.shape[1])
            result.speedups[m] = (medians["full"] / medians[m] if "full" in medians else None, ideal)
        last = timed[methods[-1]][0]
        del dit
        gc.collect()
        result.stages["decoding"] = _decode(spec, reduced, field_.to_latent(last.tokens), device, dtype)
    return result


def _encode_text(spec, reduced, device, dtype):
    """Random-weight encoders on random ids of the real lengths: (conditioning tensors, stage measurement)."""
    prompts = 1 if spec.family == "flux" else 2  # Wan encodes the negative prompt too
    with PeakMemory(device) as peak:
        synchronize(device)
        start = time.perf_counter()
        with torch.inference_mode():
            base = T5_PRESETS["t5-v1_1-xxl" if spec.family == "flux" else "umt5-xxl"]
            t5 = _build(T5Encoder, base, (reduced or {}).get("text", {}), device, dtype)
            ids = torch.randint(0, base.vocab_size, (prompts, spec.text_length), device=device)
            txt = t5(ids)
            del t5
            y = None
            if spec.family == "flux":
                clip = _build(CLIPTextEncoder, CLIP_PRESETS["clip-vit-large-patch14"], (reduced or {}).get("clip", {}),
                              device, dtype)
                y = clip(torch.randint(0, 49408, (1, 77), device=device)).pooler_output
                del clip
        synchronize(device)
        seconds = time.perf_counter() - start
    _release(device)
    note = " (T5 + CLIP)" if spec.family == "flux" else " (umT5, prompt + negative prompt)"
    return (txt, y), StageResult(seconds, peak.peak_mb, note)


def _field(spec, dit, text, height, width, frames):
    txt, y = text
    if spec.family == "flux":
        h, w = height // 8, width // 8
        cond = FluxConditioning(txt[:1], y, spec.guidance)
        return FluxVelocity(dit, cond, (h, w)), (16, h, w)
    fhw = (1 + (frames - 1) // 4, height // 8, width // 8)
    return WanVelocity(dit, txt[:1], txt[1:], fhw, guide_scale=spec.guidance), (16, *fhw)


def _decode(spec, reduced, latent, device, dtype) -> StageResult:
    overrides = (reduced or {}).get("decoder", {})
    if spec.family == "flux":
        with _default_dtype(dtype):
            decoder, z = build_flux_ae(device=device, **overrides), latent[:, :, 0].to(dtype)
        call = lambda: decoder.decode(z)  # noqa: E731
    else:
        with _default_dtype(dtype):
            decoder = build_wan_vae(device=device, **overrides)
        call = lambda: decoder.decode(latent, latents_per_step=1)  # noqa: E731
    with PeakMemory(device) as peak, torch.inference_mode():
        synchronize(device)
        start = time.perf_counter()
        call()
        synchronize(device)
        seconds = time.perf_counter() - start
    note = " (FLUX.1 AE)" if spec.family == "flux" else " (Wan2.1 VAE, frame by frame)"
    return StageResult(seconds, peak.peak_mb, note)


def _build(cls, base, overrides, device, dtype):
    import dataclasses

    with torch.device(device), _default_dtype(dtype):
        module = cls(dataclasses.replace(base, **overrides))
    return module.eval()


@contextlib.contextmanager
def _default_dtype(dtype: torch.dtype):
    previous = torch.get_default_dtype()
    torch.set_default_dtype(dtype)
    try:
        yield
    finally:
        torch.set_default_dtype(previous)


def _release(device: torch.device) -> None:
    gc.collect()
    if device.type == "cuda":
        torch.cuda.empty_cache()


def bench_real_shape(model: str, size: str | None, device: torch.device, dtype: torch.dtype | None, steps: int | None,
                     repeats: int, warmup: int) -> RealShapeResult:
    size = size or ("full" if device.type == "cuda" else "reduced")
    dtype = dtype or (torch.bfloat16 if device.type == "cuda" else torch.float32)
    result = run(model, size=size, device=device, dtype=dtype, steps=steps, repeats=repeats, warmup=warmup)
    print(f"device {device}, {str(dtype).removeprefix('torch.')}, {torch.get_num_threads()} threads; denoising: "
          f"median of {repeats} interleaved rounds after {max(warmup, 1)} warm-up")
    print(result.markdown())
    return result
