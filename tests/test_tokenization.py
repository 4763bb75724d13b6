"""models.tokenization against transformers 5.25's tokenizers on the same tokenizer.json.

No real tokenizer can be downloaded here, so each test module trains tiny ones with the ``tokenizers``
library, set up as transformers' classes set up theirs: a byte-level BPE with CLIP's normalizer, split
pattern and ``</w>`` suffix, and a Unigram with T5's whitespace + metaspace splitting and ``<pad> </s>
<unk>`` at ids 0, 1, 2. Each file is then read by ``CLIPTokenizer`` / ``T5Tokenizer`` (which rebuild their
pipeline and post-processor in code) and by the generic ``PreTrainedTokenizerFast`` (which uses the file
as it is), called as the pipelines call them; ids and masks must be identical.
"""

from __future__ import annotations

import json
import sys

import pytest
import torch

from models.tokenization import KINDS, PromptTokenizer, clean_prompt

tokenizers = pytest.importorskip("tokenizers", reason="these tests need the test extra (pip install -e .[test])")
transformers = pytest.importorskip("transformers", reason="these tests need the test extra (pip install -e .[test])")
from tokenizers import Regex, decoders, models, normalizers, pre_tokenizers, processors, trainers  # noqa: E402

CORPUS = [
    "a red cube on a wooden table", "A photo of a cat sitting on the mat", "two blue spheres and a green cone",
    "The quick brown fox jumps over the lazy dog", "cafe, naive facade and a cafe au lait",
    "it's a dog's life, isn't it?", "Cinematic shot of a lighthouse at dusk, 35mm film, high detail",
    "a small yellow triangle next to a purple square",
]
PROMPTS = [
    "a red cube",
    "A Photo of  a CAT,\n on the mat!",  # case, double space, newline, punctuation
    "",
    "the quick brown fox jumps over the lazy dog while a cat sits on the mat and two blue spheres watch",  # long
    "café &amp;amp; crème\tbrûlée",  # accents, an HTML entity (umT5 unescapes it), a tab
    "  lighthouse at dusk  ",
]
MAX_LENGTH = 12  # short, so that the long prompt is truncated and the others padded


@pytest.fixture(scope="module")
def clip_dir(tmp_path_factory):
    tok = tokenizers.Tokenizer(models.BPE(unk_token="<|endoftext|>", continuing_subword_prefix="",
                                          end_of_word_suffix="</w>", fuse_unk=False))
    tok.normalizer = normalizers.Sequence([normalizers.NFC(), normalizers.Replace(Regex(r"\s+"), " "),
                                           normalizers.Lowercase()])
    words = r"""<\|startoftext\|>|<\|endoftext\|>|'s|'t|'re|'ve|'m|'ll|'d|[\p{L}]+|[\p{N}]|[^\s\p{L}\p{N}]+"""
    tok.pre_tokenizer = pre_tokenizers.Sequence([
        pre_tokenizers.Split(Regex(words), behavior="removed", invert=True),
        pre_tokenizers.ByteLevel(add_prefix_space=False),
    ])
    tok.decoder = decoders.ByteLevel()
    tok.train_from_iterator(CORPUS * 10, trainers.BpeTrainer(
        vocab_size=400, special_tokens=["<|startoftext|>", "<|endoftext|>"], end_of_word_suffix="</w>",
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(), show_progress=False))
    tok.post_processor = processors.RobertaProcessing(("<|endoftext|>", 1), ("<|startoftext|>", 0),
                                                      trim_offsets=False, add_prefix_space=False)
    folder = tmp_path_factory.mktemp("clip")
    tok.save(str(folder / "tokenizer.json"))
    return folder


@pytest.fixture(scope="module")
def t5_dir(tmp_path_factory):
    tok = tokenizers.Tokenizer(models.Unigram())
    metaspace = dict(replacement="▁", prepend_scheme="always", split=True)
    tok.pre_tokenizer = pre_tokenizers.Sequence([pre_tokenizers.WhitespaceSplit(),
                                                 pre_tokenizers.Metaspace(**metaspace)])
    tok.decoder = decoders.Metaspace(**metaspace)
    tok.train_from_iterator(CORPUS * 10, trainers.UnigramTrainer(
        vocab_size=200, special_tokens=["<pad>", "</s>", "<unk>"], unk_token="<unk>", show_progress=False))
    tok.post_processor = processors.TemplateProcessing(single="$A </s>", pair="$A </s> $B </s>",
                                                       special_tokens=[("</s>", 1)])
    folder = tmp_path_factory.mktemp("t5")
    tok.save(str(folder / "tokenizer.json"))
    return folder


def pipeline_call(tokenizer, prompts, max_length):
    """How FluxPipeline / WanPipeline (and BFL's HFEmbedder) call their tokenizers."""
    return tokenizer(prompts, padding="max_length", max_length=max_length, truncation=True, return_tensors="pt")


def references(kind, folder):
    spec = KINDS[kind]
    specials = dict(eos_token=spec.eos_token, pad_token=spec.pad_token,
                    unk_token="<|endoftext|>" if kind == "clip" else "<unk>")
    if spec.bos_token:
        specials["bos_token"] = spec.bos_token
    cls = transformers.CLIPTokenizer if kind == "clip" else transformers.T5Tokenizer
    generic = transformers.PreTrainedTokenizerFast(tokenizer_file=str(folder / "tokenizer.json"), **specials)
    return {cls.__name__: cls.from_pretrained(folder), "PreTrainedTokenizerFast": generic}


@pytest.mark.parametrize("kind", ["clip", "t5", "umt5"])
def test_ids_and_masks_match_transformers(kind, clip_dir, t5_dir):
    folder = clip_dir if kind == "clip" else t5_dir
    ours = PromptTokenizer(folder, kind, max_length=MAX_LENGTH)(PROMPTS)
    prompts = [clean_prompt(p) for p in PROMPTS] if kind == "umt5" else PROMPTS  # Wan2.1 cleans before tokenizing
    for name, reference in references(kind, folder).items():
        expected = pipeline_call(reference, prompts, MAX_LENGTH)
        assert torch.equal(ours.input_ids, expected.input_ids), name
        assert torch.equal(ours.attention_mask, expected.attention_mask), name
    untruncated = [len(reference(p).input_ids) for p in prompts]
    assert ours.truncated == tuple(n > MAX_LENGTH for n in untruncated)
    assert ours.lengths.tolist() == [min(n, MAX_LENGTH) for n in untruncated]


@pytest.mark.parametrize("kind", ["clip", "t5"])
def test_special_tokens_padding_and_truncation(kind, clip_dir, t5_dir):
    """The layout itself, so that a wrong setting shared with the reference would still be caught."""
    tokenizer = PromptTokenizer(clip_dir if kind == "clip" else t5_dir, kind, max_length=MAX_LENGTH)
    vocab = tokenizer.tokenizer.get_vocab()
    bos, eos, pad = (vocab.get(t) for t in ("<|startoftext|>", KINDS[kind].eos_token, KINDS[kind].pad_token))
    tokens = tokenizer(PROMPTS)
    assert tokens.input_ids.shape == tokens.attention_mask.shape == (len(PROMPTS), MAX_LENGTH)
    for ids, mask, n in zip(tokens.input_ids.tolist(), tokens.attention_mask.tolist(), tokens.lengths.tolist()):
        assert mask == [1] * n + [0] * (MAX_LENGTH - n)
        assert ids[n - 1] == eos and ids[n:] == [pad] * (MAX_LENGTH - n)
        assert kind != "clip" or ids[0] == bos
    empty = PROMPTS.index("")
    assert tokens.lengths[empty] == (2 if kind == "clip" else 1)
    long = PROMPTS.index(next(p for p in PROMPTS if p.startswith("the quick")))
    assert tokens.truncated[long] and not tokens.truncated[0] and not tokens.truncated[empty]
    assert tokens.lengths[long] == MAX_LENGTH


def test_default_lengths_are_the_pipelines(clip_dir, t5_dir):
    assert PromptTokenizer(clip_dir, "clip")("a cat").input_ids.shape == (1, 77)
    assert PromptTokenizer(t5_dir, "t5")(["a", "b"]).input_ids.shape == (2, 512)
    assert PromptTokenizer(t5_dir, "umt5")("a cat").input_ids.shape == (1, 512)
    assert PromptTokenizer(t5_dir, "t5", max_length=256)("a").input_ids.shape == (1, 256)  # FLUX.1-schnell


def test_pad_token_named_beside_the_file(clip_dir, tmp_path):
    """Some CLIP repos pad with another token ("!" in Stable Diffusion 2); transformers reads it from these files."""
    (tmp_path / "tokenizer.json").write_bytes((clip_dir / "tokenizer.json").read_bytes())
    (tmp_path / "special_tokens_map.json").write_text(json.dumps({"pad_token": {"content": "!", "lstrip": False}}))
    ours = PromptTokenizer(tmp_path, "clip", max_length=MAX_LENGTH)
    assert ours.pad_token == "!"
    expected = pipeline_call(transformers.CLIPTokenizer.from_pretrained(tmp_path), PROMPTS, MAX_LENGTH)
    assert torch.equal(ours(PROMPTS).input_ids, expected.input_ids)
    assert PromptTokenizer(tmp_path, "clip", pad_token="<|endoftext|>").pad_token == "<|endoftext|>"


def test_clean_prompt_matches_diffusers_wan():
    pytest.importorskip("diffusers")
    try:
        import ftfy  # noqa: F401
        pytest.skip("with ftfy installed diffusers also repairs mojibake, which clean_prompt does not")
    except ImportError:
        pass
    from diffusers.pipelines.wan.pipeline_wan import prompt_clean

    for text in PROMPTS + ["  a\u3000b\n\nc &lt;tag&gt; &amp;lt;x&amp;gt; ", "\t"]:
        assert clean_prompt(text) == prompt_clean(text)


def test_errors_say_what_to_do(tmp_path, t5_dir):
    (tmp_path / "vocab.json").write_text("{}")
    with pytest.raises(FileNotFoundError, match="has no tokenizer.json .*vocab.json.*hf download"):
        PromptTokenizer(tmp_path, "clip")
    with pytest.raises(FileNotFoundError, match="no such file or folder"):
        PromptTokenizer(tmp_path / "nowhere", "t5")
    with pytest.raises(ValueError, match="unknown tokenizer kind 'bert'"):
        PromptTokenizer(t5_dir, "bert")
    with pytest.raises(ValueError, match="has no token '<\\|startoftext\\|>'"):
        PromptTokenizer(t5_dir, "clip")


def test_missing_tokenizers_package_says_how_to_install(t5_dir, monkeypatch):
    monkeypatch.setitem(sys.modules, "tokenizers", None)  # import tokenizers now raises ImportError
    with pytest.raises(ImportError, match=r'pip install -e "\.\[real\]"'):
        PromptTokenizer(t5_dir, "t5")
