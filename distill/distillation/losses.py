"""Pure distillation loss functions.

All functions take per-position tensors shaped ``[B, T, ...]`` and a ``mask`` of shape ``[B, T]``
(1 where the position counts, i.e. a real, non-padding token) and return the mean over counted
positions. They never look at the models, so they can be tested on hand-made tensors.

The KD term is ``T² · D(P ‖ Q)`` with D one of :mod:`distill.divergences` (``kd_loss``, forward KL by default),
P the (perturbed) teacher target at temperature T and Q = softmax(z_S / T). P is either dense log-probabilities
``[B, T, V]`` or a :class:`SparseTarget` (a teacher cache): its top-k log-probabilities plus one tail bucket
holding the rest of the mass. Against a sparse target the student is coarse-grained the same way,

    Q̂ = (Q[i_1], …, Q[i_k], Q_tail),   Q_tail = 1 − Σ_j Q[i_j],

computed in log space as ``log1mexp(logsumexp_j log Q[i_j])`` (no cancellation until the k ids hold all but
~1e-6 of Q's mass, where it is floored), and D(P̂ ‖ Q̂) is the same divergence over these k + 1 buckets. Since
every divergence is separable with f(x, x) = 0, a position whose target tail is empty (k = V: the ids are the
whole vocabulary) simply drops its tail bucket, which makes the sparse loss equal to the dense one there. For
k < V, D(P̂ ‖ Q̂) ≤ D(P ‖ Q) for the f-divergences (data processing): the cache sees only how much mass the
student puts outside the teacher's top k, not where.

The loss of a step is one α-combination, :func:`combine_losses`, for the plain loss (:func:`distillation_loss`, on
the student's logits) and the fused one (:mod:`distill.distillation.fused_loss`, through the output layers in
chunks):

    L = α_kd · mean_t T²·D(P_t ‖ Q_t) + α_lm · mean_t CE_t + α_cos · mean_t (1 − cos(h_S,t, h_T,t)),

each mean over the term's counted positions (KD and cos: real tokens; CE: positions with a next-token label) of
the batch, or of each row for DP-SGD (``per_row``: a ``[B]`` loss, since a row's gradient must not depend on the
other rows through a batch-wide count). The same sum as ``Σ_t w_t · term_t`` with ``w`` = :func:`loss_weights`
``= α / #counted`` is what the fused loss accumulates chunk by chunk.

The default term, forward KL, has its gradient in closed form instead of autograd through the log-softmax and the
product: against a dense target ``∂/∂z_S T²·KL(P ‖ softmax(z_S/T)) = T·(Q − P)`` (:class:`_ForwardKL`, which keeps
that one tensor; ``compile_loss`` runs it through ``torch.compile``), against a sparse one a scaled ``Q`` plus k
entries per position (:class:`_SparseForwardKL`). The same numbers (tested against
autograd on the definition) with fewer vocabulary-wide tensors kept for backward and fewer kernels, which is most of
a small model's step (docs/performance.md).
Own code because autograd is the library that does this, only slower; the fused kernels that exist (Liger's) are
GPU kernels without a temperature-softened, perturbed target or per-row reductions.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F

from ..divergences import divergence

#: Log-mass the student's tail bucket never goes below (float32 cannot resolve 1 − Σ Q[i_j] under ~1e-6).
_LOG_TAIL_FLOOR = -1e-6


@dataclass
class SparseTarget:
    """A KD target stored as top-k entries plus one tail bucket, per position.

    ``ids`` ``[..., k]`` (int64) and ``logprobs`` ``[..., k]`` are the k largest entries of log P; ``tail``
    ``[...]`` is log(1 − Σ P[ids]) (``-inf`` when the ids cover the vocabulary). Indexing a ``SparseTarget``
    indexes its leading (position) dimensions, like slicing a dense ``[B, T, V]`` target.
    """

    ids: torch.Tensor
    logprobs: torch.Tensor
    tail: torch.Tensor

    def __getitem__(self, index) -> "SparseTarget":
        return SparseTarget(self.ids[index], self.logprobs[index], self.tail[index])

    def at_positions(self, positions: torch.Tensor) -> "SparseTarget":
        """``[n, k]`` (tail ``[n]``) at the flat (row-major) ``positions`` of the leading dimensions."""
        k = self.ids.shape[-1]
        return SparseTarget(self.ids.reshape(-1, k).index_select(0, positions),
                            self.logprobs.reshape(-1, k).index_select(0, positions),
                            self.tail.reshape(-1).index_select(0, positions))

    @property
    def shape(self) -> torch.Size:
        """The leading (position) shape, ``[B, T]`` for a batch."""
        return self.tail.shape

    def to(self, device) -> "SparseTarget":
        return SparseTarget(self.ids.to(device), self.logprobs.to(device), self.tail.to(device))


def _log1mexp(x: torch.Tensor) -> torch.Tensor:
    """log(1 − eˣ) for x < 0, accurate on both sides of −log 2 (Mächler 2012)."""
    return torch.where(x > -0.6931471805599453, torch.log(-torch.expm1(x)), torch.log1p(-torch.exp(x)))


def sparse_buckets(student_logits: torch.Tensor, target: SparseTarget, temperature: float
                   ) -> tuple[torch.Tensor, torch.Tensor]:
    """``(log P̂, log Q̂)``, each ``[..., k + 1]``: the target's k entries and tail, and the student's log-probs on
    the same ids and its tail (see the module docstring). Where the target's tail is empty both tails are set
    equal, so that bucket adds nothing to any divergence."""
    s = _soften(student_logits, temperature)
    log_p, log_q, _, _ = _buckets(s.gather(-1, target.ids) - torch.logsumexp(s, dim=-1, keepdim=True), target)
    return log_p, log_q


def _buckets(log_q_ids: torch.Tensor, target: SparseTarget):
    """``(log P̂, log Q̂, empty, floored)`` from the student's log-probabilities at the target's ids: the k + 1
    buckets of :func:`sparse_buckets` (in ``log_q_ids``' dtype), where the target's tail is empty, and where the
    student's tail is floored (its ids hold all but :data:`_LOG_TAIL_FLOOR` of its mass)."""
    log_s = torch.logsumexp(log_q_ids, dim=-1)
    floored = log_s > _LOG_TAIL_FLOOR
    log_q_tail = _log1mexp(log_s.clamp_max(_LOG_TAIL_FLOOR))
    p_tail = target.tail.to(log_q_ids.dtype)
    empty = torch.isneginf(p_tail)
    zero = torch.zeros((), dtype=p_tail.dtype, device=p_tail.device)
    p_tail, log_q_tail = torch.where(empty, zero, p_tail), torch.where(empty, zero, log_q_tail)
    log_p = torch.cat([target.logprobs.to(log_q_ids.dtype), p_tail.unsqueeze(-1)], dim=-1)
    log_q = torch.cat([log_q_ids, log_q_tail.unsqueeze(-1)], dim=-1)
    return log_p, log_q, empty, floored


def _masked_mean(values: torch.Tensor, mask: torch.Tensor | None) -> torch.Tensor:
    if mask is None:
        return values.mean()
    mask = mask.to(values.dtype)
    return (values * mask).sum() / mask.sum().clamp_min(1.0)


def _row_mean(values: torch.Tensor, mask: torch.Tensor | None) -> torch.Tensor:
    """``[B]``: each row's mean over its own counted positions."""
    if mask is None:
        return values.mean(-1)
    mask = mask.to(values.dtype)
    return (values * mask).sum(-1) / mask.sum(-1).clamp_min(1.0)


def _soften(logits: torch.Tensor, temperature: float, inplace: bool = False) -> torch.Tensor:
    """``logits / T`` in float32; no pass over the logits at T = 1, and in place when the caller allows it."""
    out = logits.float()
    if temperature == 1.0:
        return out
    if inplace or out is not logits:  # a fresh float32 copy may be divided in place too
        return out.div_(temperature)
    return out / temperature


def teacher_log_probs(teacher_logits: torch.Tensor, temperature: float, inplace: bool = False) -> torch.Tensor:
    """Temperature-softened teacher log-probabilities ``log softmax(z_T / T)`` in float32.

    ``inplace=True`` lets the division by T overwrite ``teacher_logits`` (for logits nobody else reads).
    """
    return F.log_softmax(_soften(teacher_logits, temperature, inplace), dim=-1)


def kd_terms(student_logits: torch.Tensor, teacher_logprobs: torch.Tensor | SparseTarget, temperature: float, *,
             kd_loss: str = "forward_kl", kd_beta: float = 0.5, kd_skew_alpha: float = 0.1,
             compile_loss: bool = False) -> torch.Tensor:
    """``[B, T]``: ``T^2 * D(p_T || p_S)`` at each position, D = ``kd_loss`` (:mod:`distill.divergences`;
    ``kd_beta`` is the JSD's β, ``kd_skew_alpha`` the skew KLs' α). ``teacher_logprobs`` is dense ``[B, T, V]``
    or a :class:`SparseTarget`. ``compile_loss``: forward KL against a dense target through ``torch.compile``
    (:class:`_ForwardKL`; the same numbers to float rounding)."""
    if isinstance(teacher_logprobs, SparseTarget):
        if kd_loss == "forward_kl" and not (teacher_logprobs.logprobs.requires_grad or teacher_logprobs.tail.requires_grad):
            return _SparseForwardKL.apply(student_logits, teacher_logprobs.ids, teacher_logprobs.logprobs,
                                          teacher_logprobs.tail, temperature)
        target, student = sparse_buckets(student_logits, teacher_logprobs, temperature)
    elif kd_loss == "forward_kl" and not teacher_logprobs.requires_grad:
        return _ForwardKL.apply(student_logits, teacher_logprobs, temperature, compile_loss)
    else:
        target, student = teacher_logprobs, F.log_softmax(_soften(student_logits, temperature), dim=-1)
    return temperature**2 * divergence(kd_loss, beta=kd_beta, alpha=kd_skew_alpha)(target, student)


def _closed_form_log_q(logits: torch.Tensor, target: torch.Tensor, temperature: float) -> torch.Tensor:
    """``log softmax(z / T)`` for the closed forms below: in float32 at least (the promoted dtype of the logits and
    the target), called with autocast off so that bf16 autocast does not lower it."""
    dtype = torch.promote_types(torch.promote_types(logits.dtype, target.dtype), torch.float32)
    z = logits.to(dtype)
    return F.log_softmax(z if temperature == 1.0 else z / temperature, dim=-1)


def _kl_and_gradient(logits: torch.Tensor, target_logprobs: torch.Tensor, temperature: float
                     ) -> tuple[torch.Tensor, torch.Tensor]:
    """Per position ``T²·KL(P ‖ Q)``, ``Q = softmax(z / T)``, and its gradient ``T·(Q − P)`` w.r.t. the logits
    (float32 at least; the body of :class:`_ForwardKL`, eager or compiled)."""
    log_q = _closed_form_log_q(logits, target_logprobs, temperature)
    target_logprobs = target_logprobs.to(log_q.dtype)
    p = target_logprobs.exp()
    kl = torch.linalg.vecdot(p, target_logprobs - log_q).mul_(temperature**2)
    gradient = log_q.exp_().sub_(p)
    return kl, gradient if temperature == 1.0 else gradient.mul_(temperature)


_compiled_kl: dict[str, object] = {}


def _compiled_kl_and_gradient(logits: torch.Tensor, target_logprobs: torch.Tensor, temperature: float):
    """:func:`_kl_and_gradient` through ``torch.compile`` (inductor: the log-softmax, the KL's reduction and the
    gradient fused into a few passes over the vocabulary; compiled once per process, batch shape and temperature).
    Where compilation fails (no C++ compiler, an unsupported backend), one warning and eager from then on."""
    fn = _compiled_kl.get("fn")
    if fn is None:
        fn = _compiled_kl["fn"] = torch.compile(_kl_and_gradient, dynamic=False)
    if fn is not _kl_and_gradient:
        try:
            return fn(logits, target_logprobs, temperature)
        except Exception as exc:  # noqa: BLE001 - any compiler failure: the eager body computes the same
            import warnings

            reason = f"{type(exc).__name__}: {(str(exc).splitlines() or [''])[0][:200]}"
            warnings.warn(f"compile_loss: torch.compile failed ({reason}); the KD loss runs eager from now on (same "
                          "numbers, slower).", RuntimeWarning, stacklevel=2)
            _compiled_kl["fn"] = _kl_and_gradient
    return _kl_and_gradient(logits, target_logprobs, temperature)


class _ForwardKL(torch.autograd.Function):
    """``T²·KL(P ‖ Q)`` per position, ``Q = softmax(z / T)``, with its gradient in closed form.

    ``∂/∂z [T² Σ_i P_i (log P_i − log Q_i)] = T·(Q − P)`` (``Σ P = 1``): forward computes it with the KL and keeps
    that one ``[..., V]`` tensor, and backward scales it by the incoming gradient, where autograd through the
    log-softmax and the product keeps three and runs four vocabulary-wide kernels more (docs/performance.md). With
    ``compiled`` the forward is one ``torch.compile``d function (:func:`_compiled_kl_and_gradient`). The target
    carries no gradient (it is the teacher's); a target that does goes through the generic divergence instead."""

    @staticmethod
    def forward(ctx, logits: torch.Tensor, target_logprobs: torch.Tensor, temperature: float,
                compiled: bool = False) -> torch.Tensor:
        with torch.autocast(logits.device.type, enabled=False):
            kl, gradient = (_compiled_kl_and_gradient if compiled else _kl_and_gradient)(
                logits, target_logprobs, temperature)
        ctx.save_for_backward(gradient)
        ctx.logits_dtype = logits.dtype
        return kl

    @staticmethod
    def backward(ctx, grad: torch.Tensor):
        (gradient,) = ctx.saved_tensors  # not modified: a second backward (retain_graph) reads it again
        return (gradient * grad.unsqueeze(-1)).to(ctx.logits_dtype), None, None, None


class _SparseForwardKL(torch.autograd.Function):
    """``T²·KL(P̂ ‖ Q̂)`` per position against a :class:`SparseTarget` (the k + 1 buckets of
    :func:`sparse_buckets`), with its gradient in closed form.

    With ``s = z / T``, ``Q = softmax(s)``, ``A = Σ_j P_j`` over the ids, ``S = Σ_j Q[i_j]`` and
    ``r = P_tail / Q_tail`` (0 where the target's tail is empty or the student's tail is floored, as autograd
    through :func:`sparse_buckets` gives), the gradient of the KL over the buckets is

        ∂/∂s_v = Q_v·(A − r·S) + [v ∈ ids]·(r·Q_v − P_v),

    a scaled ``Q`` plus k entries per position; times ``T²/T``. Backward keeps ``Q`` alone of the vocabulary-wide
    tensors (autograd through the log-sum-exps, the gather and the buckets keeps several)."""

    @staticmethod
    def forward(ctx, logits, ids, logprobs, tail, temperature: float) -> torch.Tensor:
        with torch.autocast(logits.device.type, enabled=False):
            log_q = _closed_form_log_q(logits, logprobs, temperature)
            log_p, log_q_b, empty, floored = _buckets(log_q.gather(-1, ids), SparseTarget(ids, logprobs, tail))
            kl = divergence("forward_kl")(log_p, log_q_b)
            p, q_ids = log_p[..., :-1].exp(), log_q_b[..., :-1].exp()
            p_tail = torch.where(empty, 0.0, log_p[..., -1].exp())
            r = torch.where(empty | floored, 0.0, p_tail / log_q_b[..., -1].exp())
            q = log_q.exp_()
            dense = p.sum(-1) - r * q_ids.sum(-1)
            at_ids = r.unsqueeze(-1) * q_ids - p
        ctx.save_for_backward(q, ids, dense, at_ids)
        ctx.temperature, ctx.logits_dtype = temperature, logits.dtype
        return kl.mul_(temperature**2)

    @staticmethod
    def backward(ctx, grad: torch.Tensor):
        q, ids, dense, at_ids = ctx.saved_tensors
        scale = (grad * ctx.temperature).unsqueeze(-1)
        grad_logits = q * (dense.unsqueeze(-1) * scale)
        grad_logits.scatter_add_(-1, ids, at_ids * scale)
        return grad_logits.to(ctx.logits_dtype), None, None, None, None


def kd_loss(
    student_logits: torch.Tensor,
    teacher_logprobs: torch.Tensor | SparseTarget,
    mask: torch.Tensor | None,
    temperature: float,
    **kd_kwargs,
) -> torch.Tensor:
    """``T^2 * D(p_T || p_S)`` per position, averaged over ``mask`` (``kd_kwargs``: see :func:`kd_terms`).

    ``teacher_logprobs`` are already temperature-softened (see :func:`teacher_log_probs`); keeping
    them as an input lets the counterfactual perturbation change the teacher distribution first.
    """
    return _masked_mean(kd_terms(student_logits, teacher_logprobs, temperature, **kd_kwargs), mask)


def lm_terms(student_logits: torch.Tensor, labels: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """``[B, T-1]`` next-token cross-entropies (position t predicts ``labels[t + 1]``) and where they count."""
    logits = student_logits[:, :-1, :].float()
    targets = labels[:, 1:]
    ce = F.cross_entropy(logits.reshape(-1, logits.size(-1)), targets.reshape(-1), ignore_index=-100,
                         reduction="none").view(targets.shape)
    return ce, targets != -100


def lm_loss(student_logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """Next-token cross-entropy: position t predicts ``labels[t + 1]``; label -100 is ignored."""
    return _masked_mean(*lm_terms(student_logits, labels))


def cosine_terms(student_hidden: torch.Tensor, teacher_hidden: torch.Tensor) -> torch.Tensor:
    """``[B, T]``: ``1 - cos(h_S, h_T)`` at each position (hidden widths must match)."""
    if student_hidden.shape[-1] != teacher_hidden.shape[-1]:
        raise ValueError(
            f"alpha_cos needs equal hidden sizes, got student {student_hidden.shape[-1]} and teacher "
            f"{teacher_hidden.shape[-1]}: set alpha_cos to 0 or use a student of the teacher's width."
        )
    return 1.0 - F.cosine_similarity(student_hidden.float(), teacher_hidden.float(), dim=-1)


def cosine_loss(student_hidden: torch.Tensor, teacher_hidden: torch.Tensor,
                mask: torch.Tensor | None) -> torch.Tensor:
    """``1 - cos(h_S, h_T)`` per position, averaged over ``mask`` (hidden widths must match)."""
    return _masked_mean(cosine_terms(student_hidden, teacher_hidden), mask)


def distillation_loss(
    student_logits: torch.Tensor,
    teacher_logprobs: torch.Tensor | SparseTarget | None,
    labels: torch.Tensor,
    mask: torch.Tensor | None,
    *,
    temperature: float,
    alpha_kd: float,
    alpha_lm: float,
    alpha_cos: float = 0.0,
    student_hidden: torch.Tensor | None = None,
    teacher_hidden: torch.Tensor | None = None,
    per_row: bool = False,
    kd_loss: str = "forward_kl",
    kd_beta: float = 0.5,
    kd_skew_alpha: float = 0.1,
    compile_loss: bool = False,
) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """The combined loss ``α_kd·T²·D + α_lm·CE + α_cos·(1−cos)`` and its components (detached).

    D is ``kd_loss`` (forward KL by default; see :func:`kd_terms`, also for ``compile_loss``), against a dense or a
    sparse target.

    By default each term is the mean over all counted positions of the batch. ``per_row=True`` gives a ``[B]``
    loss instead, each term averaged over the row's own positions: what DP-SGD clips, since a row's gradient
    must not depend on the other rows (through a batch-wide token count). The components are then batch means
    of the row values. For a batch of one row both are the same.
    """
    terms: dict[str, tuple[torch.Tensor, torch.Tensor | None]] = {}
    if alpha_kd > 0:
        terms["loss_kd"] = (kd_terms(student_logits, teacher_logprobs, temperature, kd_loss=kd_loss, kd_beta=kd_beta,
                                     kd_skew_alpha=kd_skew_alpha, compile_loss=compile_loss), mask)
    if alpha_lm > 0:
        terms["loss_lm"] = lm_terms(student_logits, labels)
    if alpha_cos > 0:
        terms["loss_cos"] = (cosine_terms(student_hidden, teacher_hidden), mask)
    return combine_losses(terms, alpha_kd=alpha_kd, alpha_lm=alpha_lm, alpha_cos=alpha_cos, per_row=per_row)


def combine_losses(
    terms: dict[str, tuple[torch.Tensor, torch.Tensor | None]],
    *,
    alpha_kd: float,
    alpha_lm: float,
    alpha_cos: float,
    per_row: bool = False,
    presummed: tuple[torch.Tensor, tuple[str, ...]] | None = None,
) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """``α_kd·T²·D + α_lm·CE + α_cos·(1−cos)`` from its per-position terms, and its components (detached).

    ``terms`` maps ``loss_kd`` / ``loss_lm`` / ``loss_cos`` to ``(values, mask)``, both ``[B, L]`` (``T²·D``,
    the next-token CE and ``1 − cos`` at each position; ``mask`` ``None``: every position counts). Each term is
    averaged over its counted positions — of the batch, or of each row with ``per_row`` (then the loss is ``[B]``)
    — and weighted by its α; a term whose α is 0 is left out. The components are the batch means of these
    averages, under the same names.

    ``presummed``: ``(sum, names)``, the terms ``names`` already summed by the caller as ``Σ_t w_t · values_t``
    with ``w`` = :func:`loss_weights` (the same ``α · average``, per row with ``per_row``): the fused loss, which
    takes their gradients chunk by chunk. Those terms are then only averaged for the components.
    """
    alphas = {"loss_kd": alpha_kd, "loss_lm": alpha_lm, "loss_cos": alpha_cos}
    reduce = _row_mean if per_row else _masked_mean
    total, summed = presummed if presummed is not None else (None, ())
    parts: dict[str, torch.Tensor] = {}
    for name, (values, mask) in terms.items():
        alpha = alphas[name]
        if alpha <= 0:
            continue
        value = reduce(values, mask)
        if name not in summed:
            if total is None:
                total = values.new_zeros(values.shape[0] if per_row else (), dtype=torch.float32)
            total = total + alpha * value
        parts[name] = value.detach().mean()
    if total is None:
        raise ValueError("the distillation loss needs a term with a positive alpha (alpha_kd, alpha_lm or alpha_cos).")
    return total, parts


def loss_weights(mask: torch.Tensor, alpha: float, per_row: bool = False) -> torch.Tensor:
    """``[B, L]``: ``α / #counted`` where ``mask`` (the batch's count, or the row's with ``per_row``), else 0, so
    that ``Σ_t w_t · values_t`` is the term's contribution ``α · average`` to :func:`combine_losses`."""
    mask = mask.float()
    count = mask.sum(-1, keepdim=True) if per_row else mask.sum()
    return mask * (alpha / count.clamp_min(1.0))
