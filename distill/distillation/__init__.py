"""The distillation core: one run's config, the trainer, the losses and the teacher side.

=========================  =========================================================================================
module                     what it holds
=========================  =========================================================================================
``config``                 :class:`DistillationConfig` (a ``TrainingArguments``): every knob of a run, typed
``config_loader``          YAML files + command-line flags -> a checked config (and extra sections, e.g. federated)
``models``                 the one place that builds teacher, student and tokenizer from a config
``student``                a student from teacher blocks (layer selection), or a check of a given student
``data``                   a run's training and evaluation data (source, canary, counterfactual augmentation)
``teacher_side``           the teacher's targets for a batch: dense, split (body + output layer) or cached; CRR
``teacher_cache``          top-k teacher targets stored on disk by ``distill cache-teacher``, read back in training
``losses``                 the distillation loss on full logits (pure functions), the α-combination of the terms
``fused_loss``             the same loss through both output layers in chunks (no ``[B, T, V]`` tensor)
``trainer``                :class:`DistillationTrainer`: orchestrates a step (teacher side, loss, DP engine, metrics)
``train``                  ``distill train`` end to end: build, train, resume, save atomically, publish
``checkpoints``            which checkpoint a run resumes from; the marker of a complete checkpoint
``parallel``               which ``accelerate`` engines (DDP, FSDP, DeepSpeed) a run supports, checked at start-up
=========================  =========================================================================================

Dependencies point down: the core uses the feature packages (:mod:`distill.counterfactual`,
:mod:`distill.privacy`, :mod:`distill.fairness`) and the ground modules; none of them imports the core.
"""
