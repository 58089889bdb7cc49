"""Differential privacy for distillation: DP-SGD engine (opacus accounting), per-record clipping, audits.

* :class:`DPSGDEngine` — records sampler, per-record clipping context, noise + accounting, ``state_dict``;
  the trainer owns the step and calls it (this package never imports the trainer).
* :class:`BookKeepingClipper` — the ``fast`` per-record clipping (one forward, one backward).
* :func:`compute_epsilon`, :func:`calibrate_noise` — accounting (opacus RDP / PRV).
* :mod:`distill.privacy.randomness` — the secret noise generator and sampling seed (OS entropy; ``dp_reproducible``).
* :mod:`distill.privacy.disclosure` — what (ε, δ) covers, written into ``privacy.json`` and the model card.
* :mod:`distill.privacy.audit` — membership inference (loss threshold, reference-calibrated; AUC, TPR at low FPR),
  canary exposure and extraction; :mod:`distill.privacy.canary`.
"""

from .accounting import PrivacyAccountant, calibrate_noise, compute_epsilon, max_steps_within
from .bookkeeping import BookKeepingClipper
from .engine import DPSettings, DPSGDEngine, PrivacyParams, freeze_embeddings
from .records import RecordLayout

__all__ = ["DPSGDEngine", "DPSettings", "PrivacyParams", "PrivacyAccountant", "BookKeepingClipper", "RecordLayout",
           "compute_epsilon", "calibrate_noise", "max_steps_within", "freeze_embeddings"]
