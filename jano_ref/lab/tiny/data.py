"""Procedurally generated captioned images and short videos whose regions differ in complexity.

Each sample is one object on a background. The object carries fine texture (stripes, checkers, noise,
text-like marks) or none; the background is flat or a smooth linear gradient. So a picture has a
complex region (the textured object, its edges) next to a simple one (the background) and a caption
that states the truth: "a red striped circle on a gradient background" (videos add "moving left" or
"standing still"). Only the main object exists and is described; a second object is left out on
purpose so that the caption is complete and ``caption_agreement`` is unambiguous.

Everything is a pure function of a ``Scene`` (plus the output size), and scenes come from an explicit
``torch.Generator``: ``make_batch(64, seed=0, size=64)`` is the same batch in every process.

Geometry conventions: pixel ``k`` covers ``[k, k + 1)``; ``Scene.position`` is the object centre as a
fraction of the side (x, y), y pointing down; ``Scene.size`` is the half extent of the object's square
bounding box as a fraction of the side. Every shape exactly fills that box in its own normalised
coordinates ``(u, v) in [-1, 1]^2``, which is what lets ``caption_agreement`` re-render each candidate
shape in a detected bounding box.

Texture periods are drawn from [2.3, 3.3] px, deliberately away from 2 and 4: a DiT token covers 4x4
pixels (2x2 space-to-depth in ``models.autoencoder.SpaceToDepth``, then 2x2 patches), so a period that
divides 4 px (or nearly does) repeats identically in every token and the textured region would be a
constant, simple region in token space. With 4 / period mod 1 in [0.2, 0.75] neighbouring tokens differ.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor

# ---- vocabulary (fixed constants) ---------------------------------------------------------------

COLOURS: tuple[str, ...] = ("red", "green", "blue", "yellow", "magenta", "cyan", "white")
# Saturated and far apart (pairwise RGB distance >= 0.7), so a nearest-colour vote is unambiguous.
COLOUR_RGB: tuple[tuple[float, float, float], ...] = (
    (0.90, 0.15, 0.15),
    (0.15, 0.80, 0.20),
    (0.15, 0.30, 0.95),
    (0.95, 0.90, 0.15),
    (0.90, 0.20, 0.85),
    (0.15, 0.85, 0.90),
    (0.95, 0.95, 0.95),
)
SHAPES: tuple[str, ...] = ("circle", "square", "triangle", "ring", "cross")
TEXTURES: tuple[str, ...] = ("plain", "stripes", "checkers", "noise", "marks")
TEXTURE_WORDS: tuple[str, ...] = ("", "striped", "checkered", "noisy", "scribbled")  # "plain" is not said
BACKGROUNDS: tuple[str, ...] = ("flat", "gradient")
# Muted, dark tones: even the darkest texture tone of an object stays >= 0.2 (RGB distance) away.
TONES: tuple[str, ...] = ("slate", "olive", "plum", "umber", "pine", "grey")
TONE_RGB: tuple[tuple[float, float, float], ...] = (
    (0.22, 0.25, 0.30),
    (0.30, 0.30, 0.20),
    (0.30, 0.22, 0.28),
    (0.32, 0.25, 0.20),
    (0.18, 0.28, 0.24),
    (0.27, 0.27, 0.27),
)
MOTIONS: tuple[str, ...] = ("still", "left", "right", "up", "down")
MOTION_DIRECTIONS: tuple[tuple[int, int], ...] = ((0, 0), (-1, 0), (1, 0), (0, -1), (0, 1))  # (dx, dy)

# Every word a caption can contain, in a fixed order (the tiny text encoder's vocabulary).
CAPTION_WORDS: tuple[str, ...] = tuple(
    dict.fromkeys(
        ("a", "on", "background", "moving", "standing", "still")
        + COLOURS
        + tuple(w for w in TEXTURE_WORDS if w)
        + SHAPES
        + BACKGROUNDS
        + MOTIONS[1:]
    )
)

TEXTURE_DARKEN = 0.45  # texture value 1 -> colour * (1 - 0.45): darker but same hue
GRADIENT_STRENGTH = 0.6  # background brightness varies by about +-40 % across the picture
RING_INNER = 0.55  # inner radius of the ring, relative to the outer one
CROSS_ARM = 1 / 3  # half width of a cross arm, relative to the half extent
SUPERSAMPLE = 4  # 4x4 samples per pixel for anti-aliased edges
EDGE_MARGIN = 0.04  # objects keep this fraction of the side away from the border
# Objects are large and near the centre. A tiny DiT sees a 64 px picture as 16 x 16 tokens of 4 x 4 px: a smaller
# object spans too few tokens for square, circle and ring to differ, and a free position makes the model decide
# where the object goes before it can decide what it is. Trained on objects anywhere with half extents 0.16-0.28,
# tiny-flux drew the right colour but shapeless, often split blobs (shape agreement at chance after 2000 steps).
SIZE_RANGE = (0.24, 0.32)  # half extent, as a fraction of the side
POSITION_JITTER = 0.08  # the centre (in the middle of a clip) is within this of the picture centre, per axis


# ---- scenes ---------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Scene:
    """The ground truth of one sample; ``caption`` is derived from it.

    ``position`` is the object centre (x, y) as a fraction of the side (for a video: in the middle of
    the clip, see ``frame_offsets``), ``size`` the half extent of its bounding box as a fraction of the
    side, ``speed`` the displacement per frame as a fraction of the side. ``tone``, ``gradient_angle``,
    ``period``, ``orientation`` and ``detail_seed`` are nuisance details the caption does not state.
    """

    colour: str
    shape: str
    texture: str = "plain"
    background: str = "flat"
    motion: str = "still"
    position: tuple[float, float] = (0.5, 0.5)
    size: float = 0.22
    tone: str = "slate"
    gradient_angle: float = 0.0
    period: float = 3.0
    orientation: int = 0
    speed: float = 0.0
    detail_seed: int = 0
    video: bool = False

    def __post_init__(self) -> None:
        for field_name, allowed in (
            ("colour", COLOURS),
            ("shape", SHAPES),
            ("texture", TEXTURES),
            ("background", BACKGROUNDS),
            ("motion", MOTIONS),
            ("tone", TONES),
        ):
            if getattr(self, field_name) not in allowed:
                raise ValueError(f"{field_name}={getattr(self, field_name)!r} is not one of {allowed}")
        if not 0 < self.size < 0.5:
            raise ValueError(f"size is a half extent as a fraction of the side, in (0, 0.5); got {self.size}")

    @property
    def caption(self) -> str:
        """E.g. "a red striped circle on a gradient background moving left"."""
        words = ["a", self.colour, TEXTURE_WORDS[TEXTURES.index(self.texture)], self.shape]
        words += ["on", "a", self.background, "background"]
        if self.video:
            words += ["standing", "still"] if self.motion == "still" else ["moving", self.motion]
        return " ".join(w for w in words if w)


def _choice(options: tuple[str, ...], generator: torch.Generator) -> str:
    return options[int(torch.randint(len(options), (1,), generator=generator))]


def _uniform(lo: float, hi: float, generator: torch.Generator) -> float:
    return lo + (hi - lo) * float(torch.rand(1, generator=generator, dtype=torch.float64))


def random_scene(generator: torch.Generator, video: bool = False, *, frames: int = 8) -> Scene:
    """Draw a scene from ``generator``. For videos, ``frames`` bounds the speed so that the object stays
    in frame for a clip of that length (at least 1 px per frame is moved, so very long clips may leave)."""
    colour = _choice(COLOURS, generator)
    shape = _choice(SHAPES, generator)
    texture = _choice(TEXTURES, generator)
    background = _choice(BACKGROUNDS, generator)
    tone = _choice(TONES, generator)
    size = _uniform(*SIZE_RANGE, generator)
    motion = _choice(MOTIONS, generator) if video else "still"
    speed = 0.0
    if motion != "still":
        room = 1 - 2 * (size + EDGE_MARGIN)  # how far the centre can travel while fully in frame
        speed = min(_uniform(0.03, 0.06, generator), room / max(frames - 1, 1))
    dx, dy = MOTION_DIRECTIONS[MOTIONS.index(motion)]
    half_travel = speed * (frames - 1) / 2

    def centre(moves: int) -> float:
        lo = max(size + EDGE_MARGIN + abs(moves) * half_travel, 0.5 - POSITION_JITTER)
        return _uniform(lo, max(lo, 1 - lo), generator)

    position = (centre(dx), centre(dy))
    return Scene(
        colour=colour,
        shape=shape,
        texture=texture,
        background=background,
        motion=motion,
        position=position,
        size=size,
        tone=tone,
        gradient_angle=_uniform(0, 2 * math.pi, generator),
        period=_uniform(2.3, 3.3, generator),
        orientation=int(torch.randint(4, (1,), generator=generator)),
        speed=speed,
        detail_seed=int(torch.randint(2**31 - 1, (1,), generator=generator)),
        video=video,
    )


# ---- shapes and textures --------------------------------------------------------------------------


def shape_inside(shape: str, u: Tensor, v: Tensor) -> Tensor:
    """Boolean mask of ``shape`` at normalised coordinates (u, v) (broadcast); it fills [-1, 1]^2."""
    r2 = u * u + v * v
    box = torch.maximum(u.abs(), v.abs()) <= 1
    if shape == "circle":
        return r2 <= 1
    if shape == "square":
        return box
    if shape == "triangle":  # apex at the top (v = -1), base at the bottom
        return (v >= -1) & (v <= 1) & (u.abs() <= (v + 1) / 2)
    if shape == "ring":
        return (r2 <= 1) & (r2 >= RING_INNER**2)
    if shape == "cross":
        return box & (torch.minimum(u.abs(), v.abs()) <= CROSS_ARM)
    raise ValueError(f"unknown shape {shape!r}; expected one of {SHAPES}")


def _text_marks(n: int, pitch: int, generator: torch.Generator) -> Tensor:
    """[n, n] lines of short strokes ("words" of 2-5 px, gaps of 1-2 px), one line every ``pitch`` rows."""
    out = torch.zeros(n, n)
    for row in range(0, n, pitch):
        words = torch.randint(2, 6, (n,), generator=generator)
        gaps = torch.randint(1, 3, (n,), generator=generator)
        lengths = torch.stack([words, gaps], dim=1).flatten()
        ink = torch.tensor([1.0, 0.0]).repeat(n).repeat_interleave(lengths)
        start = int(torch.randint(6, (1,), generator=generator))  # lines do not all start with a word
        out[row] = ink[start : start + n]
    return out


def texture_patch(scene: Scene, offsets: Tensor) -> Tensor:
    """Texture value in [0, 1] (0 = object colour, 1 = darkest tone) at integer pixel ``offsets`` [n]
    from the object's anchor pixel; [n, n] (rows = y). It depends on offsets only, so it moves rigidly."""
    n = offsets.numel()
    x, y = offsets[None, :], offsets[:, None]
    g = torch.Generator().manual_seed(scene.detail_seed)
    phase = float(torch.rand(1, generator=g))
    if scene.texture == "plain":
        return torch.zeros(n, n)
    if scene.texture == "stripes":  # vertical, diagonal, horizontal, anti-diagonal
        # integer coefficients: the pattern shifts by 4 / period periods per token along x and y
        coord = (x, x + y, y, x - y)[scene.orientation].expand(n, n)
        return (torch.remainder(coord / scene.period + phase, 1.0) < 0.5).float()
    if scene.texture == "checkers":
        cell = scene.period / 2
        return ((torch.floor(x / cell) + torch.floor(y / cell)) % 2).expand(n, n).float()
    if scene.texture == "noise":
        return torch.rand(n, n, generator=g)
    if scene.texture == "marks":
        return _text_marks(n, 3, g)  # a pitch of 3 rows: lines do not repeat from one 4-px token to the next
    raise ValueError(f"unknown texture {scene.texture!r}; expected one of {TEXTURES}")


# ---- rendering ------------------------------------------------------------------------------------


@dataclass(frozen=True)
class _Sprite:
    """The object rendered around its anchor pixel: ``alpha`` [P, P] coverage, ``rgb`` [3, P, P]; pixel
    (i, j) of the sprite lands on image pixel (anchor_y - reach + i, anchor_x - reach + j)."""

    alpha: Tensor
    rgb: Tensor
    anchor: tuple[int, int]  # (x, y) pixel containing the centre at frame 0 of the clip
    reach: int


def _coverage(shape: str, half: float, frac: tuple[float, float], reach: int) -> Tensor:
    """[P, P] anti-aliased coverage (SUPERSAMPLE^2 samples per pixel) of a shape with half extent ``half``
    px whose centre sits at fraction ``frac`` (x, y) inside the anchor pixel (sprite index ``reach``)."""
    n = SUPERSAMPLE
    sub = (torch.arange(n, dtype=torch.float64) + 0.5) / n
    pix = torch.arange(2 * reach + 1, dtype=torch.float64) - reach
    fine = (pix[:, None] + sub[None, :]).flatten()  # sample positions relative to the anchor pixel's corner
    u = ((fine - frac[0]) / half)[None, :]
    v = ((fine - frac[1]) / half)[:, None]
    inside = shape_inside(shape, u, v).float()
    p = 2 * reach + 1
    return inside.reshape(p, n, p, n).mean(dim=(1, 3)).float()


def _sprite(scene: Scene, size: int, start: tuple[float, float]) -> _Sprite:
    """Render the object with centre ``start`` (fractions of the side) into a sprite."""
    half = scene.size * size
    reach = math.ceil(half) + 1
    cx, cy = start[0] * size, start[1] * size
    ax, ay = math.floor(cx), math.floor(cy)
    alpha = _coverage(scene.shape, half, (cx - ax, cy - ay), reach)
    offsets = torch.arange(-reach, reach + 1, dtype=torch.float32)
    shade = 1 - TEXTURE_DARKEN * texture_patch(scene, offsets)
    rgb = torch.tensor(COLOUR_RGB[COLOURS.index(scene.colour)])[:, None, None] * shade
    return _Sprite(alpha=alpha, rgb=rgb, anchor=(ax, ay), reach=reach)


def render_background(scene: Scene, size: int, *, device: torch.device | str | None = None) -> Tensor:
    """[3, size, size] background: the flat tone, or a linear gradient of it along ``gradient_angle``."""
    tone = torch.tensor(TONE_RGB[TONES.index(scene.tone)], device=device)[:, None, None]
    if scene.background == "flat":
        return _quantise(tone.expand(3, size, size))
    c = (torch.arange(size, dtype=torch.float32, device=device) + 0.5) / size - 0.5
    a = scene.gradient_angle
    ramp = c[None, :] * math.cos(a) + c[:, None] * math.sin(a)  # in [-0.71, 0.71]
    return _quantise(tone * (1 + GRADIENT_STRENGTH * ramp))


def frame_step(scene: Scene, size: int) -> tuple[int, int]:
    """Displacement (dx, dy) of the object in whole pixels per frame at ``size`` (at least 1 when moving)."""
    dx, dy = MOTION_DIRECTIONS[MOTIONS.index(scene.motion)]
    step = max(1, math.floor(scene.speed * size)) if scene.motion != "still" else 0
    return dx * step, dy * step


def _paste(sprite_value: Tensor, x0: int, y0: int, size: int) -> Tensor:
    """Place [..., P, P] with its top-left corner at image pixel (x0, y0) on a zero [..., size, size]
    canvas, clipping whatever falls outside."""
    p = sprite_value.shape[-1]
    canvas = sprite_value.new_zeros(*sprite_value.shape[:-2], size + 2 * p, size + 2 * p)
    x0, y0 = min(max(x0, -p), size), min(max(y0, -p), size)  # fully outside: park it in the margin
    canvas[..., y0 + p : y0 + 2 * p, x0 + p : x0 + 2 * p] = sprite_value
    return canvas[..., p : p + size, p : p + size]


def _quantise(x: Tensor) -> Tensor:
    """Round to multiples of 2^-24 so that SpaceToDepth's x*2-1 (and back) is exact in float32."""
    return torch.round(x * 2.0**24) / 2.0**24


def _render(scene: Scene, size: int, frames: int, device: torch.device | str | None) -> tuple[Tensor, Tensor]:
    """(pixels [3, F, H, W], alpha [F, H, W]) of a clip; the object moves by ``frame_step`` per frame and
    sits at ``scene.position`` in the middle of the clip."""
    step = frame_step(scene, size)
    mid = (frames - 1) / 2
    start = (scene.position[0] - step[0] * mid / size, scene.position[1] - step[1] * mid / size)
    sprite = _sprite(scene, size, start)
    alphas, colours = [], []
    for t in range(frames):  # whole-pixel shifts of one sprite: the object moves rigidly and exactly
        x0 = sprite.anchor[0] + step[0] * t - sprite.reach
        y0 = sprite.anchor[1] + step[1] * t - sprite.reach
        alphas.append(_paste(sprite.alpha, x0, y0, size))
        colours.append(_paste(sprite.rgb, x0, y0, size))
    alpha = torch.stack(alphas).to(device)
    rgb = torch.stack(colours, dim=1).to(device)
    background = render_background(scene, size, device=device)[:, None]
    pixels = background * (1 - alpha) + rgb * alpha  # alpha = 0 leaves the background bit-exact
    return _quantise(pixels.clamp(0, 1)), alpha


def render_image(scene: Scene, size: int, *, device: torch.device | str | None = None) -> Tensor:
    """[3, size, size] float32 picture in [0, 1] (multiples of 2^-24)."""
    return _render(scene, size, 1, device)[0][:, 0]


def render_video(scene: Scene, size: int, frames: int, *, device: torch.device | str | None = None) -> Tensor:
    """[3, frames, size, size] float32 clip in [0, 1]: a static background, the object moving by
    ``frame_step(scene, size)`` px per frame (identical frames for motion "still")."""
    return _render(scene, size, frames, device)[0]


def object_mask(
    scene: Scene, size: int, frames: int | None = None, *, device: torch.device | str | None = None
) -> Tensor:
    """Object coverage in [0, 1]: [size, size] for an image, [frames, size, size] for a clip (the truth
    of which region is complex)."""
    alpha = _render(scene, size, 1 if frames is None else frames, device)[1]
    return alpha[0] if frames is None else alpha


def make_batch(
    batch_size: int,
    seed: int,
    *,
    size: int,
    frames: int | None = None,
    device: torch.device | str | None = None,
    dtype: torch.dtype = torch.float32,
) -> tuple[Tensor, list[str], list[Scene]]:
    """``batch_size`` random samples from ``seed``: (pixels [B, 3, H, W], or [B, 3, F, H, W] when
    ``frames`` is given, in [0, 1]; captions; scenes)."""
    g = torch.Generator().manual_seed(seed)
    video = frames is not None
    scenes = [random_scene(g, video, frames=frames or 1) for _ in range(batch_size)]
    if video:
        pixels = torch.stack([render_video(s, size, frames) for s in scenes])
    else:
        pixels = torch.stack([render_image(s, size) for s in scenes])
    return pixels.to(device=device, dtype=dtype), [s.caption for s in scenes], scenes


# ---- scoring generated pictures against the truth -------------------------------------------------


def estimate_background(image: Tensor, border: int = 2, tolerance: float = 0.1) -> Tensor:
    """[3, H, W] least-squares plane (per channel: a + b x + c y) through the border pixels, refitted once
    without the border pixels that are more than ``tolerance`` off the first fit (an object touching
    the edge). Flat and gradient backgrounds are planes, so renderer images are fitted exactly."""
    _, h, w = image.shape
    x = image.float()
    ys, xs = torch.meshgrid(
        torch.linspace(-1, 1, h, device=x.device), torch.linspace(-1, 1, w, device=x.device), indexing="ij"
    )
    ring = torch.ones(h, w, dtype=torch.bool, device=x.device)
    ring[border:-border, border:-border] = False
    design = torch.stack([torch.ones_like(xs), xs, ys], dim=-1)  # [H, W, 3]
    keep = ring
    for _ in range(2):
        coef = torch.linalg.lstsq(design[keep], x.permute(1, 2, 0)[keep]).solution  # [3 terms, 3 channels]
        plane = (design @ coef).permute(2, 0, 1)
        off = (x - plane).norm(dim=0) > tolerance
        if (ring & ~off).sum() >= 3:
            keep = ring & ~off
    return plane


def _dilate(mask: Tensor) -> Tensor:
    return F.max_pool2d(mask[None, None].float(), 3, stride=1, padding=1)[0, 0] > 0


def _erode(mask: Tensor) -> Tensor:
    return ~_dilate(~mask)


def largest_component(mask: Tensor) -> Tensor:
    """The largest 8-connected component of a boolean [H, W] mask (label propagation by max-pooling)."""
    h, w = mask.shape
    labels = torch.arange(1, h * w + 1, device=mask.device, dtype=torch.float32).reshape(h, w) * mask
    while True:
        grown = F.max_pool2d(labels[None, None], 3, stride=1, padding=1)[0, 0] * mask
        if torch.equal(grown, labels):
            break
        labels = grown
    ids, counts = torch.unique(labels[mask], return_counts=True)
    return labels == ids[counts.argmax()]


def salient_mask(image: Tensor, threshold: float = 0.1) -> Tensor:
    """Boolean [H, W]: pixels at least ``threshold`` (RGB distance) away from the estimated background."""
    return (image.float() - estimate_background(image)).norm(dim=0) > threshold


def detect_colour(image: Tensor, salient: Tensor) -> str | None:
    """Nearest palette colour to the median of the brightest quarter of the salient pixels: the object's
    own colour, since texture only darkens it (by at most half the pixels) and anti-aliased edges are dimmer."""
    if not salient.any():
        return None
    pixels = image.float()[:, salient].T  # [N, 3]
    brightness = pixels.amax(dim=1)
    bright = pixels[brightness >= torch.quantile(brightness, 0.75)]
    colour = bright.median(dim=0).values
    palette = torch.tensor(COLOUR_RGB, device=colour.device)
    return COLOURS[int((palette - colour).norm(dim=1).argmin())]


def detect_shape(mask: Tensor) -> str | None:
    """The shape whose plain rendering in the bounding box of ``mask`` has the highest IoU with it."""
    if not mask.any():
        return None
    rows, cols = torch.nonzero(mask, as_tuple=True)
    y0, y1, x0, x1 = rows.min().item(), rows.max().item() + 1, cols.min().item(), cols.max().item() + 1
    h, w = mask.shape
    centres_x = torch.arange(w, device=mask.device, dtype=torch.float32) + 0.5
    centres_y = torch.arange(h, device=mask.device, dtype=torch.float32) + 0.5
    u = ((centres_x - (x0 + x1) / 2) / ((x1 - x0) / 2))[None, :]
    v = ((centres_y - (y0 + y1) / 2) / ((y1 - y0) / 2))[:, None]

    def iou(shape: str) -> float:
        candidate = shape_inside(shape, u, v)
        return ((candidate & mask).sum() / (candidate | mask).sum()).item()

    return max(SHAPES, key=iou)


def detect(image: Tensor, threshold: float = 0.1) -> tuple[str | None, str | None]:
    """(colour, shape) read off a picture [3, H, W] in [0, 1]; None where nothing stands out.

    The salient pixels are closed morphologically (3x3) to bridge texture pixels that happen to be
    close to the background, and reduced to their largest connected component to ignore specks."""
    salient = salient_mask(image, threshold)
    if not salient.any():
        return None, None
    mask = largest_component(_erode(_dilate(salient)) | salient)
    return detect_colour(image, salient & mask), detect_shape(mask)


def caption_agreement(image: Tensor, scene: Scene, threshold: float = 0.1) -> dict[str, bool]:
    """Does a (generated) picture show the scene's colour and shape? ``image`` is [3, H, W] in [0, 1], or a
    clip [3, F, H, W], of which the middle frame is scored (where ``scene.position`` refers)."""
    if image.ndim == 4:
        image = image[:, (image.shape[1] - 1) // 2]
    colour, shape = detect(image, threshold)
    return {"colour": colour == scene.colour, "shape": shape == scene.shape}


def evaluation_scenes(n: int, *, video: bool, frames: int = 4, seed: int = 0) -> list[Scene]:
    """``n`` scenes for evaluation prompts, drawn from a seed range training never uses (training draws from
    seeds ``train_seed * 1_000_003 + step``; these come from ``2**40 + seed``)."""
    g = torch.Generator().manual_seed(2**40 + seed)
    return [random_scene(g, video, frames=frames) for _ in range(n)]


def caption_truth(prompt: str) -> Scene | None:
    """The (colour, shape) a prompt asks for, as a Scene ``caption_agreement`` can score; None if it names
    no palette colour or no known shape (the picture can then not be scored)."""
    words = prompt.lower().replace(",", " ").split()
    colour = next((w for w in words if w in COLOURS), None)
    shape = next((w for w in words if w in SHAPES), None)
    if colour is None or shape is None:
        return None
    return Scene(colour=colour, shape=shape)
