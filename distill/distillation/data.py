"""The training and evaluation data of a run: its source, canary (privacy audits) and counterfactual augmentation.

:func:`prepare_datasets` reads the data keys of a :class:`~distill.distillation.config.DistillationConfig` and
returns tokenised datasets, through the shared text pipeline of :mod:`distill.text_data`.
"""

from __future__ import annotations

from datasets import Dataset

from ..text_data import add_record_ids, load_raw_datasets, tokenize_and_pack


def prepare_datasets(args, tokenizer, texts: list[str] | None = None) -> tuple[Dataset, Dataset | None]:
    """Train and eval datasets for a :class:`~distill.distillation.config.DistillationConfig` (tokenised, packed)."""
    raw = load_raw_datasets(
        None if texts is not None else args.dataset_name,
        dataset_config_name=args.dataset_config_name,
        dataset_split=args.dataset_split,
        train_file=None if texts is not None else args.train_file,
        validation_file=args.validation_file,
        texts=texts,
        text_column=args.text_column,
        validation_split_percentage=args.validation_split_percentage,
        seed=args.seed,
    )
    if args.max_train_samples is not None:
        raw["train"] = raw["train"].select(range(min(args.max_train_samples, len(raw["train"]))))
    if getattr(args, "canary_repeats", 0) > 0:  # privacy audits: k copies of a secret canary
        from ..privacy.canary import insert_canary

        raw["train"], _ = insert_canary(raw["train"], args.text_column, args.canary_repeats, args.canary_seed)
    if "validation" in raw and args.max_eval_samples is not None:
        raw["validation"] = raw["validation"].select(range(min(args.max_eval_samples, len(raw["validation"]))))
    if not args.packing:
        raw["train"] = add_record_ids(raw["train"])
    if args.cda != "none":  # counterfactual augmentation: training data only, never the eval split
        from ..counterfactual.cda import apply_cda
        from ..counterfactual.lexicon import load_lexicon
        from ..counterfactual.swap import GenderSwapper

        swapper = GenderSwapper(load_lexicon(names=bool(args.cda_names), pairs_file=args.cda_pairs_file))
        raw["train"] = apply_cda(raw["train"], swapper, mode=args.cda, prob=args.cda_prob, seed=args.seed,
                                 text_column=args.text_column, num_proc=args.preprocessing_num_workers)
    kw = dict(block_size=args.block_size, text_column=args.text_column, packing=args.packing,
              num_proc=args.preprocessing_num_workers)
    train = tokenize_and_pack(raw["train"], tokenizer, **kw)
    evald = tokenize_and_pack(raw["validation"], tokenizer, **kw) if "validation" in raw else None
    return train, evald
