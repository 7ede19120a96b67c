"""anomalysd_core: a readable implementation of AnomalySD (arXiv 2408.01960).

Three wings and a front door, imported one way only (front door -> reproduce -> data -> method
-> ``config``/``utils``; ``tests/test_layout.py`` checks it):

* ``method/``: the paper's method, eq 1-21, and the baselines it is compared with (its
  ``__init__`` maps each module to its equations): read this to learn AnomalySD.
* ``data/``: the datasets (MVTec-AD, VisA, mini layouts), the builders of the embedded mini
  benchmark and the tiny random-weight checkpoint the paper profile is tested on.
* ``reproduce/``: the machinery that regenerates the paper's tables (settings, tables, the process
  pool, summaries and prose, the book runner, cost model, robustness, diagnosis, pre-training).
* the front door: ``cli`` (``python -m anomalysd_core``), ``own`` (scoring your own images),
  ``parallel`` (data-parallel ``evaluate`` with accelerate), ``config`` (the three profiles) and
  ``utils``.
"""
__version__ = "0.1.0"
