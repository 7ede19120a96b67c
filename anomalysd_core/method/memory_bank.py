"""The memory-bank baselines of Table 1, run in the same harness as AnomalySD.

The paper's Table 1 copies its PatchCore, SPADE and PaDiM numbers from the WinCLIP paper; here they
are re-implemented on the same frozen features as AnomalySD's prototype mask
(:class:`~anomalysd_core.method.features.FeatureExtractor`), so that the comparison uses one backbone,
one image size and one evaluation. Every model is fitted per class on the K few-shot normals only
(plus augmentation where stated) and exposes

* ``fit(normal_images)`` -> ``self``, with ``normal_images`` ``(K, 3, H, W)`` in ``[0, 1]``;
* ``predict(images)`` -> ``(image_scores (B,), maps (B, H, W))``; maps are upsampled bilinearly to
  the input size and Gaussian-blurred with ``sigma = 4 * H / 512`` (sigma 4 at 512 px, as in
  PatchCore and in AnomalySD's Sec. 4.3).

Models: :class:`PatchCore`, :class:`SPADE`, :class:`PaDiM` and :class:`ProtoKNN` (the prototype
error map of eq 14 used on its own, i.e. AnomalySD without Stable Diffusion). In the paper profile
the first three run on WideResNet-50 (``Config.baseline_backbone``; PatchCore on layers 2-3, as in
its paper). The peers that bring their own foundation model (WinCLIP, AnomalyDINO) are in
``peers.py``; ``baselines.build_baseline`` builds any of them by name.
"""
from __future__ import annotations

import contextlib
import math
from typing import Sequence

import torch
import torch.nn.functional as F

from .prototypes import build_bank, error_map, rotations


# --------------------------------------------------------------------------------------------
# shared helpers
# --------------------------------------------------------------------------------------------
def dihedral(images: torch.Tensor) -> torch.Tensor:
    """The 8 dihedral variants (4 rotations x optional horizontal flip) of square images,
    stacked along dim 0: ``(8 N, C, H, W)``."""
    return rotations(images, angles=(0, 90, 180, 270), flips=True)


def augment_normals(images: torch.Tensor, augment: str | None) -> torch.Tensor:
    """``None``: as is; ``"rot"``: 4 rotations (eq 13's ``Aug``); ``"dihedral"``: 8 variants."""
    if augment in (None, "none"):
        return images
    if images.shape[-1] != images.shape[-2]:
        raise ValueError("rotation augmentation needs square images")
    if augment == "rot":
        return rotations(images)
    if augment == "dihedral":
        return dihedral(images)
    raise ValueError(f"unknown augment {augment!r}; choose None, 'rot' or 'dihedral'")


def pairwise_sqdist(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """Squared Euclidean distances ``(M, N)`` between rows of ``a (M, D)`` and ``b (N, D)``
    (expanded form, clamped at 0)."""
    d = (a * a).sum(1, keepdim=True) - 2.0 * a @ b.T + (b * b).sum(1)[None]
    return d.clamp_min_(0)


def knn(query: torch.Tensor, bank: torch.Tensor, k: int = 1, chunk: int = 4096):
    """Exact k nearest neighbours by Euclidean distance: ``(dist (M, k), index (M, k))``, ascending.

    Queries are processed ``chunk`` rows at a time; the returned distances are recomputed directly
    as ``||q - b||`` for the selected neighbours, free of the expanded form's cancellation error."""
    k = min(k, bank.shape[0])
    bank = bank.to(query.device, query.dtype)
    idx = torch.empty(query.shape[0], k, dtype=torch.long, device=query.device)
    for s in range(0, query.shape[0], chunk):
        d = pairwise_sqdist(query[s:s + chunk], bank)
        idx[s:s + chunk] = d.topk(k, dim=1, largest=False).indices
    dist = torch.cat([(query[s:s + chunk, None, :] - bank[idx[s:s + chunk]]).norm(dim=-1)
                      for s in range(0, query.shape[0], chunk)]) if query.shape[0] else \
        query.new_zeros(0, k)
    return dist, idx


def gaussian_blur(maps: torch.Tensor, sigma: float) -> torch.Tensor:
    """Separable Gaussian blur of ``(B, H, W)`` maps; kernel radius ``ceil(4 sigma)`` (SciPy's
    default truncation), reflect padding. ``sigma <= 0`` returns the maps unchanged."""
    if sigma <= 0:
        return maps
    r = int(math.ceil(4.0 * sigma))
    r = min(r, maps.shape[-1] - 1, maps.shape[-2] - 1)
    t = torch.arange(-r, r + 1, dtype=maps.dtype, device=maps.device)
    g = torch.exp(-0.5 * (t / sigma) ** 2)
    g = g / g.sum()
    x = maps[:, None]
    x = F.conv2d(F.pad(x, (r, r, 0, 0), mode="reflect"), g.view(1, 1, 1, -1))
    x = F.conv2d(F.pad(x, (0, 0, r, r), mode="reflect"), g.view(1, 1, -1, 1))
    return x[:, 0]


def concat_layers(feats: Sequence[torch.Tensor]) -> torch.Tensor:
    """Upsample every map (bilinear) to the first map's size and concatenate on channels."""
    size = feats[0].shape[-2:]
    return torch.cat([f if f.shape[-2:] == size else
                      F.interpolate(f, size=size, mode="bilinear", align_corners=False)
                      for f in feats], dim=1)


#: the baselines' map blur: sigma 4 at 512 px, scaled with the image (the paper's and anomalib's)
BLUR_SIGMA_512 = 4.0


class _Baseline:
    """Shared plumbing: feature device, map post-processing (upsample + blur)."""

    def __init__(self, extractor, blur_sigma_512: float = BLUR_SIGMA_512):
        self.extractor = extractor
        self.blur_sigma_512 = blur_sigma_512
        self.fitted = False

    def _check_fitted(self):
        if not self.fitted:
            raise RuntimeError(f"{type(self).__name__}.predict called before fit")

    def postprocess(self, cell_scores: torch.Tensor, size) -> torch.Tensor:
        """``(B, h, w)`` feature-cell scores -> ``(B, H, W)``: bilinear upsampling, then Gaussian
        blur with ``sigma = blur_sigma_512 * H / 512``."""
        m = F.interpolate(cell_scores[:, None].float(), size=tuple(size), mode="bilinear",
                          align_corners=False)[:, 0]
        return gaussian_blur(m, self.blur_sigma_512 * size[0] / 512.0)

    def fit(self, normal_images: torch.Tensor):  # pragma: no cover - interface
        raise NotImplementedError

    def predict(self, images: torch.Tensor):  # pragma: no cover - interface
        raise NotImplementedError


# --------------------------------------------------------------------------------------------
# PatchCore
# --------------------------------------------------------------------------------------------
def greedy_coreset(features: torch.Tensor, n: int, proj_dim: int | None = 128, seed: int = 0,
                   return_min_dist: bool = False):
    """Greedy k-center coreset (PatchCore, Alg. 1): indices of ``n`` rows of ``features (N, D)``.

    Starting from one random row, repeatedly add the row farthest (Euclidean) from the rows chosen
    so far. As in PatchCore, distances are computed after a Gaussian random projection to
    ``proj_dim`` dimensions (Johnson-Lindenstrauss; ``None`` or ``>= D`` keeps the full features).
    ``return_min_dist`` also returns the covering radius reached (in the projected space)."""
    N, D = features.shape
    n = max(1, min(n, N))
    g = torch.Generator().manual_seed(seed)
    z = features.float()
    if proj_dim is not None and proj_dim < D:
        P = torch.randn(D, proj_dim, generator=g) / math.sqrt(proj_dim)
        z = z @ P.to(z.device)
    start = int(torch.randint(N, (1,), generator=g))
    chosen = [start]
    min_d = (z - z[start]).pow(2).sum(1)
    for _ in range(n - 1):
        i = int(min_d.argmax())
        chosen.append(i)
        min_d = torch.minimum(min_d, (z - z[i]).pow(2).sum(1))
    idx = torch.tensor(chosen, dtype=torch.long, device=features.device)
    if return_min_dist:
        return idx, float(min_d.max().sqrt())
    return idx


def patchcore_reweight(s_star: torch.Tensor, m_test: torch.Tensor, m_star_idx: torch.Tensor,
                       bank: torch.Tensor, b: int) -> torch.Tensor:
    """Image score of PatchCore eq (7) for each test image.

    ``s = (1 - exp||m_test* - m*|| / sum_{m in N_b(m*)} exp||m_test* - m||) * s*`` where ``m_test*``
    is the test patch with the largest NN distance ``s*``, ``m*`` its nearest bank feature and
    ``N_b(m*)`` the ``b`` nearest bank features of ``m*`` (which include ``m*`` itself). The weight
    (a softmax over distances) approaches 1 when ``m*`` sits in a dense bank region that ``m_test*``
    is far from, and is smaller when ``m*`` is an isolated bank outlier. The official PatchCore code
    omits this step; anomalib applies it in the same form as here.

    ``s_star (B,)``, ``m_test (B, D)``, ``m_star_idx (B,)``, ``bank (M, D)``. ``b <= 1`` (or a
    one-feature bank) would make the weight 0, so it returns ``s*`` unweighted instead."""
    b = min(b, bank.shape[0])
    if b <= 1:
        return s_star
    _, nb = knn(bank[m_star_idx], bank, k=b)                     # (B, b)
    d = (m_test[:, None, :] - bank[nb]).norm(dim=-1)             # (B, b)
    log_den = torch.logsumexp(d, dim=1)
    w = 1.0 - torch.exp(s_star - log_den)
    return w * s_star


class PatchCore(_Baseline):
    """Few-shot PatchCore (Roth et al. 2022) on psi features.

    * patch features: ``extractor.psi(x, smooth=True)`` (stride-4 and stride-8 stages with 3x3
      local average aggregation, the stride-8 map upsampled and concatenated);
    * memory bank: all patch features of the (optionally augmented) K normals, reduced by the greedy
      coreset of :func:`greedy_coreset` to ``coreset_ratio`` of its size. ``coreset_ratio=None``
      (default) keeps the full bank when it has at most ``full_bank_max`` patches (few-shot banks
      are small: K=4 at 128 px is 4096 patches) and uses 10 % otherwise;
    * pixel score: Euclidean distance of each test patch to its nearest bank feature (PatchCore
      eq 6), upsampled and blurred;
    * image score: the largest patch score reweighted by PatchCore eq (7) with ``b = k_reweight``
      neighbours (:func:`patchcore_reweight`).
    """

    def __init__(self, extractor, coreset_ratio: float | None = None, k_reweight: int = 3,
                 augment: str | None = None, proj_dim: int | None = 128,
                 full_bank_max: int = 16384, seed: int = 0, blur_sigma_512: float = BLUR_SIGMA_512):
        super().__init__(extractor, blur_sigma_512)
        self.coreset_ratio = coreset_ratio
        self.k_reweight = k_reweight
        self.augment = augment
        self.proj_dim = proj_dim
        self.full_bank_max = full_bank_max
        self.seed = seed

    def _patches(self, x):
        return self.extractor.psi(x, smooth=True)

    def fit(self, normal_images):
        feats = self._patches(augment_normals(normal_images, self.augment))
        bank = build_bank(feats)
        ratio = self.coreset_ratio
        if ratio is None:
            ratio = 1.0 if bank.shape[0] <= self.full_bank_max else 0.1
        if ratio < 1.0:
            n = max(1, int(round(ratio * bank.shape[0])))
            bank = bank[greedy_coreset(bank, n, self.proj_dim, self.seed)]
        self.bank = bank
        self.fitted = True
        return self

    @torch.no_grad()
    def predict(self, images):
        self._check_fitted()
        f = self._patches(images)
        B, D, h, w = f.shape
        q = f.permute(0, 2, 3, 1).reshape(B, h * w, D)
        dist, idx = knn(q.reshape(-1, D), self.bank, k=1)
        dist, idx = dist[:, 0].reshape(B, h * w), idx[:, 0].reshape(B, h * w)
        s_star, pos = dist.max(dim=1)
        ar = torch.arange(B, device=q.device)
        scores = patchcore_reweight(s_star, q[ar, pos], idx[ar, pos], self.bank, self.k_reweight)
        maps = self.postprocess(dist.reshape(B, h, w), images.shape[-2:])
        return scores.cpu(), maps.cpu()


# --------------------------------------------------------------------------------------------
# SPADE
# --------------------------------------------------------------------------------------------
class SPADE(_Baseline):
    """Few-shot SPADE (Cohen & Hoshen 2020).

    * image level: global feature = spatial mean of the last (stride-16) stage; image score = mean
      Euclidean distance to the ``min(k_image, K)`` nearest normal global features;
    * pixel level: for each test image, the pixel features (all stages upsampled to the stride-4
      grid and concatenated, as SPADE does with ResNet layers 1-3) of its ``min(top_k, K)`` nearest
      normal images form the gallery; a pixel's score is the mean distance to its ``k_pixel``
      nearest gallery features (``k_pixel=1``: the nearest).
    """

    def __init__(self, extractor, k_image: int = 50, top_k: int = 5, k_pixel: int = 1,
                 augment: str | None = None, blur_sigma_512: float = BLUR_SIGMA_512):
        super().__init__(extractor, blur_sigma_512)
        self.k_image = k_image
        self.top_k = top_k
        self.k_pixel = k_pixel
        self.augment = augment

    def _features(self, x):
        feats = self.extractor.layers(x)
        return feats[-1].mean(dim=(2, 3)), concat_layers(feats)

    def fit(self, normal_images):
        g, p = self._features(augment_normals(normal_images, self.augment))
        self.global_bank = g                                      # (K, C)
        self.pixel_bank = p.permute(0, 2, 3, 1).reshape(p.shape[0], -1, p.shape[1])  # (K, hw, D)
        self.fitted = True
        return self

    @torch.no_grad()
    def predict(self, images):
        self._check_fitted()
        g, p = self._features(images)
        B, D, h, w = p.shape
        k_img, k_top = min(self.k_image, len(self.global_bank)), min(self.top_k, len(self.global_bank))
        gd, gi = knn(g, self.global_bank, k=max(k_img, k_top))      # ascending distances
        scores = gd[:, :k_img].mean(dim=1)
        nearest = gi[:, :k_top]
        cells = []
        for b in range(B):
            gallery = self.pixel_bank[nearest[b]].reshape(-1, D)
            d, _ = knn(p[b].permute(1, 2, 0).reshape(-1, D), gallery, k=self.k_pixel)
            cells.append(d.mean(dim=1).reshape(h, w))
        maps = self.postprocess(torch.stack(cells), images.shape[-2:])
        return scores.cpu(), maps.cpu()


# --------------------------------------------------------------------------------------------
# PaDiM
# --------------------------------------------------------------------------------------------
@contextlib.contextmanager
def _single_thread(device):
    """Run batched small-matrix LAPACK calls (Cholesky, triangular solves) with one CPU thread:
    torch loops over the batch, and intra-op threads only add overhead there (on a busy 2-core
    machine 10-100x). Restores the previous setting; a no-op for CUDA tensors."""
    if torch.device(device).type != "cpu":
        yield
        return
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(n)


def ledoit_wolf_batched(X: torch.Tensor):
    """Ledoit-Wolf shrunk covariance for a batch of sample sets, the same formula as
    ``sklearn.covariance.ledoit_wolf`` (biased empirical covariance S, shrunk towards ``mu I`` with
    ``mu = trace(S) / p``; shrinkage ``min(beta, delta) / delta``).

    ``X``: ``(P, n, p)`` (P independent sets of n samples of dimension p). Returns
    ``(cov (P, p, p), shrinkage (P,))``, in float64."""
    X = X.double()
    P, n, p = X.shape
    Xc = X - X.mean(dim=1, keepdim=True)
    emp = Xc.transpose(1, 2) @ Xc / n                               # (P, p, p)
    X2 = Xc ** 2
    emp_diag = X2.sum(dim=1) / n                                    # (P, p)
    mu = emp_diag.sum(dim=1) / p                                    # (P,)
    beta_ = (X2.sum(dim=2) ** 2).sum(dim=1)                         # sum of (X2^T X2)
    delta_ = (emp ** 2).sum(dim=(1, 2))                             # sum of (Xc^T Xc)^2 / n^2
    beta = (beta_ / n - delta_) / (p * n)
    delta = (delta_ - 2.0 * mu * emp_diag.sum(dim=1) + p * mu ** 2) / p
    beta = torch.minimum(beta, delta)
    safe = torch.where(delta == 0, torch.ones_like(delta), delta)
    shrink = torch.where(beta == 0, torch.zeros_like(beta), beta / safe)
    eye = torch.eye(p, dtype=X.dtype, device=X.device)
    cov = (1.0 - shrink)[:, None, None] * emp + (shrink * mu)[:, None, None] * eye
    return cov, shrink


class PaDiM(_Baseline):
    """Few-shot PaDiM (Defard et al. 2021).

    Embedding: all stages (strides 4, 8, 16) upsampled to the stride-4 grid and concatenated, then
    a fixed random subset of ``d=100`` channels (seeded, as the PaDiM paper's random dimensionality
    reduction). One Gaussian per grid cell over the normals; score = Mahalanobis distance.

    With 1-4 shots a 100-dim covariance cannot be estimated, so: ``augment="dihedral"`` (default)
    fits on the 8 rotations/flips of every normal (8K samples per cell), and the covariance is
    regularised: ``shrinkage="ledoit_wolf"`` (default) uses the Ledoit-Wolf estimate (same formula as
    ``sklearn.covariance.ledoit_wolf``, batched over cells: :func:`ledoit_wolf_batched`) plus
    ``eps * I``; a float ``shrinkage`` uses PaDiM's original recipe, unbiased sample covariance plus
    ``shrinkage * I`` (PaDiM used 0.01). ``eps`` (default 0.01, PaDiM's value) keeps the matrix
    invertible when all samples coincide (K=1 without augmentation).
    """

    def __init__(self, extractor, d: int = 100, augment: str | None = "dihedral",
                 shrinkage: str | float = "ledoit_wolf", eps: float = 0.01, seed: int = 0,
                 blur_sigma_512: float = BLUR_SIGMA_512):
        super().__init__(extractor, blur_sigma_512)
        self.d = d
        self.augment = augment
        self.shrinkage = shrinkage
        self.eps = eps
        self.seed = seed
        self.channel_idx = None

    def _embed(self, x):
        e = concat_layers(self.extractor.layers(x))
        if self.channel_idx is None:
            C = e.shape[1]
            g = torch.Generator().manual_seed(self.seed)
            self.channel_idx = (torch.randperm(C, generator=g)[:self.d].sort().values
                                if self.d < C else torch.arange(C))
        return e[:, self.channel_idx.to(e.device)]

    def fit(self, normal_images):
        self.channel_idx = None
        e = self._embed(augment_normals(normal_images, self.augment))   # (N, d, h, w)
        N, d, h, w = e.shape
        X = e.permute(2, 3, 0, 1).reshape(h * w, N, d).double()          # (hw, N, d)
        self.mean = X.mean(dim=1)                                        # (hw, d)
        eye = torch.eye(d, dtype=X.dtype, device=X.device)
        if self.shrinkage == "ledoit_wolf":
            cov, self.lw_shrinkage = ledoit_wolf_batched(X)
            cov = cov + self.eps * eye
        else:
            Xc = X - self.mean[:, None]
            cov = Xc.transpose(1, 2) @ Xc / max(N - 1, 1) + float(self.shrinkage) * eye
        self.cov = cov
        with _single_thread(cov.device):
            self.chol = torch.linalg.cholesky(cov)                      # (hw, d, d), S = L L^T
        self.grid = (h, w)
        self.fitted = True
        return self

    def mahalanobis(self, e: torch.Tensor) -> torch.Tensor:
        """Per-cell Mahalanobis distance ``sqrt((x - mu)^T S^-1 (x - mu))`` of embeddings
        ``(B, d, h, w)`` -> ``(B, h, w)``."""
        B, d, h, w = e.shape
        diff = e.permute(2, 3, 1, 0).reshape(h * w, d, B).double() - self.mean[:, :, None]
        with _single_thread(diff.device):   # ||L^-1 (x - mu)||^2 = (x - mu)^T S^-1 (x - mu)
            z = torch.linalg.solve_triangular(self.chol, diff, upper=False)
        m2 = (z * z).sum(dim=1)                                          # (hw, B)
        return m2.sqrt().T.reshape(B, h, w).float()

    @torch.no_grad()
    def predict(self, images):
        self._check_fitted()
        cells = self.mahalanobis(self._embed(images))
        maps = self.postprocess(cells, images.shape[-2:])
        return maps.flatten(1).max(dim=1).values.cpu(), maps.cpu()


# --------------------------------------------------------------------------------------------
# Prototype map alone (eq 14)
# --------------------------------------------------------------------------------------------
class ProtoKNN(_Baseline):
    """The prototype error map of eq (14) used as a detector on its own: AnomalySD's prototype
    stage without any inpainting.

    Bank ``P_c`` (eq 13): every psi feature of the rotation-augmented normals (``augment="rot"``:
    0/90/180/270 degrees, :func:`~anomalysd_core.method.prototypes.rotations`). Map: ``E_hw = min_f
    ||psi(x)_hw - f||^2`` (eq 14, :func:`~anomalysd_core.method.prototypes.error_map`), upsampled and
    blurred; image score = max of the blurred map. ``smooth`` is passed to ``extractor.psi`` (None:
    the extractor's own setting, the same psi the AnomalySD prototype mask uses).
    """

    def __init__(self, extractor, augment: str | None = "rot", smooth: bool | None = None,
                 blur_sigma_512: float = BLUR_SIGMA_512):
        super().__init__(extractor, blur_sigma_512)
        self.augment = augment
        self.smooth = smooth

    def fit(self, normal_images):
        feats = self.extractor.psi(augment_normals(normal_images, self.augment), smooth=self.smooth)
        self.bank = build_bank(feats)
        self.fitted = True
        return self

    @torch.no_grad()
    def error_map(self, images) -> torch.Tensor:
        """Eq (14) at feature resolution: ``(B, h, w)``."""
        self._check_fitted()
        return error_map(self.extractor.psi(images, smooth=self.smooth), self.bank)

    @torch.no_grad()
    def predict(self, images):
        maps = self.postprocess(self.error_map(images), images.shape[-2:])
        return maps.flatten(1).max(dim=1).values.cpu(), maps.cpu()
