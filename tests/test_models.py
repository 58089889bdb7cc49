"""The one builder of teacher, student and tokenizer (distill.distillation.models.build_models) honours the config."""

import pytest
import torch

from distill.distillation import models
from distill.distillation.models import build_models
from distill.distillation.student import build_student
from distill.errors import IncompatibleModelsError, UnsafeWeightsError
from distill.model_loading import load_causal_lm, load_tokenizer


@pytest.fixture(scope="module")
def one_layer_student(tiny_teacher_dir, tmp_path_factory):
    """A 1-block student saved with safetensors and the teacher's tokenizer."""
    path = str(tmp_path_factory.mktemp("student") / "s1")
    build_student(load_causal_lm(tiny_teacher_dir), num_layers=1).save_pretrained(path, safe_serialization=True)
    load_tokenizer(tiny_teacher_dir).save_pretrained(path)
    return path


def test_builds_from_the_teacher_by_default(tiny_args):
    teacher, student, tok = build_models(tiny_args(student_num_layers=2, student_layers=None))
    assert teacher.config.n_layer == 4 and student.config.n_layer == 2
    assert student.config.distill_teacher_layers == [0, 3] and tok.pad_token is not None
    args = tiny_args(student_num_layers=None, student_layers=[1, 2, 3], teacher_dtype="bfloat16")
    teacher, student, _ = build_models(args)
    assert student.config.distill_teacher_layers == [1, 2, 3]
    assert teacher.dtype == torch.bfloat16 and student.dtype == torch.float32


def test_a_saved_student_dir_is_used(tiny_args, one_layer_student):
    _, student, _ = build_models(tiny_args(student_model_name_or_path=one_layer_student, student_num_layers=2))
    assert student.config.n_layer == 1 and student.dtype == torch.float32


def test_the_student_tokenizer_is_checked(tiny_args, tiny_teacher_dir, tmp_path):
    path = str(tmp_path / "other-tok")
    load_causal_lm(tiny_teacher_dir).save_pretrained(path, safe_serialization=True)
    tok = load_tokenizer(tiny_teacher_dir)
    tok.add_tokens(["<not-the-teacher's>"])
    tok.save_pretrained(path)
    with pytest.raises(IncompatibleModelsError, match="tokenizers map tokens to different ids"):
        build_models(tiny_args(student_model_name_or_path=path))


def test_allow_pickle_reaches_the_student(tiny_args, tiny_teacher_dir, tmp_path):
    path = str(tmp_path / "pickled")
    student = build_student(load_causal_lm(tiny_teacher_dir), num_layers=1)
    student.config.save_pretrained(path)
    torch.save(student.state_dict(), f"{path}/pytorch_model.bin")  # pickle weights only
    with pytest.raises(UnsafeWeightsError):
        build_models(tiny_args(student_model_name_or_path=path))
    _, student, _ = build_models(tiny_args(student_model_name_or_path=path, allow_pickle=True))
    assert student.config.n_layer == 1


def test_settings_reach_the_loaders(tiny_args, tiny_teacher_dir, one_layer_student, monkeypatch):
    calls = []

    def spy(fn):
        def wrapped(name, *a, **kw):
            calls.append((fn.__name__, name, kw))
            return fn(name, *a, **{k: v for k, v in kw.items() if k != "trust_remote_code"})
        return wrapped

    monkeypatch.setattr(models, "load_causal_lm", spy(load_causal_lm))
    monkeypatch.setattr(models, "load_tokenizer", spy(load_tokenizer))
    args = tiny_args(student_model_name_or_path=one_layer_student, tokenizer_name_or_path=one_layer_student,
                     trust_remote_code=True, allow_pickle=True, teacher_dtype="float32")
    build_models(args)
    by_name = {(fn, name): kw for fn, name, kw in calls}
    assert by_name[("load_causal_lm", tiny_teacher_dir)] == dict(dtype="float32", trust_remote_code=True,
                                                                 allow_pickle=True)
    assert by_name[("load_causal_lm", one_layer_student)] == dict(dtype="float32", trust_remote_code=True,
                                                                  allow_pickle=True)
    assert by_name[("load_tokenizer", one_layer_student)] == dict(trust_remote_code=True)  # tokenizer_name_or_path
    assert ("load_tokenizer", tiny_teacher_dir) not in by_name


def test_loaded_models_are_used_as_they_are(tiny_args, tiny_teacher_dir, gpt2_tok):
    teacher = load_causal_lm(tiny_teacher_dir)
    student = build_student(teacher, num_layers=1)
    got = build_models(tiny_args(student_model_name_or_path="/does/not/exist"), teacher=teacher, student=student,
                       tokenizer=gpt2_tok)
    assert got[0] is teacher and got[1] is student and got[2] is gpt2_tok


def test_the_trainer_builds_with_it(tiny_args, one_layer_student):
    from distill.distillation.trainer import DistillationTrainer

    trainer = DistillationTrainer(args=tiny_args(student_model_name_or_path=one_layer_student))
    assert trainer.model.config.n_layer == 1 and trainer.teacher.config.n_layer == 4


def test_builtin_model_is_trained_once_when_processes_race(tmp_path, monkeypatch):
    """Two callers asking for `builtin:tiny-gpt2` at once (two ranks, two test workers): one trains, the other
    waits for it and gets the same directory."""
    import os
    import threading
    import time

    from distill.builtin import tiny_models

    monkeypatch.setenv("FAIR_DISTILL_CACHE", str(tmp_path / "cache"))
    calls = []

    def slow_train(path, spec):
        calls.append(path)
        time.sleep(0.5)  # the other caller arrives while this one trains
        os.makedirs(path)
        with open(os.path.join(path, "config.json"), "w") as fh:
            fh.write("{}")
        return path

    monkeypatch.setattr(tiny_models, "train_tiny_teacher", slow_train)
    paths = []
    threads = [threading.Thread(target=lambda: paths.append(tiny_models.ensure_builtin_model("tiny-gpt2")))
               for _ in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(calls) == 1 and paths == [calls[0], calls[0]]


def test_tiny_teacher_chunked_loss_equals_the_models_own_loss(gpt2_tok):
    """The builtin teacher's chunked next-token loss: the model's cross-entropy and the same gradients, padded
    rows included (the chunks split the positions unevenly)."""
    from distill.builtin import tiny_models
    from distill.text_data import DistillationCollator

    torch.manual_seed(0)
    model = tiny_models.tiny_causal_lm(tiny_models.TinyTeacherSpec(n_layer=1, n_embd=16, n_head=2), gpt2_tok).eval()
    batch = DistillationCollator(pad_token_id=gpt2_tok.pad_token_id)(
        [{"input_ids": torch.randint(0, len(gpt2_tok), (n,)).tolist()} for n in (12, 7, 12)])
    grads = []
    for chunked in (False, True):
        model.zero_grad()
        loss = tiny_models.lm_loss(model, batch, chunked)
        loss.backward()
        grads.append((loss.detach(), {n: p.grad.clone() for n, p in model.named_parameters()}))
    (plain, g_plain), (chunk, g_chunk) = grads
    assert torch.allclose(plain, chunk, rtol=1e-5)
    for name in g_plain:
        assert torch.allclose(g_plain[name], g_chunk[name], rtol=1e-4, atol=1e-7), name
    # several chunks of uneven size give the same loss as one
    h, w = torch.randn(23, 16), torch.randn(50, 16)
    y = torch.randint(0, 50, (23,))
    y[[3, 9]] = -100
    ref = torch.nn.functional.cross_entropy(h @ w.T, y, ignore_index=-100)
    assert torch.allclose(tiny_models.chunked_lm_loss(h, w, y, chunk=5), ref, rtol=1e-5)
    # the builtin GPT-2 vocabulary takes the chunked loss, the demo's restricted one does not
    spec = tiny_models.TinyTeacherSpec()
    assert spec.batch_size * spec.block_size * len(gpt2_tok) * 4 > tiny_models.CHUNKED_LOSS_BYTES
    assert spec.batch_size * spec.block_size * 2000 * 4 <= tiny_models.CHUNKED_LOSS_BYTES
