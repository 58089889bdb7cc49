import pytest
import torch
from transformers import GPT2Config, GPT2LMHeadModel

from distill.errors import ConfigError, IncompatibleModelsError
from distill.distillation.student import build_student, check_compatible, default_layer_selection, student_config


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


def test_alpha_cos_needs_one_hidden_width():
    teacher, narrow = _gpt2(n_layer=2, n_embd=16), _gpt2(n_layer=2, n_embd=8)
    check_compatible(teacher, narrow)  # another size is fine for KD
    with pytest.raises(ConfigError, match="alpha_cos compares the last hidden states.*16 wide.*8"):
        check_compatible(teacher, narrow, alpha_cos=1.0)
    check_compatible(teacher, _gpt2(n_layer=1, n_embd=16), alpha_cos=1.0)


def test_student_config_keeps_per_layer_fields_consistent():
    from transformers import Qwen2Config

    cfg = Qwen2Config(num_hidden_layers=6, hidden_size=16, intermediate_size=32, num_attention_heads=2,
                      num_key_value_heads=1, use_sliding_window=True, sliding_window=4, max_window_layers=3)
    cfg.mlp_only_layers = [1, 4]  # a list of layer indices (as in MoE configs)
    assert cfg.layer_types == ["full_attention"] * 3 + ["sliding_attention"] * 3
    out = student_config(cfg, [0, 2, 4, 5])
    assert out.num_hidden_layers == 4 and cfg.num_hidden_layers == 6  # a copy
    assert out.layer_types == ["full_attention", "full_attention", "sliding_attention", "sliding_attention"]
    assert out.max_window_layers == 2  # the two chosen layers below 3
    assert out.mlp_only_layers == [2]  # teacher layer 4 is student layer 2
    cfg.layer_types = cfg.layer_types[:5]
    with pytest.raises(ConfigError, match="layer_types has 5 entries for 6 layers"):
        student_config(cfg, [0, 1])
