"""Tiny raster charts in plain numpy: a 5x7 bitmap font, heatmaps, level overlays, x-y charts, image grids.

Every function returns (or draws into) a uint8 RGB array ``[H, W, 3]``; write it with
``jano_ref.lab.imageio.write_png``. No imaging library is needed. The module holds no mutable state, so the same
inputs always give the same pixels. Coordinates are pixels, ``x`` to the right and ``y`` down, with the origin
at the top-left corner; drawing outside the canvas is clipped silently.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Mapping, Sequence

import numpy as np

__all__ = [
    "Axes", "blank", "colormap", "draw_text", "heatmap", "image_grid", "level_fractions", "level_overlay",
    "nice_ticks", "text_mask", "text_width", "xy_chart",
]

# One glyph per printable ASCII character (32..126): 5 columns of 2 hex digits, bit 0 = top row of 7.
_FONT_HEX = (
    "0000000000" "00005F0000" "0007000700" "147F147F14" "242A7F2A12" "2313086462" "3649552250" "0005030000"  # space-'
    "001C224100" "0041221C00" "082A1C2A08" "08083E0808" "0050300000" "0808080808" "0060600000" "2010080402"  # ( to /
    "3E5149453E" "00427F4000" "4261514946" "2141454B31" "1814127F10" "2745454539" "3C4A494930" "0171090503"  # 0 to 7
    "3649494936" "064949291E" "0036360000" "0056360000" "0008142241" "1414141414" "4122140800" "0201510906"  # 8 to ?
    "324979413E" "7E1111117E" "7F49494936" "3E41414122" "7F4141221C" "7F49494941" "7F09090101" "3E41415132"  # @ to G
    "7F0808087F" "00417F4100" "2040413F01" "7F08142241" "7F40404040" "7F0204027F" "7F0408107F" "3E4141413E"  # H to O
    "7F09090906" "3E4151215E" "7F09192946" "4649494931" "01017F0101" "3F4040403F" "1F2040201F" "7F2018207F"  # P to W
    "6314081463" "0304780403" "6151494543" "00007F4141" "0204081020" "41417F0000" "0402010204" "4040404040"  # X to _
    "0001020400" "2054545478" "7F48444438" "3844444420" "384444487F" "3854545418" "087E090102" "0C5252523E"  # ` to g
    "7F08040478" "00447D4000" "2040443D00" "007F102844" "00417F4000" "7C04180478" "7C08040478" "3844444438"  # h to o
    "7C14141408" "081414187C" "7C08040408" "4854545420" "043F444020" "3C4040207C" "1C2040201C" "3C4030403C"  # p to w
    "4428102844" "0C5050503C" "4464544C44" "0008364100" "00007F0000" "0041360800" "0804040804"  # x to ~
)
_UNKNOWN_GLYPH = "7F4141417F"  # a hollow box
GLYPH_W, GLYPH_H = 5, 7
_ADVANCE = GLYPH_W + 1  # one blank column between characters

# Viridis sampled at 0, 1/8, ..., 1 (rounded sRGB); linear interpolation between them keeps luminance monotonic.
_CMAPS = {
    "viridis": ((68, 1, 84), (72, 40, 120), (59, 82, 139), (44, 114, 142), (33, 145, 140),
                (39, 173, 129), (94, 201, 98), (173, 220, 48), (253, 231, 37)),
    "gray": ((0, 0, 0), (255, 255, 255)),
}
# Tableau-10 qualitative palette for series, then six darker ones (a bench draws up to 13 methods), cycled beyond.
PALETTE = ((31, 119, 180), (255, 127, 14), (44, 160, 44), (214, 39, 40), (148, 103, 189),
           (140, 86, 75), (227, 119, 194), (127, 127, 127), (188, 189, 34), (23, 190, 207),
           (0, 0, 128), (128, 0, 0), (0, 100, 0), (20, 20, 20), (204, 153, 0), (0, 128, 128))
LEVEL_NAMES = ("static", "moderate", "active")
LEVEL_COLORS = ((40, 90, 230), (245, 200, 0), (225, 30, 30))
BLACK, WHITE, AXIS, GRID, NAN_GREY = (0, 0, 0), (255, 255, 255), (60, 60, 60), (232, 232, 232), (150, 150, 150)
PAD = 6


def blank(height: int, width: int, color=WHITE) -> np.ndarray:
    """A new ``[height, width, 3]`` uint8 canvas filled with ``color``."""
    canvas = np.empty((int(height), int(width), 3), np.uint8)
    canvas[:] = color
    return canvas


def _glyph(ch: str) -> np.ndarray:
    code = ord(ch) - 32
    hexcols = _FONT_HEX[10 * code : 10 * code + 10] if 0 <= code < 95 else _UNKNOWN_GLYPH
    cols = [int(hexcols[i : i + 2], 16) for i in range(0, 10, 2)]
    return np.array([[(c >> row) & 1 for c in cols] for row in range(GLYPH_H)], dtype=bool)


def text_width(text: str, scale: int = 1) -> int:
    """Width in pixels of ``text`` drawn by ``draw_text`` (no trailing gap)."""
    return max(len(text) * _ADVANCE - 1, 0) * scale


def text_mask(text: str, scale: int = 1) -> np.ndarray:
    """Boolean ``[7 * scale, text_width(text, scale)]`` mask of the text's ink (one line; ``\\n`` is not special)."""
    mask = np.zeros((GLYPH_H, max(len(text) * _ADVANCE - 1, 0)), dtype=bool)
    for i, ch in enumerate(text):
        mask[:, i * _ADVANCE : i * _ADVANCE + GLYPH_W] = _glyph(ch)
    return mask.repeat(scale, axis=0).repeat(scale, axis=1)


def _blit(canvas: np.ndarray, mask: np.ndarray, x: int, y: int, color) -> None:
    """Paint ``color`` where ``mask`` is true, with the mask's top-left corner at (x, y), clipped to the canvas."""
    h, w = mask.shape
    x0, y0, x1, y1 = max(x, 0), max(y, 0), min(x + w, canvas.shape[1]), min(y + h, canvas.shape[0])
    if x0 < x1 and y0 < y1:
        canvas[y0:y1, x0:x1][mask[y0 - y : y1 - y, x0 - x : x1 - x]] = color


def draw_text(canvas: np.ndarray, x: int, y: int, text: str, color=BLACK, scale: int = 1,
              vertical: bool = False) -> int:
    """Draw ``text`` in place with its top-left corner at (x, y); returns its width in pixels.
    ``vertical=True`` rotates it a quarter turn to read bottom-to-top (for y-axis labels)."""
    mask = text_mask(text, scale)
    _blit(canvas, np.rot90(mask) if vertical else mask, int(x), int(y), color)
    return mask.shape[1]


def colormap(values: np.ndarray, cmap: str = "viridis") -> np.ndarray:
    """Map values in [0, 1] (clipped; NaN -> 0) to uint8 RGB ``[..., 3]`` by interpolating the anchor colours."""
    if cmap not in _CMAPS:
        raise ValueError(f"unknown cmap {cmap!r}; choose one of {sorted(_CMAPS)}")
    anchors = np.array(_CMAPS[cmap], dtype=np.float64)
    pos = np.clip(np.nan_to_num(np.asarray(values, dtype=np.float64), nan=0.0), 0.0, 1.0) * (len(anchors) - 1)
    lo = np.minimum(np.floor(pos).astype(np.int64), len(anchors) - 2)
    frac = (pos - lo)[..., None]
    return np.rint(anchors[lo] * (1 - frac) + anchors[lo + 1] * frac).astype(np.uint8)


def _fmt(value: float, step: float | None = None) -> str:
    """Short number label: fixed decimals matching ``step`` when given, else 3 significant digits."""
    if step is not None and 1e-4 <= step and abs(value) < 1e6:
        text = f"{value:.{max(0, -math.floor(math.log10(step) + 1e-9))}f}"
    else:
        text = f"{value:.3g}"
    return text[1:] if text.startswith("-") and text.strip("-0.") == "" else text  # "-0.0" -> "0.0"


def heatmap(values, *, title: str | None = None, vmin: float | None = None, vmax: float | None = None,
            cell: int = 16, colorbar: bool = True, cmap: str = "viridis") -> np.ndarray:
    """Picture of a 2-D array, each value a ``cell`` x ``cell`` square; NaN cells are grey.
    ``vmin``/``vmax`` default to the finite min/max. A colour bar labelled with them goes on the right."""
    v = np.asarray(values, dtype=np.float64)
    if v.ndim != 2 or v.size == 0:
        raise ValueError(f"heatmap needs a non-empty 2-D array, got shape {v.shape}; reshape it to [rows, cols]")
    finite = v[np.isfinite(v)]
    lo = float(finite.min()) if vmin is None and finite.size else (0.0 if vmin is None else float(vmin))
    hi = float(finite.max()) if vmax is None and finite.size else (1.0 if vmax is None else float(vmax))
    span = hi - lo if hi > lo else 1.0
    cells = colormap((np.nan_to_num(v, nan=lo) - lo) / span, cmap)
    cells[np.isnan(v)] = NAN_GREY
    body = cells.repeat(cell, axis=0).repeat(cell, axis=1)
    bh, bw = body.shape[:2]
    top = PAD + (GLYPH_H + PAD if title else 0)
    bar_w = 12
    labels = (_fmt(hi), _fmt(lo))
    width = PAD + bw + PAD + (bar_w + 3 + max(map(text_width, labels)) + PAD if colorbar else 0)
    width = max(width, text_width(title or "") + 2 * PAD)
    bar_h = max(bh, 3 * GLYPH_H)  # room for both labels even under a one-row heatmap
    canvas = blank(top + max(bh, bar_h if colorbar else 0) + PAD, width)
    canvas[top : top + bh, PAD : PAD + bw] = body
    if title:
        draw_text(canvas, PAD, PAD, title)
    if colorbar:
        bx = PAD + bw + PAD
        ramp = colormap(np.linspace(1.0, 0.0, bar_h), cmap)  # top = vmax
        canvas[top : top + bar_h, bx : bx + bar_w] = ramp[:, None, :]
        draw_text(canvas, bx + bar_w + 3, top, labels[0])
        draw_text(canvas, bx + bar_w + 3, top + bar_h - GLYPH_H, labels[1])
    return canvas


def level_fractions(levels, base: int = 0) -> tuple[float, float, float]:
    """Fractions of cells at each of the three levels (``base``, ``base + 1``, ``base + 2``)."""
    lv = np.asarray(levels)
    if lv.size == 0 or not np.issubdtype(lv.dtype, np.integer) or lv.min() < base or lv.max() > base + 2:
        raise ValueError(f"levels must be a non-empty integer array with values in {{{base}, {base + 1}, "
                         f"{base + 2}}}; pass base=1 for jano_ref.jano.levels' STATIC=1 .. ACTIVE=3")
    counts = np.bincount((lv - base).ravel(), minlength=3)
    return tuple(float(c) / lv.size for c in counts)


def level_overlay(image: np.ndarray, levels, *, alpha: float = 0.45, base: int = 0) -> np.ndarray:
    """Tint ``image`` by region level (static blue, moderate yellow, active red), outline level boundaries, and add
    a legend strip underneath with each level's share of cells. ``levels`` is an integer ``[h, w]`` array with
    values ``base`` (static), ``base + 1`` (moderate), ``base + 2`` (active) whose shape divides the image's."""
    if image.dtype != np.uint8 or image.ndim != 3 or image.shape[2] != 3:
        raise ValueError(f"image must be uint8 [H, W, 3], got {image.dtype} {image.shape}")
    lv = np.asarray(levels)
    fractions = level_fractions(lv, base)
    if lv.ndim != 2 or image.shape[0] % lv.shape[0] or image.shape[1] % lv.shape[1]:
        raise ValueError(f"levels shape {lv.shape} must be 2-D and divide the image size {image.shape[:2]}")
    sy, sx = image.shape[0] // lv.shape[0], image.shape[1] // lv.shape[1]
    up = (lv - base).repeat(sy, axis=0).repeat(sx, axis=1)
    tint = np.array(LEVEL_COLORS, dtype=np.float64)[up]
    out = np.rint(image.astype(np.float64) * (1 - alpha) + tint * alpha).astype(np.uint8)
    # A boundary pixel is the first pixel of a cell whose level differs from its left/upper neighbour.
    edge = np.zeros(up.shape, dtype=bool)
    edge[:, sx::sx] |= up[:, sx::sx] != up[:, sx - 1 : -1 : sx]
    edge[sy::sy, :] |= up[sy::sy, :] != up[sy - 1 : -1 : sy, :]
    out[edge] = (20, 20, 20)
    entries = [f"{name} {100 * f:.1f}%" for name, f in zip(LEVEL_NAMES, fractions)]
    widths = [GLYPH_H + 3 + text_width(e) for e in entries]
    width = max(out.shape[1], max(widths) + 2 * PAD)
    rows, x = [[]], PAD  # wrap legend entries to the width
    for entry, w in enumerate(widths):
        if rows[-1] and x + w > width - PAD:
            rows.append([])
            x = PAD
        rows[-1].append((entry, x))
        x += w + 2 * PAD
    line_h = GLYPH_H + 4
    canvas = blank(out.shape[0] + PAD // 2 + len(rows) * line_h + PAD // 2, width)
    canvas[: out.shape[0], : out.shape[1]] = out
    for r, row in enumerate(rows):
        y = out.shape[0] + PAD // 2 + r * line_h + 2
        for entry, x in row:
            canvas[y : y + GLYPH_H, x : x + GLYPH_H] = LEVEL_COLORS[entry]
            draw_text(canvas, x + GLYPH_H + 3, y, entries[entry])
    return canvas


def nice_ticks(lo: float, hi: float, target: int = 5) -> tuple[list[float], float]:
    """About ``target`` round tick values (multiples of 1, 2 or 5 x 10^k) inside [lo, hi], and their step."""
    if not (math.isfinite(lo) and math.isfinite(hi) and hi > lo):
        raise ValueError(f"nice_ticks needs finite lo < hi, got {lo}, {hi}")
    raw = (hi - lo) / max(target, 1)
    mag = 10.0 ** math.floor(math.log10(raw))
    step = next(m * mag for m in (1, 2, 5, 10) if m * mag >= raw * (1 - 1e-9))
    first, last = math.ceil(lo / step - 1e-9), math.floor(hi / step + 1e-9)
    return [k * step for k in range(first, last + 1)], step


@dataclass(frozen=True)
class Axes:
    """Where ``xy_chart`` put its plot area: pixel box (inclusive) and the data limits it spans."""

    left: int
    top: int
    right: int
    bottom: int
    xlim: tuple[float, float]
    ylim: tuple[float, float]

    def to_pixel(self, x, y):
        """Data coordinates -> (column, row) floats in the image."""
        fx = (np.asarray(x, dtype=np.float64) - self.xlim[0]) / (self.xlim[1] - self.xlim[0])
        fy = (np.asarray(y, dtype=np.float64) - self.ylim[0]) / (self.ylim[1] - self.ylim[0])
        return self.left + fx * (self.right - self.left), self.bottom - fy * (self.bottom - self.top)


def _auto_limits(values: np.ndarray) -> tuple[float, float]:
    values = values[np.isfinite(values)]
    if values.size == 0:
        return 0.0, 1.0
    lo, hi = float(values.min()), float(values.max())
    if hi == lo:
        return lo - (abs(lo) or 1.0) * 0.5, hi + (abs(hi) or 1.0) * 0.5
    margin = 0.05 * (hi - lo)
    return lo - margin, hi + margin


def _clip_segments(x0, y0, x1, y1, w, h):
    """Liang-Barsky clip of segments to [0, w-1] x [0, h-1]; returns the kept, shortened segments."""
    dx, dy = x1 - x0, y1 - y0
    t0, t1, keep = np.zeros_like(x0), np.ones_like(x0), np.ones(x0.shape, dtype=bool)
    with np.errstate(divide="ignore", invalid="ignore"):
        for p, q in ((-dx, x0), (dx, w - 1 - x0), (-dy, y0), (dy, h - 1 - y0)):
            keep &= ~((p == 0) & (q < 0))
            r = q / p
            t0 = np.where(p < 0, np.maximum(t0, r), t0)
            t1 = np.where(p > 0, np.minimum(t1, r), t1)
    keep &= t0 <= t1
    return [a[keep] for a in (x0 + t0 * dx, y0 + t0 * dy, x0 + t1 * dx, y0 + t1 * dy)]


def _draw_segments(area: np.ndarray, xs, ys, color, width: int = 2, dash: int = 0) -> None:
    """Draw the polyline through (xs, ys) (pixel floats; NaN breaks it) into ``area``, clipped to it."""
    xs, ys = np.asarray(xs, np.float64), np.asarray(ys, np.float64)
    ok = np.isfinite(xs[:-1]) & np.isfinite(ys[:-1]) & np.isfinite(xs[1:]) & np.isfinite(ys[1:])
    x0, y0, x1, y1 = _clip_segments(xs[:-1][ok], ys[:-1][ok], xs[1:][ok], ys[1:][ok], area.shape[1], area.shape[0])
    # One sample per pixel along the longer axis (a DDA line), all segments at once.
    n = np.maximum(np.abs(x1 - x0), np.abs(y1 - y0)).astype(np.int64) + 1
    seg = np.repeat(np.arange(n.size), n)
    t = (np.arange(seg.size) - np.repeat(np.cumsum(n) - n, n)) / np.maximum(n - 1, 1)[seg]
    px = np.rint(x0[seg] + t * (x1 - x0)[seg]).astype(np.int64)
    py = np.rint(y0[seg] + t * (y1 - y0)[seg]).astype(np.int64)
    if dash:
        keep = (px // dash) % 2 == 0
        px, py = px[keep], py[keep]
    for oy in range(width):
        for ox in range(width):
            inside = (px + ox < area.shape[1]) & (py + oy < area.shape[0])
            area[py[inside] + oy, px[inside] + ox] = color


_DISK = np.add.outer(np.arange(-2, 3) ** 2, np.arange(-2, 3) ** 2) <= 5  # 5x5 marker without the corners
_DISK.flags.writeable = False


def _draw_markers(area: np.ndarray, xs, ys, color) -> None:
    for x, y in zip(xs, ys):
        if math.isfinite(x) and math.isfinite(y) and -3 < x < area.shape[1] + 3 and -3 < y < area.shape[0] + 3:
            _blit(area, _DISK, int(round(x)) - 2, int(round(y)) - 2, color)


def xy_chart(series: Mapping[str, tuple[Sequence[float], Sequence[float]]], *, title: str = "", xlabel: str = "",
             ylabel: str = "", size: tuple[int, int] = (560, 360), lines: bool = True, markers: bool = True,
             xlim: tuple[float, float] | None = None, ylim: tuple[float, float] | None = None,
             hlines: Mapping[str, float] | None = None, line_width: int = 2, return_axes: bool = False):
    """Line/marker chart of ``series`` (name -> (xs, ys); NaN points are skipped and break lines) on a
    ``size = (width, height)`` canvas with round ticks, axis labels, a title, dashed reference ``hlines``
    (label -> y) and a legend in the emptiest corner. Returns the image, or ``(image, Axes)`` with
    ``return_axes=True``. Limits default to the data range plus 5 %."""
    data = {}
    for name, (xs, ys) in series.items():
        xs, ys = np.asarray(xs, np.float64).ravel(), np.asarray(ys, np.float64).ravel()
        if xs.shape != ys.shape:
            raise ValueError(f"series {name!r}: xs has {xs.size} values but ys has {ys.size}")
        data[str(name)] = (xs, ys)
    hlines = {str(k): float(v) for k, v in (hlines or {}).items()}
    all_x = np.concatenate([xs for xs, _ in data.values()] + [np.empty(0)])
    all_y = np.concatenate([ys for _, ys in data.values()] + [np.array(list(hlines.values()), np.float64)])
    xlim = tuple(map(float, xlim)) if xlim is not None else _auto_limits(all_x)
    ylim = tuple(map(float, ylim)) if ylim is not None else _auto_limits(all_y)
    if not (xlim[1] > xlim[0] and ylim[1] > ylim[0]):
        raise ValueError(f"limits must be increasing (lo < hi), got xlim={xlim}, ylim={ylim}")
    width, height = size
    # Vertical layout first: the y ticks depend on the plot height, the left margin on the y tick labels.
    top = PAD + (GLYPH_H + PAD if title else 0)
    bottom = height - 1 - (PAD + 4 + 3 + GLYPH_H + (GLYPH_H + 5 if xlabel else 0))
    yticks, ystep = nice_ticks(*ylim, target=max(2, (bottom - top) // 45))
    ylabels = [_fmt(v, ystep) for v in yticks]
    left = PAD + (GLYPH_H + 5 if ylabel else 0) + max(map(text_width, ylabels), default=0) + 3 + 4
    right = width - 1 - PAD - 12  # room for half of the last x tick label
    if right - left < 20 or bottom - top < 20:
        raise ValueError(f"size {size} is too small for the chart; use at least about (200, 120)")
    ax = Axes(left, top, right, bottom, xlim, ylim)
    xticks, xstep = nice_ticks(*xlim, target=max(2, (right - left) // 80))
    canvas = blank(height, width)
    area = canvas[top : bottom + 1, left : right + 1]  # a view: drawing into it clips to the plot area

    for v, label in zip(yticks, ylabels):
        row = int(round(float(ax.to_pixel(xlim[0], v)[1])))
        canvas[row, left + 1 : right] = GRID
        canvas[row, left - 4 : left] = AXIS
        draw_text(canvas, left - 7 - text_width(label), row - GLYPH_H // 2, label, AXIS)
    for v in xticks:
        col, label = int(round(float(ax.to_pixel(v, ylim[0])[0]))), _fmt(v, xstep)
        canvas[top + 1 : bottom, col] = GRID
        canvas[bottom + 1 : bottom + 5, col] = AXIS
        draw_text(canvas, col - text_width(label) // 2, bottom + 7, label, AXIS)
    for label, y in hlines.items():
        row = float(ax.to_pixel(xlim[0], y)[1]) - top
        _draw_segments(area, [0, area.shape[1] - 1], [row, row], AXIS, width=1, dash=4)
        draw_text(area, area.shape[1] - 3 - text_width(label), int(round(row)) - GLYPH_H - 2, label, AXIS)
    canvas[top, left : right + 1] = canvas[bottom, left : right + 1] = AXIS
    canvas[top : bottom + 1, left] = canvas[top : bottom + 1, right] = AXIS

    colors = {name: PALETTE[i % len(PALETTE)] for i, name in enumerate(data)}
    for name, (xs, ys) in data.items():
        px, py = ax.to_pixel(xs, ys)
        if lines and xs.size > 1:
            _draw_segments(area, px - left, py - top, colors[name], width=line_width)
        if markers:
            _draw_markers(area, px - left, py - top, colors[name])

    if title:
        draw_text(canvas, (left + right - text_width(title)) // 2, PAD, title)
    if xlabel:
        draw_text(canvas, (left + right - text_width(xlabel)) // 2, height - PAD - GLYPH_H, xlabel)
    if ylabel:
        draw_text(canvas, PAD, (top + bottom - text_width(ylabel)) // 2, ylabel, vertical=True)
    if data:
        _draw_legend(canvas, ax, data, colors, lines, markers)
    return (canvas, ax) if return_axes else canvas


def _draw_legend(canvas, ax: Axes, data, colors, lines: bool, markers: bool) -> None:
    """Legend box in whichever plot-area corner covers the fewest data points (ties: top-right first)."""
    row_h, sample_w = GLYPH_H + 5, 16
    box_w = sample_w + 3 * 4 + max(text_width(n) for n in data)
    box_h = len(data) * row_h + 6
    corners = [(ax.right - 4 - box_w, ax.top + 4), (ax.left + 4, ax.top + 4),
               (ax.right - 4 - box_w, ax.bottom - 4 - box_h), (ax.left + 4, ax.bottom - 4 - box_h)]
    px, py = ax.to_pixel(np.concatenate([d[0] for d in data.values()]), np.concatenate([d[1] for d in data.values()]))

    def covered(corner):
        x, y = corner
        return int(np.sum((px >= x) & (px <= x + box_w) & (py >= y) & (py <= y + box_h)))

    x, y = min(corners, key=covered)  # min keeps the first of equal corners
    canvas[y : y + box_h, x : x + box_w] = WHITE
    canvas[[y, y + box_h - 1], x : x + box_w] = AXIS
    canvas[y : y + box_h, [x, x + box_w - 1]] = AXIS
    for i, name in enumerate(data):
        cy = y + 4 + i * row_h + GLYPH_H // 2
        if lines or not markers:
            canvas[cy : cy + 2, x + 4 : x + 4 + sample_w] = colors[name]
        if markers:
            _blit(canvas, _DISK, x + 4 + sample_w // 2 - 2, cy - 1, colors[name])
        draw_text(canvas, x + 8 + sample_w, cy - GLYPH_H // 2, name)


def image_grid(images: Sequence[np.ndarray], cols: int, *, pad: int = 2, labels: Sequence[str] | None = None,
               bg: int = 255) -> np.ndarray:
    """Tile same-sized uint8 images (``[h, w, 3]`` or grey ``[h, w]``) row by row into ``cols`` columns,
    with ``pad`` pixels between them and an optional short label centred under each tile."""
    if not images:
        raise ValueError("image_grid needs at least one image")
    tiles = [np.repeat(im[..., None], 3, axis=2) if im.ndim == 2 else im for im in images]
    shape = tiles[0].shape
    for i, t in enumerate(tiles):
        if t.dtype != np.uint8 or t.ndim != 3 or t.shape[2] != 3 or t.shape != shape:
            raise ValueError(f"image {i} is {t.dtype} {t.shape}; all images must be uint8 {shape}")
    if labels is not None and len(labels) != len(tiles):
        raise ValueError(f"got {len(labels)} labels for {len(tiles)} images; give one label per image")
    if cols < 1:
        raise ValueError(f"cols must be >= 1, got {cols}")
    h, w = shape[:2]
    label_h = GLYPH_H + 4 if labels is not None else 0
    cols = min(cols, len(tiles))
    rows = -(-len(tiles) // cols)
    canvas = blank(rows * (h + label_h) + (rows + 1) * pad, cols * w + (cols + 1) * pad, (bg, bg, bg))
    ink = BLACK if bg >= 128 else WHITE
    for i, tile in enumerate(tiles):
        x = pad + (i % cols) * (w + pad)
        y = pad + (i // cols) * (h + label_h + pad)
        canvas[y : y + h, x : x + w] = tile
        if labels is not None:
            draw_text(canvas, x + (w - text_width(labels[i])) // 2, y + h + 2, labels[i], ink)
    return canvas
