"""The T5 / umT5 / CLIP text encoders against transformers 5.25.0, and their checkpoint key sets.

Parity: small random fp32 models with the same weights must agree with ``T5EncoderModel``,
``UMT5EncoderModel`` and ``CLIPTextModel`` to a relative error of 1e-5, with and without a padding mask.
The computation is the same up to the order of float32 operations (we measured ~2e-7 for T5, 0 for CLIP);
1e-5 leaves room for other BLAS builds while any wrong term (scale, bias bucket, mask, norm) costs > 1e-2.

Key manifests (tests/data/checkpoint-keys/{t5-v1_1-xxl.encoder, umt5-xxl.encoder,
clip-vit-large-patch14.text}.json) were made by ``reference_shapes`` below: transformers 5.25.0's reference
class built on the meta device with the published full-size config, its ``state_dict()`` written as
{key: shape} with ``json.dumps(..., indent=0)`` (``python -m tests.test_text_encoders`` rewrites them).
CLIPTextModel's keys get the ``text_model.`` prefix back that transformers 5 strips on load: the files
(FLUX.1's text_encoder/, openai/clip-vit-large-patch14, written by transformers 4) keep it.
"""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import pytest
import torch
from safetensors.torch import save_file

from models import CheckpointError, load_checkpoint
from models.clip import CLIP_PRESETS, CLIPTextEncoder
from models.t5 import T5_PRESETS, T5Encoder, T5Params, relative_position_buckets

from .helpers import randomize_, rel_err

transformers = pytest.importorskip("transformers", reason="parity tests need the test extra (pip install -e .[test])")
pytestmark = pytest.mark.usefixtures("one_thread_no_grad")  # tiny models: threads only contend on a busy CPU

TOL = 1e-5
KEYS_DIR = Path(__file__).parent / "data" / "checkpoint-keys"
MANIFESTS = {  # preset -> manifest file stem
    "t5-v1_1-xxl": "t5-v1_1-xxl.encoder",
    "umt5-xxl": "umt5-xxl.encoder",
    "clip-vit-large-patch14": "clip-vit-large-patch14.text",
}
CLIP_PREFIX = "text_model."


def build(name: str, device=None, **overrides) -> torch.nn.Module:
    if name in T5_PRESETS:
        cls, params = T5Encoder, dataclasses.replace(T5_PRESETS[name], **overrides)
    else:
        cls, params = CLIPTextEncoder, dataclasses.replace(CLIP_PRESETS[name], **overrides)
    with torch.device(device or "cpu"):
        return cls(params).eval()


def reference_model(p, device=None) -> torch.nn.Module:
    """transformers' class with the hyper-parameters ``p`` of one of our encoders (T5Params or CLIPTextParams)."""
    if isinstance(p, T5Params):
        config_cls, cls = ((transformers.UMT5Config, transformers.UMT5EncoderModel) if p.per_layer_position_bias
                           else (transformers.T5Config, transformers.T5EncoderModel))
        config = config_cls(
            vocab_size=p.vocab_size, d_model=p.d_model, d_kv=p.d_kv, d_ff=p.d_ff, num_layers=p.num_layers,
            num_heads=p.num_heads, relative_attention_num_buckets=p.relative_attention_num_buckets,
            relative_attention_max_distance=p.relative_attention_max_distance, feed_forward_proj=p.feed_forward_proj,
            layer_norm_epsilon=p.layer_norm_epsilon, dropout_rate=0.0,
        )
    else:
        cls, config = transformers.CLIPTextModel, transformers.CLIPTextConfig(
            vocab_size=p.vocab_size, hidden_size=p.hidden_size, intermediate_size=p.intermediate_size,
            num_hidden_layers=p.num_hidden_layers, num_attention_heads=p.num_attention_heads,
            max_position_embeddings=p.max_position_embeddings, hidden_act=p.hidden_act, layer_norm_eps=p.layer_norm_eps,
            eos_token_id=p.eos_token_id, bos_token_id=0, pad_token_id=1,
        )
    with torch.device(device or "cpu"):
        return cls(config).eval()


def reference_shapes(name: str) -> dict[str, list[int]]:
    """{key: shape} of transformers' full-size model (published config), keyed as in the published files."""
    prefix = CLIP_PREFIX if name in CLIP_PRESETS else ""
    model = reference_model(build(name, device="meta").params, device="meta")
    return {prefix + k: list(v.shape) for k, v in model.state_dict().items()}


def our_shapes(name: str) -> dict[str, list[int]]:
    return {k: list(v.shape) for k, v in build(name, device="meta").state_dict().items()}


def manifest(name: str) -> dict[str, list[int]]:
    return json.loads((KEYS_DIR / f"{MANIFESTS[name]}.json").read_text())


def with_reference_weights(ours: torch.nn.Module) -> torch.nn.Module:
    """transformers' model holding our weights (CLIPTextModel's state_dict has no text_model. prefix)."""
    ref = reference_model(ours.params)
    ref.load_state_dict({k.removeprefix(CLIP_PREFIX): v for k, v in ours.state_dict().items()}, strict=True)
    return ref


def state(model: torch.nn.Module) -> dict[str, torch.Tensor]:
    return {k: v.detach().clone().contiguous() for k, v in model.state_dict().items()}


# ---- T5 / umT5 -----------------------------------------------------------------------------------


def t5_inputs(vocab: int, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """Two prompts of 40 tokens (twice the test max_distance, so log-spaced and clamped buckets are used);
    the second is padded after 25 tokens."""
    g = torch.Generator().manual_seed(seed)
    ids = torch.randint(2, vocab, (2, 40), generator=g)
    mask = torch.ones(2, 40, dtype=torch.long)
    ids[1, 25:], mask[1, 25:] = 0, 0
    return ids, mask


@pytest.mark.parametrize("masked", [False, True], ids=["no-mask", "padding-mask"])
@pytest.mark.parametrize("name", ["t5-test", "umt5-test"])
def test_t5_matches_transformers(name, masked):
    torch.manual_seed(0)
    ours = randomize_(build(name), seed=1)
    ref = with_reference_weights(ours)
    ids, mask = t5_inputs(ours.params.vocab_size)
    mask = mask if masked else None
    with torch.no_grad():
        out, expected = ours(ids, mask), ref(input_ids=ids, attention_mask=mask).last_hidden_state
    assert out.shape == expected.shape == (2, 40, ours.params.d_model)
    assert rel_err(out, expected) <= TOL


@pytest.mark.parametrize("name", ["t5-test", "umt5-test"])
def test_t5_padding_mask_changes_the_real_tokens(name):
    """Guards the masked parity test: the mask must matter for the unpadded rows."""
    ours = randomize_(build(name), seed=2)
    ids, mask = t5_inputs(ours.params.vocab_size, seed=3)
    with torch.no_grad():
        masked, unmasked = ours(ids, mask), ours(ids)
    # nothing padded in prompt 0: the same up to rounding (the mask makes the attention bias [B, ...] instead of a
    # broadcast [1, ...], which attention may read with another kernel)
    assert rel_err(masked[0], unmasked[0]) <= 1e-6
    assert rel_err(masked[1, :25], unmasked[1, :25]) > 1e-3


def test_position_bias_per_block_only_in_umt5():
    t5, umt5 = build("t5-test"), build("umt5-test")
    has_bias = [[b.layer[0].SelfAttention.has_relative_attention_bias for b in m.encoder.block] for m in (t5, umt5)]
    assert has_bias == [[True, False, False], [True, True, True]]


@pytest.mark.parametrize("buckets,max_distance", [(32, 128), (8, 20)])
def test_relative_position_buckets_match_transformers(buckets, max_distance):
    length = 300  # past max_distance: the last bucket of each direction is reached
    pos = torch.arange(length)
    expected = transformers.models.t5.modeling_t5.T5Attention._relative_position_bucket(
        pos[None, :] - pos[:, None], bidirectional=True, num_buckets=buckets, max_distance=max_distance)
    ours = relative_position_buckets(length, buckets, max_distance)
    assert torch.equal(ours, expected)
    assert ours.unique().tolist() == [b for b in range(buckets) if b != buckets // 2]  # offset 0 is bucket 0


def test_t5_params_refuse_what_is_not_implemented():
    with pytest.raises(ValueError, match="gated-gelu"):
        build("t5-test", feed_forward_proj="relu")


# ---- CLIP ----------------------------------------------------------------------------------------------


def clip_inputs(seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """Token ids laid out as CLIP's tokenizer does (bos, words, eos, padding with the eos id), for clip-test's
    vocabulary: bos 97, eos 98. Word ids are random in [2, 97), so in row 0 a word id (96) sits before the eos:
    the legacy argmax finds the eos (the highest id) while an eos_token_id of 96 would pick the word."""
    g = torch.Generator().manual_seed(seed)
    ids = torch.randint(2, 96, (2, 16), generator=g)
    ids[:, 0] = 97
    ids[0, 3], ids[0, 7:] = 96, 98  # 6 words, eos at 7, padding from 8 on
    ids[1, 15] = 98  # full length, eos last
    mask = (torch.arange(16) <= torch.tensor([[7], [15]])).long()
    return ids, mask


@pytest.mark.parametrize("masked", [False, True], ids=["no-mask", "padding-mask"])
@pytest.mark.parametrize("eos_token_id", [2, 98, 96], ids=["legacy-argmax", "eos-id", "eos-id-not-max"])
def test_clip_matches_transformers(eos_token_id, masked):
    torch.manual_seed(0)
    ours = randomize_(build("clip-test", eos_token_id=eos_token_id), seed=4)
    ref = with_reference_weights(ours)
    ids, mask = clip_inputs()
    mask = mask if masked else None
    with torch.no_grad():
        out, expected = ours(ids, mask), ref(input_ids=ids, attention_mask=mask)
    assert out.last_hidden_state.shape == (2, 16, 32) and out.pooler_output.shape == (2, 32)
    assert rel_err(out.last_hidden_state, expected.last_hidden_state) <= TOL
    assert rel_err(out.pooler_output, expected.pooler_output) <= TOL


def test_clip_pooling_conventions_pick_different_tokens():
    """Guards the parity test above: the two conventions must disagree on these inputs."""
    ids, _ = clip_inputs()
    legacy, by_id = build("clip-test", eos_token_id=2), build("clip-test", eos_token_id=96)
    assert legacy.eos_positions(ids).tolist() == [7, 15]
    assert by_id.eos_positions(ids).tolist() == [3, 0]  # no 96 in row 1: argmax of all-zero -> 0, as transformers
    assert legacy.eos_positions(torch.tensor([[3, 5, 60, 7]])).tolist() == [2]  # legacy: the highest id, eos or not


def test_clip_is_causal():
    model = randomize_(build("clip-test"), seed=5)
    ids, _ = clip_inputs()
    changed = ids.clone()
    changed[:, 10] = 50
    with torch.no_grad():
        a, b = model(ids).last_hidden_state, model(changed).last_hidden_state
    # exact: same shapes and kernels, and the changed token enters rows < 10 only through exactly-zero weights
    assert torch.equal(a[:, :10], b[:, :10]) and not torch.allclose(a[:, 10:], b[:, 10:])


def test_clip_refuses_more_tokens_than_positions():
    with pytest.raises(ValueError, match="exceed CLIP's 16 positions"):
        build("clip-test")(torch.zeros(1, 17, dtype=torch.long))


# ---- key manifests and loading ----------------------------------------------------------------------


@pytest.mark.parametrize("name", sorted(MANIFESTS))
def test_manifest_is_what_transformers_builds(name):
    assert reference_shapes(name) == manifest(name)


@pytest.mark.parametrize("name", sorted(MANIFESTS))
def test_full_size_presets_have_the_manifest_keys_and_shapes(name):
    ours, official = our_shapes(name), manifest(name)
    assert sorted(ours) == sorted(official)
    assert {k: v for k, v in ours.items() if official[k] != v} == {}


def test_manifest_sizes():
    sizes = {n: len(manifest(n)) for n in MANIFESTS}
    # T5: 2 embedding names + 24 blocks x 9 + 1 shared bias + final norm; umT5 one bias per block; CLIP 2 + 12 x 16 + 2
    assert sizes == {"t5-v1_1-xxl": 220, "umt5-xxl": 243, "clip-vit-large-patch14": 196}


@pytest.mark.parametrize("stored", ["shared", "embed_tokens", "both"])
@pytest.mark.parametrize("name", ["t5-test", "umt5-test"])
def test_tied_embedding_loads_from_either_name(name, stored, tmp_path):
    original = randomize_(build(name), seed=6)
    sd = state(original)
    if stored == "shared":
        del sd["encoder.embed_tokens.weight"]
    elif stored == "embed_tokens":
        del sd["shared.weight"]
    save_file(sd, tmp_path / "model.safetensors")
    model = load_checkpoint(build(name, device="meta"), tmp_path / "model.safetensors")
    assert model.shared.weight is model.encoder.embed_tokens.weight
    assert torch.equal(model.shared.weight, original.shared.weight)
    ids, mask = t5_inputs(model.params.vocab_size)
    with torch.no_grad():
        assert torch.equal(model(ids, mask), original(ids, mask))


def test_t5_file_written_by_transformers_loads(tmp_path):
    """save_pretrained writes the tied embedding once (transformers 5.25: as shared.weight only)."""
    ref = randomize_(reference_model(T5_PRESETS["t5-test"]), seed=7)
    ref.save_pretrained(tmp_path)
    model = load_checkpoint(build("t5-test", device="meta"), tmp_path)
    ids, mask = t5_inputs(model.params.vocab_size)
    with torch.no_grad():
        assert rel_err(model(ids, mask), ref(input_ids=ids, attention_mask=mask).last_hidden_state) <= TOL


def test_t5_missing_embedding_is_reported(tmp_path):
    sd = state(build("t5-test"))
    del sd["shared.weight"], sd["encoder.embed_tokens.weight"]
    save_file(sd, tmp_path / "model.safetensors")
    with pytest.raises(CheckpointError, match="1 missing key.*shared.weight"):
        load_checkpoint(build("t5-test", device="meta"), tmp_path / "model.safetensors")


@pytest.mark.parametrize("with_position_ids", [False, True])
def test_clip_loads_with_or_without_the_old_position_ids_buffer(with_position_ids, tmp_path):
    original = randomize_(build("clip-test"), seed=8)
    sd = state(original)
    if with_position_ids:  # what files written before transformers 4.31 store
        sd["text_model.embeddings.position_ids"] = torch.arange(16)[None]
    save_file(sd, tmp_path / "model.safetensors")
    model = load_checkpoint(build("clip-test", device="meta"), tmp_path / "model.safetensors")
    ids, _ = clip_inputs()
    with torch.no_grad():
        assert torch.equal(model(ids).pooler_output, original(ids).pooler_output)


def test_full_clip_model_file_needs_strict_false(tmp_path):
    """openai/clip-vit-large-patch14's file is a whole CLIPModel: text_model.* plus the vision tower."""
    original = randomize_(build("clip-test"), seed=9)
    sd = {**state(original), "vision_model.post_layernorm.weight": torch.ones(8), "logit_scale": torch.tensor(2.0),
          "text_projection.weight": torch.zeros(8, 32), "text_model.embeddings.position_ids": torch.arange(16)[None]}
    save_file(sd, tmp_path / "model.safetensors")
    with pytest.raises(CheckpointError, match="3 unexpected key"):
        load_checkpoint(build("clip-test", device="meta"), tmp_path / "model.safetensors")
    model = load_checkpoint(build("clip-test", device="meta"), tmp_path / "model.safetensors", strict=False)
    assert all(torch.equal(model.state_dict()[k], v) for k, v in original.state_dict().items())


if __name__ == "__main__":  # rewrite the manifests from the installed transformers
    for preset, stem in MANIFESTS.items():
        (KEYS_DIR / f"{stem}.json").write_text(json.dumps(reference_shapes(preset), indent=0) + "\n")
        print(f"wrote {KEYS_DIR / stem}.json")
