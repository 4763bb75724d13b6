"""Tests for jano_ref.lab.plot (bitmap font, heatmap, level overlay, x-y chart, image grid) and the GIF writer in
jano_ref.lab.imageio. Pillow decodes what we write; it is a test-only dependency (it comes with diffusers)."""

import numpy as np
import pytest
from numpy.lib.stride_tricks import sliding_window_view

from jano_ref.lab import plot
from jano_ref.lab.imageio import _lzw_encode, quantise_for_gif, write_gif, write_png

Image = pytest.importorskip("PIL.Image")

PRINTABLE = "".join(chr(c) for c in range(32, 127))


def luminance(rgb):
    return np.asarray(rgb, np.float64) @ np.array([0.299, 0.587, 0.114])


def find_text(image, text, color=plot.BLACK):
    """Top-left corners (y, x) where ``text`` is drawn in ``color`` with exactly the font's ink pattern."""
    ink = (image == np.asarray(color, np.uint8)).all(axis=-1)
    mask = plot.text_mask(text)
    if ink.shape[0] < mask.shape[0] or ink.shape[1] < mask.shape[1]:
        return []
    hits = (sliding_window_view(ink, mask.shape) == mask).all(axis=(-2, -1))
    return [tuple(map(int, p)) for p in np.argwhere(hits)]


def colour_mask(image, color):
    return (image == np.asarray(color, np.uint8)).all(axis=-1)


# ---------------------------------------------------------------- font


def test_every_printable_glyph_is_distinct_and_only_space_is_blank():
    masks = {ch: plot.text_mask(ch) for ch in PRINTABLE}
    assert all(m.shape == (7, 5) for m in masks.values())
    assert not masks[" "].any()
    assert all(m.any() for ch, m in masks.items() if ch != " ")
    assert len({m.tobytes() for m in masks.values()}) == len(PRINTABLE)


def test_unknown_characters_render_as_a_box():
    box = plot.text_mask("\u00e9")
    assert box[0].all() and box[-1].all() and box[:, 0].all() and box[:, -1].all() and not box[1:-1, 1:-1].any()
    assert box.tobytes() not in {plot.text_mask(ch).tobytes() for ch in PRINTABLE}
    assert np.array_equal(plot.text_mask("\n"), box)


def test_draw_text_width_scale_and_clipping():
    canvas = plot.blank(30, 80)
    width = plot.draw_text(canvas, 3, 4, "a+1%", (255, 0, 0), scale=2)
    assert width == plot.text_width("a+1%", 2) == 2 * (4 * 6 - 1)
    ys, xs = np.nonzero(colour_mask(canvas, (255, 0, 0)))
    assert xs.min() >= 3 and xs.max() < 3 + width and ys.min() >= 4 and ys.max() < 4 + 14
    assert np.array_equal(plot.text_mask("x", 2), plot.text_mask("x").repeat(2, 0).repeat(2, 1))
    assert plot.text_width("") == 0 and plot.draw_text(canvas, 0, 0, "") == 0
    plot.draw_text(canvas, -10, -3, "clipped at every edge", scale=3)  # must not raise
    plot.draw_text(canvas, 70, 25, "clipped", scale=3)
    assert find_text(canvas, "a+1%", (255, 0, 0)) == []  # scale 2 is not the scale-1 pattern
    single = plot.blank(12, 60)
    plot.draw_text(single, 2, 3, "x=1.5e-3")
    assert find_text(single, "x=1.5e-3") == [(3, 2)]


def test_vertical_text_is_the_rotated_mask():
    canvas = plot.blank(40, 12)
    plot.draw_text(canvas, 2, 3, "loss", vertical=True)
    ink = colour_mask(canvas, plot.BLACK)
    assert np.array_equal(ink[3 : 3 + plot.text_width("loss"), 2:9], np.rot90(plot.text_mask("loss")))


# ---------------------------------------------------------------- heatmap


def test_heatmap_cells_increase_in_luminance_and_nan_is_grey():
    values = np.linspace(0.0, 1.0, 8).reshape(2, 4)
    values[1, 3] = np.nan
    img = plot.heatmap(values, cell=5, colorbar=False)
    assert img.shape == (plot.PAD + 2 * 5 + plot.PAD, plot.PAD + 4 * 5 + plot.PAD, 3)
    centres = [img[plot.PAD + r * 5 + 2, plot.PAD + c * 5 + 2] for r in range(2) for c in range(4)]
    lum = luminance(centres[:7])
    assert np.all(np.diff(lum) > 0)
    assert tuple(centres[7]) == plot.NAN_GREY
    assert tuple(centres[0]) == (68, 1, 84) and tuple(centres[6]) == (253, 231, 37)  # min and max finite values


def test_colormaps_are_monotonic_and_clip():
    ramp = plot.colormap(np.linspace(0, 1, 256))
    assert np.all(np.diff(luminance(ramp)) >= -0.5)  # rounding to uint8 may tie, never really drop
    assert luminance(ramp[-1]) - luminance(ramp[0]) > 150
    assert np.array_equal(plot.colormap([-3.0, 7.0]), ramp[[0, -1]])
    assert np.array_equal(plot.colormap([0.0, 0.5, 1.0], "gray")[:, 0], [0, 128, 255])
    with pytest.raises(ValueError, match="unknown cmap"):
        plot.colormap([0.5], "jet")


def test_heatmap_vmin_vmax_title_and_colorbar():
    values = np.array([[-5.0, 0.0, 5.0]])
    img = plot.heatmap(values, vmin=0.0, vmax=1.0, cell=4, title="clip test")
    top = plot.PAD + 7 + plot.PAD
    row = img[top + 1, plot.PAD + 1 : plot.PAD + 12 : 4]
    assert np.array_equal(row, plot.colormap([0.0, 0.0, 1.0]))
    assert find_text(img, "clip test") == [(plot.PAD, plot.PAD)]
    assert find_text(img, "1") and find_text(img, "0")  # colour bar labels
    assert img.shape[1] >= plot.text_width("clip test") + 2 * plot.PAD
    flat = plot.heatmap(np.full((2, 2), 3.0), colorbar=False)  # vmin == vmax must not divide by zero
    assert len(np.unique(flat[plot.PAD : plot.PAD + 32, plot.PAD : plot.PAD + 32].reshape(-1, 3), axis=0)) == 1
    with pytest.raises(ValueError, match="2-D"):
        plot.heatmap(np.arange(5.0))


# ---------------------------------------------------------------- level overlay


def test_level_overlay_tints_outlines_and_reports_percentages():
    image = np.full((8, 8, 3), 128, np.uint8)
    levels = np.array([[0, 1], [2, 2]])
    assert plot.level_fractions(levels) == (0.25, 0.25, 0.5)
    out = plot.level_overlay(image, levels, alpha=0.5)
    for (y, x), lv in (((1, 1), 0), ((1, 6), 1), ((6, 6), 2)):
        expected = np.rint(128 * 0.5 + np.array(plot.LEVEL_COLORS[lv]) * 0.5)
        assert np.array_equal(out[y, x], expected)
    edge = colour_mask(out[:8, :8], (20, 20, 20))
    assert edge[:4, 4].all() and edge[4, :].all()  # static|moderate and the top|bottom boundary
    assert not edge[5:, 4].any() and not edge[:4, :4].any()  # active|active is not a boundary
    for text in ("static 25.0%", "moderate 25.0%", "active 50.0%"):
        hits = find_text(out, text)
        assert len(hits) == 1 and hits[0][0] >= 8, text  # once, in the strip below the image
    assert out.shape[1] >= plot.text_width("moderate 25.0%")


def test_level_overlay_base_and_errors():
    image = np.zeros((6, 9, 3), np.uint8)
    a = plot.level_overlay(image, np.array([[0, 1, 2], [2, 2, 2]]))
    b = plot.level_overlay(image, np.array([[1, 2, 3], [3, 3, 3]]), base=1)  # jano_ref.jano.levels numbering
    assert np.array_equal(a, b)
    with pytest.raises(ValueError, match="divide"):
        plot.level_overlay(image, np.zeros((4, 3), np.int64))
    with pytest.raises(ValueError, match="values in"):
        plot.level_overlay(image, np.full((2, 3), 3))
    with pytest.raises(ValueError, match="uint8"):
        plot.level_overlay(image.astype(np.float32), np.zeros((2, 3), np.int64))


# ---------------------------------------------------------------- x-y chart


def test_nice_ticks():
    ticks, step = plot.nice_ticks(0.0, 1.0, 5)
    assert step == pytest.approx(0.2) and np.allclose(ticks, [0, 0.2, 0.4, 0.6, 0.8, 1.0])
    assert plot.nice_ticks(0.0, 37.0, 4) == ([0.0, 10.0, 20.0, 30.0], 10.0)
    ticks, step = plot.nice_ticks(-0.0031, 0.0042, 6)  # raw step 0.0012 rounds up to 0.002
    assert step == pytest.approx(0.002) and np.allclose(ticks, [-0.002, 0.0, 0.002, 0.004])
    img = plot.xy_chart({"s": ([0, 1], [-0.0031, 0.0042])}, ylim=(-0.0031, 0.0042))
    assert all(find_text(img, label, plot.AXIS) for label in ("-0.002", "0.000", "0.004"))
    with pytest.raises(ValueError):
        plot.nice_ticks(1.0, 1.0)


def test_horizontal_series_lands_on_the_middle_row():
    color = plot.PALETTE[0]
    img, ax = plot.xy_chart({"flat": ([0, 10], [5, 5])}, xlim=(0, 10), ylim=(0, 10), markers=False,
                            size=(300, 200), return_axes=True)
    assert img.shape == (200, 300, 3)
    mid = round(float(ax.to_pixel(0, 5)[1]))
    assert mid == round((ax.top + ax.bottom) / 2)
    hit = colour_mask(img, color)
    assert hit[mid, ax.left + 1 : ax.right].all()  # the whole width of the plot area
    legend_bottom = ax.top + 4 + 7 + 5 + 6
    rows = set(np.nonzero(hit[legend_bottom + 1 :].any(axis=1))[0] + legend_bottom + 1)
    assert rows == {mid, mid + 1}  # a 2-px line and nothing else outside the legend
    assert find_text(img, "flat")  # legend entry
    assert find_text(img, "10", plot.AXIS) and find_text(img, "0", plot.AXIS)  # tick labels


def test_diagonal_markers_nan_gaps_and_hlines():
    color = plot.PALETTE[1]
    series = {"a": ([0], [0]), "b": ([0, 2, 5, 10], [0, 2, np.nan, 10])}
    img, ax = plot.xy_chart(series, xlim=(0, 10), ylim=(0, 10), hlines={"ref": 8.0}, return_axes=True)
    hit = colour_mask(img, color)
    x, y = ax.to_pixel(1, 1)
    assert hit[round(float(y)), round(float(x))]  # on the drawn segment (0,0)-(2,2)
    x, y = ax.to_pixel(6, 6)
    assert not hit[round(float(y)) - 3 : round(float(y)) + 4, round(float(x)) - 3 : round(float(x)) + 4].any()
    x, y = ax.to_pixel(10, 10)
    assert hit[round(float(y)) + 1, round(float(x)) - 1]  # the marker of the isolated last point
    row = round(float(ax.to_pixel(0, 8)[1]))
    dashes = colour_mask(img[row, ax.left + 1 : ax.right], plot.AXIS).mean()
    assert 0.35 < dashes < 0.65
    assert find_text(img, "ref", plot.AXIS)


def test_auto_limits_titles_and_many_points():
    xs = np.arange(5000)
    img, ax = plot.xy_chart({"loss": (xs, 1 / (1 + xs / 300))}, title="Training loss", xlabel="iteration",
                            ylabel="loss", markers=False, return_axes=True)
    assert ax.xlim == pytest.approx((-249.95, 5248.95))
    assert ax.ylim[0] < 1 / (1 + 4999 / 300) and ax.ylim[1] > 1.0
    assert find_text(img, "Training loss") and find_text(img, "iteration") and find_text(img, "5000", plot.AXIS)
    ink = colour_mask(img, plot.BLACK)
    mask = np.rot90(plot.text_mask("loss"))
    assert (sliding_window_view(ink[:, :20], mask.shape) == mask).all(axis=(-2, -1)).any()  # vertical y label
    with pytest.raises(ValueError, match="xs has 3"):
        plot.xy_chart({"bad": ([1, 2, 3], [1, 2])})
    with pytest.raises(ValueError, match="too small"):
        plot.xy_chart({}, size=(60, 40))


def test_legend_moves_away_from_data():
    rising = np.linspace(0, 1, 50)
    img, ax = plot.xy_chart({"up": (rising, rising)}, xlim=(0, 1), ylim=(0, 1), return_axes=True)
    (y, x), = find_text(img, "up")
    assert x < (ax.left + ax.right) / 2 and y < (ax.top + ax.bottom) / 2  # top-left: the data fills the others


# ---------------------------------------------------------------- image grid


def test_image_grid_layout_and_labels():
    tiles = [np.full((4, 5, 3), v, np.uint8) for v in (10, 20, 30)]
    grid = plot.image_grid(tiles, 2, pad=2)
    assert grid.shape == (2 * 4 + 3 * 2, 2 * 5 + 3 * 2, 3)
    assert (grid[2:6, 2:7] == 10).all() and (grid[2:6, 9:14] == 20).all() and (grid[8:12, 2:7] == 30).all()
    assert (grid[8:12, 9:14] == 255).all()  # the empty slot keeps the background
    labelled = plot.image_grid(tiles, 3, labels=["a", "b", "c"], bg=0)
    assert labelled.shape == (4 + 11 + 2 * 2, 3 * 5 + 4 * 2, 3)
    assert find_text(labelled, "b", plot.WHITE) == [(2 + 4 + 2, 2 + 5 + 2)]
    grey = plot.image_grid([np.zeros((3, 3), np.uint8)], 1, pad=0)
    assert grey.shape == (3, 3, 3)
    with pytest.raises(ValueError, match="all images must be"):
        plot.image_grid([tiles[0], np.zeros((5, 5, 3), np.uint8)], 2)


# ---------------------------------------------------------------- determinism and PNG output


def all_charts():
    rng = np.random.default_rng(0)
    image = rng.integers(0, 256, (32, 48, 3), dtype=np.uint8)
    return {
        "heatmap": plot.heatmap(rng.random((6, 9)), title="score"),
        "overlay": plot.level_overlay(image, rng.integers(0, 3, (4, 6))),
        "chart": plot.xy_chart({"full": ([0, 1, 2], [4, 4, 4]), "jano": ([0, 1, 2], [4, 2.5, 1])}, title="tokens",
                               xlabel="step", ylabel="tokens", hlines={"budget": 3}),
        "grid": plot.image_grid([image, image[::-1]], 2, labels=["a", "b"]),
    }


def test_charts_are_deterministic_and_decode_as_png(tmp_path):
    first, second = all_charts(), all_charts()
    for name, img in first.items():
        assert img.dtype == np.uint8 and img.ndim == 3 and img.shape[2] == 3
        assert np.array_equal(img, second[name]), name
        a = write_png(tmp_path / f"{name}.png", img).read_bytes()
        b = write_png(tmp_path / f"{name}_again.png", second[name]).read_bytes()
        assert a == b
        with Image.open(tmp_path / f"{name}.png") as decoded:
            assert decoded.size == (img.shape[1], img.shape[0])
            assert np.array_equal(np.asarray(decoded.convert("RGB")), img)


# ---------------------------------------------------------------- GIF


def read_gif(path):
    frames, durations = [], []
    with Image.open(path) as im:
        loop = im.info.get("loop")
        for i in range(im.n_frames):
            im.seek(i)
            frames.append(np.asarray(im.convert("RGB")))
            durations.append(im.info.get("duration"))
    return frames, durations, loop


def lzw_decode(data, min_code_size=8):
    """Independent strict GIF LZW decoder; returns (indices, number of clear codes seen)."""
    clear, end = 1 << min_code_size, (1 << min_code_size) + 1
    pos, out, clears, table, prev, width = 0, bytearray(), 0, [], None, min_code_size + 1
    while True:
        chunk = int.from_bytes(data[pos // 8 : pos // 8 + 3], "little")
        code = (chunk >> (pos % 8)) & ((1 << width) - 1)
        pos += width
        if code == clear:
            clears, prev, width = clears + 1, None, min_code_size + 1
            table = [bytes([i]) for i in range(clear)] + [b"", b""]
            continue
        if code == end:
            return bytes(out), clears
        assert code <= len(table), f"code {code} beyond table of {len(table)}"
        entry = table[code] if code < len(table) else table[prev] + table[prev][:1]
        if prev is not None:
            assert len(table) < 4096, "table overflow without a clear code"
            table.append(table[prev] + entry[:1])
        out += entry
        prev = code
        if len(table) == 1 << width and width < 12:
            width += 1


def test_gif_round_trip_frames_delay_and_loop(tmp_path):
    rng = np.random.default_rng(1)
    gradient = np.broadcast_to(np.linspace(0, 255, 40).astype(np.uint8)[None, :, None], (24, 40, 3)).copy()
    frames = [gradient, rng.integers(0, 256, (24, 40, 3), dtype=np.uint8), np.zeros((24, 40, 3), np.uint8)]
    path = write_gif(tmp_path / "anim.gif", frames, duration_ms=120, loop=0)
    decoded, durations, loop = read_gif(path)
    assert len(decoded) == 3 and durations == [120, 120, 120] and loop == 0
    for got, frame in zip(decoded, frames):
        indices, palette = quantise_for_gif(frame)
        assert np.array_equal(got, palette[indices])
    assert write_gif(tmp_path / "again.gif", frames, duration_ms=120).read_bytes() == path.read_bytes()
    _, _, loop3 = read_gif(write_gif(tmp_path / "thrice.gif", frames[:1], loop=3))
    assert loop3 == 3


def test_gif_quantisation_is_the_nearest_cube_colour():
    values = np.arange(256, dtype=np.uint8)
    frame = np.stack([values, values[::-1], values], axis=-1)[None]
    indices, palette = quantise_for_gif(frame)
    error = np.abs(palette[indices].astype(int) - frame.astype(int))
    assert error[..., [0, 2]].max() <= 26 and error[..., 1].max() <= 22  # half a step of 51 and 42.5
    pure = np.array([[[255, 0, 0], [0, 255, 0], [255, 255, 255], [0, 0, 0]]], np.uint8)
    idx, pal = quantise_for_gif(pure)
    assert np.array_equal(pal[idx], pure)
    with pytest.raises(ValueError, match="uint8"):
        quantise_for_gif(pure.astype(np.float32))


def test_lzw_table_fills_and_resets(tmp_path):
    rng = np.random.default_rng(2)
    frame = rng.integers(0, 256, (160, 200, 3), dtype=np.uint8)  # ~30k codes: the 4096-entry table fills often
    indices, palette = quantise_for_gif(frame)
    data = _lzw_encode(indices.tobytes())
    decoded, clears = lzw_decode(data)
    assert decoded == indices.tobytes()
    assert clears >= 5  # the initial clear plus one per full table
    runs = np.zeros(5000, np.uint8)  # one long run needs only ~100 codes: no reset
    decoded, clears = lzw_decode(_lzw_encode(runs.tobytes()))
    assert decoded == runs.tobytes() and clears == 1
    (got,), _, _ = read_gif(write_gif(tmp_path / "noise.gif", [frame]))
    assert np.array_equal(got, palette[indices])


def test_gif_rejects_bad_frames(tmp_path):
    with pytest.raises(ValueError, match="at least one frame"):
        write_gif(tmp_path / "x.gif", [])
    with pytest.raises(ValueError, match="frame 1"):
        write_gif(tmp_path / "x.gif", [np.zeros((4, 4, 3), np.uint8), np.zeros((4, 5, 3), np.uint8)])
    with pytest.raises(ValueError, match="frame 0"):
        write_gif(tmp_path / "x.gif", [np.zeros((4, 4), np.uint8)])


def test_every_bench_method_gets_its_own_colour():
    from jano_ref.lab.eval.bench import BENCH_METHODS

    assert len(set(plot.PALETTE)) == len(plot.PALETTE) >= len(BENCH_METHODS)
    series = {f"s{i}": ([0, 1], [i, i]) for i in range(len(BENCH_METHODS))}
    img, ax = plot.xy_chart(series, xlim=(0, 1), ylim=(-1, len(series)), markers=False, return_axes=True)
    for i in range(len(series)):
        row = int(round(float(ax.to_pixel(0.5, i)[1])))
        col = int(round(float(ax.to_pixel(0.5, i)[0])))
        assert tuple(img[row, col]) == plot.PALETTE[i]
