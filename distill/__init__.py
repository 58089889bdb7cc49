"""fair-distill: fair and private knowledge distillation for causal language models.

The public API is imported lazily so that ``distill --help`` starts instantly.
"""

from __future__ import annotations

import importlib

__version__ = "0.1.0"

_EXPORTS = {
    "DistillationConfig": "distill.distillation.config",
    "load_config": "distill.distillation.config",
    "DistillationTrainer": "distill.distillation.trainer",
    "DistillationCollator": "distill.text_data",
    "DistillError": "distill.errors",
    "build_student": "distill.distillation.student",
    "default_layer_selection": "distill.distillation.student",
}

__all__ = sorted(_EXPORTS) + ["__version__"]


def __getattr__(name: str):
    if name in _EXPORTS:
        value = getattr(importlib.import_module(_EXPORTS[name]), name)
        globals()[name] = value
        return value
    raise AttributeError(f"module 'distill' has no attribute {name!r}")


def __dir__():
    return __all__
