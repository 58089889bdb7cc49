"""Differential privacy for distillation: DP-SGD engine (opacus accounting), per-record clipping, audits.

* :class:`PrivacyEngine` — what :class:`~distill.trainer.DistillationTrainer` delegates to when ``dp_enabled``.
* :class:`BookKeepingClipper` — the ``fast`` per-record clipping (one forward, one backward).
* :func:`compute_epsilon`, :func:`calibrate_noise` — accounting (opacus RDP / PRV).
* :mod:`distill.privacy.randomness` — the secret noise generator and sampling seed (OS entropy; ``dp_reproducible``).
* :mod:`distill.privacy.disclosure` — what (ε, δ) covers, written into ``privacy.json`` and the model card.
* :mod:`distill.privacy.audit` — membership inference (loss threshold, reference-calibrated; AUC, TPR at low FPR),
  canary exposure and extraction; :mod:`distill.privacy.canary`.
"""

from .accounting import PrivacyAccountant, calibrate_noise, compute_epsilon, max_steps_within
from .bookkeeping import BookKeepingClipper
from .engine import PRIVACY_FILENAME, PrivacyEngine, PrivacyParams, freeze_embeddings
from .records import RecordLayout

__all__ = ["PrivacyEngine", "PrivacyParams", "PrivacyAccountant", "BookKeepingClipper", "RecordLayout",
           "compute_epsilon", "calibrate_noise", "max_steps_within", "freeze_embeddings", "PRIVACY_FILENAME"]
