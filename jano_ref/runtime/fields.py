"""The DiTs seen as velocity fields over a token sequence: the only way ``jano_ref`` talks to ``models``.

A ``TokenVelocity`` holds a model plus its conditioning and maps token latents ``x [B, L, D]`` at flow time
sigma (1 = noise, 0 = data) to velocities. Tokens are Flux's packed 2x2 latents or Wan's (1, 2, 2) patches,
in the model's own token order, so samplers and accelerators never need to know which model runs.

Both accept the models' optional hooks: ``token_index`` (compute only these tokens) and ``kv_caches`` (one
``models.layers.KVCache`` per guidance branch, keyed by branch name), and return one row per computed token;
``hooks`` (one ``models.layers.Hooks`` per guidance branch) is what the step and feature caches of
``jano_ref.baselines`` plug into; ``attention_op`` replaces the self-attention op (``models.layers.AttentionOp``,
``runtime.parallel``'s sequence parallelism). ``branch_velocity`` runs one guidance branch alone (CFG-parallel
runs each branch on its own process and mixes them with the same ``guidance_mix``).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import torch
from torch import Tensor

from models import Flux, WanModel
from models.flux import image_ids, pack, text_ids, unpack
from models.layers import AttentionOp, Hooks, KVCache, attention

from .cost import TokenCost
from .sampling import guidance_mix


@dataclass(frozen=True)
class BlockCost:
    """FLOPs of one block in one full forward, split the way ``models.layers.Hooks`` can skip it.

    ``self_attn`` and ``cross_attn`` include their projections and the attention itself; ``mlp`` is the part
    ``Hooks.mlp`` computes (proportional to its rows); ``rest`` is always spent when the block runs (Flux text
    MLP and text projections, single-block linear2). ``rows`` is the block's stream length.
    """

    self_attn: float
    cross_attn: float
    mlp: float
    rest: float
    rows: int

    @property
    def total(self) -> float:
        return self.self_attn + self.cross_attn + self.mlp + self.rest


@dataclass
class FluxConditioning:
    """Text inputs of Flux: T5 tokens ``txt [B, L_txt, context_in_dim]`` and pooled CLIP ``y [B, vec_in_dim]``;
    ``guidance`` is the distilled guidance scale (dev only; BFL cli default 2.5, diffusers 3.5)."""

    txt: Tensor
    y: Tensor
    guidance: float | None = 3.5


@dataclass
class FluxVelocity:
    """Flux on a latent of ``latent_hw`` (H, W): tokens are ``models.flux.pack`` of [B, C, H, W].

    FLUX.1 itself runs one pass (dev distils guidance into an embedding, schnell needs none). Models trained
    without distillation, like our tiny-flux, use classifier-free guidance instead: give ``uncond`` (the
    empty-prompt conditioning) and ``guide_scale``; each branch then has its own pass and its own KV cache.
    """

    model: Flux
    cond: FluxConditioning
    latent_hw: tuple[int, int]
    uncond: FluxConditioning | None = None
    guide_scale: float = 1.0
    _positions: dict = field(default_factory=dict, init=False, repr=False, compare=False)  # see positions()

    @property
    def branches(self) -> tuple[str, ...]:
        return ("cond",) if self.uncond is None else ("cond", "uncond")

    @property
    def token_grid(self) -> tuple[int, int, int]:
        """(T, H, W) of the token grid; Flux images have one frame."""
        return 1, self.latent_hw[0] // 2, self.latent_hw[1] // 2

    @property
    def patch(self) -> tuple[int, int, int]:
        return 1, 2, 2

    def __call__(
        self, x: Tensor, sigma: Tensor, *, token_index: Tensor | None = None, kv_caches: dict[str, KVCache] | None = None,
        hooks: dict[str, Hooks] | None = None, attention_op: AttentionOp = attention,
    ) -> Tensor:
        return _guided(self, x, sigma, token_index, kv_caches, hooks, attention_op)

    def branch_velocity(
        self, branch: str, x: Tensor, sigma: Tensor, *, token_index: Tensor | None = None,
        kv_cache: KVCache | None = None, hooks: Hooks | None = None, attention_op: AttentionOp = attention,
    ) -> Tensor:
        """One guidance branch's model output (in the model's dtype), before guidance."""
        if branch not in self.branches:
            raise ValueError(f"unknown guidance branch {branch!r}; this field has {self.branches}")
        c = self.cond if branch == "cond" else self.uncond
        b = x.shape[0]
        dtype = self.model.img_in.weight.dtype  # inputs follow the model; the velocity comes back in x's dtype
        guidance = None
        if c.guidance is not None and self.model.params.guidance_embed:
            guidance = torch.full((b,), c.guidance, device=x.device, dtype=dtype)
        img_ids, txt_ids, rope = self.positions(c.txt.shape[1], x.device)
        return self.model(
            img=x.to(dtype),
            img_ids=img_ids,
            txt=c.txt.to(dtype).expand(b, -1, -1),
            txt_ids=txt_ids,
            timesteps=sigma.reshape(1).expand(b).to(dtype),
            y=c.y.to(dtype).expand(b, -1),
            guidance=guidance,
            token_index=token_index,
            kv_cache=kv_cache,
            hooks=hooks,
            attention_op=attention_op,
            rope=rope,
        )

    def positions(self, n_txt: int, device) -> tuple[Tensor, Tensor, Tensor]:
        """(image ids, text ids, the model's ``rope_table`` of them), built once per text length and device: every
        call of a sampling run has the same positions (the model gathers the computed tokens' rows of the table)."""
        key = (n_txt, torch.device(device))
        if key not in self._positions:
            img_ids, txt_ids = image_ids(*self.latent_hw, device=device), text_ids(n_txt, device=device)
            self._positions[key] = img_ids, txt_ids, self.model.rope_table(txt_ids, img_ids)
        return self._positions[key]

    def token_cost(self) -> TokenCost:
        """FLOPs per computed token / attention pair of one forward (2 FLOPs per multiply-add)."""
        p = self.model.params
        d, mlp = p.hidden_size, int(p.hidden_size * p.mlp_ratio)
        double = 3 * d * d + d * d + 2 * d * mlp  # qkv, proj, MLP
        single = d * (3 * d + mlp) + (d + mlp) * d  # linear1, linear2
        linear = 2 * (p.depth * double + p.depth_single_blocks * single + p.in_channels * d + d * p.out_channels)
        layers = p.depth + p.depth_single_blocks
        return TokenCost(linear, 4 * d * layers, always_computed=self.cond.txt.shape[1])

    def block_costs(self, computed: int | None = None) -> list[BlockCost]:
        """FLOPs per block of one forward (one guidance branch), for step and feature caches: every image token, or
        ``computed`` of them (``token_index``) attending to all of them (the others' K/V from a cache)."""
        p = self.model.params
        d, mlp = p.hidden_size, int(p.hidden_size * p.mlp_ratio)
        n_txt = self.cond.txt.shape[1]
        n_img = math.prod(self.token_grid)
        n = n_img if computed is None else computed
        rows, keys = n_txt + n, n_txt + n_img
        attention = 2 * 2 * d * rows * keys  # QK^T and AV over the joint sequence
        # the attention hook covers q, k, v and attention; the per-stream output projections run after it
        double = BlockCost(self_attn=2 * 3 * d * d * rows + attention, cross_attn=0.0, mlp=2 * 2 * d * mlp * n,
                           rest=2 * d * d * rows + 2 * 2 * d * mlp * n_txt, rows=n)
        single = BlockCost(self_attn=2 * 3 * d * d * rows + attention, cross_attn=0.0, mlp=2 * d * mlp * rows,
                           rest=2 * (d + mlp) * d * rows, rows=rows)
        return [double] * p.depth + [single] * p.depth_single_blocks

    def to_tokens(self, latent: Tensor) -> Tensor:
        return pack(latent)

    def to_latent(self, tokens: Tensor) -> Tensor:
        """Tokens -> latent video layout [B, C, T=1, H, W] (what the analyzer reads)."""
        return unpack(tokens, *self.latent_hw).unsqueeze(2)


@dataclass
class WanVelocity:
    """Wan on a latent video of ``latent_fhw`` (F, H, W) with classifier-free guidance (Wan default 5.0).

    Each guidance branch runs its own pass, with its own KV cache (official Jano keys caches by cond).
    ``integer_timesteps``: feed the model int64(sigma * 1000), truncated, as Wan2.1's UniPC scheduler does (official
    ``fm_solvers_unipc`` and diffusers' ``UniPCMultistepScheduler`` store int64 timesteps); off, sigma * 1000 as is."""

    model: WanModel
    context: Tensor
    context_uncond: Tensor | None
    latent_fhw: tuple[int, int, int]
    guide_scale: float = 5.0
    integer_timesteps: bool = False
    _rope: dict = field(default_factory=dict, init=False, repr=False, compare=False)  # see rope_table()

    @property
    def branches(self) -> tuple[str, ...]:
        return ("cond",) if self.context_uncond is None else ("cond", "uncond")

    @property
    def token_grid(self) -> tuple[int, int, int]:
        pt, ph, pw = self.model.params.patch_size
        f, h, w = self.latent_fhw
        return f // pt, h // ph, w // pw

    @property
    def patch(self) -> tuple[int, int, int]:
        return tuple(self.model.params.patch_size)

    def __call__(
        self, x: Tensor, sigma: Tensor, *, token_index: Tensor | None = None, kv_caches: dict[str, KVCache] | None = None,
        hooks: dict[str, Hooks] | None = None, attention_op: AttentionOp = attention,
    ) -> Tensor:
        return _guided(self, x, sigma, token_index, kv_caches, hooks, attention_op)

    def branch_velocity(
        self, branch: str, x: Tensor, sigma: Tensor, *, token_index: Tensor | None = None,
        kv_cache: KVCache | None = None, hooks: Hooks | None = None, attention_op: AttentionOp = attention,
    ) -> Tensor:
        """One guidance branch's model output (float32), before guidance."""
        if branch not in self.branches:
            raise ValueError(f"unknown guidance branch {branch!r}; this field has {self.branches}")
        context = self.context if branch == "cond" else self.context_uncond
        video = self.model.unpatchify(x, self.token_grid)
        t = sigma.reshape(1) * 1000  # Wan timesteps are in [0, 1000]
        if self.integer_timesteps:  # float64 before truncating (float32 sigmas truncate alike for 1-200 UniPC steps)
            t = (sigma.reshape(1).double() * 1000).floor()
        t = t.expand(x.shape[0]).float()
        return self.model.forward_tokens(video, t, context.expand(x.shape[0], -1, -1), token_index=token_index,
                                         kv_cache=kv_cache, hooks=hooks, attention_op=attention_op,
                                         rope=self.rope_table(x.device))

    def rope_table(self, device) -> Tensor:
        """The model's ``rope_table`` of this field's token grid, built once per device (every call of a sampling run
        rotates by the same positions; the computed tokens' rows are gathered from it)."""
        key = torch.device(device)
        if key not in self._rope:
            self._rope[key] = self.model.rope_table(self.token_grid, device)
        return self._rope[key]

    def token_cost(self) -> TokenCost:
        """FLOPs per computed token / attention pair of one forward per guidance branch."""
        p = self.model.params
        d = p.dim
        block = 4 * d * d + 2 * d * d + 2 * d * p.ffn_dim  # self q,k,v,o; cross q,o; FFN
        patch = p.in_dim * math.prod(p.patch_size) * d
        linear = 2 * (p.num_layers * block + 2 * patch)
        return TokenCost(linear, 4 * d * p.num_layers, cross_attn_per_pair=4 * d * p.num_layers, cross_keys=p.text_len)

    def block_costs(self, computed: int | None = None) -> list[BlockCost]:
        """FLOPs per block of one forward (one guidance branch), for step and feature caches: every token, or
        ``computed`` of them (``token_index``) attending to all of them (the others' K/V from a cache)."""
        p = self.model.params
        d, keys = p.dim, math.prod(self.token_grid)
        rows = keys if computed is None else computed
        block = BlockCost(
            self_attn=2 * 4 * d * d * rows + 2 * 2 * d * rows * keys,
            cross_attn=2 * 2 * d * d * rows + 2 * 2 * d * d * p.text_len + 2 * 2 * d * rows * p.text_len,
            mlp=2 * 2 * d * p.ffn_dim * rows, rest=0.0, rows=rows,
        )
        return [block] * p.num_layers

    def to_tokens(self, latent: Tensor) -> Tensor:
        return self.model.patchify(latent)

    def to_latent(self, tokens: Tensor) -> Tensor:
        return self.model.unpatchify(tokens, self.token_grid)


def _guided(field_, x: Tensor, sigma: Tensor, token_index, kv_caches, hooks, attention_op) -> Tensor:
    """Every branch of ``field_`` (cond first, as in Wan), mixed by ``guidance_mix``; returned in x's dtype."""

    def run(branch: str) -> Tensor:
        return field_.branch_velocity(
            branch, x, sigma, token_index=token_index, kv_cache=None if kv_caches is None else kv_caches[branch],
            hooks=None if hooks is None else hooks[branch], attention_op=attention_op,
        )

    v_cond = run("cond")
    if len(field_.branches) == 1:
        return v_cond.to(x.dtype)
    return guidance_mix(v_cond, run("uncond"), field_.guide_scale).to(x.dtype)
