"""``jano fake-weights flux|flux-schnell|wan DIR``: small random weights in the official repos' layout.

The folder has the files, key names and tokenizer files of ``black-forest-labs/FLUX.1-dev`` (``-schnell``) or
``Wan-AI/Wan2.1-T2V-1.3B-Diffusers`` (see ``jano_ref.pipelines.weights`` for the layouts), at small shapes, and
configs from which ``models.configs`` reads each architecture back. So

    jano fake-weights flux /tmp/flux && jano generate "a cat" --model flux-dev --weights /tmp/flux

runs the code path of the real models (tokenizers, text encoders, embedding cache, DiT loading, the diffusers-key
rename for Wan, the autoencoder) on a CPU in seconds. The weights are random: the pictures mean nothing. Every
DiT file carries a safetensors metadata mark (``weights.RANDOM_MARK``) that ``jano generate`` reports.

Differences from the official folders, all in what the pipeline does not read: the FLUX.1 repos' diffusers copies
(``transformer/*.safetensors``, ``vae/``) and the Wan repos' ``scheduler/`` are not written (FLUX.1's
``transformer/config.json`` is, for the RoPE split of the small heads); the sentencepiece files (``spiece.model``)
are not written; ``tokenizer/`` of FLUX.1 has a ``tokenizer.json`` besides ``vocab.json`` + ``merges.txt`` (the
official one has not: ``jano generate`` then fetches openai/clip-vit-large-patch14's). Tokenizers are trained here,
with the ``tokenizers`` library, on a few hundred words.
"""

from __future__ import annotations

import json
from pathlib import Path

import torch
from safetensors.torch import save_file

from models import Flux, FluxParams, WanModel, WanParams
from models.clip import CLIPTextEncoder, CLIPTextParams
from models.diffusers_keys import wan_key_to_diffusers
from models.flux_ae import AutoEncoder, AutoEncoderParams
from models.t5 import T5Encoder, T5Params
from models.wan_vae import WanVAE, WanVAEParams

from ..pipelines.weights import LAYOUTS, RANDOM_MARK

KINDS = {"flux": "flux-dev", "flux-schnell": "flux-schnell", "wan": "wan2.1-1.3b"}  # kind -> the model it fakes
NOTE = "random weights written by `jano fake-weights` (jano_ref); they draw nothing"
TEXT_WIDTH = 32  # d_model of the fake T5 / umT5 and hidden size of the fake CLIP
CORPUS = [
    "a cat sitting on a windowsill in the afternoon sun", "a red cube on a wooden table next to a blue sphere",
    "a photo of a dog running on the beach at sunset", "cinematic shot of a lighthouse at dusk, 35mm film",
    "two people walking through a forest in autumn, leaves falling", "a bowl of fruit, apples, oranges and grapes",
    "an astronaut riding a horse on the moon, high detail", "a city street at night with neon signs and rain",
    "a small yellow bird on a branch, macro photograph", "the quick brown fox jumps over the lazy dog",
    "a painting of mountains and a lake in the style of watercolor", "it's a sunny day, isn't it?",
    "close-up of a coffee cup with steam, morning light", "a green cross and a white ring on a gradient background",
]


def write_fake_weights(kind: str, folder: str | Path, *, seed: int = 0) -> list[Path]:
    """Write the fake folder for ``kind`` ("flux", "flux-schnell" or "wan") into ``folder``; the files written."""
    if kind not in KINDS:
        raise ValueError(f"unknown kind {kind!r}; choose one of {', '.join(KINDS)}")
    _import_tokenizers()
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        files = _write_flux(folder, KINDS[kind]) if kind.startswith("flux") else _write_wan(folder)
    files.append(_write_text(folder / "README.md", f"# {folder.name}\n\n{NOTE.capitalize()}: the layout of "
                             f"{LAYOUTS[KINDS[kind]].repo} at small random shapes, for pipeline checks.\n"))
    return files


# ---- FLUX.1 -----------------------------------------------------------------------------------------


def _write_flux(folder: Path, model: str) -> list[Path]:
    layout = LAYOUTS[model]
    clip_vocab, files = _write_clip_tokenizer(folder / "tokenizer")
    t5_vocab, more = _write_t5_tokenizer(folder / "tokenizer_2")
    files += more
    heads, head_dim, axes = 2, 32, [8, 12, 12]
    dit = Flux(FluxParams(in_channels=64, out_channels=64, vec_in_dim=TEXT_WIDTH, context_in_dim=TEXT_WIDTH,
                          hidden_size=heads * head_dim, num_heads=heads, depth=1, depth_single_blocks=2, axes_dim=axes,
                          guidance_embed=model == "flux-dev"))
    files.append(_save(dit.state_dict(), folder / layout.dit, mark=True))
    p = dit.params
    files.append(_write_json(folder / "transformer" / "config.json", {  # diffusers FluxTransformer2DModel names
        "_class_name": "FluxTransformer2DModel", "attention_head_dim": head_dim, "num_attention_heads": heads,
        "axes_dims_rope": axes, "guidance_embeds": p.guidance_embed, "in_channels": p.in_channels,
        "joint_attention_dim": p.context_in_dim, "pooled_projection_dim": p.vec_in_dim, "num_layers": p.depth,
        "num_single_layers": p.depth_single_blocks, "patch_size": 1}))
    ae = AutoEncoder(AutoEncoderParams(ch=32, ch_mult=[1, 1, 2, 2], num_res_blocks=1, z_channels=16))
    files.append(_save(ae.state_dict(), folder / layout.autoencoder))
    clip = CLIPTextParams(vocab_size=clip_vocab, hidden_size=TEXT_WIDTH, intermediate_size=64, num_hidden_layers=2,
                          num_attention_heads=2, max_position_embeddings=77, eos_token_id=1)
    files += _write_encoder(folder / "text_encoder", CLIPTextEncoder(clip), {
        "architectures": ["CLIPTextModel"], "model_type": "clip_text_model", **vars(clip)}, shards=1)
    t5 = T5Params(vocab_size=t5_vocab, d_model=TEXT_WIDTH, d_kv=8, d_ff=64, num_layers=2, num_heads=4,
                  relative_attention_num_buckets=8, relative_attention_max_distance=20)
    files += _write_encoder(folder / "text_encoder_2", T5Encoder(t5), _t5_config(t5, "t5", "T5EncoderModel"), shards=2)
    files.append(_write_json(folder / "model_index.json", {
        "_class_name": "FluxPipeline", "text_encoder": ["transformers", "CLIPTextModel"],
        "text_encoder_2": ["transformers", "T5EncoderModel"], "tokenizer": ["transformers", "CLIPTokenizer"],
        "tokenizer_2": ["transformers", "T5TokenizerFast"], "transformer": ["diffusers", "FluxTransformer2DModel"],
        "vae": ["diffusers", "AutoencoderKL"], "scheduler": ["diffusers", "FlowMatchEulerDiscreteScheduler"]}))
    return files


# ---- Wan2.1 -----------------------------------------------------------------------------------------


def _write_wan(folder: Path) -> list[Path]:
    vocab, files = _write_t5_tokenizer(folder / "tokenizer")
    heads, head_dim = 2, 32
    dit = WanModel(WanParams(dim=heads * head_dim, ffn_dim=128, freq_dim=32, text_dim=TEXT_WIDTH, num_heads=heads,
                             num_layers=2))
    diffusers_sd = {wan_key_to_diffusers(k): v for k, v in dit.state_dict().items()}
    files.append(_save(diffusers_sd, folder / "transformer" / "diffusion_pytorch_model.safetensors", mark=True))
    p = dit.params
    files.append(_write_json(folder / "transformer" / "config.json", {  # diffusers WanTransformer3DModel names
        "_class_name": "WanTransformer3DModel", "patch_size": list(p.patch_size), "num_attention_heads": heads,
        "attention_head_dim": head_dim, "in_channels": p.in_dim, "out_channels": p.out_dim, "text_dim": p.text_dim,
        "freq_dim": p.freq_dim, "ffn_dim": p.ffn_dim, "num_layers": p.num_layers, "cross_attn_norm": True,
        "qk_norm": "rms_norm_across_heads", "eps": p.eps, "rope_max_seq_len": 1024}))
    vae = WanVAEParams(base_dim=8)
    files.append(_save(WanVAE(vae).state_dict(), folder / "vae" / "diffusion_pytorch_model.safetensors"))
    files.append(_write_json(folder / "vae" / "config.json", {
        "_class_name": "AutoencoderKLWan", "base_dim": vae.base_dim, "z_dim": vae.z_dim, "dim_mult": list(vae.dim_mult),
        "num_res_blocks": vae.num_res_blocks, "attn_scales": list(vae.attn_scales),
        "temperal_downsample": list(vae.temperal_downsample), "dropout": vae.dropout,
        "latents_mean": list(vae.latents_mean), "latents_std": list(vae.latents_std)}))
    umt5 = T5Params(vocab_size=vocab, d_model=TEXT_WIDTH, d_kv=8, d_ff=64, num_layers=2, num_heads=4,
                    relative_attention_num_buckets=8, relative_attention_max_distance=20, per_layer_position_bias=True)
    files += _write_encoder(folder / "text_encoder", T5Encoder(umt5), _t5_config(umt5, "umt5", "UMT5EncoderModel"),
                            shards=2)
    files.append(_write_json(folder / "model_index.json", {
        "_class_name": "WanPipeline", "text_encoder": ["transformers", "UMT5EncoderModel"],
        "tokenizer": ["transformers", "T5TokenizerFast"], "transformer": ["diffusers", "WanTransformer3DModel"],
        "vae": ["diffusers", "AutoencoderKLWan"], "scheduler": ["diffusers", "UniPCMultistepScheduler"]}))
    return files


# ---- files --------------------------------------------------------------------------------------------


def _t5_config(p: T5Params, model_type: str, architecture: str) -> dict:
    config = {k: v for k, v in vars(p).items() if k != "per_layer_position_bias"}
    return {"architectures": [architecture], "model_type": model_type, "is_gated_act": True,
            "dense_act_fn": "gelu_new", **config}


def _write_encoder(folder: Path, module: torch.nn.Module, config: dict, *, shards: int) -> list[Path]:
    """config.json and the weights, as transformers writes them: one model.safetensors, or shards + index."""
    state = {k: v for k, v in module.state_dict().items() if k not in getattr(module, "tied_keys", {})}
    files = [_write_json(folder / "config.json", config)]
    if shards == 1:
        return files + [_save(state, folder / "model.safetensors")]
    keys = sorted(state)
    parts = [keys[i::shards] for i in range(shards)]
    names = [f"model-{i + 1:05d}-of-{shards:05d}.safetensors" for i in range(shards)]
    files += [_save({k: state[k] for k in part}, folder / name) for part, name in zip(parts, names)]
    weight_map = {k: name for part, name in zip(parts, names) for k in part}
    return files + [_write_json(folder / "model.safetensors.index.json", {"metadata": {}, "weight_map": weight_map})]


def _save(state: dict, path: Path, *, mark: bool = False) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    metadata = {"format": "pt", **({RANDOM_MARK: NOTE} if mark else {})}
    save_file({k: v.detach().contiguous() for k, v in state.items()}, str(path), metadata=metadata)
    return path


def _write_json(path: Path, data: dict) -> Path:
    return _write_text(path, json.dumps(data, indent=2) + "\n")


def _write_text(path: Path, text: str) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text, encoding="utf-8")
    return path


# ---- tokenizers, trained here on CORPUS -------------------------------------------------------------


def _import_tokenizers():
    try:
        import tokenizers
    except ImportError as err:
        raise ImportError('jano fake-weights builds tokenizer.json files with the `tokenizers` package: '
                          'pip install -e ".[real]"') from err
    return tokenizers


def _write_clip_tokenizer(folder: Path) -> tuple[int, list[Path]]:
    """A byte-level BPE set up as CLIP's (lower-cased, CLIP's word split, ``</w>`` word ends, ids 0 and 1 for
    <|startoftext|> and <|endoftext|>); writes tokenizer.json, vocab.json, merges.txt and the transformers configs."""
    from tokenizers import Regex, Tokenizer, decoders, models, normalizers, pre_tokenizers, trainers

    tok = Tokenizer(models.BPE(unk_token="<|endoftext|>", continuing_subword_prefix="", end_of_word_suffix="</w>"))
    tok.normalizer = normalizers.Sequence([normalizers.NFC(), normalizers.Replace(Regex(r"\s+"), " "),
                                           normalizers.Lowercase()])
    words = r"""<\|startoftext\|>|<\|endoftext\|>|'s|'t|'re|'ve|'m|'ll|'d|[\p{L}]+|[\p{N}]|[^\s\p{L}\p{N}]+"""
    tok.pre_tokenizer = pre_tokenizers.Sequence([pre_tokenizers.Split(Regex(words), behavior="removed", invert=True),
                                                 pre_tokenizers.ByteLevel(add_prefix_space=False)])
    tok.decoder = decoders.ByteLevel()
    tok.train_from_iterator(CORPUS * 4, trainers.BpeTrainer(
        vocab_size=320, special_tokens=["<|startoftext|>", "<|endoftext|>"], end_of_word_suffix="</w>",
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(), show_progress=False))
    folder.mkdir(parents=True, exist_ok=True)
    files = [Path(p) for p in tok.model.save(str(folder))]  # vocab.json, merges.txt
    tok.save(str(folder / "tokenizer.json"))
    special = {"bos_token": "<|startoftext|>", "eos_token": "<|endoftext|>", "pad_token": "<|endoftext|>",
               "unk_token": "<|endoftext|>"}
    files += [folder / "tokenizer.json", _write_json(folder / "special_tokens_map.json", special),
              _write_json(folder / "tokenizer_config.json", {"tokenizer_class": "CLIPTokenizer",
                                                             "model_max_length": 77, **special})]
    return tok.get_vocab_size(), files


def _write_t5_tokenizer(folder: Path) -> tuple[int, list[Path]]:
    """A Unigram set up as T5's (whitespace + metaspace split; <pad>, </s>, <unk> at ids 0, 1, 2)."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers

    tok = Tokenizer(models.Unigram())
    metaspace = dict(replacement="▁", prepend_scheme="always", split=True)
    tok.pre_tokenizer = pre_tokenizers.Sequence([pre_tokenizers.WhitespaceSplit(),
                                                 pre_tokenizers.Metaspace(**metaspace)])
    tok.decoder = decoders.Metaspace(**metaspace)
    tok.train_from_iterator(CORPUS * 4, trainers.UnigramTrainer(
        vocab_size=240, special_tokens=["<pad>", "</s>", "<unk>"], unk_token="<unk>", show_progress=False))
    folder.mkdir(parents=True, exist_ok=True)
    tok.save(str(folder / "tokenizer.json"))
    special = {"eos_token": "</s>", "pad_token": "<pad>", "unk_token": "<unk>"}
    files = [folder / "tokenizer.json", _write_json(folder / "special_tokens_map.json", special),
             _write_json(folder / "tokenizer_config.json", {"tokenizer_class": "T5Tokenizer", "model_max_length": 512,
                                                            **special})]
    return tok.get_vocab_size(), files
