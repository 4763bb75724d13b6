"""Load the official FLUX.1 / Wan2.1 safetensors checkpoints into our models, safely and cheaply.

Only safetensors is read, never pickle. Key names and shapes are checked from the file headers
before any tensor data is read, and tensors are loaded with ``assign=True``, so a model built on
the meta device costs its memory once:

    model = build_model("wan2.1-14b", device="meta")
    load_checkpoint(model, "Wan-AI/Wan2.1-T2V-14B")   # hub repo id, folder, index json or .safetensors
"""

from __future__ import annotations

import functools
import json
import posixpath
import re
import struct
from collections import defaultdict
from dataclasses import dataclass
from itertools import chain
from pathlib import Path

import huggingface_hub
from huggingface_hub import constants as hub_constants
# huggingface_hub.utils (not .errors) has these in every version we support (>= 0.23).
from huggingface_hub.utils import EntryNotFoundError, GatedRepoError, LocalEntryNotFoundError, RepositoryNotFoundError
from safetensors import SafetensorError, safe_open
from torch import Tensor, nn

COMFY_PREFIX = "model.diffusion_model."  # ComfyUI-style single files nest the DiT under this
PICKLE_SUFFIXES = {".pt", ".pth", ".bin", ".ckpt", ".pkl"}
HUB_FILES = {  # the original-layout DiT weights in the official repos (models.md 1.12, 2.9)
    "black-forest-labs/FLUX.1-dev": "flux1-dev.safetensors",
    "black-forest-labs/FLUX.1-schnell": "flux1-schnell.safetensors",
    "Wan-AI/Wan2.1-T2V-1.3B": "diffusion_pytorch_model.safetensors",
    "Wan-AI/Wan2.1-T2V-14B": "diffusion_pytorch_model.safetensors.index.json",
}
DIFFUSERS_HINTS = {  # identify_checkpoint() result -> what to load instead
    "diffusers-flux": "flux1-dev.safetensors / flux1-schnell.safetensors from black-forest-labs/FLUX.1-dev / "
    "FLUX.1-schnell (the top-level file, not the transformer/ folder)",
    "diffusers-wan": "diffusion_pytorch_model*.safetensors from Wan-AI/Wan2.1-T2V-1.3B / Wan-AI/Wan2.1-T2V-14B "
    "(not the *-Diffusers repos)",
}
_PICKLE_FIX = ("we never unpickle (it can run arbitrary code). Convert it once in a trusted environment: "
               "`safetensors.torch.save_file(torch.load(path, weights_only=True), 'model.safetensors')`, "
               "or use the official .safetensors release")
_REPO_ID = re.compile(r"[\w.-]+/[\w.-]+")
_SHOWN = 5  # names listed per error category


class CheckpointError(Exception):
    """A checkpoint cannot be read or does not fit the model; the message says how to fix it."""


@dataclass(frozen=True)
class _Entry:
    """Where one tensor lives: its file, its key in that file (before prefix stripping), shape, dtype."""

    file: Path
    key: str
    shape: tuple[int, ...]
    dtype: str


# ---- public API ---------------------------------------------------------------------------------


def read_metadata(
    source, *, revision=None, cache_dir=None, local_files_only=None, filename=None, rename=None
) -> dict[str, tuple[tuple[int, ...], str]]:
    """``{key: (shape, dtype)}`` from the safetensors headers only (dtype as stored, e.g. ``"BF16"``)."""
    plan = _plan(source, filename, revision=revision, cache_dir=cache_dir, local_files_only=local_files_only,
                 rename=rename)
    return {name: (e.shape, e.dtype) for name, e in plan.items()}


def read_state_dict(
    source, *, device="cpu", revision=None, cache_dir=None, local_files_only=None, filename=None
) -> dict[str, Tensor]:
    """All tensors of a checkpoint (file, folder, index json or hub repo id), prefix stripped."""
    plan = _plan(source, filename, revision=revision, cache_dir=cache_dir, local_files_only=local_files_only)
    return _load(plan, device, None)


def load_checkpoint(
    model: nn.Module, source, *, strict=True, dtype=None, device=None,
    revision=None, cache_dir=None, local_files_only=None, filename=None, rename=None,
) -> nn.Module:
    """Load ``source`` into ``model`` with ``assign=True`` and return it in eval mode.

    Names and shapes are checked from the headers before any data is read. The parameters become the
    checkpoint's tensors on ``device`` (default cpu), cast to ``dtype`` or, by default, to the dtype each
    parameter has in ``model`` (so ``build_model(name, device="meta", dtype=torch.bfloat16)`` loads bf16).
    ``strict=False`` tolerates missing and unexpected keys (never shape mismatches); unexpected ones are not read.
    A model may declare ``tied_keys`` and ``obsolete_keys`` for the layouts its files come in (``_fit_names``).
    ``rename`` maps each file key to the model's name for it (e.g. ``models.diffusers_keys.wan_key`` for a
    diffusers-layout Wan folder); names and shapes are then checked as renamed.
    """
    plan = _fit_names(model, _plan(source, filename, revision=revision, cache_dir=cache_dir,
                                   local_files_only=local_files_only, rename=rename))
    ties = getattr(model, "tied_keys", {})
    model_state = model.state_dict()
    expected = {k: tuple(v.shape) for k, v in model_state.items() if k not in ties}
    problem = diagnose(expected, {k: e.shape for k, e in plan.items()}, strict=strict, model_kind=type(model).__name__)
    if problem:
        raise CheckpointError(f"{source}: {problem}")
    model_dtypes = {k: v.dtype for k, v in model_state.items()}
    tensors = _load({k: e for k, e in plan.items() if k in expected}, device or "cpu", dtype or model_dtypes)
    tensors.update({alias: tensors[name] for alias, name in ties.items() if name in tensors})
    model.load_state_dict(tensors, strict=strict, assign=True)
    # Anything not in the checkpoint (missing keys under strict=False, non-persistent buffers) stays on meta.
    on_meta = [n for n, t in chain(model.named_parameters(), model.named_buffers()) if t.is_meta]
    if on_meta:
        raise CheckpointError(
            f"{source}: {len(on_meta)} tensor(s) are still on the meta device after loading: {_names(on_meta)}. "
            "They are not in the checkpoint; load a complete checkpoint, or build the model on a real device."
        )
    return model.eval()


def identify_checkpoint(shapes: dict) -> str | None:
    """Name the preset whose key->shape set equals ``shapes`` exactly; ``"diffusers-flux"`` /
    ``"diffusers-wan"`` for diffusers-layout weights; None when nothing matches."""
    shapes = {k: tuple(v) for k, v in shapes.items()}
    for name, signature in _preset_signatures().items():
        if shapes == signature:
            return name
    if "x_embedder.weight" in shapes or any(k.startswith("transformer_blocks.") for k in shapes):
        return "diffusers-flux"
    if "condition_embedder.time_proj.weight" in shapes or any(".attn1.to_q." in k for k in shapes):
        return "diffusers-wan"
    return None


def diagnose(expected: dict, found: dict, *, strict: bool = True, model_kind: str = "model") -> str | None:
    """Explain why checkpoint shapes ``found`` do not fit model shapes ``expected``; None if they do."""
    missing = [k for k in expected if k not in found] if strict else []
    unexpected = [k for k in found if k not in expected] if strict else []
    mismatched = [k for k in expected if k in found and tuple(found[k]) != tuple(expected[k])]
    if not (missing or unexpected or mismatched):
        return None
    lines, what, model_is = [], identify_checkpoint(found), identify_checkpoint(expected)
    if what in DIFFUSERS_HINTS:
        lines.append(f"these are diffusers-layout weights ({what}); this loader reads the original layout: "
                     f"use {DIFFUSERS_HINTS[what]}.")
    elif what is not None:
        model_desc = f"{model_is} (a {model_kind})" if model_is else f"a {model_kind} whose config is no preset"
        lines.append(f"this checkpoint is {what}, but the model is {model_desc}; build it with build_model('{what}').")
    if missing:
        lines.append(f"{len(missing)} missing key(s) (in the model, not in the checkpoint): {_names(missing)}")
    if unexpected:
        lines.append(f"{len(unexpected)} unexpected key(s) (in the checkpoint, not in the model): {_names(unexpected)}")
    if mismatched:
        shown = [f"{k}: expected {list(expected[k])}, found {list(found[k])}" for k in mismatched]
        lines.append(f"{len(mismatched)} shape mismatch(es): {_names(shown)}")
    if what is None:
        lines.append("Fix: load the checkpoint made for this model (models.model_names() lists the presets); "
                     "strict=False tolerates missing/unexpected keys but never shape mismatches.")
    return "checkpoint does not fit the model:\n  " + "\n  ".join(lines)


def _fit_names(model: nn.Module, plan: dict[str, _Entry]) -> dict[str, _Entry]:
    """Apply the two key rules a model class may declare, so that each layout its files come in loads strictly.

    ``tied_keys = {alias: name}``: one tensor the model reaches under two names (T5's ``encoder.embed_tokens``
    module is its ``shared`` module). Files store either name or both; the plan keeps one entry, under ``name``,
    and load_checkpoint gives the alias that same tensor. ``obsolete_keys``: keys older files carry that hold
    nothing the model keeps (CLIP's ``text_model.embeddings.position_ids``, an arange buffer); they are dropped.
    """
    obsolete = set(getattr(model, "obsolete_keys", ()))
    plan = {k: e for k, e in plan.items() if k not in obsolete}
    for alias, name in getattr(model, "tied_keys", {}).items():
        entry = plan.pop(alias, None)
        if entry is not None and name not in plan:
            plan[name] = entry
    return plan


# ---- finding the files ----------------------------------------------------------------------------


def _plan(source, filename, rename=None, **hub) -> dict[str, _Entry]:
    """Resolve ``source`` and read its headers: {stripped (and renamed) key: _Entry}. Reads no tensor data."""
    path = _locate(source, filename, **hub)
    if path.name.endswith(".json"):
        weight_map = _weight_map(path)
        headers = {}
        for shard in sorted(set(weight_map.values())):
            if not (path.parent / shard).is_file():
                raise CheckpointError(f"{path} lists shard {shard}, which is missing from {path.parent}; "
                                      "download all the shards named in the index again.")
            headers[shard] = _read_header(path.parent / shard)
        for key, shard in weight_map.items():
            if key not in headers[shard]:
                raise CheckpointError(f"{path} puts {key} in {shard}, which lacks it: the index and the shards come "
                                      "from different versions; download the index and all shards again.")
        entries = {k: (path.parent / s, headers[s][k]) for k, s in weight_map.items()}
    else:
        entries = {k: (path, v) for k, v in _read_header(path).items()}
    rename = rename or (lambda key: key)
    return {rename(k.removeprefix(COMFY_PREFIX)): _Entry(f, k, tuple(v["shape"]), v["dtype"])
            for k, (f, v) in entries.items()}


def _locate(source, filename, **hub) -> Path:
    """A .safetensors file or a *.safetensors.index.json (shards beside it) for any kind of source."""
    path = Path(source)
    if filename is not None and path.is_dir():
        path = path / filename
    if path.suffix in PICKLE_SUFFIXES:
        raise _pickle_error(path)
    if path.is_file():
        return path
    if path.is_dir():
        return _pick_in_folder(path)
    if isinstance(source, str) and _REPO_ID.fullmatch(source):
        return _from_hub(source, filename, **hub)
    raise CheckpointError(f"{source}: no such file or folder, and not a Hugging Face repo id (owner/name). Pass a "
                          ".safetensors file, a folder holding one (or a sharded *.safetensors.index.json), or a "
                          "repo id such as black-forest-labs/FLUX.1-dev.")


def _pick_in_folder(folder: Path) -> Path:
    indexes = sorted(folder.glob("*.safetensors.index.json"))
    files = sorted(folder.glob("*.safetensors"))
    if len(indexes) == 1:
        return indexes[0]
    if not indexes and len(files) == 1:
        return files[0]
    if indexes or files:
        names = ", ".join(p.name for p in indexes + files)
        raise CheckpointError(f"{folder} holds several checkpoints ({names}); pass the file you mean "
                              "(or filename=...), e.g. the *.safetensors.index.json of a sharded one.")
    pickles = [p.name for p in folder.iterdir() if p.suffix in PICKLE_SUFFIXES]
    why = f" (only pickle files: {', '.join(pickles)}; {_PICKLE_FIX})" if pickles else ""
    raise CheckpointError(f"{folder} has no *.safetensors file or *.safetensors.index.json{why}.")


def _from_hub(repo_id: str, filename: str | None, *, revision, cache_dir, local_files_only) -> Path:
    """Download (or find in the cache) a repo's DiT weights. HF_HUB_OFFLINE is honoured by huggingface_hub."""
    kwargs = dict(revision=revision, cache_dir=cache_dir, local_files_only=bool(local_files_only))
    filename = filename or HUB_FILES.get(repo_id)
    if filename is not None and Path(filename).suffix in PICKLE_SUFFIXES:
        raise _pickle_error(Path(filename))
    try:
        if filename is None:  # unknown repo: fetch only safetensors and index files
            patterns = ["*.safetensors", "*.safetensors.index.json"]
            return _pick_in_folder(Path(huggingface_hub.snapshot_download(repo_id, allow_patterns=patterns, **kwargs)))
        path = Path(huggingface_hub.hf_hub_download(repo_id, filename, **kwargs))
        if filename.endswith(".index.json"):  # shards sit beside the index, in the same snapshot folder
            for shard in sorted(set(_weight_map(path).values())):
                huggingface_hub.hf_hub_download(repo_id, posixpath.join(posixpath.dirname(filename), shard), **kwargs)
        return path
    except LocalEntryNotFoundError as err:
        cache = cache_dir or hub_constants.HF_HUB_CACHE
        single = filename is not None and not filename.endswith(".json")
        files = filename if single else "--include '*.safetensors' '*.safetensors.index.json'"
        raise CheckpointError(
            f"{repo_id} ({filename or 'safetensors files'}, revision {revision or 'main'}) is not in the local "
            f"Hugging Face cache ({cache}) and could not be downloaded (HF_HUB_OFFLINE=1, local_files_only=True, "
            f"or no connection). Fix: download it once online (unset HF_HUB_OFFLINE; e.g. "
            f"`hf download {repo_id} {files}`), or pass a local path to the .safetensors file. ({err})"
        ) from err
    except GatedRepoError as err:
        raise CheckpointError(f"{repo_id} is gated: accept its license on https://huggingface.co/{repo_id} and log "
                              "in (`hf auth login`), or pass a local path.") from err
    except (RepositoryNotFoundError, EntryNotFoundError) as err:
        raise CheckpointError(f"{repo_id}: {err}. Check the repo id and filename= (known repos: "
                              f"{', '.join(HUB_FILES)}), or pass a local path.") from err


# ---- reading safetensors without unpickling -----------------------------------------------------------


def _pickle_error(path: Path) -> CheckpointError:
    return CheckpointError(f"{path} is a pickle checkpoint ({path.suffix}); {_PICKLE_FIX}.")


def _read_header(path: Path) -> dict[str, dict]:
    """Parse and check a safetensors header (u64 length + JSON); the tensor data is not touched."""
    size = path.stat().st_size
    with open(path, "rb") as f:
        start = f.read(8)
        n = struct.unpack("<Q", start)[0] if len(start) == 8 else None
        if n is None or n > size - 8:
            raise _corrupt(path, start, f"its header length field says {n} bytes but the file has {size}")
        raw = f.read(n)
    try:
        header = {k: v for k, v in json.loads(raw).items() if k != "__metadata__"}
        for v in header.values():
            v["shape"], v["dtype"], (_, v["end"]) = tuple(v["shape"]), str(v["dtype"]), v["data_offsets"]
        data_end = max((int(v["end"]) for v in header.values()), default=0)
    except (ValueError, KeyError, TypeError, AttributeError) as err:
        raise _corrupt(path, start, f"its header is not valid safetensors JSON ({err})") from None
    if 8 + n + data_end > size:
        raise _corrupt(path, start, f"the header describes {data_end} bytes of data but only {size - 8 - n} follow")
    return header


def _corrupt(path: Path, start: bytes, why: str) -> CheckpointError:
    if start.startswith(b"PK"):  # torch.save writes a zip archive
        why += f"; it starts like a zip archive, i.e. a torch.save pickle: {_PICKLE_FIX}"
    fix = "re-download it"
    if "snapshots" in path.parts:  # a Hugging Face cache entry: the cached copy itself is bad
        fix = (f"delete the cached file {path.resolve()} and load again to re-download it "
               "(or call huggingface_hub.hf_hub_download(..., force_download=True))")
    return CheckpointError(f"{path}: {why}. It looks truncated or corrupt, or is not a safetensors file; {fix}.")


def _weight_map(index: Path) -> dict[str, str]:
    try:
        weight_map = json.loads(index.read_text())["weight_map"]
        if not all(isinstance(v, str) for v in weight_map.values()):
            raise TypeError("weight_map values must be shard file names")
        return weight_map
    except (ValueError, KeyError, TypeError, AttributeError) as err:
        raise CheckpointError(f"{index}: not a valid safetensors index ({err!r}); it needs a "
                              '{"weight_map": {key: shard file}} object. Re-download it.') from None


def _load(plan: dict[str, _Entry], device, dtype) -> dict[str, Tensor]:
    """Read the planned tensors, opening each file once; casting one tensor at a time keeps peak memory low.
    ``dtype``: None (as stored), one dtype, or a dtype per key (floating-point tensors only)."""
    by_file = defaultdict(list)
    for name, entry in plan.items():
        by_file[entry.file].append((name, entry.key))
    out = {}
    for file, names in by_file.items():
        try:
            with safe_open(str(file), framework="pt", device=str(device)) as f:
                for name, key in names:
                    t = f.get_tensor(key)
                    target = dtype.get(name) if isinstance(dtype, dict) else dtype
                    if target is not None and t.is_floating_point():
                        t = t.to(target)
                    # safetensors hands back buffers aligned to only 8 bytes; CPU kernels then take other
                    # SIMD paths and round differently. torch's allocator aligns to 64: copy into it.
                    out[name] = t.clone() if t.data_ptr() % 64 else t
        except SafetensorError as err:
            raise _corrupt(file, b"", str(err)) from err
    return out


@functools.lru_cache(maxsize=1)
def _preset_signatures() -> dict[str, dict[str, tuple[int, ...]]]:
    """Key->shape of every preset, built on the meta device (no memory, pure, so cached)."""
    from . import PRESETS
    from . import build_model  # late: models/__init__ imports this module

    return {name: {k: tuple(v.shape) for k, v in build_model(name, device="meta").state_dict().items()}
            for name in PRESETS}


def _names(items: list[str]) -> str:
    more = f", ... ({len(items) - _SHOWN} more)" if len(items) > _SHOWN else ""
    return ", ".join(items[:_SHOWN]) + more
