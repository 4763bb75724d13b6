"""Minimal PNG and GIF writers and a latent-to-picture helper (zlib and numpy only, so no imaging library is
needed)."""

from __future__ import annotations

import os
import shutil
import struct
import tempfile
import zlib
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator

import numpy as np
import torch
from torch import Tensor


def write_png(path: str | Path, image: np.ndarray) -> Path:
    """Write an [H, W, 3] or [H, W] uint8 array as an 8-bit PNG."""
    if image.dtype != np.uint8 or image.ndim not in (2, 3):
        raise ValueError(f"expected a uint8 array [H, W] or [H, W, 3], got {image.dtype} {image.shape}")
    h, w = image.shape[:2]
    colour = 2 if image.ndim == 3 else 0
    raw = b"".join(b"\x00" + image[row].tobytes() for row in range(h))  # filter type 0 per row

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)

    header = struct.pack(">IIBBBBB", w, h, 8, colour, 0, 0, 0)
    png = b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", zlib.compress(raw, 6)) + chunk(b"IEND", b"")
    return _write_atomic(path, png)


def _write_atomic(path: str | Path, data: bytes) -> Path:
    """Write through a temporary file and rename it, so a reader (or a resumed run) never sees half a file."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_bytes(data)
    os.replace(tmp, path)
    return path


def write_bytes(path: str | Path, data: bytes) -> Path:
    """Atomic binary write (see ``_write_atomic``), e.g. of ``safetensors.torch.save(...)``."""
    return _write_atomic(path, data)


def write_text(path: str | Path, text: str) -> Path:
    """Atomic UTF-8 text write (see ``_write_atomic``)."""
    return _write_atomic(path, text.encode())


@contextmanager
def staged_folder(out: str | Path) -> Iterator[Path]:
    """A hidden sibling of ``out`` to write a command's results into; they move into ``out`` (``summary.json``
    last) only when the block ends without an error, and the stage is removed either way. So a run that fails or
    is stopped part-way leaves ``out`` as it was: no partial results (a killed process may leave the hidden
    ``.NAME.partial-*`` folder, never files in ``out``)."""
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    stage = Path(tempfile.mkdtemp(prefix=f".{out.name}.partial-", dir=out.parent))
    try:
        yield stage
        files = sorted((f for f in stage.rglob("*") if f.is_file()), key=lambda f: (f.name == "summary.json", f))
        for f in files:
            target = out / f.relative_to(stage)
            target.parent.mkdir(parents=True, exist_ok=True)
            os.replace(f, target)
    finally:
        shutil.rmtree(stage, ignore_errors=True)


def pixels_to_uint8(frame: Tensor, scale: int = 1) -> np.ndarray:
    """[3, H, W] pixels in [0, 1] -> uint8 [H * scale, W * scale, 3], enlarged by nearest neighbour."""
    img = (frame.detach().float().clamp(0, 1) * 255).round().to(torch.uint8).permute(1, 2, 0).cpu().numpy()
    return img.repeat(scale, axis=0).repeat(scale, axis=1)


def latent_preview(latent: Tensor, scale: int = 8) -> np.ndarray:
    """[C, H, W] latent -> uint8 RGB picture of its first three channels (each min-max scaled),
    enlarged ``scale`` times with nearest neighbour so small latents are visible."""
    x = latent.detach().float().cpu()[:3]
    if x.shape[0] < 3:
        x = torch.cat([x, x[:1].expand(3 - x.shape[0], -1, -1)])
    lo = x.amin(dim=(1, 2), keepdim=True)
    hi = x.amax(dim=(1, 2), keepdim=True)
    x = (x - lo) / (hi - lo).clamp_min(1e-12)
    img = (x.permute(1, 2, 0).numpy() * 255).round().astype(np.uint8)
    return img.repeat(scale, axis=0).repeat(scale, axis=1)


# GIF palette: a fixed 6 x 7 x 6 RGB cube (252 colours; green gets the extra level because the eye resolves it
# best), padded with black to 256 entries. A fixed palette needs no per-animation search and keeps the output
# deterministic; its cost is visible banding in smooth gradients.
_GIF_LEVELS = (6, 7, 6)
_GIF_PALETTE = np.zeros((256, 3), dtype=np.uint8)
_GIF_PALETTE[:252] = np.stack(
    np.meshgrid(*[np.rint(np.arange(n) * 255 / (n - 1)) for n in _GIF_LEVELS], indexing="ij"), axis=-1
).reshape(-1, 3)
_GIF_PALETTE.flags.writeable = False  # a constant: callers get copies


def quantise_for_gif(frame: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """uint8 [H, W, 3] frame -> (palette indices uint8 [H, W], palette uint8 [256, 3]); each channel is rounded
    to the nearest level of the 6 x 7 x 6 colour cube, so ``palette[indices]`` is what a GIF viewer shows."""
    if frame.dtype != np.uint8 or frame.ndim != 3 or frame.shape[2] != 3:
        raise ValueError(f"expected a uint8 frame [H, W, 3], got {frame.dtype} {frame.shape}")
    # (v * (n - 1) + 127) // 255 = round(v * (n - 1) / 255) in integers, halves rounded up.
    r, g, b = ((frame[..., c].astype(np.int32) * (n - 1) + 127) // 255 for c, n in enumerate(_GIF_LEVELS))
    return ((r * _GIF_LEVELS[1] + g) * _GIF_LEVELS[2] + b).astype(np.uint8), _GIF_PALETTE.copy()


def _lzw_encode(indices: bytes, min_code_size: int = 8) -> bytes:
    """GIF-flavoured LZW: codes packed LSB first, width growing from min_code_size + 1 to 12 bits, and a clear
    code (then a fresh table) as soon as the 4096-entry table is full."""
    clear, end = 1 << min_code_size, (1 << min_code_size) + 1
    out, acc, nbits = bytearray(), 0, 0

    def emit(code: int, width: int) -> None:
        nonlocal acc, nbits
        acc |= code << nbits
        nbits += width
        while nbits >= 8:
            out.append(acc & 0xFF)
            acc >>= 8
            nbits -= 8

    table: dict[int, int] = {}  # (prefix code << 8 | next index) -> code
    width, next_code = min_code_size + 1, end + 1
    emit(clear, width)
    prefix = indices[0]
    for byte in indices[1:]:
        key = prefix << 8 | byte
        code = table.get(key)
        if code is not None:
            prefix = code
            continue
        emit(prefix, width)
        table[key] = next_code
        next_code += 1
        # The decoder adds its entries one code later, so it widens once the largest code in use needs it.
        if next_code - 1 == 1 << width and width < 12:
            width += 1
        if next_code == 4096:
            emit(clear, width)
            table.clear()
            width, next_code = min_code_size + 1, end + 1
        prefix = byte
    emit(prefix, width)
    emit(end, width)
    if nbits:
        out.append(acc & 0xFF)
    return bytes(out)


def write_gif(path: str | Path, frames, *, duration_ms: int = 250, loop: int = 0) -> Path:
    """Write uint8 [H, W, 3] frames as a GIF89a animation shown ``duration_ms`` per frame (GIF stores
    hundredths of a second) and repeated ``loop`` times (0 = forever). Colours are snapped to the fixed
    6 x 7 x 6 cube of ``quantise_for_gif``."""
    frames = list(frames)
    if not frames:
        raise ValueError("write_gif needs at least one frame")
    shape = frames[0].shape
    for i, f in enumerate(frames):
        if f.dtype != np.uint8 or f.ndim != 3 or f.shape[2] != 3 or f.shape != shape:
            raise ValueError(f"frame {i} is {f.dtype} {f.shape}; every frame must be uint8 {shape} with 3 channels")
    h, w = shape[:2]
    if not (0 < h < 65536 and 0 < w < 65536):
        raise ValueError(f"GIF frames must be 1..65535 pixels a side, got {h} x {w}")
    delay = max(0, min(65535, round(duration_ms / 10)))

    def sub_blocks(data: bytes) -> bytes:
        return b"".join(bytes([len(data[i : i + 255])]) + data[i : i + 255] for i in range(0, len(data), 255)) + b"\0"

    parts = [
        b"GIF89a",
        struct.pack("<HHBBB", w, h, 0xF7, 0, 0),  # global 256-colour table, 8 bits per primary
        _GIF_PALETTE.tobytes(),
        b"\x21\xff\x0bNETSCAPE2.0" + struct.pack("<BBHB", 3, 1, loop, 0),
    ]
    for frame in frames:
        indices, _ = quantise_for_gif(frame)
        parts.append(b"\x21\xf9\x04" + struct.pack("<BHBB", 0x04, delay, 0, 0))  # disposal: leave in place
        parts.append(b"\x2c" + struct.pack("<HHHHB", 0, 0, w, h, 0))  # full-frame image, no local table
        parts.append(b"\x08" + sub_blocks(_lzw_encode(indices.tobytes(), 8)))
    parts.append(b"\x3b")
    return _write_atomic(path, b"".join(parts))


def write_mp4(path: str | Path, frames, *, fps: int = 16) -> Path:
    """Write uint8 [H, W, 3] frames as an H.264 MP4 (MPEG-4 part 2 where the FFmpeg inside PyAV lacks libx264),
    through PyAV (the ``real`` extra, imported here so that the core install does not need it). H and W must be even
    (4:2:0 chroma)."""
    av = import_av()
    frames = list(frames)
    if not frames:
        raise ValueError("write_mp4 needs at least one frame")
    h, w = frames[0].shape[:2]
    if h % 2 or w % 2:
        raise ValueError(f"MP4 (4:2:0) frames need an even height and width, got {h} x {w}")
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp.mp4")
    codec = "libx264" if "libx264" in av.codecs_available else "mpeg4"
    with av.open(str(tmp), mode="w") as container:
        stream = container.add_stream(codec, rate=fps)
        stream.width, stream.height, stream.pix_fmt = w, h, "yuv420p"
        if codec == "libx264":
            stream.options = {"crf": "18"}  # visually lossless for inspection
        for frame in frames:
            container.mux(stream.encode(av.VideoFrame.from_ndarray(np.ascontiguousarray(frame), format="rgb24")))
        container.mux(stream.encode())  # flush the encoder
    os.replace(tmp, path)
    return path


def import_av():
    """PyAV, or an ImportError that says how to install it."""
    try:
        import av
    except ImportError as err:
        raise ImportError('writing MP4 needs PyAV, which is not installed: pip install -e ".[real]" '
                          "(or pip install av)") from err
    return av
