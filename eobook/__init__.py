"""eobook: an executable reproducibility book for Earth-observation self-supervised learning.

The package holds everything the chapters reuse or test: profiles (:mod:`eobook.config`), runtime and
provenance (:mod:`eobook.runtime`), the training loop (:mod:`eobook.train`), evaluation
(:mod:`eobook.evaluate`), data readers and the synthetic sample world (:mod:`eobook.data`), shared
network blocks (:mod:`eobook.nn`), one module per paper (:mod:`eobook.methods`), analyses
(:mod:`eobook.analysis`) and figures (:mod:`eobook.viz`).
"""
__version__ = "0.1.0"
