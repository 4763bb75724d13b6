"""jano_ref.pipelines.diffusers on tiny random diffusers pipelines built here: our DiT inside a FluxPipeline /
WanPipeline gives the pipeline's own picture, full compute.

Both runs share the pipeline's tokenizers, text encoders, VAE and noise; only the transformer and the sampler
loop differ (ours: models.Flux / WanModel with the mapped weights and sample_euler; theirs: the diffusers
transformer and scheduler). Tolerance 1e-4 relative, on the decoded pixels (and on Wan's final latents): the two
transformers agree to ~1e-6 per call (tests/test_parity_diffusers.py); measured here 1.6e-7 (Flux) and 3.2e-7 (Wan).
Each test also shows it can fail: another guidance value moves the Flux picture by > 1e-2, a 10 % change of one Wan
cross-attention weight moves the latents by > 1e-3.
"""

from __future__ import annotations

import copy
import json

import pytest
import torch

from jano_ref.generate import generate
from jano_ref.lab.fake_weights import _write_clip_tokenizer, _write_t5_tokenizer
from jano_ref.pipelines.diffusers import prepare, transformer_from_diffusers
from models.diffusers_keys import flux_state_dict, wan_state_dict

from .helpers import randomize_, rel_err

diffusers = pytest.importorskip("diffusers", reason="needs the test extra (pip install -e .[test])")
transformers = pytest.importorskip("transformers", reason="needs the test extra (pip install -e .[test])")
pytest.importorskip("tokenizers", reason="needs the test extra (pip install -e .[test])")
pytestmark = pytest.mark.usefixtures("one_thread_no_grad")
TOL = 1e-4


def tokenizer(folder, write, max_length: int, pad: str):
    write(folder)
    return transformers.PreTrainedTokenizerFast(tokenizer_file=str(folder / "tokenizer.json"),
                                                model_max_length=max_length, pad_token=pad)


@pytest.fixture(scope="module")
def flux_pipe(tmp_path_factory):
    torch.manual_seed(0)
    folder = tmp_path_factory.mktemp("flux-pipe")
    clip_tok = tokenizer(folder / "clip", _write_clip_tokenizer, 77, "<|endoftext|>")
    t5_tok = tokenizer(folder / "t5", _write_t5_tokenizer, 512, "<pad>")
    clip = transformers.CLIPTextModel(transformers.CLIPTextConfig(
        vocab_size=len(clip_tok), hidden_size=24, intermediate_size=32, num_hidden_layers=1, num_attention_heads=2,
        max_position_embeddings=77, eos_token_id=1))
    t5 = transformers.T5EncoderModel(transformers.T5Config(
        vocab_size=len(t5_tok), d_model=40, d_kv=8, d_ff=48, num_layers=1, num_heads=2, feed_forward_proj="gated-gelu"))
    vae = diffusers.AutoencoderKL(
        in_channels=3, out_channels=3, down_block_types=("DownEncoderBlock2D",) * 2,
        up_block_types=("UpDecoderBlock2D",) * 2, block_out_channels=(32, 32), layers_per_block=1, latent_channels=4,
        norm_num_groups=32, scaling_factor=0.3611, shift_factor=0.1159, use_quant_conv=False, use_post_quant_conv=False)
    transformer = diffusers.FluxTransformer2DModel(
        patch_size=1, in_channels=16, num_layers=1, num_single_layers=2, attention_head_dim=32, num_attention_heads=2,
        joint_attention_dim=40, pooled_projection_dim=24, guidance_embeds=True, axes_dims_rope=(8, 12, 12))
    scheduler = diffusers.FlowMatchEulerDiscreteScheduler(use_dynamic_shifting=True, base_shift=0.5, max_shift=1.15,
                                                          base_image_seq_len=256, max_image_seq_len=4096)
    for module in (clip, t5, vae, transformer):
        randomize_(module.eval(), seed=1)
    return diffusers.FluxPipeline(scheduler=scheduler, vae=vae, text_encoder=clip, tokenizer=clip_tok,
                                  text_encoder_2=t5, tokenizer_2=t5_tok, transformer=transformer)


@pytest.fixture(scope="module")
def wan_pipe(tmp_path_factory):
    torch.manual_seed(0)
    folder = tmp_path_factory.mktemp("wan-pipe")
    tok = tokenizer(folder / "umt5", _write_t5_tokenizer, 512, "<pad>")
    umt5 = transformers.UMT5EncoderModel(transformers.UMT5Config(
        vocab_size=len(tok), d_model=24, d_kv=8, d_ff=32, num_layers=1, num_heads=2, feed_forward_proj="gated-gelu"))
    vae = diffusers.AutoencoderKLWan(base_dim=8, z_dim=4, dim_mult=[1, 2, 4, 4], num_res_blocks=1,
                                     temperal_downsample=[False, True, True], latents_mean=[0.1, -0.2, 0.3, -0.4],
                                     latents_std=[1.5, 0.5, 2.0, 0.8])
    transformer = diffusers.WanTransformer3DModel(
        patch_size=(1, 2, 2), num_attention_heads=2, attention_head_dim=32, in_channels=4, out_channels=4,
        text_dim=24, freq_dim=32, ffn_dim=96, num_layers=2, cross_attn_norm=True, qk_norm="rms_norm_across_heads")
    scheduler = diffusers.FlowMatchEulerDiscreteScheduler(shift=1.0)
    for module in (umt5, vae, transformer):
        randomize_(module.eval(), seed=2)
    return diffusers.WanPipeline(tokenizer=tok, text_encoder=umt5, vae=vae, scheduler=scheduler,
                                 transformer=transformer)


def test_flux_pipeline_picture_equals_ours(flux_pipe):
    setup = prepare(flux_pipe, "a cat on a mat", height=32, width=32, steps=4, guidance=3.5, seed=3,
                    max_sequence_length=16)
    ours = setup.decode(generate(setup.field, setup.noise, setup.sigmas, method="full").tokens)
    theirs = flux_pipe("a cat on a mat", height=32, width=32, num_inference_steps=4, guidance_scale=3.5,
                       latents=setup.noise, max_sequence_length=16, output_type="pt").images[0]
    assert ours.shape == (3, 1, 32, 32)
    assert rel_err(ours[:, 0], theirs) < TOL
    # The check can fail: the same run with another guidance value gives another picture.
    other = prepare(flux_pipe, "a cat on a mat", height=32, width=32, steps=4, guidance=1.0, seed=3,
                    max_sequence_length=16)
    changed = other.decode(generate(other.field, other.noise, other.sigmas, method="full").tokens)
    assert rel_err(changed[:, 0], theirs) > 100 * TOL


def test_wan_pipeline_video_equals_ours(wan_pipe, monkeypatch):
    # Wan2.1 attends to its 512 zero-padded text rows (models.wan pads to text_len = 512): the pipeline must pad
    # to 512 too (its default max_sequence_length), or the cross-attention sees other keys.
    setup = prepare(wan_pipe, "a cat on a mat", height=32, width=32, frames=5, steps=3, guidance=4.0, seed=4,
                    negative_prompt="blurry")
    # WanPipeline asks its scheduler for N steps; give it our sigmas (shift 1 leaves them as they are).
    scheduler, set_timesteps = wan_pipe.scheduler, wan_pipe.scheduler.set_timesteps
    monkeypatch.setattr(scheduler, "set_timesteps",
                        lambda n, device=None: set_timesteps(sigmas=setup.sigmas[:-1].tolist(), device=device))
    call = dict(prompt="a cat on a mat", negative_prompt="blurry", height=32, width=32, num_frames=5,
                num_inference_steps=3, guidance_scale=4.0)
    tokens = generate(setup.field, setup.noise, setup.sigmas, method="full").tokens
    latent = wan_pipe(**call, latents=setup.field.to_latent(setup.noise), output_type="latent").frames
    video = wan_pipe(**call, latents=setup.field.to_latent(setup.noise), output_type="pt").frames[0]  # [F, 3, H, W]
    ours = setup.decode(tokens)
    assert ours.shape == (3, 5, 32, 32)
    assert rel_err(setup.field.to_latent(tokens), latent) < TOL
    assert rel_err(ours, video.permute(1, 0, 2, 3)) < TOL
    # The check can fail: a DiT whose cross-attention output is 10 % off ends elsewhere. (The tiny random VAE
    # hardly tells such latents apart, so this is checked on the latents.)
    broken = copy.deepcopy(setup.field.model)
    broken.blocks[0].cross_attn.o.weight.data *= 1.1
    other = prepare(wan_pipe, "a cat on a mat", height=32, width=32, frames=5, steps=3, guidance=4.0, seed=4,
                    negative_prompt="blurry", transformer=broken)
    changed = generate(other.field, other.noise, other.sigmas, method="full").tokens
    assert rel_err(other.field.to_latent(changed), latent) > 10 * TOL


@pytest.mark.parametrize("pipe_name", ["flux_pipe", "wan_pipe"])
def test_transformer_mapping_shares_weights_and_refuses_other_models(pipe_name, request):
    pipe = request.getfixturevalue(pipe_name)
    ours = transformer_from_diffusers(pipe.transformer)
    mapped = (flux_state_dict if pipe_name == "flux_pipe" else wan_state_dict)(pipe.transformer.state_dict())
    assert set(ours.state_dict()) == set(mapped)
    assert all(torch.equal(ours.state_dict()[k], v) for k, v in mapped.items())
    shared = {t.data_ptr() for t in pipe.transformer.state_dict().values()}
    assert ours.state_dict()[next(k for k in mapped if k.endswith("img_in.weight") or
                                  k == "patch_embedding.weight")].data_ptr() in shared
    with pytest.raises(TypeError, match="FluxTransformer2DModel or WanTransformer3DModel"):
        transformer_from_diffusers(pipe.vae)
    with pytest.raises(TypeError, match="FluxPipeline or WanPipeline"):
        prepare(json, "a cat")


def test_compare_on_a_diffusers_setup_gives_the_generate_report(flux_pipe):
    """The diffusers path returns the pictures and the lines `jano generate` prints (lab.compare)."""
    from jano_ref.lab.compare import compare

    setup = prepare(flux_pipe, "a cat on a mat", height=32, width=32, steps=14, seed=0, max_sequence_length=16)
    result = compare(setup, "jano", label="flux-dev", warmup=0, repeats=1)
    assert result.pixels["jano"].shape == (3, 1, 32, 32) and result.files == []
    assert result.lines[0].startswith("flux-dev: 14 steps over 64 tokens")
    assert "ideal speedup (token FLOPs)" in result.report and "jano (flux-dev) vs full" in result.report
    assert result.summary["ideal_speedup"] >= 1.0 and 0 <= result.summary["ssim"] <= 1
