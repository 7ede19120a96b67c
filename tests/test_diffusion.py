"""The readable eq (1)-(5) functions of ``diffusion.py`` agree with diffusers and PyTorch."""
import pytest
import torch
import torch.nn.functional as F
from diffusers import DDIMScheduler, DDPMScheduler

from anomalysd_core.method import diffusion as D
from anomalysd_core.method.models import scheduler_config


@pytest.fixture(scope="module")
def ddpm():
    cfg = {k: v for k, v in scheduler_config().items() if k not in ("set_alpha_to_one", "steps_offset")}
    return DDPMScheduler(**cfg, variance_type="fixed_small")


def test_alpha_bar_matches_scheduler(ddpm):
    ddim = DDIMScheduler(**scheduler_config())
    for s in (ddpm, ddim):
        ab = D.alpha_bar(s)
        assert ab.shape == (1000,)
        torch.testing.assert_close(ab.float(), s.alphas_cumprod, rtol=1e-5, atol=1e-7)
    # the same from raw betas; abar is decreasing, starts near 1, ends near 0 (SD v1 schedule)
    ab = D.alpha_bar(ddpm.betas)
    assert torch.all(ab[1:] < ab[:-1]) and ab[0] > 0.999 and ab[-1] < 0.01


def test_q_sample_matches_add_noise(ddpm):
    g = torch.Generator().manual_seed(0)
    x0 = torch.randn(3, 4, 8, 8, generator=g)
    noise = torch.randn(3, 4, 8, 8, generator=g)
    t = torch.tensor([0, 500, 999])
    ours = D.q_sample(x0, t, noise, ddpm.alphas_cumprod)
    ref = ddpm.add_noise(x0, noise, t)
    torch.testing.assert_close(ours, ref, rtol=1e-5, atol=1e-5)
    # scheduler object and int t also accepted
    torch.testing.assert_close(D.q_sample(x0[1:2], 500, noise[1:2], ddpm), ref[1:2], rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("t", [0, 1, 250, 999])
def test_reverse_step_matches_ddpm_scheduler(ddpm, t):
    g = torch.Generator().manual_seed(1)
    x_t = torch.randn(2, 4, 8, 8, generator=g)
    eps = torch.randn(2, 4, 8, 8, generator=g)
    # diffusers draws its noise with the generator it is given: draw the same eta ourselves
    eta = torch.randn(x_t.shape, generator=torch.Generator().manual_seed(7))
    ref = ddpm.step(eps, t, x_t, generator=torch.Generator().manual_seed(7)).prev_sample
    ours = D.ddpm_reverse_step(x_t, t, eps, ddpm.betas, noise=eta)
    torch.testing.assert_close(ours.float(), ref, rtol=1e-4, atol=1e-4)


def test_reverse_step_with_true_noise_gives_posterior_mean(ddpm):
    g = torch.Generator().manual_seed(2)
    x0 = torch.rand(1, 3, 16, 16, generator=g) * 2 - 1
    eps = torch.randn(x0.shape, generator=g)
    t = 300
    x_t = D.q_sample(x0, t, eps, ddpm)
    step = D.ddpm_reverse_step(x_t, t, eps, ddpm, noise=torch.zeros_like(x0))
    torch.testing.assert_close(step, D.posterior_mean(x0, x_t, t, ddpm), rtol=1e-6, atol=1e-6)
    torch.testing.assert_close(D.predict_x0(x_t, t, eps, ddpm), x0, rtol=1e-6, atol=1e-6)
    pv = D.posterior_variance(ddpm)
    assert pv[0] == 0 and torch.all(pv[1:] > 0) and torch.all(pv <= D.betas_of(ddpm))
    assert float(D.epsilon_loss(eps, eps)) == 0.0


def test_cross_attention_matches_sdpa():
    g = torch.Generator().manual_seed(3)
    q = torch.randn(2, 4, 10, 16, generator=g)
    k = torch.randn(2, 4, 7, 16, generator=g)
    v = torch.randn(2, 4, 7, 12, generator=g)
    out, w = D.cross_attention(q, k, v)
    torch.testing.assert_close(out, F.scaled_dot_product_attention(q, k, v), rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(w.sum(-1), torch.ones(2, 4, 10))
    mask = torch.ones(2, 1, 1, 7, dtype=torch.bool)
    mask[..., 5:] = False
    out_m, w_m = D.cross_attention(q, k, v, mask=mask)
    torch.testing.assert_close(out_m, F.scaled_dot_product_attention(q, k, v, attn_mask=mask),
                               rtol=1e-5, atol=1e-5)
    assert torch.all(w_m[..., 5:] == 0)


def test_attention_from_module_reproduces_diffusers_attention():
    from diffusers.models.attention_processor import Attention

    torch.manual_seed(0)
    attn = Attention(query_dim=32, cross_attention_dim=24, heads=4, dim_head=8).eval()
    h = torch.randn(2, 9, 32)
    ctx = torch.randn(2, 5, 24)
    with torch.no_grad():
        ref = attn(h, encoder_hidden_states=ctx)
        ours, w = D.attention_from_module(attn, h, ctx)
    torch.testing.assert_close(ours, ref, rtol=1e-5, atol=1e-5)
    assert w.shape == (2, 4, 9, 5)
