"""Teacher cache: run the teacher once, train students many times from its stored top-k targets.

``distill cache-teacher --config X --output_dir CACHE`` (:func:`build_teacher_cache`) runs the teacher over the
training rows exactly as training prepares them (:func:`distill.distillation.train.build_trainer`: the same loading, CDA,
packing, record ids and collator) and through the trainer's own
:meth:`~distill.distillation.trainer.DistillationTrainer.teacher_targets` (temperature, split output layer, counterfactual
perturbation), so the cache cannot drift from what an online run would compute. Per position it stores

    ids       the k largest entries of P_target = softmax(z_T / T) (perturbed under CRR), uint16 when V ≤ 65536
              (GPT-2) else int32,
    logprobs  their log-probabilities, float16 (or float32),
    tail      log(1 − Σ P[ids]), in float64 from the k values (−inf when k ≥ V),

so k = 64 takes 64·2 + 64·2 + 2 = 258 bytes a token with GPT-2's vocabulary (386 with int32 ids), plus Arrow's
list offsets. Training with ``teacher_cache: CACHE`` runs no teacher forward: the KD term compares the student
with this sparse target (:class:`distill.distillation.losses.SparseTarget`; top-k + one tail bucket).

Layout of CACHE: ``manifest.json`` (fingerprints of the teacher, tokenizer, data and perturbation; T, k, dtypes,
rows, tokens, shards) and ``shards/shard-NNNNN.arrow``, Arrow files written by ``datasets``' ``ArrowWriter``
and read memory-mapped with ``Dataset.from_file``. Shard i holds training rows
``[i·shard_size, (i+1)·shard_size)``; process p of N builds the shards i ≡ p (mod N), writes each to a temporary
name and renames it into place when complete, so an interrupted build resumes by skipping the finished shards.
The main process writes the manifest, marked ``complete`` once every shard is there.

Differential privacy: a row's cached target is a function of that row's tokens only (and of the public teacher),
so it stays inside the row's privacy unit and DP-SGD from a cache protects the same records as online DP.
The cache itself is derived from the private data, token by token: keep it as private as the data.

Own code rather than a library: neither ``datasets`` nor TRL has a sparse teacher-output store with fingerprint
checks; ``datasets`` does the storage (Arrow files, memory-mapping) and ``tqdm`` the progress bar.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import time
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np
import pyarrow as pa
import torch
from datasets import Dataset, concatenate_datasets
from datasets.arrow_writer import ArrowWriter

from ..errors import ConfigError, DistillError
from ..outputs import CACHE_ROW, TEACHER_CACHE_SHARD
from ..outputs import TEACHER_CACHE_MANIFEST as MANIFEST, TEACHER_CACHE_SHARDS_DIR as SHARDS_DIR
from .losses import SparseTarget

logger = logging.getLogger(__name__)

FORMAT_VERSION = 1
DEFAULT_TOP_K = 64
_REBUILD = "rebuild it with `distill cache-teacher --config CONFIG --output_dir DIR` for this config"


# ---------------------------------------------------------------------------------------------------------------
# fingerprints
# ---------------------------------------------------------------------------------------------------------------
def _sha(*parts: bytes | str) -> str:
    h = hashlib.sha256()
    for p in parts:
        h.update(p.encode() if isinstance(p, str) else p)
    return h.hexdigest()[:16]


def tokenizer_fingerprint(tokenizer) -> str:
    """Hash of the vocabulary (token → id) and the special tokens."""
    vocab = sorted(tokenizer.get_vocab().items(), key=lambda kv: kv[1])
    specials = json.dumps({k: str(v) for k, v in sorted(tokenizer.special_tokens_map.items())})
    return _sha(json.dumps(vocab, ensure_ascii=False), specials)


@torch.no_grad()
def teacher_fingerprint(model: torch.nn.Module) -> str:
    """Hash of every weight's name, shape, dtype and 4096 evenly spaced values (cheap even for large models)."""
    h = hashlib.sha256()
    for name, tensor in sorted(model.state_dict().items()):
        flat = tensor.detach().reshape(-1)
        step = max(1, flat.numel() // 4096)
        sample = flat[::step][:4096].float().cpu().numpy()
        h.update(f"{name}:{tuple(tensor.shape)}:{tensor.dtype}".encode())
        h.update(sample.tobytes())
    return h.hexdigest()[:16]


def data_fingerprint(dataset: Dataset) -> tuple[str, int, int]:
    """``(hash, rows, tokens)`` of the ``input_ids`` of the prepared training rows, in order."""
    if dataset._indices is not None:
        dataset = dataset.flatten_indices()
    values, lengths = hashlib.sha256(), hashlib.sha256()
    tokens = 0
    for chunk in dataset.data.column("input_ids").chunks:
        lens = chunk.value_lengths().to_numpy(zero_copy_only=False).astype(np.int64)
        vals = chunk.flatten().to_numpy(zero_copy_only=False).astype(np.int64)
        values.update(vals.tobytes())
        lengths.update(lens.tobytes())
        tokens += int(lens.sum())
    return _sha(values.digest(), lengths.digest()), len(dataset), tokens


def perturbation_fingerprint(args, token_permutation: torch.Tensor | None) -> dict[str, Any]:
    """What of the counterfactual setup changes the target: mode, λ (interpolate) and the token pairs R."""
    if args.perturbation == "none":
        return {"mode": "none"}
    perm = token_permutation.detach().cpu().numpy().astype(np.int64)
    return {"mode": args.perturbation,
            "lambda": args.perturbation_lambda if args.perturbation == "interpolate" else None,
            "token_pairs": _sha(perm.tobytes())}


# ---------------------------------------------------------------------------------------------------------------
# manifest
# ---------------------------------------------------------------------------------------------------------------
@dataclass
class CacheManifest:
    """What a cache holds and what it was built from (``manifest.json``)."""

    teacher: str
    teacher_fingerprint: str
    tokenizer_fingerprint: str
    data_fingerprint: str
    num_rows: int
    num_tokens: int
    block_size: int
    packing: bool
    temperature: float
    perturbation: dict[str, Any]
    top_k: int
    vocab_size: int
    ids_dtype: str
    logprobs_dtype: str
    shard_size: int
    num_shards: int
    cda: str = "none"
    format_version: int = FORMAT_VERSION
    complete: bool = False
    bytes_per_token: float | None = None
    build_seconds: float | None = None
    #: per shard, in order: ``{"file", "bytes", "fingerprint"}`` (see :func:`shard_record`); empty in manifests
    #: written before shards were recorded (then only their existence is checked)
    shards: list[dict[str, Any]] = field(default_factory=list)
    extra: dict[str, Any] = field(default_factory=dict)

    #: fields that must agree for a partial build to be resumed
    IDENTITY = ("teacher_fingerprint", "tokenizer_fingerprint", "data_fingerprint", "num_rows", "block_size",
                "packing", "temperature", "perturbation", "top_k", "vocab_size", "ids_dtype", "logprobs_dtype",
                "shard_size", "num_shards", "format_version")

    @classmethod
    def read(cls, directory: str) -> "CacheManifest":
        path = os.path.join(directory, MANIFEST)
        if not os.path.isfile(path):
            raise ConfigError(f"teacher_cache '{directory}' has no {MANIFEST}: it is not a teacher cache; build one "
                              "with `distill cache-teacher --config CONFIG --output_dir DIR`.")
        with open(path, encoding="utf-8") as fh:
            raw = json.load(fh)
        known = {k: v for k, v in raw.items() if k in cls.__dataclass_fields__}
        return cls(**known)

    def write(self, directory: str) -> None:
        """Atomic: a reader sees the old manifest or the new one, never half of one."""
        tmp = os.path.join(directory, f".{MANIFEST}.tmp-{os.getpid()}")
        with open(tmp, "w", encoding="utf-8") as fh:
            json.dump(asdict(self), fh, indent=2, sort_keys=True)
        os.replace(tmp, os.path.join(directory, MANIFEST))

    def identity(self) -> dict[str, Any]:
        return {k: getattr(self, k) for k in self.IDENTITY}


def shard_path(directory: str, index: int) -> str:
    return os.path.join(directory, SHARDS_DIR, TEACHER_CACHE_SHARD.format(index=index))


_FINGERPRINT_SPAN = 1 << 20  # bytes hashed at each end of a shard


def shard_fingerprint(path: str) -> str:
    """sha256 of a shard's size, first MiB and last MiB: catches a truncated, replaced or rewritten shard in
    milliseconds whatever its size (a full hash of a multi-GB cache would cost as much as reading it)."""
    size = os.path.getsize(path)
    h = hashlib.sha256(str(size).encode())
    with open(path, "rb") as fh:
        h.update(fh.read(_FINGERPRINT_SPAN))
        if size > _FINGERPRINT_SPAN:
            fh.seek(max(_FINGERPRINT_SPAN, size - _FINGERPRINT_SPAN))
            h.update(fh.read(_FINGERPRINT_SPAN))
    return h.hexdigest()[:32]


def shard_record(directory: str, index: int) -> dict[str, Any]:
    """What the manifest records of shard ``index``: its file name, size in bytes and :func:`shard_fingerprint`."""
    path = shard_path(directory, index)
    return {"file": os.path.relpath(path, directory).replace(os.sep, "/"), "bytes": os.path.getsize(path),
            "fingerprint": shard_fingerprint(path)}


def shard_problem(directory: str, index: int, record: dict[str, Any] | None) -> str | None:
    """Why shard ``index`` does not match its manifest ``record`` (None: it does; without a record: it exists)."""
    path = shard_path(directory, index)
    name = os.path.relpath(path, directory)
    if not os.path.isfile(path):
        return f"shard {name} is missing"
    if not record:
        return None
    size = os.path.getsize(path)
    if record.get("bytes") is not None and size != record["bytes"]:
        return f"shard {name} is {size} bytes but was {record['bytes']} when built (cut short or replaced)"
    if record.get("fingerprint") and shard_fingerprint(path) != record["fingerprint"]:
        return f"shard {name} changed since it was built (its fingerprint differs)"
    return None


def verify_teacher_cache(directory: str, manifest: CacheManifest | None = None) -> CacheManifest:
    """Check a built cache before any work: complete, and every shard present with the size and fingerprint its
    manifest recorded (existence only for older manifests). One :class:`ConfigError` naming the first problem."""
    m = manifest or CacheManifest.read(directory)
    if not m.complete:
        done = sum(os.path.isfile(shard_path(directory, i)) for i in range(m.num_shards))
        raise ConfigError(f"teacher_cache '{directory}' is incomplete ({done}/{m.num_shards} shards): finish it "
                          f"by running the same `distill cache-teacher` command again (it resumes).")
    records = m.shards if len(m.shards) == m.num_shards else [None] * m.num_shards
    problems = [p for p in (shard_problem(directory, i, records[i]) for i in range(m.num_shards)) if p]
    if problems:
        more = f" (and {len(problems) - 1} more)" if len(problems) > 1 else ""
        raise ConfigError(f"teacher_cache '{directory}' is damaged: {problems[0]}{more}; rebuild with distill "
                          "cache-teacher: run the `distill cache-teacher` command that built it again (it rebuilds "
                          "the missing or damaged shards).")
    return m


def _ids_dtype(vocab_size: int) -> str:
    return "uint16" if vocab_size <= np.iinfo(np.uint16).max + 1 else "int32"


def manifest_for(trainer, top_k: int, dtype: str, shard_size: int) -> CacheManifest:
    """The manifest a cache of ``trainer``'s training rows and teacher targets would have."""
    args = trainer.args
    teacher = trainer.accelerator.unwrap_model(trainer.teacher)
    vocab_size = teacher.get_output_embeddings().weight.shape[0]
    data_fp, rows, tokens = data_fingerprint(trainer.train_dataset)
    return CacheManifest(
        teacher=args.teacher_model_name_or_path, teacher_fingerprint=teacher_fingerprint(teacher),
        tokenizer_fingerprint=tokenizer_fingerprint(trainer.processing_class), data_fingerprint=data_fp,
        num_rows=rows, num_tokens=tokens, block_size=args.block_size, packing=args.packing,
        temperature=float(args.temperature), perturbation=perturbation_fingerprint(args, trainer.token_permutation),
        top_k=min(top_k, vocab_size), vocab_size=vocab_size, ids_dtype=_ids_dtype(vocab_size), logprobs_dtype=dtype,
        shard_size=shard_size, num_shards=max(1, -(-rows // shard_size)), cda=args.cda)


# ---------------------------------------------------------------------------------------------------------------
# writer
# ---------------------------------------------------------------------------------------------------------------
@torch.no_grad()
def sparse_from_dense(logprobs: torch.Tensor, top_k: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """``(ids, top-k log-probs, log tail)`` of dense log-probs ``[..., V]``. The tail log(1 − Σ P[ids]) is taken
    in float64 from the k values (absolute error ~1e-7 of mass, from the float32 log-softmax); it is −inf when the
    ids are the whole vocabulary, or when rounding leaves no mass outside them."""
    values, ids = logprobs.topk(min(top_k, logprobs.shape[-1]), dim=-1)
    if ids.shape[-1] == logprobs.shape[-1]:
        return ids, values, torch.full(values.shape[:-1], float("-inf"), device=values.device)
    covered = values.double().logsumexp(-1).clamp_max(0.0)
    return ids, values, torch.log(-torch.expm1(covered)).float()


def _shard_table(rows: list[int], ids: list[np.ndarray], logprobs: list[np.ndarray], tails: list[np.ndarray],
                 manifest: CacheManifest) -> pa.Table:
    """One Arrow table: a row per training row, each list column flat over (position, k)."""
    def lists(parts: list[np.ndarray], dtype: str) -> pa.Array:
        flat = np.concatenate([p.reshape(-1) for p in parts]).astype(dtype, copy=False)
        offsets = np.concatenate([[0], np.cumsum([p.size for p in parts])]).astype(np.int32)
        return pa.ListArray.from_arrays(pa.array(offsets), pa.array(flat))

    return pa.table({"row": pa.array(np.asarray(rows, dtype=np.int64)),
                     "topk_ids": lists(ids, manifest.ids_dtype),
                     "topk_logprobs": lists(logprobs, manifest.logprobs_dtype),
                     "tail_logprob": lists(tails, manifest.logprobs_dtype)})


def _write_shard(table: pa.Table, path: str) -> None:
    """Write with ``datasets``' ArrowWriter under a temporary name, then rename: a shard is whole or absent."""
    tmp = f"{path}.tmp-{os.getpid()}"
    writer = ArrowWriter(schema=table.schema, path=tmp)
    try:
        writer.write_table(table)
        writer.finalize()
    finally:
        writer.close()
    os.replace(tmp, path)


def _shard_done(path: str, expected_rows: int, record: dict[str, Any] | None = None) -> bool:
    if not os.path.isfile(path):
        return False
    if record and (os.path.getsize(path), shard_fingerprint(path)) != (record.get("bytes"), record.get("fingerprint")):
        return False  # changed since the build that recorded it
    try:
        return Dataset.from_file(path).num_rows == expected_rows
    except Exception:  # noqa: BLE001 - an unreadable shard is rebuilt
        return False


def build_teacher_cache(trainer, output_dir: str, *, top_k: int = DEFAULT_TOP_K, dtype: str = "float16",
                        shard_size: int = 1000, batch_size: int | None = None, progress: bool = True
                        ) -> CacheManifest:
    """Write (or finish) a teacher cache of ``trainer``'s training rows into ``output_dir``; see the module doc.

    ``trainer`` is a :class:`~distill.distillation.trainer.DistillationTrainer` built for the config to cache (without
    ``teacher_cache``). Every process calls this; each builds its share of the shards.
    """
    from tqdm.auto import tqdm

    args, acc = trainer.args, trainer.accelerator
    if trainer.train_dataset is None:
        raise ConfigError("distill cache-teacher needs training data: set dataset_name or train_file.")
    if args.alpha_kd == 0:
        raise ConfigError("alpha_kd is 0, so training uses no teacher target and there is nothing to cache.")
    started = time.perf_counter()
    manifest = manifest_for(trainer, top_k, dtype, shard_size)
    if acc.is_main_process:
        _start_or_resume(output_dir, manifest)
    acc.wait_for_everyone()
    recorded = CacheManifest.read(output_dir).shards  # a finished build's records: a changed shard is rebuilt
    recorded = recorded if len(recorded) == manifest.num_shards else [None] * manifest.num_shards
    mine = [i for i in range(manifest.num_shards) if i % acc.num_processes == acc.process_index]
    todo = [i for i in mine if not _shard_done(shard_path(output_dir, i), _shard_rows(manifest, i), recorded[i])]
    dataset, bs = trainer.train_dataset, batch_size or args.per_device_eval_batch_size
    skipped = len(mine) - len(todo)
    if skipped and acc.is_main_process:
        logger.warning("teacher cache: %d of this process's %d shards are already built, resuming.", skipped,
                       len(mine))
    total = sum(_shard_rows(manifest, i) for i in todo)
    bar = tqdm(total=total, unit="row", desc=f"Caching teacher targets (k={manifest.top_k})",
               disable=not (progress and acc.is_main_process))
    was_training = trainer.model.training
    trainer.model.eval()  # inference only: the student is not run, and no training-time side effects
    try:
        for i in todo:
            start = i * manifest.shard_size
            rows = list(range(start, start + _shard_rows(manifest, i)))
            ids, logprobs, tails = [], [], []
            for b in range(0, len(rows), bs):
                chunk = rows[b:b + bs]
                batch = trainer._prepare_inputs(trainer.data_collator([dataset[j] for j in chunk]))
                dense, _ = trainer.teacher_targets(batch)
                top_ids, top_lp, tail = sparse_from_dense(dense, manifest.top_k)
                n_real = batch["attention_mask"].sum(-1).tolist()
                for r, n in enumerate(n_real):
                    ids.append(top_ids[r, :n].cpu().numpy())
                    logprobs.append(top_lp[r, :n].float().cpu().numpy())
                    tails.append(tail[r, :n].float().cpu().numpy())
                bar.update(len(chunk))
            _write_shard(_shard_table(rows, ids, logprobs, tails, manifest), shard_path(output_dir, i))
    finally:
        bar.close()
        trainer.model.train(was_training)
    acc.wait_for_everyone()
    if acc.is_main_process:
        missing = [i for i in range(manifest.num_shards) if not os.path.isfile(shard_path(output_dir, i))]
        if missing:
            raise DistillError(f"teacher cache '{output_dir}': shards {missing[:5]} are missing after the build; run "
                               "the same command again to finish them.")
        manifest.shards = [shard_record(output_dir, i) for i in range(manifest.num_shards)]
        size = sum(r["bytes"] for r in manifest.shards)
        manifest.bytes_per_token = round(size / max(1, manifest.num_tokens), 1)
        manifest.build_seconds = round(time.perf_counter() - started, 1)
        manifest.complete = True
        manifest.write(output_dir)
    acc.wait_for_everyone()
    return manifest


def _shard_rows(manifest: CacheManifest, index: int) -> int:
    return min(manifest.shard_size, manifest.num_rows - index * manifest.shard_size)


def _start_or_resume(output_dir: str, manifest: CacheManifest) -> None:
    """Write the (incomplete) manifest of a new build, or check that the one there is for the same build."""
    if os.path.isfile(os.path.join(output_dir, MANIFEST)):
        old = CacheManifest.read(output_dir)
        if old.identity() != manifest.identity():
            diff = [k for k in CacheManifest.IDENTITY if getattr(old, k) != getattr(manifest, k)]
            raise ConfigError(f"'{output_dir}' holds a teacher cache of another build (differs in {', '.join(diff)}): "
                              "choose a new --output_dir, or delete that one to rebuild it.")
        return
    if os.path.isdir(output_dir) and os.listdir(output_dir):
        raise ConfigError(f"--output_dir '{output_dir}' is not empty and holds no teacher cache: choose a new "
                          "--output_dir.")
    os.makedirs(os.path.join(output_dir, SHARDS_DIR), exist_ok=True)
    manifest.write(output_dir)


# ---------------------------------------------------------------------------------------------------------------
# reader
# ---------------------------------------------------------------------------------------------------------------
class TeacherCache:
    """A built teacher cache, memory-mapped; :meth:`targets` gives a batch's :class:`SparseTarget`."""

    def __init__(self, directory: str):
        self.directory = directory
        self.manifest = CacheManifest.read(directory)
        m = verify_teacher_cache(directory, self.manifest)
        try:
            shards = [Dataset.from_file(shard_path(directory, i)) for i in range(m.num_shards)]
        except Exception as exc:  # noqa: BLE001 - a shard of an older manifest (no sizes) cut short or corrupt
            first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
            raise ConfigError(f"teacher_cache '{directory}' is damaged: a shard could not be read ({first}); rebuild "
                              "with distill cache-teacher: run the `distill cache-teacher` command that built it "
                              "again (it rebuilds the missing or damaged shards).") from None
        self.dataset = concatenate_datasets(shards).with_format("numpy")
        if self.dataset.num_rows != m.num_rows:
            raise ConfigError(f"teacher_cache '{directory}' has {self.dataset.num_rows} rows but its manifest says "
                              f"{m.num_rows}: the cache is damaged; {_REBUILD}.")

    @classmethod
    def for_trainer(cls, trainer) -> "TeacherCache":
        """Open ``trainer.args.teacher_cache``, check it against the run (one ConfigError naming the first
        mismatch) and add the ``cache_row`` column to ``trainer.train_dataset``."""
        args = trainer.args
        cache = cls(args.teacher_cache)
        if trainer.train_dataset is None:
            raise ConfigError("teacher_cache needs the training dataset the cache was built from (train_dataset).")
        cache.check(trainer)
        trainer.train_dataset = cache.attach(trainer.train_dataset)
        return cache

    def check(self, trainer) -> None:
        """Raise a one-line ConfigError at the first way the cache differs from what this run would compute."""
        args, m, where = trainer.args, self.manifest, f"teacher_cache '{self.directory}'"

        def differs(what: str, cached, ours, key: str) -> None:
            if cached != ours:
                raise ConfigError(f"{where} was built with {what} {cached!r} but this run has {ours!r}: set "
                                  f"{key}: {cached!r}, or {_REBUILD}.")

        if tokenizer_fingerprint(trainer.processing_class) != m.tokenizer_fingerprint:
            raise ConfigError(f"{where} was built with another tokenizer (vocabulary differs): use the tokenizer it "
                              f"was built with, or {_REBUILD}.")
        differs("block_size", m.block_size, args.block_size, "block_size")
        differs("packing", m.packing, args.packing, "packing")
        data_fp, rows, _ = data_fingerprint(trainer.train_dataset)
        if (data_fp, rows) != (m.data_fingerprint, m.num_rows):
            raise ConfigError(f"{where} was built from other training rows ({m.num_rows} rows, data fingerprint "
                              f"{m.data_fingerprint}; this run: {rows}, {data_fp}): use the same data keys (dataset, "
                              f"max_train_samples, cda, seed, validation split, ...), or {_REBUILD}.")
        differs("temperature", m.temperature, float(args.temperature), "temperature")
        ours = perturbation_fingerprint(args, trainer.token_permutation)
        if ours != m.perturbation:
            differs("perturbation", m.perturbation.get("mode"), ours.get("mode"), "perturbation")
            differs("perturbation_lambda", m.perturbation.get("lambda"), ours.get("lambda"), "perturbation_lambda")
            raise ConfigError(f"{where} was built with other gendered token pairs (cda_pairs_file / cda_names): use "
                              f"the same pairs, or {_REBUILD}.")
        if args.teacher_cache_top_k is not None:
            differs("teacher_cache_top_k", m.top_k, args.teacher_cache_top_k, "teacher_cache_top_k")
        teacher = trainer.accelerator.unwrap_model(trainer.teacher)
        if teacher_fingerprint(teacher) != m.teacher_fingerprint:
            raise ConfigError(f"{where} was built with another teacher ({m.teacher}, or other weights or "
                              f"teacher_dtype): use that teacher, or {_REBUILD}.")

    def attach(self, dataset: Dataset) -> Dataset:
        """The training rows with a ``cache_row`` column: row i of the training data is row i of the cache."""
        if CACHE_ROW in dataset.column_names:
            dataset = dataset.remove_columns(CACHE_ROW)
        return dataset.add_column(CACHE_ROW, list(range(len(dataset))))

    def targets(self, inputs: dict[str, torch.Tensor]) -> SparseTarget:
        """The batch's sparse target ``[B, T, k]`` (+ tail ``[B, T]``) on the batch's device, renormalised over
        its k + 1 buckets in float32 (undoing float16 rounding). Padding positions get a finite dummy target."""
        if CACHE_ROW not in inputs:
            raise DistillError(f"the batch has no '{CACHE_ROW}' column: with teacher_cache the training rows must "
                               "come from the trainer's train_dataset (the cache adds that column).")
        rows = inputs[CACHE_ROW].tolist()
        mask = inputs["attention_mask"]
        batch, length, k = mask.shape[0], mask.shape[1], self.manifest.top_k
        got = self.dataset[rows]
        ids = torch.arange(k).expand(batch, length, k).clone()
        logprobs = torch.full((batch, length, k), -float(np.log(k)))
        tail = torch.full((batch, length), float("-inf"))
        n_real = mask.sum(-1).tolist()
        for r in range(batch):
            row_ids = np.asarray(got["topk_ids"][r])
            n = row_ids.size // k
            if n != n_real[r] or int(got["row"][r]) != rows[r]:
                raise DistillError(f"{self.directory}: cache row {rows[r]} holds {n} positions but the batch row has "
                                   f"{n_real[r]}: the cache does not match the training data; {_REBUILD}.")
            ids[r, :n] = torch.from_numpy(row_ids.astype(np.int64)).view(n, k)
            logprobs[r, :n] = torch.from_numpy(np.asarray(got["topk_logprobs"][r], dtype=np.float32)).view(n, k)
            tail[r, :n] = torch.from_numpy(np.asarray(got["tail_logprob"][r], dtype=np.float32))
        norm = torch.logaddexp(logprobs.logsumexp(-1), tail)
        target = SparseTarget(ids, logprobs - norm.unsqueeze(-1), tail - norm)
        return target.to(mask.device)
