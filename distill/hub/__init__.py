"""Publishing distilled models: the model card (``README.md``) and ``distill push`` to the Hugging Face Hub.

* :func:`write_model_card` writes the card of a model directory (metadata, model-index, fairness, privacy).
* :func:`push_model` validates a model directory and uploads the model, tokenizer, card and reports.
"""

from .card import build_model_card, write_model_card
from .push import push_model, select_upload_files, validate_model_dir

__all__ = ["build_model_card", "write_model_card", "push_model", "select_upload_files", "validate_model_dir"]
