"""Checkpoint loading: official key sets, round trips (single / sharded / prefixed / hub cache),
and every error message. CPU only, no network; tiny checkpoints are written to tmp_path."""

from __future__ import annotations

import ast
import json
from pathlib import Path

import huggingface_hub
import pytest
import torch
from huggingface_hub import constants as hub_constants
from safetensors.torch import save_file

import models.loading as loading
from models import CheckpointError, build_model, load_checkpoint, read_state_dict
from models.flux import image_ids, text_ids
from models.loading import diagnose, identify_checkpoint, read_metadata

KEYS_DIR = Path(__file__).parent / "data" / "checkpoint-keys"
OFFICIAL = {  # preset -> official key->shape dump (copied from the real checkpoints' headers)
    "flux-dev": "flux1-dev", "flux-schnell": "flux1-schnell",
    "wan2.1-1.3b": "wan2.1-t2v-1.3b", "wan2.1-14b": "wan2.1-t2v-14b",
}


def official_shapes(preset: str) -> dict[str, tuple[int, ...]]:
    data = json.loads((KEYS_DIR / f"{OFFICIAL[preset]}.transformer.json").read_text())
    return {k: tuple(v) for k, v in data.items()}


def meta_shapes(name: str, **overrides) -> dict[str, tuple[int, ...]]:
    return {k: tuple(v.shape) for k, v in build_model(name, device="meta", **overrides).state_dict().items()}


def tiny(name: str, seed: int = 0, **overrides) -> torch.nn.Module:
    torch.manual_seed(seed)
    return build_model(name, **overrides)


@torch.no_grad()
def run(model: torch.nn.Module, seed: int = 1) -> torch.Tensor:
    """A forward pass with fixed random inputs (flux-test or wan-test sizes)."""
    g = torch.Generator().manual_seed(seed)
    if model.params.__class__.__name__ == "FluxParams":
        img, txt = torch.randn(2, 24, 16, generator=g), torch.randn(2, 7, 40, generator=g)
        y = torch.randn(2, 24, generator=g)
        return model(img, image_ids(8, 12), txt, text_ids(7), torch.tensor([0.3, 0.9]), y, torch.full((2,), 3.5))
    x, context = torch.randn(1, 4, 2, 4, 4, generator=g), torch.randn(1, 5, 24, generator=g)
    return model(x, torch.tensor([500.0]), context)


def state(model: torch.nn.Module, prefix: str = "") -> dict[str, torch.Tensor]:
    return {prefix + k: v.detach().clone().contiguous() for k, v in model.state_dict().items()}


def save_sharded(sd: dict[str, torch.Tensor], folder: Path, shards: int = 3, stem: str = "model") -> Path:
    """HF-style shards + index: {"metadata": {"total_size"}, "weight_map": {key: shard file}}."""
    folder.mkdir(parents=True, exist_ok=True)
    keys, weight_map = list(sd), {}
    for i in range(shards):
        name = f"{stem}-{i + 1:05d}-of-{shards:05d}.safetensors"
        part = keys[i::shards]
        save_file({k: sd[k] for k in part}, folder / name)
        weight_map.update(dict.fromkeys(part, name))
    index = folder / f"{stem}.safetensors.index.json"
    total = sum(t.numel() * t.element_size() for t in sd.values())
    index.write_text(json.dumps({"metadata": {"total_size": total}, "weight_map": weight_map}))
    return index


def load_error(model, source, **kwargs) -> str:
    with pytest.raises(CheckpointError) as info:
        load_checkpoint(model, source, **kwargs)
    return str(info.value)


# ---- official key sets -----------------------------------------------------------------------------


@pytest.mark.parametrize("preset", sorted(OFFICIAL))
def test_presets_have_the_official_keys_and_shapes(preset):
    official, ours = official_shapes(preset), meta_shapes(preset)
    assert sorted(ours) == sorted(official)
    assert {k: v for k, v in ours.items() if official[k] != v} == {}
    assert identify_checkpoint(official) == preset


def test_official_tensor_counts():
    counts = {p: len(official_shapes(p)) for p in OFFICIAL}
    assert counts == {"flux-dev": 780, "flux-schnell": 776, "wan2.1-1.3b": 825, "wan2.1-14b": 1095}


# ---- round trips -----------------------------------------------------------------------------------


def write_checkpoint(sd: dict[str, torch.Tensor], tmp_path: Path, layout: str) -> Path:
    if layout == "file":
        save_file(sd, tmp_path / "model.safetensors")
        return tmp_path / "model.safetensors"
    if layout == "prefixed":
        save_file({"model.diffusion_model." + k: v for k, v in sd.items()}, tmp_path / "comfy.safetensors")
        return tmp_path / "comfy.safetensors"
    if layout == "folder":
        save_file(sd, tmp_path / "only.safetensors")
        return tmp_path
    if layout == "sharded-index":
        return save_sharded(sd, tmp_path / "shards", shards=3)
    assert layout == "sharded-folder"
    save_sharded(sd, tmp_path / "shards", shards=2)
    return tmp_path / "shards"


@pytest.mark.parametrize("layout", ["file", "prefixed", "folder", "sharded-index", "sharded-folder"])
@pytest.mark.parametrize("name", ["flux-test", "wan-test"])
def test_round_trip_gives_bit_identical_outputs(name, layout, tmp_path):
    original = tiny(name)
    source = write_checkpoint(state(original), tmp_path, layout)

    model = build_model(name, device="meta")
    assert load_checkpoint(model, source) is model
    assert not model.training
    tensors = list(model.parameters()) + list(model.buffers())
    assert all(t.device == torch.device("cpu") for t in tensors)
    for k, v in original.state_dict().items():
        assert torch.equal(model.state_dict()[k], v), k
    assert torch.equal(run(model), run(original))


def test_read_state_dict_and_metadata_agree(tmp_path):
    sd = state(tiny("wan-test"))
    index = save_sharded(sd, tmp_path, shards=3)
    meta = read_metadata(index)
    assert meta == {k: (tuple(v.shape), "F32") for k, v in sd.items()}
    loaded = read_state_dict(index)
    assert loaded.keys() == sd.keys() and all(torch.equal(loaded[k], sd[k]) for k in sd)


def test_dtype_follows_the_model_unless_given(tmp_path):
    save_file({k: v.bfloat16() for k, v in state(tiny("flux-test")).items()}, tmp_path / "bf16.safetensors")
    kept = load_checkpoint(build_model("flux-test", device="meta", dtype=torch.bfloat16), tmp_path / "bf16.safetensors")
    assert {p.dtype for p in kept.parameters()} == {torch.bfloat16}
    upcast = load_checkpoint(build_model("flux-test", device="meta"), tmp_path / "bf16.safetensors")
    assert {p.dtype for p in upcast.parameters()} == {torch.float32}  # the model was built fp32
    cast = load_checkpoint(build_model("flux-test", device="meta"), tmp_path / "bf16.safetensors", dtype=torch.float16)
    assert {p.dtype for p in cast.parameters()} == {torch.float16}
    assert torch.equal(upcast.img_in.weight, kept.img_in.weight.float())


def test_headers_are_checked_before_any_tensor_is_read(tmp_path, monkeypatch):
    save_file(state(tiny("wan-test")), tmp_path / "wan.safetensors")

    def no_data(*args, **kwargs):
        raise AssertionError("tensor data was opened before the key/shape check")

    monkeypatch.setattr(loading, "safe_open", no_data)
    message = load_error(build_model("flux-test", device="meta"), tmp_path / "wan.safetensors")
    assert "wan-test" in message


def test_strict_false_skips_unexpected_and_tolerates_missing_on_a_real_model(tmp_path):
    sd = state(tiny("flux-test", seed=3))
    sd.pop("img_in.bias")
    sd["extra.weight"] = torch.zeros(3)
    save_file(sd, tmp_path / "partial.safetensors")
    model = tiny("flux-test", seed=4)
    kept_bias = model.img_in.bias.clone()
    load_checkpoint(model, tmp_path / "partial.safetensors", strict=False)
    assert torch.equal(model.img_in.weight, sd["img_in.weight"]) and torch.equal(model.img_in.bias, kept_bias)
    assert "extra.weight" not in model.state_dict()


def test_strict_false_on_meta_refuses_to_leave_meta_tensors(tmp_path):
    sd = state(tiny("flux-test"))
    del sd["img_in.bias"], sd["txt_in.bias"]
    save_file(sd, tmp_path / "partial.safetensors")
    message = load_error(build_model("flux-test", device="meta"), tmp_path / "partial.safetensors", strict=False)
    assert "2 tensor(s) are still on the meta device" in message
    assert "img_in.bias" in message and "txt_in.bias" in message


def test_non_persistent_meta_buffer_is_reported(tmp_path):
    save_file(state(tiny("wan-test")), tmp_path / "wan.safetensors")
    model = build_model("wan-test", device="meta")
    model.register_buffer("freqs_table", torch.empty(4, device="meta"), persistent=False)
    message = load_error(model, tmp_path / "wan.safetensors")
    assert "still on the meta device" in message and "freqs_table" in message


# ---- hub cache -----------------------------------------------------------------------------------------

REV_A, REV_B = "a" * 40, "b" * 40


def fake_cache(cache: Path, repo_id: str, files: dict[str, dict], revision: str, ref: str | None = "main") -> Path:
    """The huggingface_hub cache layout: models--owner--name/snapshots/<rev>/<file> and refs/<ref>."""
    root = cache / f"models--{repo_id.replace('/', '--')}"
    snapshot = root / "snapshots" / revision
    for filename, sd in files.items():
        (snapshot / filename).parent.mkdir(parents=True, exist_ok=True)
        save_file(sd, snapshot / filename)
    if ref:
        (root / "refs").mkdir(exist_ok=True)
        (root / "refs" / ref).write_text(revision)
    return snapshot


@pytest.fixture
def offline(monkeypatch):
    """HF_HUB_OFFLINE=1 as huggingface_hub sees it (it reads the variable at import)."""
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setattr(hub_constants, "HF_HUB_OFFLINE", True)


@pytest.fixture
def spy(monkeypatch):
    """Record the keyword arguments our loader passes to hf_hub_download / snapshot_download."""
    calls = []
    for fn in ("hf_hub_download", "snapshot_download"):
        real = getattr(huggingface_hub, fn)

        def wrapper(*args, _real=real, _fn=fn, **kwargs):
            calls.append((_fn, args, kwargs))
            return _real(*args, **kwargs)

        monkeypatch.setattr(huggingface_hub, fn, wrapper)
    return calls


def test_hub_repo_id_local_files_only_and_revision_pinning(tmp_path, spy):
    repo = "black-forest-labs/FLUX.1-dev"
    sd_a, sd_b = state(tiny("flux-test", seed=1)), state(tiny("flux-test", seed=2))
    fake_cache(tmp_path, repo, {"flux1-dev.safetensors": sd_a}, REV_A)
    fake_cache(tmp_path, repo, {"flux1-dev.safetensors": sd_b}, REV_B, ref=None)

    model = load_checkpoint(build_model("flux-test", device="meta"), repo, cache_dir=tmp_path, local_files_only=True)
    assert torch.equal(model.img_in.weight, sd_a["img_in.weight"])
    pinned = load_checkpoint(build_model("flux-test", device="meta"), repo, cache_dir=tmp_path,
                             local_files_only=True, revision=REV_B)
    assert torch.equal(pinned.img_in.weight, sd_b["img_in.weight"])
    fn, args, kwargs = spy[-1]
    assert (fn, args) == ("hf_hub_download", (repo, "flux1-dev.safetensors"))
    assert kwargs["revision"] == REV_B and kwargs["cache_dir"] == tmp_path and kwargs["local_files_only"] is True


def test_hub_sharded_repo_offline(tmp_path, offline, spy):
    repo = "Wan-AI/Wan2.1-T2V-14B"
    original = tiny("wan-test")
    snapshot = tmp_path / f"models--{repo.replace('/', '--')}" / "snapshots" / REV_A
    save_sharded(state(original), snapshot, shards=3, stem="diffusion_pytorch_model")
    (snapshot.parents[1] / "refs").mkdir()
    (snapshot.parents[1] / "refs" / "main").write_text(REV_A)

    model = load_checkpoint(build_model("wan-test", device="meta"), repo, cache_dir=tmp_path)
    assert torch.equal(run(model), run(original))
    fetched = [args[1] for fn, args, _ in spy]
    assert fetched == ["diffusion_pytorch_model.safetensors.index.json"] + [
        f"diffusion_pytorch_model-{i:05d}-of-00003.safetensors" for i in (1, 2, 3)
    ]
    assert all(kwargs["local_files_only"] is False for _, _, kwargs in spy)  # offline comes from huggingface_hub


def test_hub_unknown_repo_uses_snapshot_and_filename(tmp_path, offline, spy):
    original = tiny("flux-test")
    fake_cache(tmp_path, "someone/tiny-flux", {"weights.safetensors": state(original)}, REV_A)
    model = load_checkpoint(build_model("flux-test", device="meta"), "someone/tiny-flux", cache_dir=tmp_path)
    assert torch.equal(run(model), run(original))
    fn, args, kwargs = spy[-1]
    assert fn == "snapshot_download" and set(kwargs["allow_patterns"]) == {"*.safetensors", "*.safetensors.index.json"}

    sd = read_state_dict("someone/tiny-flux", filename="weights.safetensors", cache_dir=tmp_path)
    assert torch.equal(sd["img_in.weight"], original.img_in.weight)


@pytest.mark.parametrize("repo", ["black-forest-labs/FLUX.1-dev", "someone/unknown-model"])
def test_hub_offline_with_nothing_cached_says_how_to_fix(tmp_path, offline, repo):
    message = load_error(build_model("flux-test", device="meta"), repo, cache_dir=tmp_path)
    assert repo in message and "not in the local Hugging Face cache" in message and str(tmp_path) in message
    assert "download it once online" in message and "pass a local path" in message
    if repo.startswith("black-forest-labs"):
        assert "flux1-dev.safetensors" in message


def test_hub_local_files_only_nothing_cached(tmp_path):
    message = load_error(build_model("wan-test", device="meta"), "Wan-AI/Wan2.1-T2V-1.3B", cache_dir=tmp_path,
                         local_files_only=True, revision=REV_B)
    assert "diffusion_pytorch_model.safetensors" in message and REV_B in message and "local path" in message


def test_corrupt_file_in_hub_cache_suggests_deleting_it(tmp_path):
    snapshot = fake_cache(tmp_path, "black-forest-labs/FLUX.1-schnell", {"flux1-schnell.safetensors": {}}, REV_A)
    (snapshot / "flux1-schnell.safetensors").write_bytes(b"\x00" * 3)
    message = load_error(build_model("flux-test", device="meta"), "black-forest-labs/FLUX.1-schnell",
                         cache_dir=tmp_path, local_files_only=True)
    assert "truncated" in message and "delete the cached file" in message and "force_download=True" in message


# ---- key / shape errors ----------------------------------------------------------------------------------


def test_missing_keys(tmp_path):
    sd = state(tiny("flux-test"))
    dropped = [k for k in sd if k.startswith("single_blocks.2.")]  # 8 tensors
    for k in dropped:
        del sd[k]
    save_file(sd, tmp_path / "m.safetensors")
    message = load_error(build_model("flux-test", device="meta"), tmp_path / "m.safetensors")
    assert f"{len(dropped)} missing key(s)" in message and len(dropped) == 8
    assert ", ".join(dropped[:5]) + ", ... (3 more)" in message
    assert "unexpected key(s)" not in message and "shape mismatch(es)" not in message
    assert "Fix:" in message and "strict=False" in message


def test_unexpected_keys(tmp_path):
    sd = state(tiny("wan-test"))
    sd.update({f"blocks.9.extra.{i}": torch.zeros(2) for i in range(3)})
    save_file(sd, tmp_path / "u.safetensors")
    message = load_error(build_model("wan-test", device="meta"), tmp_path / "u.safetensors")
    assert "3 unexpected key(s)" in message
    assert all(f"blocks.9.extra.{i}" in message for i in range(3)) and "more)" not in message
    assert "missing key(s)" not in message


def test_shape_mismatches(tmp_path):
    save_file(state(tiny("flux-test", mlp_ratio=2.0)), tmp_path / "s.safetensors")
    expected, found = meta_shapes("flux-test"), meta_shapes("flux-test", mlp_ratio=2.0)
    wrong = [k for k in expected if expected[k] != found[k]]
    message = load_error(build_model("flux-test", device="meta"), tmp_path / "s.safetensors")
    assert f"{len(wrong)} shape mismatch(es)" in message and len(wrong) == 2 * 2 * 3 + 3 * 3
    assert "double_blocks.0.img_mlp.0.weight: expected [256, 64], found [128, 64]" in message
    assert "missing key(s)" not in message and "unexpected key(s)" not in message
    # strict=False never excuses a shape mismatch
    lenient = load_error(build_model("flux-test", device="meta"), tmp_path / "s.safetensors", strict=False)
    assert f"{len(wrong)} shape mismatch(es)" in lenient


def test_all_three_categories_in_one_message(tmp_path):
    sd = state(tiny("flux-test"))
    del sd["txt_in.weight"]
    sd["bogus"] = torch.zeros(1)
    sd["img_in.bias"] = torch.zeros(7)
    save_file(sd, tmp_path / "all.safetensors")
    message = load_error(build_model("flux-test", device="meta"), tmp_path / "all.safetensors")
    assert "1 missing key(s) (in the model, not in the checkpoint): txt_in.weight" in message
    assert "1 unexpected key(s) (in the checkpoint, not in the model): bogus" in message
    assert "1 shape mismatch(es): img_in.bias: expected [64], found [7]" in message


# ---- wrong model ------------------------------------------------------------------------------------------


@pytest.mark.parametrize(("ckpt", "into"), [("wan-test", "flux-test"), ("flux-test", "wan-test")])
def test_wrong_family_is_identified(ckpt, into, tmp_path):
    save_file(state(tiny(ckpt)), tmp_path / "x.safetensors")
    message = load_error(build_model(into, device="meta"), tmp_path / "x.safetensors")
    kind = "Flux" if into == "flux-test" else "WanModel"
    assert f"this checkpoint is {ckpt}, but the model is {into} (a {kind}); build it with build_model('{ckpt}')" \
        in message


def test_checkpoint_for_a_preset_into_a_custom_config(tmp_path):
    save_file(state(tiny("flux-test")), tmp_path / "dev.safetensors")
    message = load_error(build_model("flux-test", device="meta", guidance_embed=False), tmp_path / "dev.safetensors")
    assert "this checkpoint is flux-test, but the model is a Flux whose config is no preset" in message
    assert "4 unexpected key(s)" in message and "guidance_in.in_layer.weight" in message


def test_flux_dev_into_schnell_and_back():
    dev, schnell = official_shapes("flux-dev"), official_shapes("flux-schnell")
    message = diagnose(schnell, dev, model_kind="Flux")
    assert "this checkpoint is flux-dev, but the model is flux-schnell (a Flux); " \
        "build it with build_model('flux-dev')" in message
    assert "4 unexpected key(s)" in message and "guidance_in.out_layer.bias" in message and "missing" not in message
    message = diagnose(dev, schnell, model_kind="Flux")
    assert "this checkpoint is flux-schnell, but the model is flux-dev" in message
    assert "4 missing key(s)" in message and "guidance_in.in_layer.weight" in message


def test_wan_13b_into_14b_and_back():
    small, big = official_shapes("wan2.1-1.3b"), official_shapes("wan2.1-14b")
    message = diagnose(big, small, model_kind="WanModel")
    assert "this checkpoint is wan2.1-1.3b, but the model is wan2.1-14b" in message
    assert f"{len(big) - len(small)} missing key(s)" in message and "blocks.30.modulation" in message
    wrong = sum(big[k] != v for k, v in small.items())
    assert f"{wrong} shape mismatch(es)" in message and wrong == 824
    assert "patch_embedding.weight: expected [5120, 16, 1, 2, 2], found [1536, 16, 1, 2, 2]" in message
    assert "build it with build_model('wan2.1-14b')" in diagnose(small, big)


def test_full_size_wan_into_flux():
    message = diagnose(official_shapes("flux-dev"), official_shapes("wan2.1-1.3b"), model_kind="Flux")
    assert "this checkpoint is wan2.1-1.3b, but the model is flux-dev (a Flux); " \
        "build it with build_model('wan2.1-1.3b')" in message
    assert "780 missing key(s)" in message and "825 unexpected key(s)" in message


def test_unknown_checkpoint_falls_back_to_the_generic_report():
    found = dict(official_shapes("flux-dev"), **{"img_in.weight": (3072, 32)})
    assert identify_checkpoint(found) is None
    message = diagnose(official_shapes("flux-dev"), found)
    assert "this checkpoint is" not in message and "1 shape mismatch(es)" in message and "Fix:" in message
    assert diagnose(official_shapes("flux-dev"), official_shapes("flux-dev")) is None


@pytest.mark.parametrize("family", ["flux", "wan"])
def test_diffusers_layout_is_recognised(family, tmp_path):
    diffusers = pytest.importorskip("diffusers")
    if family == "flux":
        ref = diffusers.FluxTransformer2DModel(
            num_layers=1, num_single_layers=1, attention_head_dim=32, num_attention_heads=2, in_channels=16,
            joint_attention_dim=40, pooled_projection_dim=24, guidance_embeds=True, axes_dims_rope=(8, 12, 12))
        into, original = "flux-test", "flux1-dev.safetensors"
    else:
        ref = diffusers.WanTransformer3DModel(num_attention_heads=2, attention_head_dim=48, in_channels=4,
                                              out_channels=4, text_dim=24, freq_dim=32, ffn_dim=160, num_layers=1)
        into, original = "wan-test", "Wan-AI/Wan2.1-T2V-1.3B"
    save_file(state(ref), tmp_path / "diffusion_pytorch_model.safetensors")
    message = load_error(build_model(into, device="meta"), tmp_path)
    assert f"diffusers-layout weights (diffusers-{family})" in message and original in message


# ---- unreadable files -----------------------------------------------------------------------------------


@pytest.fixture
def valid_file(tmp_path) -> Path:
    save_file(state(tiny("flux-test")), tmp_path / "ok.safetensors")
    return tmp_path / "ok.safetensors"


def test_truncated_file(valid_file):
    data = valid_file.read_bytes()
    valid_file.write_bytes(data[: len(data) - 100])
    message = load_error(build_model("flux-test", device="meta"), valid_file)
    assert str(valid_file) in message and "truncated" in message and "re-download" in message
    assert "only" in message and "bytes of data" in message


def test_truncated_header(valid_file):
    valid_file.write_bytes(valid_file.read_bytes()[:200])
    message = load_error(build_model("flux-test", device="meta"), valid_file)
    assert "header length field" in message and "truncated" in message and "re-download" in message


@pytest.mark.parametrize("content", [bytes(range(256)) * 4, b"hello, I am a text file\n" * 20, b"\x01\x00"])
def test_not_a_safetensors_file(content, tmp_path):
    (tmp_path / "junk.safetensors").write_bytes(content)
    message = load_error(build_model("flux-test", device="meta"), tmp_path / "junk.safetensors")
    assert "junk.safetensors" in message and "not a safetensors file" in message and "re-download" in message


def test_invalid_json_header(tmp_path):
    header = b"{not json at all}"
    (tmp_path / "bad.safetensors").write_bytes(len(header).to_bytes(8, "little") + header)
    message = load_error(build_model("flux-test", device="meta"), tmp_path / "bad.safetensors")
    assert "header is not valid safetensors JSON" in message and "bad.safetensors" in message


def test_zip_pickle_disguised_as_safetensors(tmp_path):
    (tmp_path / "model.safetensors").write_bytes(b"PK\x03\x04" + b"\x00" * 64)
    message = load_error(build_model("flux-test", device="meta"), tmp_path / "model.safetensors")
    assert "torch.save pickle" in message and "never unpickle" in message


@pytest.mark.parametrize("suffix", [".pt", ".pth", ".bin", ".ckpt"])
def test_pickle_checkpoints_are_refused(suffix, tmp_path, monkeypatch):
    monkeypatch.setattr(torch, "load", lambda *a, **k: pytest.fail("torch.load was called"))
    path = tmp_path / f"model{suffix}"
    path.write_bytes(b"\x80\x04K\x01.")  # a pickle of the int 1
    message = load_error(build_model("flux-test", device="meta"), path)
    assert f"model{suffix}" in message and "never unpickle" in message and "save_file" in message


def test_folder_errors(tmp_path):
    model = build_model("flux-test", device="meta")
    (tmp_path / "empty").mkdir()
    assert "has no *.safetensors file" in load_error(model, tmp_path / "empty")
    (tmp_path / "pickles").mkdir()
    (tmp_path / "pickles" / "model.pth").write_bytes(b"")
    message = load_error(model, tmp_path / "pickles")
    assert "only pickle files: model.pth" in message and "never unpickle" in message
    save_file({"a": torch.zeros(1)}, tmp_path / "a.safetensors")
    save_file({"b": torch.zeros(1)}, tmp_path / "ae.safetensors")
    message = load_error(model, tmp_path)
    assert "several checkpoints (a.safetensors, ae.safetensors)" in message and "filename=" in message


def test_missing_shard_and_inconsistent_index(tmp_path):
    index = save_sharded(state(tiny("wan-test")), tmp_path, shards=3)
    model = build_model("wan-test", device="meta")
    (tmp_path / "model-00002-of-00003.safetensors").unlink()
    message = load_error(model, index)
    assert "lists shard model-00002-of-00003.safetensors, which is missing" in message
    data = json.loads(index.read_text())
    data["weight_map"] = {k: "model-00001-of-00003.safetensors" for k in data["weight_map"]}
    index.write_text(json.dumps(data))
    assert "different versions" in load_error(model, index)
    index.write_text("{}")
    assert "not a valid safetensors index" in load_error(model, index)


def test_nonexistent_source():
    message = load_error(build_model("flux-test", device="meta"), "/no/such/file.safetensors")
    assert "no such file or folder" in message and "repo id" in message


def test_library_never_unpickles():
    tree = ast.parse(Path(loading.__file__).read_text())
    imported = {a.name for n in ast.walk(tree) if isinstance(n, (ast.Import, ast.ImportFrom)) for a in n.names}
    modules = {n.module for n in ast.walk(tree) if isinstance(n, ast.ImportFrom)}
    assert not ({"pickle", "dill", "diffusers"} & (imported | modules))
    calls = {ast.unparse(n.func) for n in ast.walk(tree) if isinstance(n, ast.Call)}
    assert not {c for c in calls if c.endswith(("torch.load", "pickle.load", "pickle.loads"))}
