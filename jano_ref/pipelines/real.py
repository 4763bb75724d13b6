"""The official FLUX.1 and Wan2.1 models end to end: prompt -> velocity field, noise and schedule -> pixels.

    setup = prepare("flux-dev", "a cat on a windowsill", weights="path/to/FLUX.1-dev", device="cuda")
    run = generate(setup.field, setup.noise, setup.sigmas, method="jano", config=setup.spec.jano_preset)
    pixels = setup.decode(run.tokens)  # [3, F, H, W] in [0, 1]

The same ``Setup`` shape as ``pipelines.tiny.prepare``, so ``generate``, ``jano bench``-style loops and the
notebooks run unchanged. Memory is staged: the prompt is encoded first (or read from the embedding cache,
``pipelines.text_cache``), the text encoders are freed, then the DiT is loaded; the autoencoder is loaded at
the first ``decode``. bfloat16 on CUDA and float32 on the CPU by default, the same code.

What each model is fed, as the official code feeds it:

- FLUX.1 (BFL flux ``sampling.prepare``, ``util.py``; models.md §1.9-1.10): T5 v1.1 XXL states of the prompt
  padded to 512 tokens (schnell 256), no attention mask; CLIP-L's pooled output as ``y``; dev's distilled
  guidance embedding (default 3.5, diffusers FluxPipeline's; BFL's cli uses 2.5); schnell none. Sigmas: 50
  (schnell 4) Euler steps, shifted by resolution for dev (``flux_schedule``), unshifted for schnell.
- Wan2.1 (``text2video.py``, ``shared_config.py``; models.md §2.6-2.8): umT5-XXL states with the padding mask,
  trimmed to each prompt's real length and zero-padded to 512; classifier-free guidance 5.0 against Wan's default
  Chinese negative prompt; flow shift 5.0; 50 steps; 81 frames. Wan's solver is UniPC: the setup carries
  ``solver = "unipc"`` and UniPC's sigmas (``runtime.sampling.wan_unipc_sigmas``: 0.999 -> 0, shifted), and
  ``lab.compare`` runs full compute, Jano and JiT with it (the caching baselines step with Euler).
"""

from __future__ import annotations

import gc
import os
import time
from dataclasses import dataclass, field
from pathlib import Path

import torch
from torch import Tensor

from models import Flux, WanModel, load_checkpoint
from models.clip import CLIPTextEncoder
from models.configs import clip_params, flux_ae_params, flux_params, t5_params, wan_params, wan_vae_params
from models.diffusers_keys import wan_key
from models.flux_ae import AutoEncoder
from models.loading import read_metadata
from models.t5 import T5Encoder
from models.tokenization import PromptTokenizer
from models.wan_vae import WanVAE

from ..runtime.fields import FluxConditioning, FluxVelocity, WanVelocity
from ..runtime.sampling import flux_schedule, wan_schedule, wan_unipc_sigmas
from ..runtime.timing import PeakMemory, synchronize
from .text_cache import EmbeddingCache, file_identity
from .weights import LAYOUTS, WeightFiles, WeightsError, dit_shapes, parameter_count, resolve

# Wan2.1 wan/configs/shared_config.py `sample_neg_prompt` (commit 9737cba), the negative prompt of every official run.
WAN_NEGATIVE_PROMPT = (
    "色调艳丽，过曝，静态，细节模糊不清，字幕，风格，作品，画作，画面，静止，整体发灰，最差质量，低质量，JPEG压缩残留，"
    "丑陋的，残缺的，多余的手指，画得不好的手部，画得不好的脸部，畸形的，毁容的，形态畸形的肢体，手指融合，"
    "静止不动的画面，杂乱的背景，三条腿，背景人很多，倒着走"
)
# Defaults for a folder of random weights written by `jano fake-weights` (its DiT file carries a mark): small enough
# for a CPU in seconds; random weights draw nothing at any size.
SMOKE_SIZE = {"flux": (128, 128, None), "wan": (64, 64, 9)}
CPU_FLOPS_LIMIT = 2e14  # denoising FLOPs above which a CPU run is refused (about an hour at 50 GFLOP/s)
CPU_RATE = 50e9  # FLOP/s a CPU reaches on these models, for the time estimate in that message (order of magnitude)


@dataclass(frozen=True)
class RealSpec:
    """How an official model is sampled by default (the official code's settings; sources in the module doc)."""

    model: str
    family: str  # "flux" | "wan"
    height: int
    width: int
    frames: int | None  # pixel frames (4n + 1) for video, None for images
    steps: int
    guidance: float | None  # flux-dev: distilled guidance embedding; wan: classifier-free guidance scale
    text_length: int  # T5 / umT5 tokens
    jano_preset: str
    resolution_shift: bool = True  # flux: shift sigmas by image size (dev) or not (schnell)
    shift: float | None = None  # wan flow shift
    solver: str = "euler"  # the official solver
    negative_prompt: str | None = None
    fps: int | None = None

    @property
    def is_video(self) -> bool:
        return self.frames is not None


SPECS: dict[str, RealSpec] = {
    "flux-dev": RealSpec("flux-dev", "flux", 1024, 1024, None, 50, 3.5, 512, "flux-dev"),
    "flux-schnell": RealSpec("flux-schnell", "flux", 1024, 1024, None, 4, None, 256, "flux-dev",
                             resolution_shift=False),
    "wan2.1-1.3b": RealSpec("wan2.1-1.3b", "wan", 480, 832, 81, 50, 5.0, 512, "wan", shift=5.0, solver="unipc",
                            negative_prompt=WAN_NEGATIVE_PROMPT, fps=16),
    "wan2.1-14b": RealSpec("wan2.1-14b", "wan", 720, 1280, 81, 50, 5.0, 512, "wan", shift=5.0, solver="unipc",
                           negative_prompt=WAN_NEGATIVE_PROMPT, fps=16),
}


def default_dtype(device: torch.device) -> torch.dtype:
    """bfloat16 on CUDA (the official runs), float32 elsewhere."""
    return torch.bfloat16 if device.type == "cuda" else torch.float32


# ---- the setup -------------------------------------------------------------------------------------


class Decoder:
    """Latents [1, C, T, h, w] -> pixels [3, F, H, W] in [0, 1]; loads the FLUX.1 AE / Wan2.1 VAE at the first call
    (after the DiT, so the two need not fit at once before sampling starts). Wan decodes one latent frame at a time
    with the VAE's feature cache (``WanVAE.decode(latents_per_step=1)``)."""

    def __init__(self, files: WeightFiles, device: torch.device, dtype: torch.dtype):
        self.files, self.device, self.dtype = files, device, dtype
        self.module: AutoEncoder | WanVAE | None = None
        self.seconds: list[float] = []

    def load(self) -> AutoEncoder | WanVAE:
        if self.module is None:
            if self.files.family == "flux":
                with torch.device("meta"):
                    module = AutoEncoder(flux_ae_params(_shapes(self.files.autoencoder)))
            else:
                with torch.device("meta"):
                    module = WanVAE(wan_vae_params(self.files.autoencoder_config))
            self.module = load_checkpoint(module.to(self.dtype), self.files.autoencoder, device=self.device)
        return self.module

    def __call__(self, latent: Tensor) -> Tensor:
        module = self.load()
        start = time.perf_counter()
        with torch.inference_mode():
            z = latent.to(self.device, self.dtype)
            if isinstance(module, AutoEncoder):
                video = module.decode(z[:, :, 0]).unsqueeze(2)  # [1, 3, 1, H, W]
            else:
                video = module.decode(z, latents_per_step=1)
            pixels = ((video.float().clamp(-1, 1) + 1) / 2)[0]
        synchronize(self.device)
        self.seconds.append(time.perf_counter() - start)
        return pixels


@dataclass
class Setup:
    """One generation's inputs (``pipelines.tiny.Setup``'s fields) plus what the official pipeline measured."""

    spec: RealSpec
    prompt: str
    field: FluxVelocity | WanVelocity
    noise: Tensor  # [1, L, D] tokens
    sigmas: Tensor
    files: WeightFiles
    decoder: Decoder
    size: tuple[int, int, int | None]  # (height, width, frames) in pixels
    solver: str = "euler"  # the solver these sigmas are for (Wan2.1: "unipc"); lab.compare runs it
    text_cache: str = "off"  # "hit", "miss" or "off"
    stage_seconds: dict[str, float] = field(default_factory=dict)
    stage_peak_mb: dict[str, float | None] = field(default_factory=dict)

    @property
    def random_weights(self) -> bool:
        return self.files.random_weights

    def latent(self, tokens: Tensor) -> Tensor:
        """Tokens [1, L, D] -> latent [C, T, H, W]."""
        return self.field.to_latent(tokens)[0]

    def decode(self, tokens: Tensor) -> Tensor:
        """Tokens [1, L, D] -> pixels [3, F, H, W] in [0, 1] (float32)."""
        return self.decoder(self.field.to_latent(tokens))


def prepare(
    model: str,
    prompt: str,
    *,
    weights: str | Path | None = None,
    revision: str | None = None,
    height: int | None = None,
    width: int | None = None,
    frames: int | None = None,
    guidance: float | None = None,
    seed: int = 0,
    steps: int | None = None,
    device=None,
    dtype: torch.dtype | None = None,
    negative_prompt: str | None = None,
    text_cache: EmbeddingCache | str | Path | bool | None = None,
    local_files_only: bool | None = None,
    files: WeightFiles | None = None,
    transformer: Flux | WanModel | None = None,
) -> Setup:
    """Conditioning, noise (from ``seed``) and sigmas for one prompt on an official model (``SPECS``).

    ``weights``: a folder in the official repo's layout or a Hub repo id (default: the official repo, through the
    Hugging Face cache; ``revision`` pins it). Sizes, steps and guidance default to the official settings, or, for
    random weights written by ``jano fake-weights``, to ``SMOKE_SIZE``. ``text_cache``: an ``EmbeddingCache``, a
    folder, False (off) or None (the default folder). Pass ``files`` / ``transformer`` to reuse resolved files and a
    loaded DiT (``transformer`` must come from the same files).
    """
    spec = _spec(model)
    files = files or resolve(model, weights, revision=revision, local_files_only=local_files_only)
    device = torch.device(device or "cpu")
    dtype = dtype or default_dtype(device)
    height, width, frames = _size(spec, files, height, width, frames)
    steps = spec.steps if steps is None else steps
    latent_shape = _latent_shape(files, height, width, frames)
    cache = _cache(text_cache)
    stage_seconds, stage_peak = {}, {}

    with PeakMemory(device) as peak:
        start = time.perf_counter()
        embeddings, status = encode_prompts(files, spec, _prompts(spec, prompt, negative_prompt), device=device,
                                            dtype=dtype, cache=cache)
        stage_seconds["text_encoding"] = time.perf_counter() - start
    stage_peak["text_encoding"] = peak.peak_mb
    with PeakMemory(device) as peak:
        start = time.perf_counter()
        dit = transformer if transformer is not None else load_transformer(files, device=device, dtype=dtype)
        stage_seconds["load_transformer"] = time.perf_counter() - start
    stage_peak["load_transformer"] = peak.peak_mb

    g = torch.Generator().manual_seed(seed)  # CPU generator: the same noise on every device (BFL get_noise seeds so)
    noise = torch.randn(1, *latent_shape, generator=g)
    velocity_field: FluxVelocity | WanVelocity
    if spec.family == "flux":
        h, w = latent_shape[-2:]
        text = embeddings[0]
        cond = FluxConditioning(text["txt"][None].to(device), text["y"][None].to(device),
                                _flux_guidance(spec, guidance))
        velocity_field = FluxVelocity(dit, cond, (h, w))
        sigmas = flux_schedule(steps, (h // 2) * (w // 2), shift=spec.resolution_shift, device=device)
        noise = noise[:, :, 0]  # an image: [1, C, h, w]
    else:
        text_len = dit.params.text_len
        context, context_null = (_pad_rows(e["context"], text_len)[None].to(device) for e in embeddings)
        velocity_field = WanVelocity(dit, context, context_null, tuple(latent_shape[1:]),
                                     guide_scale=spec.guidance if guidance is None else guidance,
                                     integer_timesteps=spec.solver == "unipc")  # Wan2.1's UniPC feeds int64(1000 sigma)
        sigmas = wan_unipc_sigmas(steps, spec.shift, device=device) if spec.solver == "unipc" else wan_schedule(
            steps, spec.shift, device=device)
    tokens = velocity_field.to_tokens(noise.to(device=device, dtype=dtype))
    return Setup(spec, prompt, velocity_field, tokens, sigmas, files, Decoder(files, device, dtype),
                 (height, width, frames), solver=spec.solver, text_cache=status, stage_seconds=stage_seconds,
                 stage_peak_mb=stage_peak)


# ---- text ------------------------------------------------------------------------------------------


def encode_prompts(files: WeightFiles, spec: RealSpec, prompts: list[str], *, device: torch.device,
                   dtype: torch.dtype, cache: EmbeddingCache) -> tuple[list[dict[str, Tensor]], str]:
    """Embeddings of each prompt (on the CPU): FLUX.1 {"txt": [L, 4096], "y": [768]}, Wan {"context": [n_i, 4096]}
    (trimmed to the prompt's tokens). Cached ones are read; the others are encoded together in one batch (a batch
    of two differs from two single runs by float rounding only), stored, and the encoders freed.
    Returns (embeddings, "hit" | "miss" | "off")."""
    recipe = text_recipe(files, spec, device, dtype)
    found = [cache.get(p, recipe) for p in prompts]
    missing = [p for p, e in zip(prompts, found) if e is None]
    if missing:
        encoded = _encode(files, spec, missing, device, dtype)
        for prompt, tensors in zip(missing, encoded):
            cache.put(prompt, recipe, tensors)
        fresh = iter(encoded)
        found = [e if e is not None else next(fresh) for e in found]
    status = "off" if not cache.enabled else ("miss" if missing else "hit")
    return found, status


def text_recipe(files: WeightFiles, spec: RealSpec, device: torch.device, dtype: torch.dtype) -> dict:
    """What a prompt's embeddings depend on besides the prompt (the embedding cache's key)."""
    paths = [files.tokenizers[k] for k in files.tokenizers]
    for folder in files.encoders.values():
        paths += sorted(folder.glob("*.safetensors")) + sorted(folder.glob("*.json"))
    return {"format": 1, "family": spec.family, "text_length": spec.text_length, "files": file_identity(paths),
            "dtype": str(dtype).removeprefix("torch."), "device": device.type}


def _encode(files: WeightFiles, spec: RealSpec, prompts: list[str], device, dtype) -> list[dict[str, Tensor]]:
    with torch.inference_mode():
        if spec.family == "flux":
            ids = PromptTokenizer(files.tokenizers["clip"], "clip")(prompts).input_ids.to(device)
            clip = _load_encoder(files, "clip", device, dtype)
            y = clip(ids).pooler_output.float().cpu()  # BFL HFEmbedder: pooler_output, no mask
            _free(clip, device)
            ids = PromptTokenizer(files.tokenizers["t5"], "t5", max_length=spec.text_length)(prompts).input_ids
            t5 = _load_encoder(files, "t5", device, dtype)
            txt = t5(ids.to(device)).float().cpu()  # BFL: last_hidden_state over the padded ids, no mask
            _free(t5, device)
            return [{"txt": txt[i], "y": y[i]} for i in range(len(prompts))]
        tokens = PromptTokenizer(files.tokenizers["umt5"], "umt5", max_length=spec.text_length)(prompts)
        umt5 = _load_encoder(files, "umt5", device, dtype)
        states = umt5(tokens.input_ids.to(device), tokens.attention_mask.to(device)).float().cpu()
        _free(umt5, device)
        return [{"context": states[i, :n].clone()} for i, n in enumerate(tokens.lengths.tolist())]


def _load_encoder(files: WeightFiles, kind: str, device, dtype) -> CLIPTextEncoder | T5Encoder:
    config = files.encoder_configs[kind]
    with torch.device("meta"):
        module = CLIPTextEncoder(clip_params(config)) if kind == "clip" else T5Encoder(t5_params(config))
    return load_checkpoint(module.to(dtype), files.encoders[kind], device=device)


def _free(module: torch.nn.Module, device: torch.device) -> None:
    """Drop an encoder's weights now (staged memory: they must be gone before the DiT loads)."""
    module.to("meta")
    gc.collect()
    if device.type == "cuda":
        torch.cuda.empty_cache()


def _prompts(spec: RealSpec, prompt: str, negative_prompt: str | None) -> list[str]:
    if spec.family == "flux":
        if negative_prompt is not None:
            raise ValueError(f"{spec.model} takes no negative prompt (FLUX.1 runs one guidance-distilled pass)")
        return [prompt]
    return [prompt, spec.negative_prompt if negative_prompt is None else negative_prompt]


def _pad_rows(x: Tensor, length: int) -> Tensor:
    """[n, D] -> [length, D] with zero rows after the n real ones (Wan2.1 pads its umT5 states so)."""
    return torch.cat([x, x.new_zeros(length - x.shape[0], x.shape[1])]) if x.shape[0] < length else x[:length]


# ---- the DiT, sizes and sigmas --------------------------------------------------------------------


def load_transformer(files: WeightFiles, *, device, dtype: torch.dtype) -> Flux | WanModel:
    """The DiT of ``files`` built on the meta device from its own shapes and config, then loaded with ``assign``
    (a diffusers-layout Wan transformer/ is renamed key by key on the way)."""
    shapes = dit_shapes(files)
    with torch.device("meta"):
        if files.family == "flux":
            dit = Flux(flux_params(shapes, files.dit_config))
        else:
            dit = WanModel(wan_params(shapes, files.dit_config))
    rename = wan_key if files.dit_layout == "diffusers" else None
    return load_checkpoint(dit.to(dtype), files.dit, device=device, rename=rename)


def _size(spec: RealSpec, files: WeightFiles, height, width, frames) -> tuple[int, int, int | None]:
    default = SMOKE_SIZE[spec.family] if files.random_weights else (spec.height, spec.width, spec.frames)
    height = default[0] if height is None else height
    width = default[1] if width is None else width
    if spec.is_video:
        frames = default[2] if frames is None else frames
    elif frames not in (None, 1):
        raise ValueError(f"{spec.model} makes images; --frames is for the Wan2.1 video models")
    else:
        frames = None
    return height, width, frames


def _latent_shape(files: WeightFiles, height: int, width: int, frames: int | None) -> tuple[int, ...]:
    """[C, T, h, w] of the noise for a picture of this size; errors name the sizes that work."""
    if files.family == "flux":
        ae = flux_ae_params(_shapes(files.autoencoder))
        step = 2 * ae.downsample  # the AE's downsampling, then the DiT's 2x2 packing
        _check_multiple(height, width, step)
        return ae.z_channels, 1, height // ae.downsample, width // ae.downsample
    vae = wan_vae_params(files.autoencoder_config)
    _check_multiple(height, width, 2 * vae.spatial_stride)  # the VAE's downsampling, then the (1, 2, 2) patches
    t = vae.temporal_stride
    if frames < 1 or (frames - 1) % t:
        raise ValueError(f"--frames {frames}: Wan2.1 makes {t}n + 1 frames (e.g. {t + 1}, {4 * t + 1}, 81)")
    return vae.z_dim, 1 + (frames - 1) // t, height // vae.spatial_stride, width // vae.spatial_stride


def _check_multiple(height: int, width: int, step: int) -> None:
    if height <= 0 or width <= 0 or height % step or width % step:
        raise ValueError(f"--height {height} --width {width}: both must be positive multiples of {step} "
                         f"(the autoencoder's downsampling times the DiT's 2x2 patches), e.g. "
                         f"{max(step, round(height / step) * step)}")


def _flux_guidance(spec: RealSpec, guidance: float | None) -> float | None:
    if spec.guidance is None:
        if guidance is not None:
            raise ValueError(f"{spec.model} has no guidance input (it is timestep-distilled); drop --guidance")
        return None
    return spec.guidance if guidance is None else guidance


def _cache(text_cache) -> EmbeddingCache:
    if isinstance(text_cache, EmbeddingCache):
        return text_cache
    if text_cache is None or text_cache is True:
        return EmbeddingCache.default()
    if text_cache is False:
        return EmbeddingCache(None)
    return EmbeddingCache(text_cache)


def _shapes(path: Path) -> dict[str, tuple[int, ...]]:
    return {k: shape for k, (shape, _) in read_metadata(path).items()}


def _spec(model: str) -> RealSpec:
    if model not in SPECS:
        raise KeyError(f"unknown official model {model!r}; choose one of {', '.join(SPECS)}")
    return SPECS[model]


# ---- is this a GPU-sized job? ------------------------------------------------------------------------


@dataclass(frozen=True)
class JobSize:
    """A run's size estimated before any work: parameters per stage (loaded one stage at a time) and the FLOPs of
    ``loops`` denoising loops (2 x parameters x tokens for the linear layers, 4 x tokens^2 x width per attention
    layer, per guidance branch and step)."""

    parameters: dict[str, int]  # stage -> parameter count
    bytes_per_value: int
    tokens: int  # image / video tokens
    text_tokens: int
    flops: float

    @property
    def peak_weight_bytes(self) -> int:
        return max(self.parameters.values()) * self.bytes_per_value


def estimate(model: str, files: WeightFiles | None, *, height=None, width=None, frames=None, steps=None,
             dtype: torch.dtype = torch.float32, loops: int = 1) -> JobSize:
    """Size of a run from the files' headers (or, without ``files``, from the official architecture: nothing to
    download first)."""
    spec = _spec(model)
    if files is not None:
        height, width, frames = _size(spec, files, height, width, frames)
        dit = _dit_params_from(files)
        parameters = {"transformer": parameter_count(files.dit)}
        parameters.update({f"text encoder ({k})": parameter_count(p) for k, p in files.encoders.items()})
        parameters["autoencoder"] = parameter_count(files.autoencoder)
    else:
        height, width = height or spec.height, width or spec.width
        frames = (frames or spec.frames) if spec.is_video else None
        dit, parameters = _official_parameters(spec)
    steps = spec.steps if steps is None else steps
    if spec.family == "flux":
        tokens, text_tokens, layers, width_ = (height // 16) * (width // 16), spec.text_length, \
            dit.depth + dit.depth_single_blocks, dit.hidden_size
        joint, branches = tokens + text_tokens, 1
    else:
        tokens = (1 + (frames - 1) // 4) * (height // 16) * (width // 16)
        text_tokens, layers, width_, joint, branches = spec.text_length, dit.num_layers, dit.dim, tokens, 2
    per_forward = 2 * parameters["transformer"] * joint + 4 * joint * joint * width_ * layers
    flops = float(per_forward) * steps * branches * loops
    return JobSize(parameters, torch.finfo(dtype).bits // 8, tokens, text_tokens, flops)


def check_cpu_job(job: JobSize, device, *, allow: bool = False) -> None:
    """Refuse a GPU-sized job on a CPU before any work starts (``allow=True`` runs it anyway)."""
    if torch.device(device).type != "cpu" or allow:
        return
    ram = _physical_memory()
    too_big = ram is not None and job.peak_weight_bytes > 0.8 * ram
    too_slow = job.flops > CPU_FLOPS_LIMIT
    if not (too_big or too_slow):
        return
    hours = job.flops / CPU_RATE / 3600
    largest = max(job.parameters, key=job.parameters.get)
    ram_text = f" of this machine's {ram / 2**30:.0f} GiB" if ram else ""
    raise JobTooLarge(
        f"this is a GPU-sized job: the {largest} alone holds {job.parameters[largest] / 1e9:.2f} B parameters "
        f"({job.peak_weight_bytes / 2**30:.1f} GiB at {job.bytes_per_value} bytes each{ram_text}), and the "
        f"denoising loops need about {job.flops / 1e12:.0f} TFLOP ({job.tokens} tokens; about {hours:.1f} h on a "
        f"CPU at ~{CPU_RATE / 1e9:.0f} GFLOP/s). Run it on a GPU (--device cuda; bfloat16 by default), or make it "
        "smaller (--height/--width/--frames/--steps, --repeats 1 --warmup 0), or pass --allow-cpu to run it here "
        "anyway."
    )


class JobTooLarge(RuntimeError):
    """A run estimated too large for the CPU it was asked to run on."""


def _dit_params_from(files: WeightFiles):
    shapes = dit_shapes(files)
    return flux_params(shapes, files.dit_config) if files.family == "flux" else wan_params(shapes, files.dit_config)


def _official_parameters(spec: RealSpec):
    """The official DiT params and per-stage parameter counts, from meta-device builds (no memory, no download)."""
    from models import PRESETS, build_model
    from models.clip import CLIP_PRESETS
    from models.flux_ae import AE_PRESETS
    from models.t5 import T5_PRESETS
    from models.wan_vae import WAN_VAE_PRESETS

    def count(module: torch.nn.Module) -> int:
        return sum(t.numel() for t in module.state_dict().values())

    with torch.device("meta"):
        parameters = {"transformer": count(build_model(spec.model, device="meta"))}
        if spec.family == "flux":
            parameters["text encoder (t5)"] = count(T5Encoder(T5_PRESETS["t5-v1_1-xxl"]))
            parameters["text encoder (clip)"] = count(CLIPTextEncoder(CLIP_PRESETS["clip-vit-large-patch14"]))
            parameters["autoencoder"] = count(AutoEncoder(AE_PRESETS["flux1-ae"]))
        else:
            parameters["text encoder (umt5)"] = count(T5Encoder(T5_PRESETS["umt5-xxl"]))
            parameters["autoencoder"] = count(WanVAE(WAN_VAE_PRESETS["wan2.1-vae"]))
    return PRESETS[spec.model], parameters


def _physical_memory() -> int | None:
    try:
        return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    except (ValueError, OSError, AttributeError):
        return None


__all__ = ["Decoder", "JobSize", "JobTooLarge", "LAYOUTS", "RealSpec", "SPECS", "Setup",
           "WAN_NEGATIVE_PROMPT",
           "WeightsError", "check_cpu_job", "default_dtype", "encode_prompts", "estimate", "load_transformer",
           "prepare", "text_recipe"]
