"""Row-aligned output layers (distill.distillation.aligned_logits): the same logits, log-probabilities and
gradients as ``layer(h)`` / ``log_softmax(layer(h))``, with 64-byte-aligned rows where they apply and the plain
layer elsewhere."""

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from distill.distillation.aligned_logits import (ROW_ALIGN, aligned_linear, aligns, linear_log_softmax, linear_logits,
                                                 padded_width)


def _row_stride_bytes(t: torch.Tensor) -> int:
    return t.stride(-2) * t.element_size()


@pytest.mark.parametrize("vocab,bias", [(50257, False), (37, True), (101, False)])
@pytest.mark.parametrize("shape", [(6,), (2, 5), (3, 1, 4)])
def test_linear_logits_equal_the_layer_with_gradients_and_aligned_rows(vocab, bias, shape):
    torch.manual_seed(0)
    layer = nn.Linear(24, vocab, bias=bias)
    hidden = torch.randn(*shape, 24, requires_grad=True)
    grad = torch.randn(*shape, vocab)
    reference = layer(hidden)
    wanted = torch.autograd.grad(reference, [hidden, *layer.parameters()], grad)
    out = linear_logits(layer, hidden)
    assert aligns(layer, hidden) and out.shape == reference.shape
    torch.testing.assert_close(out, reference, rtol=1e-6, atol=1e-6)
    if len(shape) > 1:
        assert out.stride(-2) == padded_width(vocab) and _row_stride_bytes(out) % 64 == 0
    got = torch.autograd.grad(out, [hidden, *layer.parameters()], grad)
    for g, w in zip(got, wanted):
        torch.testing.assert_close(g, w, rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(aligned_linear(hidden, layer.weight, layer.bias), reference, rtol=1e-6, atol=1e-6)


def test_linear_logits_take_a_strided_input_and_only_the_gradients_asked_for():
    torch.manual_seed(1)
    layer = nn.Linear(8, 45)
    layer.weight.requires_grad_(False)
    hidden = torch.randn(8, 4, requires_grad=True)
    strided = hidden.t()  # [4, 8], not contiguous
    out = linear_logits(layer, strided)
    torch.testing.assert_close(out, layer(strided), rtol=1e-6, atol=1e-6)
    out.sum().backward()
    assert layer.weight.grad is None and layer.bias.grad is not None and hidden.grad.shape == (8, 4)
    torch.testing.assert_close(layer.bias.grad, torch.full((45,), 4.0))


@pytest.mark.parametrize("vocab,bias", [(50257, False), (37, True)])
def test_linear_log_softmax_equals_the_definition(vocab, bias):
    torch.manual_seed(2)
    layer = nn.Linear(16, vocab, bias=bias)
    hidden = torch.randn(2, 7, 16) * 3
    got = linear_log_softmax(layer, hidden)
    with torch.no_grad():
        z = layer(hidden)
        reference = z - z.exp().sum(-1, keepdim=True).log()  # log softmax by its definition (no max shift needed)
    assert got.shape == (2, 7, vocab) and got.stride(-2) == padded_width(vocab)
    torch.testing.assert_close(got, reference, rtol=1e-5, atol=1e-5)
    assert torch.isfinite(got).all()  # the -inf pad columns stay outside the view
    torch.testing.assert_close(got.exp().sum(-1), torch.ones(2, 7))


class _Scaled(nn.Linear):
    def forward(self, x):
        return 2 * super().forward(x)


@pytest.mark.parametrize("case", ["multiple", "subclass", "bf16", "autocast"])
def test_the_plain_layer_runs_where_alignment_does_not_apply(case):
    torch.manual_seed(3)
    layer = (_Scaled if case == "subclass" else nn.Linear)(8, 2 * ROW_ALIGN if case == "multiple" else 33)
    hidden = torch.randn(3, 8)
    if case == "bf16":
        layer, hidden = layer.bfloat16(), hidden.bfloat16()
    with torch.autocast("cpu", dtype=torch.bfloat16, enabled=case == "autocast"):
        assert not aligns(layer, hidden)
        out, lp = linear_logits(layer, hidden), linear_log_softmax(layer, hidden)
        reference = layer(hidden)
    assert out.dtype == reference.dtype and out.is_contiguous()
    torch.testing.assert_close(out, reference)  # e.g. the subclass's own forward (x 2) is kept
    torch.testing.assert_close(lp, F.log_softmax(reference.float(), -1))


# ---- in the trainer ------------------------------------------------------------------------------------------------
def _step(trainer, inputs, fused):
    model = trainer.model.eval()  # no dropout: both steps see the same network
    model.zero_grad(set_to_none=True)
    loss, _, outputs = trainer.distillation_step_loss(model, inputs, fused=fused)
    loss.backward()
    return loss.detach(), outputs.logits, {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None}


@pytest.mark.parametrize("temperature,perturbation,fused", [(1.0, "none", False), (2.0, "mean", False),
                                                            (2.0, "mean", True)])
def test_trainer_step_through_aligned_layers_equals_the_unaligned_step(tiny_args, monkeypatch, temperature,
                                                                      perturbation, fused):
    """GPT-2's vocabulary (50257) on a CPU: the plain loss's student logits, the fused loss's chunks and the
    teacher's targets come from the aligned layers, and the step's loss and gradients are those of the model's own
    output layers."""
    from distill.distillation import aligned_logits
    from distill.distillation.trainer import DistillationTrainer
    from distill.text_data import DistillationCollator

    trainer = DistillationTrainer(args=tiny_args(temperature=temperature, alpha_kd=5.0, alpha_lm=2.0, alpha_cos=1.0,
                                                 perturbation=perturbation, loss_chunk_size=7 if fused else "auto"))
    tok = trainer.processing_class
    rows = [{"input_ids": tok(t)["input_ids"]} for t in ["She said he was a nurse.", "The pilot waited for her."]]
    inputs = trainer._prepare_inputs(DistillationCollator(pad_token_id=tok.pad_token_id)(rows))
    buffers = []
    padded = aligned_logits._padded_buffer
    monkeypatch.setattr(aligned_logits, "_padded_buffer", lambda *a, **k: buffers.append(1) or padded(*a, **k))
    aligned = _step(trainer, inputs, fused)
    targets = trainer.teacher_targets(inputs)[0]
    assert buffers and targets.stride(-2) == padded_width(50257)
    if not fused:
        assert aligned[1].stride(-2) == padded_width(50257)

    monkeypatch.setattr(aligned_logits, "ENABLED", False)
    buffers.clear()
    plain = _step(trainer, inputs, fused)
    assert not buffers and (fused or plain[1].is_contiguous())  # the models' own output layers
    torch.testing.assert_close(aligned[0], plain[0], rtol=1e-6, atol=1e-6)
    torch.testing.assert_close(aligned[1], plain[1], rtol=1e-6, atol=1e-5)
    torch.testing.assert_close(targets, trainer.teacher_targets(inputs)[0], rtol=1e-6, atol=1e-5)
    assert plain[2].keys() == aligned[2].keys()
    for name in plain[2]:
        torch.testing.assert_close(aligned[2][name], plain[2][name], rtol=1e-5, atol=1e-6, msg=name)


def test_dp_and_bf16_steps_keep_the_models_own_output_layer(tiny_args):
    """DP-SGD's per-sample machinery hooks the student's modules, and bf16 runs the forward under autocast: there the
    plain loss's logits come from the model's forward, as before."""
    from distill.distillation.trainer import DistillationTrainer
    from distill.text_data import DistillationCollator

    for extra in (dict(dp_enabled=True, dp_noise_multiplier=1.0, packing=False), dict(bf16=True)):
        trainer = DistillationTrainer(args=tiny_args(**extra))
        tok = trainer.processing_class
        inputs = trainer._prepare_inputs(DistillationCollator(pad_token_id=tok.pad_token_id)(
            [{"input_ids": tok("He asked her to wait.")["input_ids"]}]))
        _, _, outputs = trainer.distillation_step_loss(trainer.model.eval(), inputs, fused=False)
        assert outputs.logits.shape[-1] == 50257 and outputs.logits.is_contiguous(), extra
