"""The machinery that reproduces the paper's tables with the method (``anomalysd_core.method``).

==================  ==============================================================================
``evaluate``        one setting end to end: ``fit`` (shots, fine-tune, banks; cached) and
                    ``evaluate`` (every test image scored, metrics per class; cached)
``schedule``        the process pool that runs a table's settings in parallel on a CPU
``settings``        one setting of a table: AnomalySD and the baselines, with the run info
``tables``          Table 1, Tables 3-5, the lambda sweep (Fig. 4), robustness, diagnosis:
                    ``results/<profile>/<name>.csv`` with provenance
``summaries``       mean ± std, per-class tables, bootstrap gaps, our numbers beside the paper's
``prose``           the book's comparison sentences, computed from the numbers
``paper_numbers``   the paper's own numbers (Tables 1, 3, 4, 5), labelled as the paper's
``params``          the notebooks' parameters -> overrides, lists and defaults
``display``         what a notebook shows: ``glue``, ``html_table``, ``components_for_notebook``
``plots``           the book's figures
``book``            the book runner: papermill over the notebooks, then Jupyter Book
``cost``            the cost model of the inpainting engine (calls x per-call costs)
``robustness``      the test images under viewpoint, illumination, blur and noise shifts
``diagnose``        where the scoring's links hold or break, measured per stage
``pretrain``        pre-training the mini base model (``models/mini-base``)
==================  ==============================================================================
"""
