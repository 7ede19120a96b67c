"""Few-shot baselines: brute-force checks on a tiny random backbone, and one end-to-end sanity
check on a real texture with the real EfficientNet-Lite0 features."""
import math
import os

import numpy as np
import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F

from anomalysd_core.method.baselines import (
    PaDiM, PatchCore, ProtoKNN, SPADE, build_baseline, concat_layers, dihedral, gaussian_blur,
    greedy_coreset, knn, ledoit_wolf_batched,
)
from anomalysd_core.method.features import FeatureExtractor, build_backbone


@pytest.fixture(scope="module", autouse=True)
def _one_torch_thread():
    """Small CPU convolutions run 10x faster with one intra-op thread on a busy 2-core machine;
    the previous setting is restored after this module."""
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


class _TinyTrunk(nn.Module):
    """Three random conv stages at strides 4, 8, 16 (4, 6, 8 channels)."""

    def __init__(self):
        super().__init__()
        g = torch.Generator().manual_seed(0)
        self.c1 = nn.Conv2d(3, 4, 4, stride=4)
        self.c2 = nn.Conv2d(4, 6, 2, stride=2)
        self.c3 = nn.Conv2d(6, 8, 2, stride=2)
        for m in (self.c1, self.c2, self.c3):
            m.weight.data = torch.randn(m.weight.shape, generator=g) * 0.5
            m.bias.data.zero_()

    def forward(self, x):
        a = torch.tanh(self.c1(x))
        b = torch.tanh(self.c2(a))
        return [a, b, torch.tanh(self.c3(b))]


@pytest.fixture(scope="module")
def tiny():
    return FeatureExtractor("tiny", _TinyTrunk(), [4, 6, 8], [4, 8, 16])


def _imgs(n, s=32, seed=0):
    return torch.rand(n, 3, s, s, generator=torch.Generator().manual_seed(seed))


def _identity_post(model):
    model.postprocess = lambda cells, size: cells  # keep feature-cell scores for brute force
    return model


def test_knn_bruteforce():
    g = torch.Generator().manual_seed(1)
    q, b = torch.randn(37, 5, generator=g), torch.randn(50, 5, generator=g)
    d, i = knn(q, b, k=3, chunk=8)
    for r in range(37):
        dd = sorted((float(torch.linalg.norm(q[r] - b[j])), j) for j in range(50))[:3]
        assert [j for _, j in dd] == i[r].tolist()
        np.testing.assert_allclose([v for v, _ in dd], d[r].numpy(), rtol=1e-5)


def test_greedy_coreset_covering():
    g = torch.Generator().manual_seed(2)
    X = torch.randn(300, 6, generator=g)
    idx, radius = greedy_coreset(X, 20, proj_dim=None, seed=0, return_min_dist=True)
    assert len(set(idx.tolist())) == 20
    C = X[idx]
    # covering radius reported == brute force max_i min_j ||x_i - c_j||
    cover = max(min(float(torch.linalg.norm(x - c)) for c in C) for x in X)
    assert abs(cover - radius) < 1e-4
    # greedy k-center: every chosen point was at least `radius` from the earlier ones (packing), so
    # the optimal 20-center radius is >= radius / 2 (2-approximation)
    for a in range(1, 20):
        assert min(float(torch.linalg.norm(C[a] - C[b])) for b in range(a)) >= radius - 1e-5
    # each step takes the farthest point from the chosen set
    for a in range(1, 20):
        far = max(range(300), key=lambda r: min(float(torch.linalg.norm(X[r] - C[b])) for b in range(a)))
        assert torch.allclose(X[far], C[a]) or math.isclose(
            min(float(torch.linalg.norm(X[far] - C[b])) for b in range(a)),
            min(float(torch.linalg.norm(C[a] - C[b])) for b in range(a)), rel_tol=1e-5)
    # with the random projection it still returns distinct indices
    assert len(set(greedy_coreset(X, 20, proj_dim=3).tolist())) == 20


def test_patchcore_bruteforce(tiny):
    normals, test = _imgs(2, seed=3), _imgs(2, seed=4)
    pc = _identity_post(PatchCore(tiny, coreset_ratio=1.0, k_reweight=3).fit(normals))
    psi_n = tiny.psi(normals, smooth=True)
    bank = psi_n.permute(0, 2, 3, 1).reshape(-1, psi_n.shape[1])
    torch.testing.assert_close(pc.bank, bank)
    scores, cells = pc.predict(test)
    psi_t = tiny.psi(test, smooth=True)
    for b in range(2):
        best = (-1.0, None, None)
        for y in range(psi_t.shape[2]):
            for x in range(psi_t.shape[3]):
                f = psi_t[b, :, y, x]
                dists = [float(torch.linalg.norm(f - m)) for m in bank]
                j = int(np.argmin(dists))
                assert abs(cells[b, y, x] - dists[j]) < 1e-4
                if dists[j] > best[0]:
                    best = (dists[j], f, j)
        s_star, f, j = best
        # PatchCore eq 7: N_b(m*) = 3 nearest bank features of m* (m* itself included)
        nb = np.argsort([float(torch.linalg.norm(bank[j] - m)) for m in bank])[:3]
        den = sum(math.exp(float(torch.linalg.norm(f - bank[n]))) for n in nb)
        expect = (1 - math.exp(s_star) / den) * s_star
        assert abs(float(scores[b]) - expect) < 1e-4
    # coreset subsampling keeps the requested fraction
    pc2 = PatchCore(tiny, coreset_ratio=0.25).fit(normals)
    assert pc2.bank.shape[0] == round(0.25 * bank.shape[0])


def test_spade_bruteforce(tiny):
    normals, test = _imgs(4, seed=5), _imgs(2, seed=6)
    sp = _identity_post(SPADE(tiny, k_image=2, top_k=2).fit(normals))
    scores, cells = sp.predict(test)
    ln, lt = tiny.layers(normals), tiny.layers(test)
    gn, gt = ln[-1].mean((2, 3)), lt[-1].mean((2, 3))
    pn, pt = concat_layers(ln), concat_layers(lt)
    for b in range(2):
        d = [float(torch.linalg.norm(gt[b] - gn[k])) for k in range(4)]
        order = np.argsort(d)
        assert abs(float(scores[b]) - np.mean(np.sort(d)[:2])) < 1e-5
        gallery = torch.cat([pn[k].reshape(pn.shape[1], -1).T for k in order[:2]])
        for y in range(pt.shape[2]):
            for x in range(pt.shape[3]):
                nn_d = min(float(torch.linalg.norm(pt[b, :, y, x] - g)) for g in gallery)
                assert abs(float(cells[b, y, x]) - nn_d) < 1e-4
    # k larger than the number of shots is capped
    assert SPADE(tiny, k_image=50, top_k=5).fit(normals[:1]).predict(test)[0].shape == (2,)


def test_ledoit_wolf_matches_sklearn():
    from sklearn.covariance import ledoit_wolf

    g = torch.Generator().manual_seed(7)
    X = torch.randn(3, 8, 10, generator=g, dtype=torch.float64) * torch.linspace(0.5, 2, 10)
    cov, shr = ledoit_wolf_batched(X)
    for p in range(3):
        ref, ref_s = ledoit_wolf(X[p].numpy())
        np.testing.assert_allclose(cov[p].numpy(), ref, rtol=1e-8, atol=1e-10)
        assert abs(float(shr[p]) - ref_s) < 1e-10


@pytest.mark.parametrize("shrinkage", ["ledoit_wolf", 0.01])
def test_padim_mahalanobis_numpy(tiny, shrinkage):
    from sklearn.covariance import ledoit_wolf

    normals, test = _imgs(2, seed=8), _imgs(2, seed=9)
    pd = _identity_post(PaDiM(tiny, d=10, augment="dihedral", shrinkage=shrinkage, seed=0))
    pd.fit(normals)
    assert len(pd.channel_idx) == 10                      # random subset of the 18 channels
    scores, cells = pd.predict(test)
    emb_n = concat_layers(tiny.layers(dihedral(normals)))[:, pd.channel_idx].double().numpy()
    emb_t = concat_layers(tiny.layers(test))[:, pd.channel_idx].double().numpy()
    h, w = emb_n.shape[-2:]
    for (y, x) in [(0, 0), (3, 5), (h - 1, w - 1)]:
        X = emb_n[:, :, y, x]                             # (16, 10)
        if shrinkage == "ledoit_wolf":
            cov = ledoit_wolf(X)[0] + 0.01 * np.eye(10)
        else:
            cov = np.cov(X, rowvar=False) + 0.01 * np.eye(10)
        mu = X.mean(0)
        for b in range(2):
            dlt = emb_t[b, :, y, x] - mu
            expect = math.sqrt(dlt @ np.linalg.solve(cov, dlt))
            assert abs(float(cells[b, y, x]) - expect) < 1e-3 * max(1, expect)
    np.testing.assert_allclose(scores.numpy(), cells.flatten(1).max(1).values.numpy())


def test_protoknn_bruteforce(tiny):
    normals, test = _imgs(1, seed=10), _imgs(1, seed=11)
    pk = _identity_post(ProtoKNN(tiny).fit(normals))
    assert pk.bank.shape == (4 * 8 * 8, 10)               # 4 rotations x (32/4)^2 cells
    _, cells = pk.predict(test)
    bank = torch.cat([tiny.psi(torch.rot90(normals, k, (-2, -1))) for k in range(4)])
    bank = bank.permute(0, 2, 3, 1).reshape(-1, 10)
    ft = tiny.psi(test)[0]
    for y in range(8):
        for x in range(8):
            e = min(float(((ft[:, y, x] - m) ** 2).sum()) for m in bank)   # eq 14, squared
            assert abs(float(cells[0, y, x]) - e) < 1e-4


def test_gaussian_blur_matches_scipy():
    from scipy.ndimage import gaussian_filter

    m = torch.rand(2, 40, 40, generator=torch.Generator().manual_seed(12), dtype=torch.float64)
    out = gaussian_blur(m, 2.0)
    for b in range(2):
        ref = gaussian_filter(m[b].numpy(), 2.0, mode="mirror", truncate=4.0)
        np.testing.assert_allclose(out[b].numpy(), ref, atol=1e-10)


def test_dihedral_and_predict_shapes(tiny):
    x = _imgs(1, seed=13)
    v = dihedral(x)
    assert v.shape[0] == 8 and len({tuple(t.flatten()[:50].tolist()) for t in v}) == 8
    for name in ["patchcore", "spade", "padim", "protoknn"]:
        m = build_baseline(name, tiny).fit(_imgs(2, seed=14))
        s, maps = m.predict(_imgs(3, seed=15))
        assert s.shape == (3,) and maps.shape == (3, 32, 32) and torch.isfinite(maps).all()
    with pytest.raises(RuntimeError):
        PatchCore(tiny).predict(x)
    with pytest.raises(ValueError):
        build_baseline("draem", tiny)


def test_end_to_end_bright_square():
    """Normals: two crops of one texture. A held-out crop with a pasted bright square must score
    higher than the same crop without it (and, except for SPADE, whose image score is a kNN on one
    global feature, than another held-out normal crop); every map must peak inside the square."""
    skd = pytest.importorskip("skimage.data")
    tex = torch.tensor(skd.brick(), dtype=torch.float32)[None, None] / 255.0   # 512 x 512 gray
    tex = F.interpolate(tex, size=(256, 256), mode="area").expand(1, 3, -1, -1)
    crops = [tex[..., y:y + 128, x:x + 128] for y, x in [(0, 0), (0, 128), (128, 0), (128, 128)]]
    normals = torch.cat(crops[:2])
    bad = crops[3].clone()
    y0, x0, s = 72, 40, 20
    bad[..., y0:y0 + s, x0:x0 + s] = 1.0
    test = torch.cat([crops[2], crops[3], bad])
    ext = build_backbone("efficientnet_lite0")
    for name in ["patchcore", "spade", "padim", "protoknn"]:
        scores, maps = build_baseline(name, ext).fit(normals).predict(test)
        assert maps.shape == (3, 128, 128)
        assert scores[2] > scores[1], (name, scores)
        if name != "spade":
            assert scores[2] > scores[0], (name, scores)
        yy, xx = divmod(int(maps[2].argmax()), 128)
        assert y0 - 4 <= yy < y0 + s + 4 and x0 - 4 <= xx < x0 + s + 4, (name, yy, xx)


# ------------------------------------------------------------------ paper-profile backbones, WinCLIP
def test_wide_resnet_backbone_random_weights():
    """The paper profile's baseline backbone: timm WideResNet-50-2, layers 1-3 at strides 4/8/16;
    PatchCore takes layers 2-3 (psi_layers (1, 2)), as in its paper."""
    from anomalysd_core.method.features import build_backbone

    ext = build_backbone("wide_resnet50_2", pretrained=False, psi_layers=(1, 2))
    assert ext.channels == [256, 512, 1024] and ext.reductions == [4, 8, 16]
    x = torch.rand(2, 3, 32, 32)
    assert ext.psi(x).shape == (2, 512 + 1024, 4, 4)
    sc, mp = PatchCore(ext).fit(x[:1]).predict(x)
    assert sc.shape == (2,) and mp.shape == (2, 32, 32)
    assert float(sc[0]) < float(sc[1])  # the normal itself scores lowest


def test_wide_resnet_weights_missing_message(monkeypatch):
    from anomalysd_core.method.features import build_backbone

    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setattr("anomalysd_core.method.features._hf_cached_file", lambda repo: None)
    with pytest.raises(RuntimeError, match="timm/wide_resnet50_2.tv_in1k"):
        build_backbone("wide_resnet50_2")


def test_winclip_unavailable_is_a_clear_skip(monkeypatch):
    """Without anomalib/open_clip, or without the LAION weights (offline), WinCLIP raises
    BaselineUnavailable naming what to install or download."""
    import sys

    from anomalysd_core.method.baselines import BaselineUnavailable, WinCLIP, build_baseline

    monkeypatch.setitem(sys.modules, "open_clip", None)  # imports fail, as on a machine without them
    monkeypatch.setitem(sys.modules, "anomalib.models.image.winclip", None)
    with pytest.raises(BaselineUnavailable, match="pip install"):
        build_baseline("winclip", None, class_name="metal_nut").fit(torch.rand(1, 3, 32, 32))
    assert WinCLIP(class_name="metal_nut").class_name == "metal nut"


def test_winclip_weights_missing_offline(monkeypatch):
    pytest.importorskip("anomalib")
    pytest.importorskip("open_clip")
    from anomalysd_core.method.baselines import WINCLIP_PRETRAINED, BaselineUnavailable, WinCLIP

    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(BaselineUnavailable, match=WINCLIP_PRETRAINED):
        WinCLIP(class_name="bottle").fit(None)


@pytest.mark.skipif(os.environ.get("ANOMALYSD_WINCLIP_TEST") != "1",
                    reason="random-weight ViT-B-16+ WinCLIP takes minutes on a CPU; set ANOMALYSD_WINCLIP_TEST=1")
def test_winclip_random_weights_end_to_end():
    pytest.importorskip("anomalib")
    from anomalysd_core.method.baselines import WinCLIP

    x = torch.rand(3, 3, 48, 48)
    zero = WinCLIP(class_name="bottle", pretrained=False).fit(None)
    assert zero.model.k_shot == 0
    few = WinCLIP(class_name="bottle", pretrained=False).fit(x[:1])
    assert few.model.k_shot == 1
    sc, mp = few.predict(x)
    assert sc.shape == (3,) and mp.shape == (3, 48, 48) and torch.isfinite(mp).all()


def _dino(**kw):
    from anomalysd_core.method.peers import AnomalyDINO

    return AnomalyDINO(pretrained=False, size=56, **kw)  # random DINOv2 ViT-S/14 weights, 4 x 4 patches


def test_anomalydino_scores_its_own_normal_zero_and_a_changed_image_higher():
    gen = torch.Generator().manual_seed(0)
    normal = torch.rand(1, 3, 40, 40, generator=gen)
    changed = normal.clone()
    changed[:, :, 10:30, 10:30] = torch.rand(1, 3, 20, 20, generator=gen)
    model = _dino(masking=False).fit(normal)
    assert model.bank.shape == (16, 384) and torch.allclose(model.bank.norm(dim=1), torch.ones(16))
    scores, maps = model.predict(torch.cat([normal, changed]))
    assert scores.shape == (2,) and maps.shape == (2, 40, 40)
    assert float(scores[0]) < 1e-5 < float(scores[1])  # cosine distance of a patch to itself is 0
    # the image score is the mean of the top 1 % of patch scores: here the single largest of 16
    d = (1 - model.patches(changed)[0][0] @ model.bank.T).min(dim=1).values
    assert float(scores[1]) == pytest.approx(float(d.max()), abs=1e-6)


def test_anomalydino_masks_objects_and_explains_missing_weights(monkeypatch):
    from anomalysd_core.method.baselines import BaselineUnavailable, build_baseline
    from anomalysd_core.method.peers import DINO_MODEL, AnomalyDINO

    assert _dino(kind="object").masking and not _dino(kind="texture").masking
    model = _dino(kind="object").fit(torch.rand(2, 3, 56, 56))
    assert model.bank.shape[0] <= 2 * 16  # only foreground patches enter the bank
    with pytest.raises(ValueError, match="multiple of the 14-px patch"):
        AnomalyDINO(pretrained=False, size=50)
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(BaselineUnavailable, match=DINO_MODEL):
        build_baseline("anomalydino", None, kind="texture").fit(torch.rand(1, 3, 32, 32))
