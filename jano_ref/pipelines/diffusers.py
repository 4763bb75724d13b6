"""A diffusers ``FluxPipeline`` / ``WanPipeline`` you already hold, run by our DiT and any of our methods.

    from diffusers import FluxPipeline
    from jano_ref.pipelines.diffusers import prepare
    from jano_ref.lab.compare import compare

    pipe = FluxPipeline.from_pretrained("black-forest-labs/FLUX.1-dev", torch_dtype=torch.bfloat16).to("cuda")
    setup = prepare(pipe, "a cat on a windowsill")
    result = compare(setup, "jano", label="flux-dev")   # the runs, pictures and report of `jano generate`
    print(result.report); result.pixels["jano"]          # [3, 1, H, W] in [0, 1]

The pipeline's tokenizers and text encoders encode the prompt (``pipe.encode_prompt``, exactly as the pipeline
does), its VAE decodes, and its transformer's weights are mapped into our DiT (``models.diffusers_keys``: the
reverse of the mapping the parity tests use); the tensors that need no reshaping are shared with the pipeline's
transformer, not copied. Sampling is ours: Euler over ``flux_schedule`` (which equals FluxPipeline's default
schedule) or ``wan_schedule`` (flow shift from the scheduler config, 5.0 without one; WanPipeline's default
scheduler is UniPC, which this setup does not run). Everything is on the transformer's device and dtype.

diffusers is an optional integration, imported here only to recognise the pipeline and transformer classes
(tests/test_layout.py allows this one module to import it).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch
from torch import Tensor

from models import Flux, FluxParams, WanModel, WanParams
from models.diffusers_keys import flux_state_dict, wan_state_dict

from ..runtime.fields import FluxConditioning, FluxVelocity, WanVelocity
from ..runtime.sampling import flux_schedule, wan_schedule
from .real import SPECS, WAN_NEGATIVE_PROMPT, RealSpec


@dataclass
class Setup:
    """One generation's inputs (``pipelines.tiny.Setup``'s interface) around a diffusers pipeline."""

    spec: RealSpec
    prompt: str
    field: FluxVelocity | WanVelocity
    noise: Tensor  # [1, L, D] tokens
    sigmas: Tensor
    pipe: object
    size: tuple[int, int, int | None]
    solver: str = "euler"
    random_weights: bool = False
    stage_seconds: dict[str, float] = field(default_factory=dict)

    def latent(self, tokens: Tensor) -> Tensor:
        """Tokens [1, L, D] -> latent [C, T, H, W]."""
        return self.field.to_latent(tokens)[0]

    def decode(self, tokens: Tensor) -> Tensor:
        """Tokens [1, L, D] -> pixels [3, F, H, W] in [0, 1] (float32), through the pipeline's VAE and its
        post-processing."""
        with torch.inference_mode():
            latent = self.field.to_latent(tokens)
            if self.spec.family == "flux":
                return _decode_flux(self.pipe, latent[:, :, 0])
            return _decode_wan(self.pipe, latent)


def transformer_from_diffusers(transformer) -> Flux | WanModel:
    """Our DiT with the weights of a diffusers ``FluxTransformer2DModel`` / ``WanTransformer3DModel`` (the same
    tensors where no reshaping is needed), built on the meta device and loaded with ``assign``."""
    from diffusers import FluxTransformer2DModel, WanTransformer3DModel

    c = transformer.config
    if isinstance(transformer, FluxTransformer2DModel):
        params = FluxParams(in_channels=c.in_channels, out_channels=c.out_channels or c.in_channels,
                            vec_in_dim=c.pooled_projection_dim, context_in_dim=c.joint_attention_dim,
                            hidden_size=c.num_attention_heads * c.attention_head_dim, mlp_ratio=4.0,
                            num_heads=c.num_attention_heads, depth=c.num_layers,
                            depth_single_blocks=c.num_single_layers,
                            axes_dim=list(c.axes_dims_rope), guidance_embed=c.guidance_embeds)
        cls, state = Flux, flux_state_dict(transformer.state_dict())
    elif isinstance(transformer, WanTransformer3DModel):
        if c.image_dim is not None or c.added_kv_proj_dim is not None:
            raise ValueError("this WanTransformer3DModel takes image inputs (I2V); only text-to-video Wan2.1 is "
                             "implemented")
        params = WanParams(patch_size=tuple(c.patch_size), in_dim=c.in_channels, dim=c.num_attention_heads *
                           c.attention_head_dim, ffn_dim=c.ffn_dim, freq_dim=c.freq_dim, text_dim=c.text_dim,
                           out_dim=c.out_channels, num_heads=c.num_attention_heads, num_layers=c.num_layers,
                           qk_norm=c.qk_norm is not None, cross_attn_norm=c.cross_attn_norm, eps=c.eps)
        cls, state = WanModel, wan_state_dict(transformer.state_dict())
    else:
        raise TypeError(f"{type(transformer).__name__} is not a FluxTransformer2DModel or WanTransformer3DModel")
    with torch.device("meta"):
        model = cls(params)
    model.load_state_dict(state, strict=True, assign=True)
    return model.eval()


def prepare(
    pipe,
    prompt: str,
    *,
    height: int | None = None,
    width: int | None = None,
    frames: int | None = None,
    steps: int | None = None,
    guidance: float | None = None,
    seed: int = 0,
    negative_prompt: str | None = None,
    max_sequence_length: int | None = None,
    transformer: Flux | WanModel | None = None,
) -> Setup:
    """Conditioning (from the pipeline's encoders), noise (from ``seed``, a CPU generator) and sigmas for one prompt.

    Defaults are the official model's (``pipelines.real.SPECS``: FLUX.1-dev or -schnell by the transformer's
    guidance embedding, Wan2.1 1.3B or 14B by its width); Wan's negative prompt defaults to Wan2.1's own (diffusers'
    WanPipeline uses ""). Pass ``transformer`` to reuse a DiT made by ``transformer_from_diffusers``.
    """
    from diffusers import FluxPipeline, WanPipeline

    if not isinstance(pipe, (FluxPipeline, WanPipeline)):
        raise TypeError(f"{type(pipe).__name__} is not a diffusers FluxPipeline or WanPipeline")
    dit = transformer if transformer is not None else transformer_from_diffusers(pipe.transformer)
    first = next(dit.parameters())
    device, dtype = first.device, first.dtype
    g = torch.Generator().manual_seed(seed)
    if isinstance(pipe, FluxPipeline):
        spec = SPECS["flux-dev" if dit.params.guidance_embed else "flux-schnell"]
        height, width = height or spec.height, width or spec.width
        steps = spec.steps if steps is None else steps
        scale = pipe.vae_scale_factor
        h, w = 2 * (height // (2 * scale)), 2 * (width // (2 * scale))
        txt, y, _ = pipe.encode_prompt(prompt=prompt, prompt_2=None, device=device,
                                       max_sequence_length=max_sequence_length or spec.text_length)
        cond = FluxConditioning(txt.to(dtype), y.to(dtype), spec.guidance if guidance is None else guidance)
        velocity_field: FluxVelocity | WanVelocity = FluxVelocity(dit, cond, (h, w))
        noise = torch.randn(1, dit.params.in_channels // 4, h, w, generator=g)
        sigmas = flux_schedule(steps, (h // 2) * (w // 2), shift=spec.resolution_shift, device=device)
        frames = None
    else:
        spec = SPECS["wan2.1-1.3b" if dit.params.dim <= 1536 else "wan2.1-14b"]
        height, width = height or spec.height, width or spec.width
        frames, steps = frames or spec.frames, spec.steps if steps is None else steps
        spatial, temporal = pipe.vae_scale_factor_spatial, pipe.vae_scale_factor_temporal
        latent_fhw = ((frames - 1) // temporal + 1, height // spatial, width // spatial)
        negative = WAN_NEGATIVE_PROMPT if negative_prompt is None else negative_prompt
        context, context_null = pipe.encode_prompt(prompt=prompt, negative_prompt=negative,
                                                   do_classifier_free_guidance=True, device=device,
                                                   max_sequence_length=max_sequence_length or spec.text_length)
        velocity_field = WanVelocity(dit, context.to(dtype), context_null.to(dtype), latent_fhw,
                                     guide_scale=spec.guidance if guidance is None else guidance)
        noise = torch.randn(1, dit.params.in_dim, *latent_fhw, generator=g)
        shift = getattr(pipe.scheduler.config, "flow_shift", None) or spec.shift
        sigmas = wan_schedule(steps, shift, device=device)
    tokens = velocity_field.to_tokens(noise.to(device=device, dtype=dtype))
    return Setup(spec, prompt, velocity_field, tokens, sigmas, pipe, (height, width, frames))


def _decode_flux(pipe, latent: Tensor) -> Tensor:
    vae = pipe.vae
    z = latent / vae.config.scaling_factor + vae.config.shift_factor
    image = vae.decode(z.to(vae.device, vae.dtype), return_dict=False)[0]
    return pipe.image_processor.postprocess(image, output_type="pt")[0].float().unsqueeze(1)  # [3, 1, H, W]


def _decode_wan(pipe, latent: Tensor) -> Tensor:
    vae = pipe.vae
    shape = (1, vae.config.z_dim, 1, 1, 1)
    z = latent.to(vae.device, vae.dtype)
    mean = torch.tensor(vae.config.latents_mean).view(shape).to(z)
    inverse_std = 1.0 / torch.tensor(vae.config.latents_std).view(shape).to(z)
    video = vae.decode(z / inverse_std + mean, return_dict=False)[0]  # as WanPipeline decodes
    return pipe.video_processor.postprocess_video(video, output_type="pt")[0].float().permute(1, 0, 2, 3)
