"""The official-model pipeline on small random weights in the official layouts (`jano fake-weights`): the command end
to end, the embedding cache, the errors that must come before any work, and the architectures read back from files.

No official weights exist on this machine; these run the same code on folders that have the official files, key
names, tokenizer files and configs at small shapes.
"""

from __future__ import annotations

import json
import sys

import numpy as np
import pytest
import torch

from jano_ref.lab.cli import main
from jano_ref.lab.fake_weights import write_fake_weights
from jano_ref.pipelines import real
from jano_ref.pipelines.text_cache import EmbeddingCache
from jano_ref.pipelines.weights import WeightsError, resolve

from .helpers import rel_err

pytest.importorskip("tokenizers", reason="the real-model pipeline needs the real extra (pip install -e .[real])")
pytestmark = pytest.mark.usefixtures("one_thread_no_grad")
STEPS = {"full": "3", "jit": "3", "jano": "14"}  # Jano's presets need 14 to plan (warm-up, refresh, cool-down)


@pytest.fixture(scope="module")
def flux_dir(tmp_path_factory):
    folder = tmp_path_factory.mktemp("fake") / "FLUX.1-dev"
    write_fake_weights("flux", folder)
    return folder


@pytest.fixture(scope="module")
def wan_dir(tmp_path_factory):
    folder = tmp_path_factory.mktemp("fake") / "Wan2.1-T2V-1.3B-Diffusers"
    write_fake_weights("wan", folder)
    return folder


@pytest.fixture
def no_default_cache(tmp_path, monkeypatch):
    """Keep the embedding cache of every test in its own folder."""
    monkeypatch.setenv("JANO_CACHE", str(tmp_path / "cache"))
    return tmp_path / "cache" / "text-embeddings"


# ---- the command, end to end ---------------------------------------------------------------------------


@pytest.mark.parametrize("method", ["full", "jano", "jit"])
def test_generate_flux_dev_on_fake_weights(method, flux_dir, tmp_path, capsys, no_default_cache):
    out = tmp_path / "out"
    assert main(["generate", "a cat", "--model", "flux-dev", "--weights", str(flux_dir), "--method", method,
                 "--steps", STEPS[method], "--warmup", "0", "--repeats", "1", "--out", str(out)]) == 0
    printed = capsys.readouterr().out
    summary = json.loads((out / "summary.json").read_text())
    assert summary["random_weights"] is True and "random weights" in printed
    assert (summary["height"], summary["width"], summary["frames"]) == (128, 128, None)  # SMOKE_SIZE
    assert summary["tokens"] == 64 and summary["steps"] == int(STEPS[method]) and summary["text_cache"] == "miss"
    assert f"flux-dev: {STEPS[method]} steps over 64 tokens" in printed and "embedding cache: miss" in printed
    expected = {"full.png"} | ({f"{method}.png"} if method != "full" else set())
    if method == "jano":
        expected.add("levels.png")
        assert "ideal speedup (token FLOPs)" in printed
    if method != "full":
        assert f"{method} (" in printed and "vs full: measured speedup" in printed and "PSNR" in printed
        assert summary["ideal_speedup"] >= 1.0 if method == "jano" else summary["ideal_speedup"] > 0
    assert {p.name for p in out.iterdir()} == expected | {"summary.json"}
    png = (out / "full.png").read_bytes()
    assert png[:8] == b"\x89PNG\r\n\x1a\n" and int.from_bytes(png[16:20], "big") == 128  # width in the IHDR chunk


@pytest.mark.parametrize("method", ["full", "jano", "jit"])
def test_generate_wan_on_fake_weights(method, wan_dir, tmp_path, capsys, no_default_cache):
    av = pytest.importorskip("av")
    out = tmp_path / "out"
    assert main(["generate", "a cat", "--model", "wan2.1-1.3b", "--weights", str(wan_dir), "--method", method,
                 "--steps", STEPS[method], "--frames", "5", "--warmup", "0", "--repeats", "1", "--out", str(out)]) == 0
    printed = capsys.readouterr().out
    summary = json.loads((out / "summary.json").read_text())
    assert summary["random_weights"] is True and "random weights" in printed
    assert (summary["height"], summary["width"], summary["frames"]) == (64, 64, 5)
    assert summary["tokens"] == 2 * 4 * 4 and summary["solver"] == "unipc"
    assert "solver unipc," in printed
    runs = ["full"] + ([method] if method != "full" else [])
    for run in runs:
        assert (out / f"{run}.gif").exists() and (out / f"{run}_frame04.png").exists()
        with av.open(str(out / f"{run}.mp4")) as video:
            frames = [f.to_ndarray(format="rgb24") for f in video.decode(video=0)]
        assert len(frames) == 5 and frames[0].shape == (64, 64, 3)
    if method != "full":
        assert "vs full: measured speedup" in printed


def test_fake_weights_command_says_the_weights_are_random(tmp_path, capsys):
    assert main(["fake-weights", "flux-schnell", str(tmp_path / "schnell")]) == 0
    printed = capsys.readouterr().out
    assert "RANDOM weights" in printed and "--model flux-schnell" in printed
    files = resolve("flux-schnell", tmp_path / "schnell")
    assert files.random_weights and files.dit.name == "flux1-schnell.safetensors"
    assert real.load_transformer(files, device="cpu", dtype=torch.float32).params.guidance_embed is False


# ---- prepare(): the setup and the architecture read back from the files ----------------------------------


def test_prepare_reads_each_architecture_back_from_the_files(flux_dir, wan_dir, tmp_path):
    flux = real.prepare("flux-dev", "a cat", weights=flux_dir, steps=3, text_cache=False)
    p = flux.field.model.params
    assert (p.hidden_size, p.num_heads, p.depth, p.depth_single_blocks, p.axes_dim) == (64, 2, 1, 2, [8, 12, 12])
    assert flux.field.cond.txt.shape == (1, 512, 32) and flux.field.cond.y.shape == (1, 32)  # T5 512, pooled CLIP
    assert flux.field.cond.guidance == 3.5 and flux.text_cache == "off"
    assert flux.decode(flux.noise).shape == (3, 1, 128, 128)
    wan = real.prepare("wan2.1-1.3b", "a cat", weights=wan_dir, steps=3, frames=9, text_cache=False)
    assert wan.field.model.params.num_heads == 2 and wan.files.dit_layout == "diffusers"
    assert wan.field.context.shape == (1, 512, 32) and wan.field.guide_scale == 5.0
    # Wan2.1's UniPC grid (models.md §2.6): 0.999 shifted by 5, ..., then 0
    assert wan.solver == "unipc" and len(wan.sigmas) == 4 and wan.sigmas[-1] == 0
    assert wan.sigmas[0].item() == pytest.approx(5 * 0.999 / (1 + 4 * 0.999), rel=1e-6)
    assert wan.sigmas[1].item() == pytest.approx(5 * 0.666 / (1 + 4 * 0.666), rel=1e-6)
    n = len(__import__("models").PromptTokenizer(wan_dir / "tokenizer", "umt5")(["a cat"]).input_ids[0].nonzero())
    assert wan.field.context[0, n:].abs().sum() == 0 and wan.field.context[0, :n].abs().sum() > 0  # trimmed + zeros
    assert wan.decode(wan.noise).shape == (3, 9, 64, 64)
    with pytest.raises(ValueError, match="multiples of 16"):
        real.prepare("flux-dev", "a cat", weights=flux_dir, height=120, text_cache=False)
    with pytest.raises(ValueError, match="4n \\+ 1"):
        real.prepare("wan2.1-1.3b", "a cat", weights=wan_dir, frames=6, text_cache=False)


def test_wan_original_layout_dit_at_the_top_is_used(wan_dir, tmp_path):
    """The original Wan2.1 repo's DiT (original key names) at the top of the folder wins over transformer/."""
    import shutil

    from safetensors.torch import save_file

    folder = tmp_path / "wan"
    shutil.copytree(wan_dir, folder)
    dit = real.load_transformer(resolve("wan2.1-1.3b", folder), device="cpu", dtype=torch.float32)
    state = {k: v * 2 for k, v in dit.state_dict().items()}
    save_file(state, str(folder / "diffusion_pytorch_model.safetensors"))
    (folder / "config.json").write_text(json.dumps({"num_heads": 2, "dim": 64}))
    files = resolve("wan2.1-1.3b", folder)
    assert files.dit_layout == "original" and files.dit == folder
    loaded = real.load_transformer(files, device="cpu", dtype=torch.float32)
    assert torch.equal(loaded.head.head.weight, state["head.head.weight"])


# ---- the embedding cache ----------------------------------------------------------------------------------


def test_embedding_cache_hit_miss_and_key(wan_dir, tmp_path):
    files = resolve("wan2.1-1.3b", wan_dir)
    spec, device = real.SPECS["wan2.1-1.3b"], torch.device("cpu")
    cache = EmbeddingCache(tmp_path / "cache")
    kwargs = dict(device=device, dtype=torch.float32, cache=cache)
    first, status = real.encode_prompts(files, spec, ["a cat", "blurry"], **kwargs)
    assert status == "miss" and len(list(cache.folder.glob("*.safetensors"))) == 2
    again, status = real.encode_prompts(files, spec, ["a cat", "blurry"], **kwargs)
    assert status == "hit" and all(torch.equal(a["context"], b["context"]) for a, b in zip(first, again))
    _, status = real.encode_prompts(files, spec, ["a dog", "blurry"], **kwargs)
    assert status == "miss"  # a new prompt; "blurry" still hits, so only one file more
    assert len(list(cache.folder.glob("*.safetensors"))) == 3
    # The key holds the maximum length, the dtype and the encoder files: each change misses.
    recipe = real.text_recipe(files, spec, device, torch.float32)
    assert cache.get("a cat", recipe) is not None
    assert cache.get("a cat", dict(recipe, text_length=256)) is None
    assert cache.get("a cat", real.text_recipe(files, spec, device, torch.bfloat16)) is None
    shard = sorted((wan_dir / "text_encoder").glob("*.safetensors"))[0]
    stat = shard.stat()
    try:
        import os

        os.utime(shard, ns=(stat.st_atime_ns, stat.st_mtime_ns + 10**9))  # "re-downloaded" encoder weights
        assert cache.get("a cat", real.text_recipe(files, spec, device, torch.float32)) is None
    finally:
        os.utime(shard, ns=(stat.st_atime_ns, stat.st_mtime_ns))
    # A foreign file under the same name is not used.
    path = cache.path("a cat", recipe)
    other = cache.path("a dog", recipe)
    path.write_bytes(other.read_bytes())
    assert cache.get("a cat", recipe) is None


def test_embedding_cache_batch_equals_single_within_tolerance(wan_dir, flux_dir, tmp_path):
    """Misses are encoded in one batch; an entry made in a batch and one made alone agree to float rounding
    (not bit for bit: other matmul shapes). Tolerance 1e-5 relative for float32."""
    for model, folder, prompts in (("wan2.1-1.3b", wan_dir, ["a cat", "a much longer prompt about a dog"]),
                                   ("flux-dev", flux_dir, ["a cat"])):
        files, spec = resolve(model, folder), real.SPECS[model]
        kwargs = dict(device=torch.device("cpu"), dtype=torch.float32)
        batch, _ = real.encode_prompts(files, spec, prompts, cache=EmbeddingCache(None), **kwargs)
        single, _ = real.encode_prompts(files, spec, prompts[-1:], cache=EmbeddingCache(None), **kwargs)
        for key in batch[-1]:
            assert batch[-1][key].shape == single[0][key].shape
            assert rel_err(batch[-1][key], single[0][key]) < 1e-5


def test_cache_is_used_by_prepare_and_can_be_turned_off(flux_dir, no_default_cache):
    assert real.prepare("flux-dev", "a cat", weights=flux_dir, steps=2).text_cache == "miss"
    assert real.prepare("flux-dev", "a cat", weights=flux_dir, steps=2).text_cache == "hit"
    assert len(list(no_default_cache.glob("*.safetensors"))) == 1
    assert real.prepare("flux-dev", "a cat", weights=flux_dir, steps=2, text_cache=False).text_cache == "off"


# ---- errors before any work ---------------------------------------------------------------------------


def _refused(capsys, *argv) -> str:
    with pytest.raises(SystemExit) as exit_info:
        main(["generate", "a cat", *argv])
    return str(exit_info.value.code)


def test_missing_weights_say_what_to_download(tmp_path, wan_dir, capsys, no_default_cache):
    empty = tmp_path / "empty"
    empty.mkdir()
    message = _refused(capsys, "--model", "flux-dev", "--weights", str(empty))
    assert "flux1-dev.safetensors" in message and "ae.safetensors" in message and "text_encoder_2" in message
    assert "hf download black-forest-labs/FLUX.1-dev" in message and "gated" in message
    message = _refused(capsys, "--model", "flux-dev", "--weights", str(wan_dir))  # a Wan folder for Flux
    assert "flux1-dev.safetensors" in message and "hf download" in message
    original = tmp_path / "Wan2.1-T2V-1.3B"  # the original repo: pickles only
    original.mkdir()
    (original / "Wan2.1_VAE.pth").write_bytes(b"PK")
    (original / "diffusion_pytorch_model.safetensors").write_bytes((wan_dir / "transformer" /
                                                                    "diffusion_pytorch_model.safetensors").read_bytes())
    message = _refused(capsys, "--model", "wan2.1-1.3b", "--weights", str(original))
    assert "pickles" in message and "-Diffusers" in message and "vae" in message
    assert not no_default_cache.exists()  # nothing was encoded


def test_hub_weights_offline_and_not_cached(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "hub"))
    monkeypatch.setattr("huggingface_hub.constants.HF_HUB_CACHE", str(tmp_path / "hub"))
    message = _refused(capsys, "--model", "flux-schnell", "--weights", "black-forest-labs/FLUX.1-schnell",
                       "--offline", "--allow-cpu")
    assert "not in the Hugging Face cache" in message and "HF_HUB_OFFLINE" in message


def test_gpu_sized_job_on_cpu_is_refused_before_download(tmp_path, capsys, monkeypatch):
    import huggingface_hub

    monkeypatch.setattr(huggingface_hub, "snapshot_download",
                        lambda *a, **k: pytest.fail("the job must be refused before any download"))
    message = _refused(capsys, "--model", "flux-dev")  # 1024 x 1024, 50 steps, official Hub repo, CPU
    assert "GPU-sized" in message and "--device cuda" in message and "--allow-cpu" in message
    job = real.estimate("wan2.1-14b", None)
    assert job.parameters["transformer"] > 14e9 and job.tokens == 21 * 45 * 80
    with pytest.raises(real.JobTooLarge):
        real.check_cpu_job(job, "cpu")
    real.check_cpu_job(job, "cpu", allow=True)  # the override
    real.check_cpu_job(job, "cuda")


def test_missing_extra_is_a_clear_error(flux_dir, wan_dir, monkeypatch, capsys, no_default_cache):
    monkeypatch.setitem(sys.modules, "av", None)  # import av now fails
    message = _refused(capsys, "--model", "wan2.1-1.3b", "--weights", str(wan_dir))
    assert "PyAV" in message and ".[real]" in message
    monkeypatch.setitem(sys.modules, "tokenizers", None)
    message = _refused(capsys, "--model", "flux-dev", "--weights", str(flux_dir))
    assert "tokenizers" in message and ".[real]" in message
    assert not no_default_cache.exists()


def test_wrong_flags_are_refused(flux_dir, capsys):
    assert "no guidance input" in _refused(capsys, "--model", "flux-schnell", "--weights", str(flux_dir),
                                           "--guidance", "3")
    message = _refused(capsys, "--model", "flux-schnell", "--weights", str(flux_dir))  # a FLUX.1-dev folder
    assert "flux1-schnell.safetensors" in message and "has flux1-dev.safetensors instead" in message
    assert "jano fake-weights flux-schnell" in message
    assert "for the official models" in _refused(capsys, "--model", "tiny-flux", "--height", "64")
    assert "jano fake-weights" in _refused(capsys, "--model", "flux-dev", "--random-weights")


def test_unknown_folder_or_repo(capsys):
    message = _refused(capsys, "--model", "wan2.1-1.3b", "--weights", "/no/such/folder")
    assert "no such folder" in message and "Wan-AI/Wan2.1-T2V-1.3B-Diffusers" in message
    with pytest.raises(WeightsError):
        resolve("wan2.1-1.3b", "/no/such/folder")


def test_smoke_defaults_only_for_random_weights(flux_dir):
    files = resolve("flux-dev", flux_dir)
    assert real._size(real.SPECS["flux-dev"], files, None, None, None) == (128, 128, None)
    official = files.__class__(**{**files.__dict__, "random_weights": False})
    assert real._size(real.SPECS["flux-dev"], official, None, None, None) == (1024, 1024, None)
    assert np.isclose(real.estimate("flux-dev", files, steps=10).flops, real.estimate("flux-dev", files).flops / 5)

