"""Hugging Face `evaluate` measurement modules, one folder each: ``evaluate.load(distill.fairness.measurement_path(name))``."""
