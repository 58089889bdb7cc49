"""The one place that builds the teacher, the student and the tokenizer of a run from its config.

:func:`build_models` reads these keys of a :class:`~distill.distillation.config.DistillationConfig`:

* the teacher: ``teacher_model_name_or_path`` (a Hub name, a local directory or ``builtin:NAME``), loaded in
  ``teacher_dtype`` with ``trust_remote_code`` and ``allow_pickle`` (:func:`distill.model_loading.load_causal_lm`);
* the tokenizer: ``tokenizer_name_or_path``, else the teacher's;
* the student: ``student_model_name_or_path`` (loaded in float32; the tokenizer saved next to it, if any, must
  map tokens to the teacher tokenizer's ids), else built from the teacher's blocks by
  :func:`~distill.distillation.student.build_student` (``student_num_layers`` / ``student_layers``).

Any of the three may be passed already loaded (a teacher may also be a name or path); what is passed is used
as it is, except that a passed teacher is cast to ``teacher_dtype`` unless that is ``auto``. Teacher and student
are then checked to predict over the same vocabulary (:func:`~distill.distillation.student.check_compatible`).
"""

from __future__ import annotations

import torch
from torch import nn

from ..model_loading import load_causal_lm, load_tokenizer, maybe_load_tokenizer
from .config import DistillationConfig
from .student import build_student, check_compatible

#: The config keys that decide what :func:`build_models` builds (a cache of built models is keyed by them).
MODEL_KEYS = ("teacher_model_name_or_path", "teacher_dtype", "tokenizer_name_or_path", "student_model_name_or_path",
              "student_num_layers", "student_layers", "trust_remote_code", "allow_pickle")


def model_key(args: DistillationConfig) -> tuple:
    """The values of :data:`MODEL_KEYS` in ``args``, hashable: equal keys build equal models."""
    return tuple(tuple(v) if isinstance(v, list) else v for v in (getattr(args, k) for k in MODEL_KEYS))


def build_models(args: DistillationConfig, *, teacher: nn.Module | str | None = None,
                 student: nn.Module | None = None, tokenizer=None) -> tuple[nn.Module, nn.Module, object]:
    """``(teacher, student, tokenizer)`` of the config; the arguments given replace what would be loaded."""
    if teacher is None:
        teacher = args.teacher_model_name_or_path
    if isinstance(teacher, str):
        teacher = load_causal_lm(teacher, dtype=args.teacher_dtype, trust_remote_code=args.trust_remote_code,
                                 allow_pickle=args.allow_pickle)
    elif args.teacher_dtype != "auto":
        teacher = teacher.to(dtype=getattr(torch, args.teacher_dtype))
    if tokenizer is None:
        tokenizer = load_tokenizer(args.tokenizer_name_or_path or args.teacher_model_name_or_path,
                                   trust_remote_code=args.trust_remote_code)
    student_tokenizer = None
    if student is None and args.student_model_name_or_path:
        student = load_causal_lm(args.student_model_name_or_path, dtype="float32",
                                 trust_remote_code=args.trust_remote_code, allow_pickle=args.allow_pickle)
        student_tokenizer = maybe_load_tokenizer(args.student_model_name_or_path, args.trust_remote_code)
    elif student is None:
        student = build_student(teacher, num_layers=args.student_num_layers, layers=args.student_layers)
    check_compatible(teacher, student, tokenizer, student_tokenizer, alpha_cos=args.alpha_cos)
    return teacher, student, tokenizer
