"""Per-record clipping: fast (book-keeping) norms equal brute force and opacus; clipped norms <= C."""

import pytest
import torch
from transformers import GPT2Config, GPT2LMHeadModel

from distill.privacy import BookKeepingClipper, RecordLayout, freeze_embeddings
from distill.privacy.opacus_modes import OpacusGhostClipper, OpacusHooksClipper


def _model(seed=0, n_embd=32):
    torch.manual_seed(seed)
    cfg = GPT2Config(vocab_size=300, n_positions=64, n_embd=n_embd, n_layer=2, n_head=2, resid_pdrop=0.0,
                     embd_pdrop=0.0, attn_pdrop=0.0, bos_token_id=0, eos_token_id=0)
    model = GPT2LMHeadModel(cfg)
    frozen = freeze_embeddings(model)
    assert {"transformer.wte.weight", "transformer.wpe.weight"} <= set(frozen)
    assert not model.lm_head.weight.requires_grad  # tied to wte
    return model.train()


def _batch(B=6, T=12, seed=1):
    g = torch.Generator().manual_seed(seed)
    ids = torch.randint(0, 300, (B, T), generator=g)
    mask = torch.ones(B, T, dtype=torch.long)
    mask[1, 8:] = 0  # a padded row
    pos = (mask.cumsum(-1) - 1).clamp_min(0).contiguous()
    return ids, mask, pos


def _row_loss(model, ids, mask, pos):
    logits = model(input_ids=ids, attention_mask=mask, position_ids=pos).logits
    lp = torch.log_softmax(logits[:, :-1].float(), -1)
    nll = -lp.gather(-1, ids[:, 1:, None]).squeeze(-1)
    m = mask[:, 1:].float()
    return (nll * m).sum(-1) / m.sum(-1)


def _brute_force(model, ids, mask, pos, layout):
    """Per-record gradients by one backward per record (rows of a record summed)."""
    params = [p for p in model.parameters() if p.requires_grad]
    loss = _row_loss(model, ids, mask, pos)
    grads = []
    for r in range(layout.num_records):
        rows = (layout.row_to_record == r).nonzero().flatten()
        grads.append(torch.autograd.grad(loss[rows].sum(), params, retain_graph=True))
    norms = torch.stack([torch.sqrt(sum((g.double() ** 2).sum() for g in gs)) for gs in grads])
    return params, grads, norms


def _fast_clip(model, ids, mask, pos, layout, C):
    """The book-keeping clipper on one batch: (norms, factors, clipped sum by parameter id)."""
    clipper = BookKeepingClipper(model)
    summed = {}
    with clipper.capture():
        loss = _row_loss(model, ids, mask, pos)
    norms, factors = clipper.clip_and_accumulate(loss, layout, C, summed)
    return norms, factors, summed


@pytest.mark.parametrize("record_ids", [None, [0, 1, 1, 2, 3, 3]], ids=["rows", "record+counterfactual"])
@pytest.mark.parametrize("n_embd", [32, 8], ids=["direct", "ghost-norm"])
def test_fast_norms_and_clipped_sum_match_brute_force(record_ids, n_embd):
    model = _model(n_embd=n_embd)
    ids, mask, pos = _batch()
    layout = RecordLayout(None if record_ids is None else torch.tensor(record_ids), ids.shape[0])
    C = 0.5
    norms, factors, summed = _fast_clip(model, ids, mask, pos, layout, C)
    params, grads, ref_norms = _brute_force(model, ids, mask, pos, layout)
    assert norms.shape == (layout.num_records,)
    torch.testing.assert_close(norms.double(), ref_norms, rtol=1e-4, atol=1e-6)
    assert (ref_norms > C).any()  # clipping is active in this test
    for r in range(layout.num_records):  # every clipped per-record gradient has norm <= C
        clipped = torch.sqrt(sum(((factors[r] * g).double() ** 2).sum() for g in grads[r]))
        assert clipped <= C + 1e-6
    for i, p in enumerate(params):
        ref = sum(factors[r] * grads[r][i] for r in range(layout.num_records))
        torch.testing.assert_close(summed[id(p)], ref, rtol=1e-4, atol=1e-6)
    assert all(p.grad is None for p in params)  # no weight gradient went through autograd


def test_record_with_counterfactual_is_clipped_as_one_unit():
    """Two rows of one record: the norm of their SUMMED gradient is clipped to C, not each row's."""
    model = _model()
    ids, mask, pos = _batch(B=4)
    layout = RecordLayout(torch.tensor([7, 7, 9, 9]))  # two records, each with a counterfactual row
    C = 0.1
    norms, factors, summed = _fast_clip(model, ids, mask, pos, layout, C)
    params, grads, ref = _brute_force(model, ids, mask, pos, layout)
    assert layout.num_records == 2
    torch.testing.assert_close(norms.double(), ref, rtol=1e-4, atol=1e-6)
    for r in range(2):
        assert torch.sqrt(sum(((factors[r] * g).double() ** 2).sum() for g in grads[r])) <= C + 1e-6
    total = torch.sqrt(sum((summed[id(p)].double() ** 2).sum() for p in params))
    assert total <= 2 * C + 1e-6  # two records, each contributing at most C


def test_fast_matches_opacus_hooks_and_ghost():
    ids, mask, pos = _batch()
    layout = RecordLayout(None, ids.shape[0])
    results = {}
    for name in ("fast", "hooks", "ghost"):
        model = _model()
        clipper = {"fast": lambda: BookKeepingClipper(model), "hooks": lambda: OpacusHooksClipper(model),
                   "ghost": lambda: OpacusGhostClipper(model, 0.5)}[name]()
        summed = {}
        with clipper.capture():
            loss = _row_loss(model, ids, mask, pos)
        norms, _ = clipper.clip_and_accumulate(loss, layout, 0.5, summed)
        params = [p for p in model.parameters() if p.requires_grad]
        results[name] = (norms, torch.cat([summed[id(p)].reshape(-1) for p in params]))
        if hasattr(clipper, "remove"):
            clipper.remove()
    for name in ("hooks", "ghost"):
        torch.testing.assert_close(results["fast"][0], results[name][0], rtol=1e-4, atol=1e-6)
        torch.testing.assert_close(results["fast"][1], results[name][1], rtol=1e-4, atol=1e-6)


def test_hooks_mode_groups_records_and_ghost_refuses_them():
    from distill.errors import DistillError

    ids, mask, pos = _batch(B=4)
    layout = RecordLayout(torch.tensor([0, 0, 1, 2]))
    model = _model()
    clipper = OpacusHooksClipper(model)
    with clipper.capture():
        loss = _row_loss(model, ids, mask, pos)
    norms, factors = clipper.clip_and_accumulate(loss, layout, 0.5, {})
    _, _, ref = _brute_force(model, ids, mask, pos, layout)
    torch.testing.assert_close(norms.double(), ref, rtol=1e-4, atol=1e-6)
    ghost = OpacusGhostClipper(_model(), 0.5)
    with pytest.raises(DistillError, match="use dp_mode fast or hooks"):
        with ghost.capture():
            loss = _row_loss(ghost.hooks._module, ids, mask, pos)
        ghost.clip_and_accumulate(loss, layout, 0.5, {})
