"""Prompt embeddings kept on disk, so a prompt's text encoders (T5-XXL / umT5-XXL: about 10 GB in bf16) run once.

One safetensors file per (prompt, recipe). The recipe says everything the tensors depend on besides the prompt:
which encoder files (path, size and modification time of every weight file and of tokenizer.json; in the Hugging
Face cache the path names the file's content hash), the maximum length, the dtype and the device type. The file
name is a hash of prompt + recipe, and both are also stored in the file's metadata and compared on reading, so a
stale or foreign file is never used (it is recomputed and overwritten).

    cache = EmbeddingCache.default()          # $JANO_CACHE, else $XDG_CACHE_HOME/jano_ref, else ~/.cache/jano_ref
    cache = EmbeddingCache(None)              # disabled: every lookup misses, nothing is written
"""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path

from safetensors import SafetensorError, safe_open
from safetensors.torch import save_file
from torch import Tensor

CACHE_ENV = "JANO_CACHE"
SUBFOLDER = "text-embeddings"


def default_folder() -> Path:
    """``$JANO_CACHE/text-embeddings``, else under ``$XDG_CACHE_HOME/jano_ref`` or ``~/.cache/jano_ref``."""
    if os.environ.get(CACHE_ENV):
        return Path(os.environ[CACHE_ENV]) / SUBFOLDER
    base = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache")
    return base / "jano_ref" / SUBFOLDER


def file_identity(paths: list[Path]) -> list[str]:
    """``path:size:mtime_ns`` of each file (resolved through links, so a Hub cache entry names its blob)."""
    out = []
    for path in sorted(Path(p) for p in paths):
        real = path.resolve()
        stat = real.stat()
        out.append(f"{real}:{stat.st_size}:{stat.st_mtime_ns}")
    return out


class EmbeddingCache:
    """Read and write prompt embeddings in ``folder`` (None: the cache is off)."""

    def __init__(self, folder: str | Path | None):
        self.folder = None if folder is None else Path(folder)

    @classmethod
    def default(cls) -> "EmbeddingCache":
        return cls(default_folder())

    @property
    def enabled(self) -> bool:
        return self.folder is not None

    def path(self, prompt: str, recipe: dict) -> Path | None:
        if self.folder is None:
            return None
        digest = hashlib.sha256(_describe(prompt, recipe).encode()).hexdigest()[:32]
        return self.folder / f"{digest}.safetensors"

    def get(self, prompt: str, recipe: dict) -> dict[str, Tensor] | None:
        """The stored tensors (on the CPU), or None on a miss, a foreign entry or an unreadable file."""
        path = self.path(prompt, recipe)
        if path is None or not path.is_file():
            return None
        try:
            with safe_open(str(path), framework="pt") as f:
                if (f.metadata() or {}).get("entry") != _describe(prompt, recipe):
                    return None
                return {k: f.get_tensor(k).clone() for k in f.keys()}
        except (SafetensorError, OSError):
            return None

    def put(self, prompt: str, recipe: dict, tensors: dict[str, Tensor]) -> Path | None:
        """Store ``tensors`` (written through a temporary file and renamed, so readers never see half a file)."""
        path = self.path(prompt, recipe)
        if path is None:
            return None
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(f"{path.name}.{os.getpid()}.tmp")
        save_file({k: v.detach().cpu().contiguous() for k, v in tensors.items()}, str(tmp),
                  metadata={"entry": _describe(prompt, recipe)})
        os.replace(tmp, path)
        return path


def _describe(prompt: str, recipe: dict) -> str:
    return json.dumps({"prompt": prompt, "recipe": recipe}, sort_keys=True, ensure_ascii=False)
