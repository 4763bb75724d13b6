"""Prompt -> conditioning tensors for models that have no real text encoder here.

``hashed_text_features`` is a stand-in, not a language model: it seeds a generator with the SHA-256 of
the prompt and draws Gaussian token features of the width the DiT expects. It keeps the Flux (``txt``,
``y``) and Wan (``context``) interfaces exercised end to end on random-weight models; the outputs of
such models carry no meaning.
"""

from __future__ import annotations

import hashlib

import torch
from torch import Tensor


def hashed_text_features(prompt: str, num_tokens: int, dim: int, *, salt: str = "") -> Tensor:
    """Deterministic [1, num_tokens, dim] float32 features for ``prompt`` (same prompt, same tensor)."""
    digest = hashlib.sha256(f"{salt}\0{prompt}".encode()).digest()
    g = torch.Generator().manual_seed(int.from_bytes(digest[:8], "little"))
    return torch.randn(1, num_tokens, dim, generator=g)
