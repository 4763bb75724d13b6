#!/usr/bin/env python
"""Convert the official ``Wan2.1_VAE.pth`` once into a safetensors file that ``models.wan_vae`` loads.

Why: the Wan2.1 repos (``Wan-AI/Wan2.1-T2V-1.3B`` / ``-14B``) ship the VAE only as a torch pickle with Wan's own
module names (``wan/modules/vae.py``: ``encoder.downsamples.3.residual.2.weight``, ...), and our loader never
unpickles. ``models.wan_vae.WanVAE`` uses the key names of diffusers' ``AutoencoderKLWan``, i.e. of
``vae/diffusion_pytorch_model.safetensors`` in the ``*-Diffusers`` repos; if you have that file, load it directly
and skip this script. The tensors are the same; only the names differ:

    Wan2.1_VAE.pth (WanVAE_)                   ours (AutoencoderKLWan)
    conv1 / conv2                              quant_conv / post_quant_conv
    {encoder,decoder}.conv1                    {encoder,decoder}.conv_in
    {encoder,decoder}.head.0 / head.2          {encoder,decoder}.norm_out / conv_out
    {encoder,decoder}.middle.0 / 1 / 2         {encoder,decoder}.mid_block.resnets.0 / attentions.0 / resnets.1
    encoder.downsamples.{i}                    encoder.down_blocks.{i}           (the same flat list)
    decoder.upsamples.{k}                      decoder.up_blocks.{s}.resnets.{j} / up_blocks.{s}.upsamplers.0
                                               (stage s holds num_res_blocks + 1 res blocks, then its up-sampler,
                                               so k = s * (num_res_blocks + 2) + j, or + num_res_blocks + 1)
    inside a residual block:
    residual.0 / residual.2                    norm1 / conv1     (Wan's nn.Sequential(norm, SiLU, conv,
    residual.3 / residual.6                    norm2 / conv2      norm, SiLU, Dropout, conv) indices)
    shortcut                                   conv_shortcut

(diffusers' scripts/convert_wan_to_diffusers.py ``convert_vae`` does the same renaming with the indices of the
published config written out; this mapping is derived from the config, so it also covers small test configs.)

What it does: ``torch.load(path, weights_only=True)`` (torch's restricted unpickler: tensors and plain
containers only, no arbitrary code), checks that the keys are exactly those of the preset (every missing and
unexpected key is listed), renames them, writes a safetensors file whose header records the source file's
sha256 (the same bytes on every run), and loads it back strictly into a meta-built ``WanVAE``.

Usage:  python weights/convert_wan_vae.py Wan2.1_VAE.pth [--out wan2.1_vae.safetensors] [--preset wan2.1-vae]
Get the input with e.g. ``hf download Wan-AI/Wan2.1-T2V-1.3B Wan2.1_VAE.pth --local-dir .``.
"""

from __future__ import annotations

import argparse
import hashlib
import sys
from pathlib import Path

import torch
from torch import Tensor

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))  # run from anywhere: models/ and weights/ live in the repository root

from models.loading import CheckpointError, load_checkpoint  # noqa: E402
from models.wan_vae import WAN_VAE_PRESETS, WanVAE, WanVAEParams, build_wan_vae, wan_vae_names  # noqa: E402
from weights.convert_lpips_weights import deterministic_safetensors, sha256_file  # noqa: E402

# Our residual-block names -> Wan's: the indices of the layers with weights in its `residual` nn.Sequential.
RESIDUAL = {"norm1": "residual.0", "conv1": "residual.2", "norm2": "residual.3", "conv2": "residual.6",
            "conv_shortcut": "shortcut"}
SHOWN = 8  # keys listed per error category


def original_key(key: str, p: WanVAEParams) -> str:
    """Our (diffusers-layout) key -> the key of the same tensor in Wan's ``WanVAE_`` state dict."""
    top, *rest = key.split(".")
    if top in ("quant_conv", "post_quant_conv"):
        return ".".join(["conv1" if top == "quant_conv" else "conv2", *rest])
    part, *rest = rest
    if part in ("conv_in", "norm_out", "conv_out"):
        return ".".join([top, {"conv_in": "conv1", "norm_out": "head.0", "conv_out": "head.2"}[part], *rest])
    if part == "mid_block":  # Wan: middle = Sequential(ResidualBlock, AttentionBlock, ResidualBlock)
        kind, j, *rest = rest
        index = 1 if kind == "attentions" else 2 * int(j)
        return ".".join([top, "middle", str(index), *_residual(rest)])
    if part == "down_blocks":
        i, *rest = rest
        return ".".join([top, "downsamples", i, *_residual(rest)])
    if part == "up_blocks":  # Wan: one flat list; each stage is num_res_blocks + 1 res blocks, then the up-sampler
        stage, kind, j, *rest = rest
        index = int(stage) * (p.num_res_blocks + 2) + (int(j) if kind == "resnets" else p.num_res_blocks + 1)
        return ".".join([top, "upsamples", str(index), *_residual(rest)])
    raise ValueError(f"no Wan name known for {key!r}")


def _residual(rest: list[str]) -> list[str]:
    """Rename the first part if it is a residual-block layer (down-sampler and attention names are Wan's own)."""
    return [RESIDUAL.get(rest[0], rest[0]), *rest[1:]]


def convert(original: dict, p: WanVAEParams) -> dict[str, Tensor]:
    """Wan-layout state dict -> ours (same tensors, renamed). Raises CheckpointError listing every missing,
    unexpected or misshapen key."""
    bad = [k for k, v in original.items() if not isinstance(k, str) or not isinstance(v, Tensor)]
    if bad:
        raise CheckpointError(f"expected a flat {{name: tensor}} state dict (as Wan2.1_VAE.pth is), but "
                              f"{len(bad)} entries are not: {_names([repr(k) for k in bad])}")
    with torch.device("meta"):  # shapes only, no memory
        ours = WanVAE(p).state_dict()
    names = {original_key(k, p): k for k in ours}  # Wan name -> our name
    missing = [k for k in names if k not in original]
    unexpected = [k for k in original if k not in names]
    misshapen = [f"{k}: expected {list(ours[names[k]].shape)}, found {list(original[k].shape)}"
                 for k in names if k in original and original[k].shape != ours[names[k]].shape]
    if missing or unexpected or misshapen:
        lines = [f"{len(missing)} missing key(s) (the model has them, the file not): {_names(missing)}",
                 f"{len(unexpected)} unexpected key(s) (in the file, not in the model): {_names(unexpected)}",
                 f"{len(misshapen)} shape mismatch(es): {_names(misshapen)}"]
        raise CheckpointError("the file does not have the Wan2.1 VAE layout of this preset:\n  " + "\n  ".join(
            line for line, n in zip(lines, (missing, unexpected, misshapen)) if n) +
            "\nFix: pass Wan2.1_VAE.pth from Wan-AI/Wan2.1-T2V-1.3B or -14B (the *-Diffusers repos' vae/ folder "
            "needs no conversion), or the --preset it was made for.")
    return {ours_name: original[wan_name].contiguous() for wan_name, ours_name in names.items()}


def read_original(path: Path) -> dict:
    try:
        sd = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:  # torch raises UnpicklingError, RuntimeError, ... for bad or non-weights files
        raise CheckpointError(f"{path}: torch.load(weights_only=True) cannot read it ({type(err).__name__}: {err}). "
                              "It must be Wan2.1_VAE.pth, a plain state dict; re-download it.") from err
    if not isinstance(sd, dict):
        raise CheckpointError(f"{path}: holds a {type(sd).__name__}, expected a state dict {{name: tensor}}")
    return sd


def _names(items: list[str]) -> str:
    more = f", ... ({len(items) - SHOWN} more)" if len(items) > SHOWN else ""
    return ", ".join(items[:SHOWN]) + more


def main(argv: list[str] | None = None) -> Path:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("pth", type=Path, help="Wan2.1_VAE.pth from Wan-AI/Wan2.1-T2V-1.3B or -14B")
    ap.add_argument("--out", type=Path, help="output .safetensors (default: beside the input, same stem)")
    ap.add_argument("--preset", default="wan2.1-vae", choices=wan_vae_names())
    args = ap.parse_args(argv)
    out = args.out or args.pth.with_suffix(".safetensors")
    params = WAN_VAE_PRESETS[args.preset]

    source_sha = sha256_file(args.pth)
    print(f"read  sha256 {source_sha}  {args.pth}")
    try:
        tensors = convert(read_original(args.pth), params)
    except CheckpointError as err:
        raise SystemExit(f"refusing to convert {args.pth}: {err}") from None
    metadata = {
        "format": "pt",
        "content": f"Wan2.1 VAE ({args.preset}) in diffusers AutoencoderKLWan key layout",
        "source": f"{args.pth.name} sha256={source_sha}",
        "converter": "weights/convert_wan_vae.py",
    }
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_bytes(deterministic_safetensors(tensors, metadata))
    load_checkpoint(build_wan_vae(args.preset, device="meta"), out)  # strict: every key and shape checked
    n = sum(t.numel() for t in tensors.values())
    print(f"wrote {out} ({len(tensors)} tensors, {n} parameters, {out.stat().st_size} bytes); loads strictly")
    print(f"sha256 {sha256_file(out)}  {out.name}")
    return out


if __name__ == "__main__":
    main()
