import pytest
import torch
from transformers import GPT2Config, GPT2LMHeadModel

from distill.errors import ConfigError, IncompatibleModelsError
from distill.distillation.student import build_student, check_compatible, default_layer_selection


def _gpt2(n_layer=12, vocab=97, n_embd=16):
    torch.manual_seed(0)
    return GPT2LMHeadModel(GPT2Config(vocab_size=vocab, n_positions=32, n_embd=n_embd, n_layer=n_layer, n_head=2))


def test_default_selection_matches_distilgpt2_and_spreads():
    assert default_layer_selection(12, 6) == [0, 2, 4, 7, 9, 11]
    assert default_layer_selection(4, 2) == [0, 3]
    assert default_layer_selection(24, 12)[0] == 0 and default_layer_selection(24, 12)[-1] == 23
    assert default_layer_selection(5, 5) == [0, 1, 2, 3, 4]
    for t in range(1, 25):
        for s in range(1, t + 1):
            sel = default_layer_selection(t, s)
            assert len(sel) == s and len(set(sel)) == s and sel == sorted(sel)
    with pytest.raises(ConfigError):
        default_layer_selection(4, 6)


def test_layer_copy_is_exact():
    teacher = _gpt2()
    student = build_student(teacher)
    assert student.config.n_layer == 6
    t_state, s_state = teacher.state_dict(), student.state_dict()
    for s_idx, t_idx in enumerate([0, 2, 4, 7, 9, 11]):
        for name, value in s_state.items():
            prefix = f"transformer.h.{s_idx}."
            if name.startswith(prefix):
                assert torch.equal(value, t_state[f"transformer.h.{t_idx}." + name[len(prefix):]]), name
    for name in ("transformer.wte.weight", "transformer.wpe.weight", "transformer.ln_f.weight",
                 "transformer.ln_f.bias", "lm_head.weight"):
        assert torch.equal(s_state[name], t_state[name]), name
    # copies, not shared storage: training the student never touches the teacher
    assert s_state["transformer.wte.weight"].data_ptr() != t_state["transformer.wte.weight"].data_ptr()


def test_custom_layers_and_bad_indices():
    teacher = _gpt2(n_layer=4)
    student = build_student(teacher, layers=[3, 1])
    assert torch.equal(student.transformer.h[0].mlp.c_fc.weight, teacher.transformer.h[3].mlp.c_fc.weight)
    with pytest.raises(ConfigError, match="student_layers"):
        build_student(teacher, layers=[0, 4])


def test_vocab_mismatch_is_a_clear_error(gpt2_tok):
    with pytest.raises(IncompatibleModelsError, match="vocabularies differ"):
        check_compatible(_gpt2(vocab=97), _gpt2(vocab=98))
    other = type(gpt2_tok)(vocab={"a": 0, "b": 1, "<|endoftext|>": 2}, merges=[])
    with pytest.raises(IncompatibleModelsError, match="tokenizers map tokens to different ids"):
        check_compatible(_gpt2(), _gpt2(), gpt2_tok, other)
