"""The data the code runs on.

==================  ==============================================================================
``datasets``        MVTec-AD, VisA and mini layouts; images, masks and K-shot draws
``mini``            the embedded mini benchmark: ``build_mini`` and ``ensure_mini``
``sources``         what each mini class is made from (``CLASS_INFO``), clean crops, PNG writer
``textures``        the texture classes (brick, grass, gravel)
``coins``           the object class (coins)
``solar``           the solar-cell classes (elpv-dataset)
``defects``         the synthetic defects and their exact masks
``tiny``            a tiny random-weight SD checkpoint of the paper's architecture, for tests
==================  ==============================================================================
"""
