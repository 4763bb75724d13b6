import torch
from torch import Tensor

from jano_ref.runtime.cost import TokenCost
from jano_ref.runtime.fields import BlockCost, FluxConditioning, FluxVelocity, WanVelocity
from jano_ref.runtime.sampling import flux_schedule, guidance_mix, wan_schedule
from models import build_model
from models.layers import PASS_THROUGH


def randomize_(model: torch.nn.Module, seed: int = 0, std: float = 0.2) -> torch.nn.Module:
    """Re-draw the model's weights deterministically, and jitter the constant-initialised ones
    (norm scales = 1, LayerNorm bias = 0) so that no term of the forward is trivially identity."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in model.parameters():
            if p.ndim >= 2 and p.shape[-1] > 1 and p.numel() != p.shape[-1]:
                fan_in = p[0].numel()
                p.copy_((torch.rand(p.shape, generator=g) * 2 - 1) / fan_in**0.5)
            else:
                p.add_(torch.randn(p.shape, generator=g) * std)
    return model


def rel_err(a: torch.Tensor, b: torch.Tensor) -> float:
    """||a - b|| / ||b|| in float64."""
    return ((a.double() - b.double()).norm() / b.double().norm()).item()


# ---- small fields for samplers and caches: (field, noise tokens, sigmas) ----


def flux_field(seed=0, size=16):
    torch.manual_seed(seed)
    model = randomize_(build_model("flux-test"), seed=seed)
    field = FluxVelocity(model, FluxConditioning(torch.randn(1, 5, 40), torch.randn(1, 24), 3.5), (size, size))
    noise = field.to_tokens(torch.randn(1, 4, size, size, generator=torch.Generator().manual_seed(seed)))
    return field, noise, flux_schedule(16, (size // 2) ** 2)


def flux_cfg_field(seed=0, size=16):
    """Flux with classifier-free guidance (two branches, two caches), as tiny-flux is sampled."""
    field, noise, sigmas = flux_field(seed, size)
    model = randomize_(build_model("flux-test", guidance_embed=False), seed=seed)
    uncond = FluxConditioning(torch.zeros(1, 5, 40), torch.zeros(1, 24), None)
    cond = FluxConditioning(field.cond.txt, field.cond.y, None)
    return FluxVelocity(model, cond, field.latent_hw, uncond=uncond, guide_scale=4.0), noise, sigmas


def wan_field(seed=0):
    torch.manual_seed(seed)
    model = randomize_(build_model("wan-test"), seed=seed)
    field = WanVelocity(model, torch.randn(1, 5, 24), torch.randn(1, 3, 24), (3, 8, 8))
    noise = field.to_tokens(torch.randn(1, 4, 3, 8, 8, generator=torch.Generator().manual_seed(seed)))
    return field, noise, wan_schedule(12)


class AnalyticField:
    """A fake token velocity field whose blocks are known functions, for exact skip-logic tests.

    Block i maps the stream s to ``s + attention + mlp`` with attention = ``attn_scale * mean over rows of s``
    (a stand-in that mixes tokens) and mlp = ``mlp_scale * s`` (row-wise). Each guidance branch starts from
    ``x`` (cond) or ``-x`` (uncond) plus ``sigma``, and calls ``hooks[branch]`` exactly as the models do. Every
    block part (self-attention, MLP, the rest; no cross-attention) costs 1 FLOP per row, so metered FLOPs count
    the calls. ``calls`` records (branch, layer, part).
    """

    def __init__(self, depth: int = 3, branches=("cond",), attn_scale: float = 0.5, mlp_scale: float = 1.0,
                 guide_scale: float = 2.0, rows: int = 8):
        self.depth, self.branches = depth, tuple(branches)
        self.attn_scale, self.mlp_scale, self.guide_scale = attn_scale, mlp_scale, guide_scale
        self.calls: list[tuple[str, int, str]] = []
        self.rows = rows  # tokens per sample the field expects (for the FLOP meter)

    def block_costs(self) -> list[BlockCost]:
        return [BlockCost(self_attn=self.rows, cross_attn=0.0, mlp=self.rows, rest=self.rows, rows=self.rows)
                ] * self.depth

    def __call__(self, x: Tensor, sigma: Tensor, *, hooks=None, token_index=None, kv_caches=None) -> Tensor:
        outs = {}
        for b in self.branches:
            h = PASS_THROUGH if hooks is None else hooks[b]
            s = (x if b == "cond" else -x) + float(sigma)
            for i in range(self.depth):
                s = h.block(i, s, lambda s, i=i, b=b, h=h: self._block(b, i, s, h), lambda s=s: s * (1 + float(sigma)))
            outs[b] = s
        if len(self.branches) == 1:
            return outs["cond"]
        return guidance_mix(outs["cond"], outs["uncond"], self.guide_scale)

    def _block(self, branch: str, i: int, s: Tensor, h) -> Tensor:
        self.calls.append((branch, i, "block"))

        def attend() -> Tensor:
            self.calls.append((branch, i, "attention"))
            return self.attn_scale * s.mean(dim=1, keepdim=True).expand_as(s)

        def mlp(rows: Tensor) -> Tensor:
            self.calls.append((branch, i, "mlp"))
            return self.mlp_scale * rows

        return s + h.attention(i, "self", attend) + h.mlp(i, s, mlp)


class TokenAnalyticField(AnalyticField):
    """``AnalyticField`` over a grid of tokens that computes only ``token_index`` when given (the stream then holds
    those tokens' rows, and attention mixes only them), with what ``sample_jano`` reads from a layout: token grid,
    1x1x1 patches, ``to_latent``, ``token_cost`` and ``block_costs(computed)``. Every block part costs 1 FLOP per
    computed row and a forward 3 x depth token FLOPs per computed token, so both FLOP models count block calls."""

    def __init__(self, grid=(1, 4, 4), **kwargs):
        super().__init__(rows=grid[0] * grid[1] * grid[2], **kwargs)
        self.token_grid, self.patch = grid, (1, 1, 1)

    def block_costs(self, computed=None) -> list[BlockCost]:
        n = self.rows if computed is None else computed
        return [BlockCost(self_attn=n, cross_attn=0.0, mlp=n, rest=n, rows=n)] * self.depth

    def token_cost(self) -> TokenCost:
        return TokenCost(3.0 * self.depth, 0.0)

    def to_latent(self, tokens: Tensor) -> Tensor:
        return tokens.transpose(1, 2).reshape(tokens.shape[0], tokens.shape[2], *self.token_grid)

    def __call__(self, x: Tensor, sigma: Tensor, *, hooks=None, token_index=None, kv_caches=None) -> Tensor:
        return super().__call__(x if token_index is None else x[:, token_index], sigma, hooks=hooks)
