import hashlib
import json
import os

import pytest
import torch

from distill.text_data import DistillationCollator
from distill.distillation.train import build_trainer, run_training


def _digest(model):
    h = hashlib.sha256()
    for name, t in sorted(model.state_dict().items()):
        h.update(name.encode())
        h.update(t.detach().cpu().contiguous().numpy().tobytes())
    return h.hexdigest()


def _batch(trainer, n=4):
    coll = DistillationCollator(trainer.processing_class.pad_token_id)
    return coll([trainer.train_dataset[i] for i in range(n)])


def test_lm_only_reduces_to_plain_fine_tuning(tiny_args):
    trainer = build_trainer(tiny_args(alpha_kd=0.0, alpha_lm=1.0, alpha_cos=0.0))
    batch = _batch(trainer)
    model = trainer.model
    for mode in ("eval", "train"):  # train mode: same dropout masks under the same seed
        getattr(model, mode)()
        torch.manual_seed(0)
        ours = trainer.compute_loss(model, batch)
        torch.manual_seed(0)
        ref = model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"],
                    position_ids=batch["position_ids"], labels=batch["labels"]).loss
        assert ours.item() == pytest.approx(ref.item(), rel=1e-6)


def test_kd_loss_in_trainer_uses_the_teacher(tiny_args):
    trainer = build_trainer(tiny_args(alpha_kd=1.0, alpha_lm=0.0, temperature=2.0))
    batch = _batch(trainer)
    trainer.model.eval()
    with torch.no_grad():
        s = trainer.model(input_ids=batch["input_ids"]).logits
        t = trainer.teacher(input_ids=batch["input_ids"]).logits
    ps, pt = torch.log_softmax(s / 2, -1), torch.log_softmax(t / 2, -1)
    expected = 4 * (pt.exp() * (pt - ps)).sum(-1).mean()
    assert trainer.compute_loss(trainer.model, batch).item() == pytest.approx(expected.item(), rel=1e-4)


def test_teacher_gelu_is_fused_and_predicts_as_loaded(tiny_args, tiny_teacher_dir):
    """The trainer's teacher runs GPT-2's tanh GELU as one kernel (distill.distillation.lean.lean_teacher): the
    teacher as loaded from disk gives the same logits to float32 rounding."""
    from transformers import AutoModelForCausalLM
    from transformers.activations import GELUTanh, NewGELUActivation

    trainer = build_trainer(tiny_args())
    acts = [type(m) for m in trainer.teacher.modules() if isinstance(m, (GELUTanh, NewGELUActivation))]
    assert acts and set(acts) == {GELUTanh}, acts
    stock = AutoModelForCausalLM.from_pretrained(tiny_teacher_dir).eval()
    assert any(isinstance(m, NewGELUActivation) for m in stock.modules())
    ids = _batch(trainer)["input_ids"]
    with torch.no_grad():
        torch.testing.assert_close(trainer.teacher(input_ids=ids).logits, stock(input_ids=ids).logits,
                                   rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("loss_chunk_size", ["off", 8])
def test_compile_loss_reaches_the_kd_term_on_both_loss_paths(tiny_args, monkeypatch, loss_chunk_size):
    """``compile_loss: true`` sends the KD term of the plain and the fused loss through the compiled body (a spy
    here, which computes the eager numbers: the compiled ones are checked in test_losses.py)."""
    from distill.distillation import losses

    calls = []

    def spy(*args):
        calls.append(args[0].shape)
        return losses._kl_and_gradient(*args)

    monkeypatch.setattr(losses, "_compiled_kl_and_gradient", spy)
    batch = None
    values = []
    for compile_loss in (False, True):
        trainer = build_trainer(tiny_args(alpha_kd=1.0, alpha_lm=0.5, temperature=2.0, compile_loss=compile_loss,
                                          loss_chunk_size=loss_chunk_size))
        batch = batch or _batch(trainer)
        trainer.model.eval()
        values.append(trainer.compute_loss(trainer.model, batch))
        assert bool(calls) == compile_loss
    assert values[1].item() == pytest.approx(values[0].item(), rel=1e-6)


def test_teacher_frozen_and_bit_identical_after_training(tiny_args):
    trainer = build_trainer(tiny_args(max_steps=3, alpha_cos=0.5))
    before = _digest(trainer.teacher)
    student_before = _digest(trainer.model)
    trainer.train()
    assert _digest(trainer.teacher) == before
    assert _digest(trainer.model) != student_before
    assert not trainer.teacher.training
    assert all(p.grad is None and not p.requires_grad for p in trainer.teacher.parameters())
    logged = [h for h in trainer.state.log_history if "loss" in h]
    assert logged and all(k in logged[0] for k in ("loss_kd", "loss_lm", "loss_cos"))


def test_gradient_accumulation_matches_bigger_batch(tiny_args):
    """loss / grad for 2x2 accumulated equals one batch of 4 (the trainer normalises per micro-batch)."""
    t1 = build_trainer(tiny_args(per_device_train_batch_size=4, gradient_accumulation_steps=1, max_steps=1,
                                 learning_rate=0.0, max_grad_norm=1e9))
    t2 = build_trainer(tiny_args(per_device_train_batch_size=2, gradient_accumulation_steps=2, max_steps=1,
                                 learning_rate=0.0, max_grad_norm=1e9))
    t1.train()
    t2.train()
    g1 = [h["grad_norm"] for h in t1.state.log_history if "grad_norm" in h][0]
    g2 = [h["grad_norm"] for h in t2.state.log_history if "grad_norm" in h][0]
    assert g2 == pytest.approx(g1, rel=0.02)


def test_eval_perplexity_improves(tiny_args):
    trainer = build_trainer(tiny_args(max_steps=12))
    before = trainer.evaluate()
    trainer.train()
    after = trainer.evaluate()
    assert before["eval_perplexity"] == pytest.approx(2.718281828 ** before["eval_loss"], rel=1e-6)
    assert torch.isfinite(torch.tensor(after["eval_perplexity"]))
    assert after["eval_perplexity"] < before["eval_perplexity"]


def test_resume_continues_the_same_run(tiny_args, tmp_path):
    full = run_training(tiny_args(output_dir=str(tmp_path / "full"), max_steps=8, save_strategy="no"))
    part = tiny_args(output_dir=str(tmp_path / "part"), max_steps=8, save_strategy="steps", save_steps=4)
    # interrupted run: stop after the checkpoint at step 4
    from transformers import TrainerCallback

    class Stop(TrainerCallback):
        def on_save(self, args, state, control, **kw):
            control.should_training_stop = True

    first = build_trainer(part, callbacks=[Stop()])
    first.train()
    assert first.state.global_step == 4
    assert os.path.isdir(tmp_path / "part" / "checkpoint-4")
    resumed = run_training(tiny_args(output_dir=str(tmp_path / "part"), max_steps=8, save_strategy="no",
                                     resume_from_checkpoint="latest"))
    assert resumed.state.global_step == 8
    steps = [h["step"] for h in resumed.state.log_history if "loss" in h]
    assert steps[-1] == 8 and 4 in steps  # history continues from the checkpoint
    full_losses = [h["loss"] for h in full.state.log_history if "loss" in h]
    res_losses = [h["loss"] for h in resumed.state.log_history if "loss" in h]
    assert res_losses == pytest.approx(full_losses, rel=1e-3)  # same run, bit for bit up to float noise
    assert sum(res_losses[-3:]) < sum(res_losses[:3])


def test_run_training_saves_loadable_safetensors_student(tiny_args, tmp_path):
    from transformers import AutoModelForCausalLM

    args = tiny_args(output_dir=str(tmp_path / "o"), max_steps=2)
    run_training(args)
    out = tmp_path / "o"
    assert (out / "model.safetensors").exists() and not (out / "pytorch_model.bin").exists()
    assert (out / "distill_config.yaml").exists() and (out / "tokenizer.json").exists()
    assert not (out / "training_args.bin").exists()
    model = AutoModelForCausalLM.from_pretrained(str(out))
    assert model.config.n_layer == 2
    results = json.loads((out / "all_results.json").read_text())
    assert results["eval_perplexity"] > 1


def test_refuses_to_overwrite_a_previous_run(tiny_args, tmp_path):
    from distill.errors import ConfigError

    out = tmp_path / "o"
    out.mkdir()
    (out / "model.safetensors").write_bytes(b"precious")
    with pytest.raises(ConfigError, match="already exists and is not empty"):
        run_training(tiny_args(output_dir=str(out)))
    assert (out / "model.safetensors").read_bytes() == b"precious"


def test_logged_loss_components_are_row_weighted_means_of_the_logging_window(tiny_args):
    """Micro-batches add (value × rows, rows) locally; `log` reduces them once: an empty micro-batch adds nothing,
    the window is cleared after each training log, and non-training logs pass through untouched."""
    trainer = build_trainer(tiny_args(alpha_kd=1.0, alpha_lm=1.0))
    trainer.model.train()
    trainer._record_metrics({"loss_kd": torch.tensor(1.0), "loss_lm": torch.tensor(4.0)}, 3)
    trainer._record_metrics({"loss_kd": torch.tensor(3.0), "loss_lm": torch.tensor(0.0)}, 1)
    trainer._record_metrics({"loss_kd": torch.tensor(100.0)}, 0)  # an empty micro-batch
    trainer.log({"fairness/x": 0.5})
    assert trainer.state.log_history[-1]["fairness/x"] == 0.5 and "loss_kd" not in trainer.state.log_history[-1]
    trainer.log({"loss": 2.0})
    logged = trainer.state.log_history[-1]
    assert logged["loss_kd"] == pytest.approx((1 * 3 + 3 * 1) / 4) and logged["loss_lm"] == pytest.approx(3.0)
    trainer.log({"loss": 2.0})
    assert "loss_kd" not in trainer.state.log_history[-1]
