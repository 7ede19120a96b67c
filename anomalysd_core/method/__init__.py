"""The method: what the paper describes (eq 1-21) and the baselines it is compared with.

Read in this order; each module cites the paper's equations it implements.

==================  ==============================================================================
``diffusion``       the preliminaries in plain PyTorch, to read beside the equations: forward
                    process (eq 1), DDPM step (eq 2), losses (eq 3, 5), cross-attention (eq 4)
``models``          the SD components (VAE E and D, 9-channel inpainting U-Net, text encoder tau,
                    scheduler): ``load_components`` from a hub id or a folder, the mini architecture
``masks``           training masks by foreground IoU (Sec. 4.1) and the 85 multi-scale grid masks
                    M_ij^(k) of inference (Sec. 4.2)
``prompts``         hierarchical prompts (Sec. 4.1, ``prompts.yaml``) and their sampling
``finetune``        fine-tuning the U-Net (eq 7-8) and the VAE decoder (eq 9-10) on the K shots
``inpaint``         the inpainting input [z_t ; z_o ; m~] (eq 7) and the batched partial-DDIM
                    engine from T~ = lambda T (eq 11)
``prototypes``      the prototype bank, error map E and prototype mask M^(p) (eq 12-15)
``scoring``         ``AnomalySD``: distances d_pix, d_lpips, d_feat, their fusion and the image
                    score (eq 16-21)
``features``        the backbone psi (EfficientNet, eq 12) and the distance D (LPIPS, eq 16-17)
``metrics``         image and pixel AUROC, AUPR, F1-max, PRO, and the paired bootstrap
``baselines``       the baselines by name (``build_baseline``)
``memory_bank``     PatchCore, SPADE, PaDiM and the prototype kNN map on AnomalySD's features
``peers``           WinCLIP (CLIP) and AnomalyDINO (DINOv2), with their own foundation models
``autolambda``      ours, not the paper's: lambda chosen per class from the normal shots alone
==================  ==============================================================================

Nothing here imports ``anomalysd_core.reproduce`` or ``anomalysd_core.data``
(``tests/test_layout.py`` checks it).
"""
