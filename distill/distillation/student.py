"""Build a student from a teacher by layer selection, or check a given student against the teacher.

The student keeps the teacher's embeddings (token and position), final norm and LM head, and copies a
subset of the teacher's transformer blocks in order. For GPT-2 (12 blocks) -> 6 blocks the default is
DistilGPT-2's selection 0, 2, 4, 7, 9, 11; for other depths an even spread that always keeps the first
and the last block.

Any causal LM whose blocks are one ``nn.ModuleList`` (GPT-2's ``transformer.h``; Llama's, Qwen2's and Mistral's
``model.layers``) is handled: the student has the teacher's class and config with the depth field
(``n_layer`` / ``num_hidden_layers``) set to the number of chosen blocks and the per-layer fields kept consistent
with the choice (:func:`student_config`): per-layer lists (``layer_types``, e.g. Qwen2's full vs sliding-window
attention) keep the chosen entries, lists of layer indices (``mlp_only_layers``) are renumbered, and Qwen2's
``max_window_layers`` (layers from that index on use the sliding window) becomes the number of chosen layers
below it. Rotary position and grouped-query attention need nothing beyond the blocks' own weights.
"""

from __future__ import annotations

import copy

import torch
from torch import nn

from ..errors import ConfigError, IncompatibleModelsError


def default_layer_selection(teacher_layers: int, student_layers: int) -> list[int]:
    """An even spread of ``student_layers`` indices over ``teacher_layers``, first and last included."""
    if not 1 <= student_layers <= teacher_layers:
        raise ConfigError(
            f"A student of {student_layers} layers cannot be built from a teacher of {teacher_layers} layers: "
            f"choose student_num_layers between 1 and {teacher_layers}."
        )
    if student_layers == 1:
        return [teacher_layers - 1]
    step = (teacher_layers - 1) / (student_layers - 1)
    # round half up (not banker's rounding) so that 12 -> 6 gives DistilGPT-2's 0,2,4,7,9,11
    return [int(i * step + 0.5) for i in range(student_layers)]


def _blocks(model: nn.Module) -> tuple[nn.Module, str]:
    """The module holding the transformer blocks and its attribute name (GPT-2: transformer.h)."""
    base = getattr(model, model.base_model_prefix, model)
    for name in ("h", "layers", "blocks", "layer"):
        blocks = getattr(base, name, None)
        if isinstance(blocks, nn.ModuleList):
            return base, name
    raise ConfigError(
        f"Cannot find the transformer blocks of {type(model).__name__}: building a student by layer copy "
        "needs the blocks in one ModuleList (GPT-2, Llama, Qwen2, Mistral, ...): pass student_model_name_or_path "
        "to use your own student."
    )


def _num_layers_key(config) -> str:
    for key in ("n_layer", "num_hidden_layers", "num_layers"):
        if hasattr(config, key):
            return key
    raise ConfigError(f"Cannot tell the depth of a {type(config).__name__}.")


# config fields holding one entry per layer, and fields holding a list of layer indices
_PER_LAYER_FIELDS = ("layer_types", "no_rope_layers", "sliding_window_layers", "swa_layers")
_LAYER_INDEX_FIELDS = ("mlp_only_layers",)


def student_config(config, layers: list[int]):
    """A copy of the teacher's ``config`` for a student made of the teacher blocks ``layers`` (in order)."""
    key = _num_layers_key(config)
    depth = getattr(config, key)
    config = copy.deepcopy(config)
    setattr(config, key, len(layers))
    for name in _PER_LAYER_FIELDS:
        value = getattr(config, name, None)
        if isinstance(value, (list, tuple)):
            if len(value) != depth:
                raise ConfigError(f"The teacher's config.{name} has {len(value)} entries for {depth} layers: "
                                  "fix the teacher's config.")
            setattr(config, name, [value[i] for i in layers])
    for name in _LAYER_INDEX_FIELDS:
        value = getattr(config, name, None)
        if isinstance(value, (list, tuple)):
            setattr(config, name, [j for j, i in enumerate(layers) if i in value])
    threshold = getattr(config, "max_window_layers", None)
    if isinstance(threshold, int):
        config.max_window_layers = sum(1 for i in layers if i < threshold)
    return config


def build_student(teacher: nn.Module, num_layers: int | None = None,
                  layers: list[int] | None = None) -> nn.Module:
    """A new student whose weights are exact copies of the teacher's embeddings, norm, head and chosen blocks."""
    key = _num_layers_key(teacher.config)
    teacher_depth = getattr(teacher.config, key)
    if layers is None:
        layers = default_layer_selection(teacher_depth, num_layers or max(1, teacher_depth // 2))
    layers = [int(i) for i in layers]
    bad = [i for i in layers if not 0 <= i < teacher_depth]
    if bad or not layers:
        raise ConfigError(
            f"student_layers {layers} must be non-empty indices in [0, {teacher_depth - 1}] of the teacher's blocks."
        )
    config = student_config(teacher.config, layers)
    student = type(teacher)(config)
    student.to(dtype=torch.float32)

    t_state = teacher.state_dict()
    t_base, t_name = _blocks(teacher)
    s_base, s_name = _blocks(student)
    # The prefix of the blocks inside the full state dict, e.g. "transformer.h."
    prefix = next(n for n, m in teacher.named_modules() if m is getattr(t_base, t_name)) + "."
    new_state = {}
    for k, v in t_state.items():
        if k.startswith(prefix):
            idx, rest = k[len(prefix):].split(".", 1)
            if int(idx) in layers:
                new_state[f"{prefix}{layers.index(int(idx))}.{rest}"] = v.detach().clone().float()
        else:
            new_state[k] = v.detach().clone().float()
    missing, unexpected = student.load_state_dict(new_state, strict=False)
    missing = [m for m in missing if not m.endswith("attn.bias") and not m.endswith("masked_bias")]
    if missing or unexpected:
        raise RuntimeError(f"Student state mismatch: missing {missing}, unexpected {unexpected}")
    if getattr(config, "tie_word_embeddings", False):
        student.tie_weights()
    student.config.distill_teacher_layers = layers
    return student


def hidden_width(model: nn.Module) -> int:
    """The width of the last hidden state (what the output layer reads): the ``alpha_cos`` term compares it."""
    return int(model.get_output_embeddings().weight.shape[-1])


def check_compatible(teacher: nn.Module, student: nn.Module, teacher_tokenizer=None, student_tokenizer=None,
                     alpha_cos: float = 0.0) -> None:
    """Raise unless teacher and student can be distilled one into the other.

    Both must predict over the same vocabulary with one tokenizer (:class:`IncompatibleModelsError`); their
    architectures and sizes may differ. With ``alpha_cos > 0`` their last hidden states must have one width
    (:class:`ConfigError`)."""
    t_vocab = teacher.get_output_embeddings().weight.shape[0]
    s_vocab = student.get_output_embeddings().weight.shape[0]
    if t_vocab != s_vocab:
        raise IncompatibleModelsError(
            f"Teacher and student vocabularies differ ({t_vocab} vs {s_vocab} output tokens): distillation "
            "compares their next-token distributions, so both must use the same tokenizer. Build the student "
            "from the teacher (leave student_model_name_or_path unset) or pick a student with the teacher's tokenizer."
        )
    if teacher_tokenizer is not None and student_tokenizer is not None:
        if teacher_tokenizer.get_vocab() != student_tokenizer.get_vocab():
            raise IncompatibleModelsError(
                "Teacher and student tokenizers map tokens to different ids: both must share one tokenizer. "
                "Set tokenizer_name_or_path to the teacher's tokenizer and use a student trained with it."
            )
    if alpha_cos > 0 and hidden_width(teacher) != hidden_width(student):
        raise ConfigError(
            f"alpha_cos compares the last hidden states, but the teacher's are {hidden_width(teacher)} wide and the "
            f"student's {hidden_width(student)}: set alpha_cos to 0 or use a student of the teacher's hidden size."
        )
