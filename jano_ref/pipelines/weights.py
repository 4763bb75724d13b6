"""Where each official network's files are in a weights folder, and how to get that folder.

A weights folder has the layout of the official Hugging Face repo (a local copy, or a snapshot that
``huggingface_hub`` fetches into its cache, honouring ``revision``, ``HF_HUB_OFFLINE`` and ``HF_HUB_CACHE``):

FLUX.1 (``black-forest-labs/FLUX.1-dev`` or ``-schnell``; gated: accept the licence on the Hub, then ``hf auth login``)
    flux1-dev.safetensors / flux1-schnell.safetensors   the DiT, BFL layout (what models.flux is written against)
    ae.safetensors                                      the autoencoder, BFL layout
    text_encoder/   config.json + model.safetensors     CLIP-L
    text_encoder_2/ config.json + sharded safetensors   T5 v1.1 XXL
    tokenizer/tokenizer.json                            CLIP's tokenizer. The FLUX.1 repos hold only vocab.json +
                                                        merges.txt here; the same tokenizer as tokenizer.json comes
                                                        from openai/clip-vit-large-patch14 (fetched the same way)
    tokenizer_2/tokenizer.json                          T5's tokenizer
    transformer/config.json                             optional: the RoPE split of a DiT whose heads are not 128 wide
    (the repos' diffusers copies, transformer/*.safetensors and vae/, are not read and need not be downloaded)

Wan2.1 (``Wan-AI/Wan2.1-T2V-1.3B-Diffusers`` or ``-14B-Diffusers``)
    transformer/    config.json + diffusion_pytorch_model*.safetensors   the DiT in diffusers' layout, renamed into
                                                        ours on load (models.diffusers_keys.wan_key, a pure rename)
    vae/            config.json + diffusion_pytorch_model.safetensors    the Wan2.1 VAE (models.wan_vae's layout)
    text_encoder/   config.json + sharded safetensors   umT5-XXL
    tokenizer/tokenizer.json                            umT5's tokenizer
    diffusion_pytorch_model*.safetensors at the top     optional: the original-layout DiT of Wan-AI/Wan2.1-T2V-1.3B /
                                                        -14B; used instead of transformer/ when present
The original Wan2.1 repos alone do not do: their VAE (Wan2.1_VAE.pth) and umT5 (a .pth in Wan's own layout) are
pickles, which this project never loads.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from pathlib import Path

from models.loading import CheckpointError, read_metadata

CLIP_TOKENIZER_REPO = "openai/clip-vit-large-patch14"  # FLUX.1's tokenizer/ vocabulary, with a tokenizer.json
RANDOM_MARK = "jano_ref.random_weights"  # safetensors metadata key written by `jano fake-weights`
_REPO_ID = re.compile(r"[\w.-]+/[\w.-]+")


class WeightsError(Exception):
    """A weights folder or repo cannot serve a model; the message says what to download."""


@dataclass(frozen=True)
class Layout:
    """What one model needs from a folder in its official repo's layout."""

    family: str  # "flux" | "wan"
    repo: str  # default Hub repo
    dit: str  # the DiT file (flux) or folder (wan: transformer/)
    autoencoder: str  # file (flux ae.safetensors) or folder (wan vae/)
    encoders: dict[str, tuple[str, str]]  # kind -> (weights folder, tokenizer folder)
    gated: bool = False
    patterns: tuple[str, ...] = ()  # what to fetch from the Hub


def _flux_layout(variant: str) -> Layout:
    return Layout("flux", f"black-forest-labs/FLUX.1-{variant}", f"flux1-{variant}.safetensors", "ae.safetensors",
                  {"clip": ("text_encoder", "tokenizer"), "t5": ("text_encoder_2", "tokenizer_2")},
                  gated=variant == "dev",
                  patterns=(f"flux1-{variant}.safetensors", "ae.safetensors", "text_encoder/*", "text_encoder_2/*",
                            "tokenizer/*", "tokenizer_2/*", "transformer/config.json", "model_index.json"))


def _wan_layout(size: str) -> Layout:
    return Layout("wan", f"Wan-AI/Wan2.1-T2V-{size}-Diffusers", "transformer", "vae",
                  {"umt5": ("text_encoder", "tokenizer")},
                  patterns=("transformer/*", "vae/*", "text_encoder/*", "tokenizer/*", "model_index.json"))


LAYOUTS: dict[str, Layout] = {
    "flux-dev": _flux_layout("dev"),
    "flux-schnell": _flux_layout("schnell"),
    "wan2.1-1.3b": _wan_layout("1.3B"),
    "wan2.1-14b": _wan_layout("14B"),
}


@dataclass(frozen=True)
class WeightFiles:
    """The resolved files of one model: what ``load_checkpoint`` and the tokenizer are given."""

    model: str
    folder: Path
    dit: Path  # file, folder or index json
    dit_layout: str  # "original" or "diffusers" (renamed with models.diffusers_keys.wan_key on load)
    dit_config: dict  # transformer/config.json (or the original repo's config.json), {} if none
    autoencoder: Path
    autoencoder_config: dict  # vae/config.json for Wan, {} for FLUX.1 (ae.safetensors has no config)
    encoders: dict[str, Path]  # kind -> folder with config.json and safetensors
    tokenizers: dict[str, Path]  # kind -> tokenizer.json
    random_weights: bool = False  # written by `jano fake-weights`
    source: str = ""  # what the user named: a folder, or repo@revision
    encoder_configs: dict[str, dict] = field(default_factory=dict)

    @property
    def family(self) -> str:
        return LAYOUTS[self.model].family


def resolve(model: str, weights: str | Path | None = None, *, revision: str | None = None,
            local_files_only: bool | None = None, cache_dir: str | Path | None = None) -> WeightFiles:
    """The files of ``model`` in ``weights``: a local folder in the official layout, or a Hub repo id (default: the
    model's official repo), fetched into the Hugging Face cache (only the files listed in ``LAYOUTS``)."""
    layout = _layout(model)
    source = layout.repo if weights is None else weights
    path = Path(source)
    if path.is_dir():
        return _files(model, path, str(path), hub=None)
    if is_repo_id(source):
        hub = dict(revision=revision, local_files_only=bool(local_files_only), cache_dir=cache_dir)
        folder = _snapshot(source, list(layout.patterns), **hub)
        return _files(model, folder, f"{source}@{revision or 'main'}", hub=hub)
    raise WeightsError(f"--weights {source}: no such folder, and not a Hugging Face repo id (owner/name). "
                       f"{_download_hint(model, '<DIR>')}")


def is_repo_id(source: str | Path) -> bool:
    """Whether ``source`` names a Hub repo (owner/name) rather than a local path."""
    return isinstance(source, str) and bool(_REPO_ID.fullmatch(source)) and not Path(source).exists()


def dit_shapes(files: WeightFiles) -> dict[str, tuple[int, ...]]:
    """{our key: shape} of the DiT, from the safetensors headers (diffusers-layout keys renamed)."""
    from models.diffusers_keys import wan_key

    rename = wan_key if files.dit_layout == "diffusers" else None
    return {k: shape for k, (shape, _) in read_metadata(files.dit, rename=rename).items()}


def parameter_count(path: Path) -> int:
    """Number of values stored in a checkpoint (file, folder or index), from its headers."""
    total = 0
    for shape, _ in read_metadata(path).values():
        n = 1
        for s in shape:
            n *= s
        total += n
    return total


# ---- checking a folder ----------------------------------------------------------------------------


def _files(model: str, folder: Path, source: str, hub: dict | None) -> WeightFiles:
    layout, problems = _layout(model), []
    dit, dit_layout, dit_config = _find_dit(model, folder, problems)
    autoencoder = folder / layout.autoencoder
    if not autoencoder.exists():
        what = "the FLUX.1 autoencoder" if layout.family == "flux" else "the Wan2.1 VAE"
        problems.append(f"{layout.autoencoder} ({what})")
    autoencoder_config = {}
    if layout.family == "wan" and autoencoder.is_dir():
        autoencoder_config = _read_json(autoencoder / "config.json", problems, "vae/config.json")
    encoders, tokenizers, configs = {}, {}, {}
    for kind, (weights_dir, tokenizer_dir) in layout.encoders.items():
        encoders[kind] = folder / weights_dir
        configs[kind] = _read_json(folder / weights_dir / "config.json", problems, f"{weights_dir}/config.json")
        if not any((folder / weights_dir).glob("*.safetensors")):
            problems.append(f"{weights_dir}/*.safetensors (the {kind} text encoder's weights)")
        tokenizers[kind] = _find_tokenizer(kind, folder / tokenizer_dir, hub, problems)
    if problems:
        raise WeightsError(_missing_message(model, folder, source, problems))
    return WeightFiles(model, folder, dit, dit_layout, dit_config, autoencoder, autoencoder_config, encoders,
                       tokenizers, random_weights=_is_random(dit), source=source, encoder_configs=configs)


def _find_dit(model: str, folder: Path, problems: list[str]) -> tuple[Path, str, dict]:
    layout = _layout(model)
    if layout.family == "flux":
        path = folder / layout.dit
        if not path.is_file():
            other = sorted(p.name for p in folder.glob("flux1-*.safetensors"))
            also = f"; the folder has {', '.join(other)} instead: pick the --model that matches it" if other else ""
            problems.append(f"{layout.dit} (the DiT in BFL's layout; the transformer/ folder of diffusers weights is "
                            f"not read){also}")
        config = folder / "transformer" / "config.json"
        return path, "original", _read_json(config, problems, "transformer/config.json") if config.is_file() else {}
    original = sorted(folder.glob("diffusion_pytorch_model*.safetensors*"))
    if original:  # the original Wan2.1 repo's DiT, placed at the top of the folder
        index = [p for p in original if p.name.endswith(".index.json")]
        config = folder / "config.json"
        return (index[0] if index else folder), "original", (
            _read_json(config, problems, "config.json") if config.is_file() else {})
    transformer = folder / layout.dit
    if not any(transformer.glob("*.safetensors")):
        problems.append("transformer/ with diffusion_pytorch_model*.safetensors (the DiT) and config.json")
        return transformer, "diffusers", {}
    return transformer, "diffusers", _read_json(transformer / "config.json", problems, "transformer/config.json")


def _find_tokenizer(kind: str, folder: Path, hub: dict | None, problems: list[str]) -> Path:
    path = folder / "tokenizer.json"
    if path.is_file():
        return path
    if kind == "clip":  # the FLUX.1 repos ship CLIP's vocab.json + merges.txt only
        # With a Hub snapshot, fetch it too; beside a local folder, only look in the Hugging Face cache.
        found = _clip_tokenizer_json(hub if hub is not None else {"local_files_only": True})
        if found is not None:
            return found
        problems.append(f"{folder.name}/tokenizer.json (CLIP's tokenizer; the FLUX.1 repos have only vocab.json and "
                        f"merges.txt there; get it with `hf download {CLIP_TOKENIZER_REPO} tokenizer.json "
                        f"--local-dir {folder}`)")
    else:
        problems.append(f"{folder.name}/tokenizer.json ({kind}'s tokenizer)")
    return path


def _clip_tokenizer_json(hub: dict) -> Path | None:
    """openai/clip-vit-large-patch14's tokenizer.json from the Hub or the cache (None when it cannot be had)."""
    import huggingface_hub
    from huggingface_hub.utils import HfHubHTTPError, LocalEntryNotFoundError

    try:
        return Path(huggingface_hub.hf_hub_download(CLIP_TOKENIZER_REPO, "tokenizer.json",
                                                    local_files_only=hub.get("local_files_only", False),
                                                    cache_dir=hub.get("cache_dir")))
    except (LocalEntryNotFoundError, HfHubHTTPError, OSError):
        return None


def _is_random(dit: Path) -> bool:
    """Whether the DiT file carries the mark of `jano fake-weights` (a safetensors metadata entry)."""
    from safetensors import safe_open

    if dit.is_dir():
        files = sorted(dit.glob("*.safetensors"))
    elif dit.name.endswith(".json"):
        files = sorted(dit.parent.glob("*.safetensors"))
    else:
        files = [dit]
    if not files:
        return False
    with safe_open(str(files[0]), framework="pt") as f:
        return RANDOM_MARK in (f.metadata() or {})


def _read_json(path: Path, problems: list[str], name: str) -> dict:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        problems.append(name)
    except ValueError as err:
        problems.append(f"{name} (present but not valid JSON: {err}; download it again)")
    return {}


def _missing_message(model: str, folder: Path, source: str, problems: list[str]) -> str:
    layout = _layout(model)
    lines = [f"{source} cannot serve {model}: missing or unreadable:", *(f"  - {p}" for p in problems)]
    names = {p.name for p in folder.iterdir()} if folder.is_dir() else set()
    if layout.family == "wan" and ("Wan2.1_VAE.pth" in names or any(n.endswith(".pth") for n in names)):
        lines.append(f"This looks like the original {layout.repo.removesuffix('-Diffusers')} repo: its VAE and umT5 "
                     "are pickles (.pth), which are never loaded here. Download the -Diffusers repo (its vae/, "
                     "text_encoder/, tokenizer/ are safetensors); keep the original DiT at the top of the folder if "
                     "you like, it is used instead of transformer/.")
    if layout.family == "flux" and (folder / "transformer").is_dir() and not (folder / layout.dit).exists():
        lines.append(f"The transformer/ folder holds diffusers-layout weights; this project reads BFL's {layout.dit}.")
    lines.append(_download_hint(model, str(folder)))
    return "\n".join(lines)


def _download_hint(model: str, folder: str) -> str:
    layout = _layout(model)
    include = " ".join(f'"{p}"' for p in layout.patterns if p != "model_index.json")
    hint = f"Fix: `hf download {layout.repo} --local-dir {folder} --include {include}`"
    if layout.family == "flux":
        hint += f" and `hf download {CLIP_TOKENIZER_REPO} tokenizer.json --local-dir {folder}/tokenizer`"
    if layout.gated:
        hint += f" ({layout.repo} is gated: accept its licence on https://huggingface.co/{layout.repo} and run " \
                "`hf auth login` first)"
    fake = "flux-schnell" if model == "flux-schnell" else layout.family
    return hint + "; or omit --weights to fetch it into the Hugging Face cache; or write small random weights in " \
                  f"this layout with `jano fake-weights {fake} DIR` to try the pipeline."


def _snapshot(repo_id: str, patterns: list[str], *, revision, local_files_only, cache_dir) -> Path:
    import huggingface_hub
    from huggingface_hub import constants
    from huggingface_hub.utils import GatedRepoError, LocalEntryNotFoundError, RepositoryNotFoundError

    try:
        return Path(huggingface_hub.snapshot_download(repo_id, revision=revision, allow_patterns=patterns,
                                                      local_files_only=local_files_only, cache_dir=cache_dir))
    except GatedRepoError as err:
        raise WeightsError(f"{repo_id} is gated: accept its licence on https://huggingface.co/{repo_id} and log in "
                           "(`hf auth login`), or pass --weights DIR with a local copy.") from err
    except RepositoryNotFoundError as err:
        raise WeightsError(f"{repo_id}: no such repo on the Hub (or it is private). Check --weights.") from err
    except LocalEntryNotFoundError as err:
        cache = cache_dir or constants.HF_HUB_CACHE
        raise WeightsError(
            f"{repo_id} (revision {revision or 'main'}) is not in the Hugging Face cache ({cache}) and could not be "
            "downloaded (HF_HUB_OFFLINE=1, --offline, or no connection). Fix: download it once online (unset "
            f"HF_HUB_OFFLINE) or pass --weights DIR with a local copy. ({err})") from err


def _layout(model: str) -> Layout:
    if model not in LAYOUTS:
        raise KeyError(f"unknown official model {model!r}; choose one of {', '.join(LAYOUTS)}")
    return LAYOUTS[model]


__all__ = ["CLIP_TOKENIZER_REPO", "CheckpointError", "LAYOUTS", "Layout", "RANDOM_MARK", "WeightFiles", "WeightsError",
           "dit_shapes", "is_repo_id", "parameter_count", "resolve"]
