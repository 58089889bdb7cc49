"""Optional regard / toxicity scoring with any Hugging Face text-classification model.

Nothing is downloaded unless the user names a classifier; without one the report says
"not computed (no classifier given)".
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence

from ..errors import DistillError

NOT_COMPUTED = "not computed (no classifier given)"


def load_classifier(name_or_path: str, device=None, trust_remote_code: bool = False):
    """A ``transformers`` text-classification pipeline for ``name_or_path`` (a Hub name or local path)."""
    from transformers import pipeline

    try:
        return pipeline("text-classification", model=name_or_path, device=device,
                        trust_remote_code=trust_remote_code)
    except (OSError, ValueError) as exc:
        first = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
        raise DistillError(f"Could not load the classifier '{name_or_path}': {first}. Pass a local directory "
                           "or Hub name of a text-classification model (e.g. a regard or toxicity model).") from None


def label_rates(labels: Sequence[str]) -> dict[str, float]:
    """Share of each label among ``labels``."""
    counts = Counter(labels)
    return {k: counts[k] / len(labels) for k in sorted(counts)} if labels else {}


def classify_by_gender(classifier, texts_by_gender: dict[str, list[str]], batch_size: int = 32) -> dict:
    """Label rates of the classifier's top label per subject gender, and their male − female gaps."""
    rates = {}
    for gender, texts in texts_by_gender.items():
        preds = classifier([t if t.strip() else "." for t in texts], batch_size=batch_size, truncation=True) \
            if texts else []
        rates[gender] = label_rates([p["label"] for p in preds])
    labels = sorted(set().union(*(r.keys() for r in rates.values()))) if rates else []
    gaps = {}
    if "male" in rates and "female" in rates and rates["male"] and rates["female"]:
        gaps = {lab: rates["male"].get(lab, 0.0) - rates["female"].get(lab, 0.0) for lab in labels}
    return {"label_rates": rates, "label_rate_gap": gaps}
