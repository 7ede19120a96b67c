"""The SD components (Sec. 3, eq 4-7): loading, architecture checks, text encoder, VAE scaling."""
from types import SimpleNamespace

import pytest
import torch

from anomalysd_core import models
from anomalysd_core.config import get_config


def test_tiny_checkpoint_loads_with_the_paper_classes(tiny_comp, device):
    from diffusers import AutoencoderKL, DDIMScheduler, UNet2DConditionModel
    from transformers import CLIPTextModel, CLIPTokenizer

    c = tiny_comp
    assert isinstance(c.vae, AutoencoderKL) and isinstance(c.unet, UNet2DConditionModel)
    assert isinstance(c.scheduler, DDIMScheduler) and isinstance(c.text.model, CLIPTextModel)
    assert isinstance(c.text.tokenizer, CLIPTokenizer) and c.text.kind == "clip"
    assert c.unet.config.in_channels == 9 and c.unet.config.cross_attention_dim == c.text.dim == 32
    assert c.vae_scale == 8 and c.device.type == device.type
    assert not any(p.requires_grad for m in (c.vae, c.unet, c.text) for p in m.parameters())
    for k, v in models.scheduler_config().items():  # SD v1's noise schedule
        assert c.scheduler.config[k] == v, k


def test_encode_decode_shapes_and_scaling(tiny_comp):
    x = torch.rand(2, 3, 64, 64)
    z = tiny_comp.encode(x)
    assert z.shape == (2, 4, 8, 8)
    raw = tiny_comp.vae.encode((x * 2 - 1).to(tiny_comp.device)).latent_dist.mean
    torch.testing.assert_close(z, raw * tiny_comp.scaling_factor)  # z = E(x) * scaling_factor
    y = tiny_comp.decode(z)
    assert y.shape == (2, 3, 64, 64) and float(y.min()) >= 0 and float(y.max()) <= 1


def test_clip_text_encoder_and_prompt_average(tiny_comp):
    te = tiny_comp.text
    prompts = ["A perfect bottle.", "A bottle seen from above with a smooth, unbroken circular rim."]
    tok = te.tokenizer(prompts)
    assert tok.input_ids[0][0] == te.tokenizer.bos_token_id and tok.input_ids[0][-1] == te.tokenizer.eos_token_id
    assert te.tokenizer.unk_token_id not in tok.input_ids[0][1:-1]  # every character tokenizes
    e = te(prompts)
    assert e.shape == (2, 77, 32)  # CLIP's 77 positions
    assert not torch.allclose(e[0], e[1])
    torch.testing.assert_close(te.average(prompts), e.mean(0, keepdim=True))  # Sec. 4.3


def _fake(in_ch=9, out_ch=4, cross=32, lc=4):
    unet = SimpleNamespace(config=SimpleNamespace(in_channels=in_ch, out_channels=out_ch,
                                                  cross_attention_dim=cross))
    return unet, SimpleNamespace(config=SimpleNamespace(latent_channels=lc))


def test_check_architecture_messages():
    models.check_architecture(*_fake(), text_dim=32, where="ok")
    with pytest.raises(models.ModelError, match=r"'?t2i'?.*4 input channels.*2\*4\+1 = 9.*text-to-image"):
        models.check_architecture(*_fake(in_ch=4), text_dim=32, where="t2i")
    with pytest.raises(models.ModelError, match="predicts 8 channels"):
        models.check_architecture(*_fake(out_ch=8), text_dim=32, where="x")
    with pytest.raises(models.ModelError, match="cross_attention_dim 768 does not match.*384"):
        models.check_architecture(*_fake(cross=768), text_dim=384, where="x")


def test_missing_base_model_and_unknown_text_encoder(tmp_path):
    missing = tmp_path / "nope" / "mini-base"
    with pytest.raises(models.ModelError, match=r"nope/mini-base.*does not exist.*pretrain"):
        models.load_components(get_config("smoke", base_model=str(missing)))
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(models.ModelError, match="cannot load the diffusion model from .*empty"):
        models.load_components(get_config("smoke", base_model=str(empty)))
    with pytest.raises(models.ModelError, match="unknown text encoder 't5'"):
        models.load_text_encoder("t5")
    with pytest.raises(models.ModelError, match="CLIP tokenizer/text_encoder"):
        models.load_text_encoder("clip", str(empty))


@pytest.mark.filterwarnings("ignore:The `local_dir_use_symlinks`")
def test_hub_id_offline_is_a_model_error():
    # looks like "owner/name": handed to the hub, which is offline here -> a clear ModelError
    with pytest.raises(models.ModelError, match="no-such-owner/no-such-model"):
        models.load_components(get_config("paper", base_model="no-such-owner/no-such-model", device="cpu"))


def test_mini_base_round_trip(smoke_base):
    """``new_mini_components`` + ``save_base`` (fp16 on disk) load back in float32, MiniLM as tau."""
    assert (smoke_base / models.CARD_NAME).is_file() and models.read_card(str(smoke_base))["random"]
    comp = models.load_components(get_config("smoke", base_model=str(smoke_base)))
    assert comp.text.kind == "minilm" and comp.text.dim == 384
    assert comp.unet.config.cross_attention_dim == 384
    assert comp.unet.config.sample_size == get_config("smoke").image_size // comp.vae_scale
    assert comp.scaling_factor == 1.0 and comp.dtype == torch.float32
    assert next(comp.unet.parameters()).dtype == torch.float32
    assert comp.text(["A perfect coin."]).shape == (1, models.TEXT_MAX_LENGTH["minilm"], 384)
