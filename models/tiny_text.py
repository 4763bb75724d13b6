"""Prompt -> conditioning tensors for models that have no real text encoder here.

``hashed_text_features`` is a stand-in, not a language model: it seeds a generator with the SHA-256 of
the prompt and draws Gaussian token features of the width the DiT expects. It keeps the Flux (``txt``,
``y``) and Wan (``context``) interfaces exercised end to end on random-weight models; the outputs of
such models carry no meaning.

``TinyTextEncoder`` is for the tiny models trained on ``jano_ref.lab.tiny.data``: a fixed word-embedding table plus
a sinusoidal position code over the small caption vocabulary, so a DiT trained on it can learn to read
the caption.
"""

from __future__ import annotations

import hashlib
import math

import torch
from torch import Tensor


def hashed_text_features(prompt: str, num_tokens: int, dim: int, *, salt: str = "") -> Tensor:
    """Deterministic [1, num_tokens, dim] float32 features for ``prompt`` (same prompt, same tensor)."""
    digest = hashlib.sha256(f"{salt}\0{prompt}".encode()).digest()
    g = torch.Generator().manual_seed(int.from_bytes(digest[:8], "little"))
    return torch.randn(1, num_tokens, dim, generator=g)


# ---- a tiny, training-free caption encoder for the procedural data of ``jano_ref.lab.tiny.data`` ------------

# The caption words of the procedural data (``jano_ref.lab.tiny.data.CAPTION_WORDS``, which a test keeps equal), in
# the order the shipped tiny models were trained with: a word's position is its embedding row.
TINY_VOCABULARY: tuple[str, ...] = (
    "a", "on", "background", "moving", "standing", "still",
    "red", "green", "blue", "yellow", "magenta", "cyan", "white",
    "striped", "checkered", "noisy", "scribbled",
    "circle", "square", "triangle", "ring", "cross",
    "flat", "gradient", "left", "right", "up", "down",
)


def _seeded_generator(*parts: object) -> torch.Generator:
    """A CPU generator seeded from SHA-256 of ``parts``: the same in every process (no salted hash())."""
    digest = hashlib.sha256("\0".join(str(p) for p in parts).encode()).digest()
    return torch.Generator().manual_seed(int.from_bytes(digest[:7], "little"))


def sinusoidal_positions(length: int, dim: int) -> Tensor:
    """[length, dim] transformer position code: sin / cos pairs at geometrically spaced frequencies."""
    half = (dim + 1) // 2
    freqs = torch.exp(-math.log(10_000.0) * torch.arange(half, dtype=torch.float64) / half)
    angles = torch.arange(length, dtype=torch.float64)[:, None] * freqs[None, :]
    code = torch.stack([angles.sin(), angles.cos()], dim=-1).reshape(length, 2 * half)
    return code[:, :dim].float()


class TinyTextEncoder:
    """Captions -> Flux (``txt``, ``y``) and Wan (``context``) conditioning, with nothing learned.

    A caption is lower-cased, split on whitespace (punctuation stripped) and mapped to ids over a fixed
    vocabulary (``<pad>`` = 0, ``<unk>`` = 1, then ``words``); it is truncated or padded to ``max_tokens``.
    Token features = a fixed Gaussian embedding row of the id + a sinusoidal position code, so the DiT can
    tell the words apart and read their order. The embedding table of each width is drawn from a generator
    seeded with SHA-256 of (``seed``, purpose, width): identical in every process. The empty caption "" (the
    unconditional prompt of classifier-free guidance) is all padding.
    """

    PAD, UNK = 0, 1

    def __init__(self, seed: int = 0, words: tuple[str, ...] = TINY_VOCABULARY) -> None:
        self.seed = seed
        self.vocabulary: tuple[str, ...] = ("<pad>", "<unk>") + tuple(w for w in words if w not in ("<pad>", "<unk>"))
        self._ids = {w: i for i, w in enumerate(self.vocabulary)}

    def tokenize(self, caption: str, max_tokens: int = 16) -> list[int]:
        """Word ids of ``caption``, truncated to / padded up to ``max_tokens``."""
        words = [w.strip(".,;:!?\"'") for w in caption.lower().split()]
        ids = [self._ids.get(w, self.UNK) for w in words if w][:max_tokens]
        return ids + [self.PAD] * (max_tokens - len(ids))

    def embedding_table(self, dim: int) -> Tensor:
        """[vocabulary size, dim] fixed word embeddings with unit-variance entries."""
        g = _seeded_generator("tiny-text", self.seed, "embedding", dim)
        return torch.randn(len(self.vocabulary), dim, generator=g)

    def _ids_tensor(self, captions: list[str], max_tokens: int) -> Tensor:
        return torch.tensor([self.tokenize(c, max_tokens) for c in captions], dtype=torch.long).reshape(-1, max_tokens)

    def tokens(
        self,
        captions: list[str],
        dim: int,
        max_tokens: int = 16,
        *,
        device: torch.device | str | None = None,
        dtype: torch.dtype = torch.float32,
    ) -> Tensor:
        """[B, max_tokens, dim] token features (embedding + position code) of a list of captions."""
        ids = self._ids_tensor(captions, max_tokens)
        features = self.embedding_table(dim)[ids] + sinusoidal_positions(max_tokens, dim)
        return features.to(device=device, dtype=dtype)

    def pooled(
        self,
        captions: list[str],
        dim: int,
        out_dim: int,
        max_tokens: int = 16,
        *,
        device: torch.device | str | None = None,
        dtype: torch.dtype = torch.float32,
    ) -> Tensor:
        """[B, out_dim]: mean embedding (width ``dim``) of the words (of ``<pad>`` if there are none),
        through a fixed Gaussian projection scaled by 1/sqrt(dim) to keep unit-scale entries."""
        ids = self._ids_tensor(captions, max_tokens)
        words = (ids != self.PAD).float()[..., None]
        table = self.embedding_table(dim)
        mean = (table[ids] * words).sum(1) / words.sum(1).clamp_min(1)
        mean = torch.where(words.sum(1) > 0, mean, table[self.PAD])
        g = _seeded_generator("tiny-text", self.seed, "pooled", dim, out_dim)
        projection = torch.randn(dim, out_dim, generator=g)
        return (mean @ projection / math.sqrt(dim)).to(device=device, dtype=dtype)

    def flux_batch(
        self,
        captions: list[str],
        context_in_dim: int,
        vec_in_dim: int,
        max_tokens: int = 16,
        *,
        device: torch.device | str | None = None,
        dtype: torch.dtype = torch.float32,
    ) -> tuple[Tensor, Tensor]:
        """Flux inputs: (txt [B, max_tokens, context_in_dim], y [B, vec_in_dim]).

        Row i equals ``flux(captions[i], ...)`` up to float rounding, not bit for bit: the pooled projection is a
        [B, dim] matmul, and BLAS may sum a batch in another order than a single row. Training encodes batches and
        generation single captions, which is fine at that precision."""
        txt = self.tokens(captions, context_in_dim, max_tokens, device=device, dtype=dtype)
        y = self.pooled(captions, context_in_dim, vec_in_dim, max_tokens, device=device, dtype=dtype)
        return txt, y

    def flux(
        self, caption: str, context_in_dim: int, vec_in_dim: int, max_tokens: int = 16, **kwargs
    ) -> tuple[Tensor, Tensor]:
        """Flux inputs of one caption: (txt [1, max_tokens, context_in_dim], y [1, vec_in_dim])."""
        return self.flux_batch([caption], context_in_dim, vec_in_dim, max_tokens, **kwargs)

    def wan_batch(self, captions: list[str], text_dim: int, max_tokens: int = 16, **kwargs) -> Tensor:
        """Wan context [B, max_tokens, text_dim] (Wan zero-pads it to ``text_len`` itself; max_tokens <= text_len)."""
        return self.tokens(captions, text_dim, max_tokens, **kwargs)

    def wan(self, caption: str, text_dim: int, max_tokens: int = 16, **kwargs) -> Tensor:
        """Wan context of one caption: [1, max_tokens, text_dim]."""
        return self.wan_batch([caption], text_dim, max_tokens, **kwargs)
