"""anomalysd_core: a readable implementation of AnomalySD (arXiv 2408.01960).

One module per idea of the paper: ``data``/``mini`` (datasets), ``masks``, ``prompts``,
``prototypes`` (eq 12-15), ``models`` (SD parts, eq 4-7), ``pretrain`` (the mini base model),
``finetune`` (eq 8-10), ``inpaint`` (eq 11), ``scoring`` (eq 16-21), ``metrics``, ``evaluate``,
``features`` (backbones and perceptual distances), ``baselines``, ``cli``.
"""
__version__ = "0.1.0"
