"""What a forward costs in FLOPs as a function of how many tokens it computes: the token-FLOP model behind every
"ideal speedup" in this project (Jano's plan, JiT's sparse steps, RAS, uniform step reduction)."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class TokenCost:
    """FLOPs of one model forward as a function of computed queries and available keys.

    cost(n_q, n_k) = linear * q + self_attn * q * k + cross_attn * q * cross_keys, where
    q = n_q + always_computed and k = n_k + always_computed. Linear layers scale with the computed
    tokens, attention with computed queries times all keys (cached ones included). Per-sample work
    (time/text embeddings, modulation, Wan's text K/V projections) is the same at every level and is
    left out, which slightly overstates the ideal speedup.
    """

    linear_per_token: float
    self_attn_per_pair: float
    always_computed: int = 0  # Flux text tokens (computed every step)
    cross_attn_per_pair: float = 0.0
    cross_keys: int = 0  # Wan text tokens seen by cross-attention

    def forward_flops(self, n_computed: int, n_tokens: int) -> float:
        if n_computed == 0:
            return 0.0  # nothing to compute: the forward is skipped
        q = n_computed + self.always_computed
        k = n_tokens + self.always_computed
        return self.linear_per_token * q + self.self_attn_per_pair * q * k + self.cross_attn_per_pair * q * self.cross_keys
