"""Hugging Face `evaluate` measurement modules, one folder each:
``evaluate.load(distill.fairness.measurement_path(name))``. :func:`measurement_info` is their shared
``MeasurementInfo`` (features given as ``{column: dtype}``)."""


def measurement_info(description: str, citation: str, inputs: str, columns: dict[str, str]):
    import datasets
    import evaluate

    return evaluate.MeasurementInfo(
        module_type="measurement", description=description, citation=citation, inputs_description=inputs,
        features=datasets.Features({k: datasets.Value(v) for k, v in columns.items()}))
