"""Prompt -> token ids and attention mask, as the FLUX.1 and Wan2.1 pipelines tokenize for their text encoders.

The vocabulary, normalisation and splitting come from the repo's own ``tokenizer.json``, read by the
``tokenizers`` package (the ``real`` extra); nothing of the tokenizer is written here. What is configured
is what the pipelines ask of transformers' tokenizers, ``tokenizer(prompts, padding="max_length",
max_length=N, truncation=True)``, and the special tokens that transformers' CLIP / T5 tokenizer classes
attach (they set their post-processor whatever the file says):

- "clip": CLIP-L (FLUX.1 tokenizer/, openai/clip-vit-large-patch14): <|startoftext|> ... <|endoftext|>,
  N = 77, padded with <|endoftext|>.
- "t5": T5 v1.1 XXL (FLUX.1 tokenizer_2/): ... </s>, N = 512 (FLUX.1-schnell: 256, ``FLUX_T5_MAX_LENGTH``),
  padded with <pad>.
- "umt5": umT5-XXL (Wan2.1 google/umt5-xxl/, *-Diffusers tokenizer/): ... </s>, N = 512, padded with <pad>.

Truncation keeps the first N tokens including the special ones, so an over-long prompt still ends in its
end token. Padding is on the right; the attention mask is 1 on real tokens (special ones included).
FLUX.1 feeds both encoders the padded ids without a mask; Wan2.1 passes the mask to umT5 and keeps only
the first ``lengths[i]`` output rows of prompt i (zero-padding the rest). For "umt5" prompts are first
cleaned as Wan2.1 does (HTML entities unescaped twice, runs of whitespace made one space, stripped),
except ftfy's mojibake repair, which needs the ftfy package (diffusers also skips it without ftfy).

    tokenizer = PromptTokenizer("FLUX.1-dev/tokenizer_2", "t5", max_length=FLUX_T5_MAX_LENGTH["flux-dev"])
    tokens = tokenizer(["a red cube on a table"])          # tokens.input_ids [1, 512], tokens.attention_mask
"""

from __future__ import annotations

import html
import json
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import torch
from torch import Tensor


@dataclass(frozen=True)
class _Kind:
    max_length: int
    pad_token: str  # default when no special_tokens_map.json / tokenizer_config.json beside the file names one
    eos_token: str
    bos_token: str | None = None  # CLIP only
    clean: bool = False  # Wan2.1's prompt cleaning


KINDS = {
    "clip": _Kind(max_length=77, pad_token="<|endoftext|>", eos_token="<|endoftext|>", bos_token="<|startoftext|>"),
    "t5": _Kind(max_length=512, pad_token="<pad>", eos_token="</s>"),
    "umt5": _Kind(max_length=512, pad_token="<pad>", eos_token="</s>", clean=True),
}
# BFL flux util.py load_t5(max_length=256 if name == "flux-schnell" else 512); diffusers FluxPipeline takes the same.
FLUX_T5_MAX_LENGTH = {"flux-dev": 512, "flux-schnell": 256}


@dataclass(frozen=True)
class Tokens:
    input_ids: Tensor  # [B, max_length] int64
    attention_mask: Tensor  # [B, max_length] int64: 1 = token (special ones included), 0 = padding
    truncated: tuple[bool, ...]  # prompt i lost tokens to max_length (the pipelines log a warning then)

    @property
    def lengths(self) -> Tensor:
        """[B] number of real tokens per prompt (Wan2.1 keeps this many rows of the encoder output)."""
        return self.attention_mask.sum(dim=1)


def clean_prompt(text: str) -> str:
    """Wan2.1's prompt cleaning without ftfy: unescape HTML entities twice, collapse whitespace, strip."""
    return re.sub(r"\s+", " ", html.unescape(html.unescape(text))).strip()


class PromptTokenizer:
    """A repo's ``tokenizer.json`` set up as one of the pipelines uses it (``kind``: "clip", "t5" or "umt5").

    ``source``: the tokenizer.json file or the folder holding it. ``max_length`` defaults to the kind's
    (77, 512, 512; FLUX.1-schnell's T5 uses 256). ``pad_token`` defaults to the one named in the
    special_tokens_map.json / tokenizer_config.json beside the file, else the kind's.
    """

    def __init__(self, source, kind: str, *, max_length: int | None = None, pad_token: str | None = None):
        if kind not in KINDS:
            raise ValueError(f"unknown tokenizer kind {kind!r}; choose one of {', '.join(KINDS)}")
        self.kind, spec = kind, KINDS[kind]
        self.max_length = spec.max_length if max_length is None else max_length
        path = _tokenizer_file(Path(source))
        self.pad_token = pad_token or _named_pad_token(path.parent) or spec.pad_token
        self.clean = spec.clean

        tokenizers = _import_tokenizers()
        tok = tokenizers.Tokenizer.from_file(str(path))
        ids = {t: _token_id(tok, t, path) for t in (spec.bos_token, spec.eos_token, self.pad_token) if t is not None}
        if spec.bos_token is not None:  # CLIPTokenizer: <|startoftext|> $A <|endoftext|>
            tok.post_processor = tokenizers.processors.RobertaProcessing(
                (spec.eos_token, ids[spec.eos_token]), (spec.bos_token, ids[spec.bos_token]),
                trim_offsets=False, add_prefix_space=False,
            )
        else:  # T5Tokenizer: $A </s>
            eos = spec.eos_token
            tok.post_processor = tokenizers.processors.TemplateProcessing(
                single=f"$A {eos}", pair=f"$A {eos} $B {eos}", special_tokens=[(eos, ids[eos])]
            )
        tok.enable_truncation(max_length=self.max_length)  # counts the special tokens the post-processor adds
        tok.enable_padding(length=self.max_length, pad_id=ids[self.pad_token], pad_token=self.pad_token)
        self.tokenizer = tok

    def __call__(self, prompts: str | Sequence[str]) -> Tokens:
        prompts = [prompts] if isinstance(prompts, str) else list(prompts)
        if self.clean:
            prompts = [clean_prompt(p) for p in prompts]
        encodings = self.tokenizer.encode_batch(prompts, add_special_tokens=True)
        return Tokens(
            input_ids=torch.tensor([e.ids for e in encodings], dtype=torch.long),
            attention_mask=torch.tensor([e.attention_mask for e in encodings], dtype=torch.long),
            truncated=tuple(bool(e.overflowing) for e in encodings),
        )


def _import_tokenizers():
    try:
        import tokenizers
    except ImportError as err:
        raise ImportError("models.tokenization reads tokenizer.json with the `tokenizers` package, which is not "
                          'installed: pip install -e ".[real]" (or pip install tokenizers)') from err
    return tokenizers


def _tokenizer_file(path: Path) -> Path:
    if path.is_dir():
        if (path / "tokenizer.json").is_file():
            return path / "tokenizer.json"
        present = sorted(p.name for p in path.iterdir() if p.suffix in {".json", ".txt", ".model"})
        raise FileNotFoundError(
            f"{path} has no tokenizer.json (it has: {', '.join(present) or 'no tokenizer files'}). Only "
            "tokenizer.json is read (vocab.json + merges.txt and spiece.model are not); download the repo's "
            "tokenizer.json, e.g. `hf download openai/clip-vit-large-patch14 tokenizer.json` for CLIP-L "
            "(FLUX.1's tokenizer/ vocabulary) or `hf download google/umt5-xxl tokenizer.json` for umT5."
        )
    if path.is_file():
        return path
    raise FileNotFoundError(f"{path}: no such file or folder; pass a tokenizer.json or the folder holding it "
                            "(e.g. the tokenizer_2/ folder of a FLUX.1 snapshot)")


def _named_pad_token(folder: Path) -> str | None:
    """The pad token named by transformers' files beside tokenizer.json, if any."""
    for name in ("special_tokens_map.json", "tokenizer_config.json"):
        try:
            pad = json.loads((folder / name).read_text(encoding="utf-8")).get("pad_token")
        except (OSError, ValueError, AttributeError):
            continue
        pad = pad.get("content") if isinstance(pad, dict) else pad
        if isinstance(pad, str):
            return pad
    return None


def _token_id(tok, token: str, path: Path) -> int:
    token_id = tok.token_to_id(token)
    if token_id is None:
        raise ValueError(f"{path} has no token {token!r}; is it the tokenizer of the encoder you chose "
                         "(kind 'clip' for CLIP-L, 't5' / 'umt5' for the T5 encoders)?")
    return token_id
