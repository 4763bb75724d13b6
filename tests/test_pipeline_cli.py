"""The token-space velocity adapters and the `jano` command."""

import json

import torch

from jano_ref.lab.cli import main
from jano_ref.lab.imageio import write_png
from jano_ref.runtime.fields import FluxConditioning, FluxVelocity, WanVelocity
from models.tiny_text import hashed_text_features
from models import build_model
from models.flux import image_ids, pack, text_ids

from .helpers import randomize_, rel_err


def test_flux_velocity_is_the_model_on_packed_tokens():
    model = randomize_(build_model("flux-test"))
    cond = FluxConditioning(txt=torch.randn(1, 5, 40), y=torch.randn(1, 24), guidance=2.0)
    field = FluxVelocity(model, cond, (8, 12))
    latent = torch.randn(2, 4, 8, 12)
    with torch.no_grad():
        v = field(field.to_tokens(latent), torch.tensor(0.7))
        ref = model(pack(latent), image_ids(8, 12), cond.txt.expand(2, -1, -1), text_ids(5),
                    torch.full((2,), 0.7), cond.y.expand(2, -1), torch.full((2,), 2.0))
    assert torch.equal(v, ref)
    assert torch.equal(field.to_latent(field.to_tokens(latent)), latent.unsqueeze(2))


def test_wan_velocity_applies_classifier_free_guidance():
    model = randomize_(build_model("wan-test"))
    ctx, unc = torch.randn(1, 6, 24), torch.randn(1, 3, 24)
    field = WanVelocity(model, ctx, unc, (2, 4, 6), guide_scale=4.0)
    video = torch.randn(1, 4, 2, 4, 6)
    t = torch.tensor([300.0])
    with torch.no_grad():
        v = field.to_latent(field(field.to_tokens(video), torch.tensor(0.3)))
        cond, uncond = model(video, t, ctx), model(video, t, unc)
    assert rel_err(v, uncond + 4.0 * (cond - uncond)) < 1e-6


def test_hashed_text_features_are_deterministic_and_prompt_dependent():
    a = hashed_text_features("a red circle", 4, 8)
    assert torch.equal(a, hashed_text_features("a red circle", 4, 8))
    assert not torch.equal(a, hashed_text_features("a blue circle", 4, 8))


def test_png_writer_produces_a_valid_file(tmp_path):
    import zlib

    import numpy as np

    img = np.arange(2 * 3 * 3, dtype=np.uint8).reshape(2, 3, 3)
    data = write_png(tmp_path / "x.png", img).read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n"
    idat = data[data.index(b"IDAT") + 4 : data.index(b"IEND") - 8]
    raw = zlib.decompress(idat)
    assert raw == b"\x00" + img[0].tobytes() + b"\x00" + img[1].tobytes()


def test_cli_generate_writes_outputs_and_is_reproducible(tmp_path, capsys):
    args = ["--random-weights", "--steps", "12", "--warmup", "1", "--repeats", "3"]
    for run in ("a", "b"):
        assert main(["generate", "a red striped circle on a flat background", *args, "--out", str(tmp_path / run)]) == 0
    summary = json.loads((tmp_path / "a" / "summary.json").read_text())
    assert summary["random_weights"] is True and summary["tokens"] == 256 and summary["method"] == "jano"
    assert summary["ideal_speedup"] >= 1.0 and summary["measured_speedup"] > 0
    assert 0 < summary["ssim"] <= 1 and summary["lpips"] >= 0 and summary["psnr"] > 0
    assert set(summary["caption_agreement"]) == {"full", "jano"}
    for name in ("jano.png", "full.png", "levels.png"):
        assert (tmp_path / "a" / name).read_bytes() == (tmp_path / "b" / name).read_bytes()
    captured = capsys.readouterr()
    assert "random weights" in captured.out and "ideal" in captured.out and "PSNR" in captured.out
    assert main(["generate", "a blue ring on a flat background moving left", "--model", "tiny-wan", "--method", "full",
                 "--steps", "2", "--random-weights", "--out", str(tmp_path / "w")]) == 0
    assert (tmp_path / "w" / "full.gif").exists() and (tmp_path / "w" / "full_frame03.png").exists()
    assert not (tmp_path / "w" / "jano.gif").exists()


def test_flux_velocity_classifier_free_guidance_and_branches():
    model = randomize_(build_model("flux-test", guidance_embed=False))
    cond = FluxConditioning(txt=torch.randn(1, 5, 40), y=torch.randn(1, 24), guidance=None)
    uncond = FluxConditioning(txt=torch.randn(1, 3, 40), y=torch.randn(1, 24), guidance=None)
    guided = FluxVelocity(model, cond, (8, 8), uncond=uncond, guide_scale=3.0)
    assert guided.branches == ("cond", "uncond") and FluxVelocity(model, cond, (8, 8)).branches == ("cond",)
    x, s = torch.randn(1, 16, 16), torch.tensor(0.5)
    with torch.no_grad():
        v = guided(x, s)
        c, u = FluxVelocity(model, cond, (8, 8))(x, s), FluxVelocity(model, uncond, (8, 8))(x, s)
    assert rel_err(v, u + 3.0 * (c - u)) < 1e-6
