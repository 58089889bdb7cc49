"""``distill push``: upload a trained model directory to the Hugging Face Hub, safely.

Only the files a model repo needs are uploaded — weights (safetensors), config, tokenizer, the model card and
the fairness / privacy reports — never checkpoints, optimizer or RNG states, or ``training_args.bin``.

The card follows the files on disk: when the directory has no model card, or one fair-distill wrote (it carries
:data:`~distill.hub.card.GENERATED_MARKER`), the card is rebuilt (fairness, privacy and federated sections
included); a README.md someone else wrote is uploaded as it is.

Under DP, the files that hold values outside ε (:data:`UNPROTECTED_FILES`: ``trainer_state.json`` and the
Trainer's metrics files, which :mod:`distill.privacy.disclosure` lists as not covered: training losses and
held-out metrics computed on private records without noise) are left out unless ``include_unprotected``; the
rebuilt card says which happened.

Failure is safe: the directory is validated and the offline mode / token are checked before anything else;
any problem is one :class:`~distill.errors.DistillError` (the CLI exits with code 2), and the directory is left
byte-identical. A rebuilt card is written into a staging directory (links to the files to upload, plus
``README.md``) that is uploaded instead; only once the upload succeeded is the card also written into the
directory, so that it matches the repo.
"""

from __future__ import annotations

import glob
import logging
import os
import shutil
import tempfile

from huggingface_hub import HfApi, get_token
from huggingface_hub.errors import HfHubHTTPError, HFValidationError, OfflineModeIsEnabled
from huggingface_hub.utils import filter_repo_objects, validate_repo_id

from ..errors import DistillError, UnsafeWeightsError
from ..model_loading import check_safe_weights, hub_offline_variable
from ..outputs import (CARD_FILENAME, CONFIG_FILENAME, FAIRNESS_FILENAME, MODEL_CONFIG_FILENAME, PER_PROFESSION_FILENAME,
                       PRIVACY_FILENAME, RESULTS_FILENAME, RUN_ID_FILENAME, TRAINER_STATE_FILENAME,
                       TRAINING_ARGS_FILENAME)
from .card import build_model_card, is_generated_card, write_model_card
from .run_info import TRAIN_RESULTS_FILENAME, read_run

try:  # the HTTP client's base error (connection refused, timeouts, ...)
    from huggingface_hub.errors import HTTPError as _HTTPError
except ImportError:  # pragma: no cover - older huggingface_hub
    _HTTPError = OSError

logger = logging.getLogger(__name__)

MODEL_FILES = [MODEL_CONFIG_FILENAME, "generation_config.json", "*.safetensors", "model.safetensors.index.json"]
PICKLE_FILES = ["pytorch_model*.bin", "pytorch_model.bin.index.json"]
TOKENIZER_FILES = ["tokenizer.json", "tokenizer_config.json", "special_tokens_map.json", "added_tokens.json",
                   "vocab.json", "merges.txt", "tokenizer.model", "chat_template.jinja", "chat_template.json"]
REPORT_FILES = [CARD_FILENAME, CONFIG_FILENAME, RESULTS_FILENAME, TRAIN_RESULTS_FILENAME, "eval_results.json",
                TRAINER_STATE_FILENAME, FAIRNESS_FILENAME, PER_PROFESSION_FILENAME, "*.png", PRIVACY_FILENAME,
                RUN_ID_FILENAME]
#: Never uploaded, whatever matches above: sub-folders (checkpoints), optimizer/scheduler/RNG states, hidden files.
NEVER_UPLOAD = ["*/*", "checkpoint-*", "optimizer.pt", "scheduler.pt", "rng_state*", TRAINING_ARGS_FILENAME, ".*"]

#: Under DP, left out of a push unless asked for: the files holding values outside ε (see
#: distill.privacy.disclosure.OUTSIDE_EPSILON: logged training losses, held-out metrics, trainer_state.json and the
#: training logs that hold them).
UNPROTECTED_FILES = [TRAINER_STATE_FILENAME, RESULTS_FILENAME, TRAIN_RESULTS_FILENAME, "eval_results.json", "*.log",
                     "events.out.tfevents*"]

_OFF_VALUES = ("", "0", "false", "no", "off")


def select_upload_files(model_dir: str, allow_pickle: bool = False) -> list[str]:
    """The top-level files of ``model_dir`` that a push uploads, sorted."""
    patterns = MODEL_FILES + TOKENIZER_FILES + REPORT_FILES + (PICKLE_FILES if allow_pickle else [])
    names = sorted(n for n in os.listdir(model_dir) if os.path.isfile(os.path.join(model_dir, n)))
    return list(filter_repo_objects(names, allow_patterns=patterns, ignore_patterns=NEVER_UPLOAD))


def validate_model_dir(model_dir: str, allow_pickle: bool = False) -> list[str]:
    """Check that ``model_dir`` is a saved model with safe weights; returns the files a push would upload."""
    if not os.path.isdir(model_dir):
        raise DistillError(f"--model {model_dir} is not a directory: pass the output_dir of `distill train`.")
    if not os.path.isfile(os.path.join(model_dir, MODEL_CONFIG_FILENAME)):
        raise DistillError(f"{model_dir} has no {MODEL_CONFIG_FILENAME}, so it is not a saved transformers model: pass "
                           "the output_dir of `distill train` (or a directory written by save_pretrained).")
    try:
        check_safe_weights(model_dir, allow_pickle, how_to_allow="pass --allow-pickle")
    except UnsafeWeightsError as exc:
        raise UnsafeWeightsError(
            f"{exc} Anyone who loads the pushed model would run that risk too: convert the weights with "
            "`AutoModelForCausalLM.from_pretrained(DIR).save_pretrained(DIR, safe_serialization=True)`."
        ) from None
    files = select_upload_files(model_dir, allow_pickle=allow_pickle)
    weights = [f for f in files if f.endswith(".safetensors") or (allow_pickle and f.endswith(".bin"))]
    if not weights:
        raise DistillError(f"{model_dir} holds no model weights (*.safetensors): train or save the model first.")
    if not any(f in files for f in ("tokenizer.json", "tokenizer.model", "vocab.json")):
        logger.warning("%s has no tokenizer files: users of the pushed model will need the teacher's tokenizer.",
                       model_dir)
    return files


def is_offline() -> bool:
    """Offline mode, read as huggingface_hub reads it (:func:`distill.model_loading.hub_offline_variable`)."""
    return hub_offline_variable() is not None


def check_can_push(repo_id: str, token: str | None = None) -> str:
    """Local checks before any upload (repo id, offline mode, a token); returns the token to use."""
    try:
        validate_repo_id(repo_id)
    except HFValidationError as exc:
        raise DistillError(f"'{repo_id}' is not a valid Hub repo id ({exc}): use NAME or ORG/NAME.") from None
    offline = hub_offline_variable()
    if offline:
        raise DistillError(f"Cannot push: the Hub is unreachable in offline mode ({offline} is set). Unset it and "
                           "run the push again.")
    token = token or get_token()
    if not token:
        raise DistillError("Cannot push: no Hugging Face token. Run `hf auth login`, set HF_TOKEN, or pass --token "
                           "(hub_token in a training config).")
    return token


def _reason(exc: Exception) -> str:
    status = getattr(getattr(exc, "response", None), "status_code", None)
    first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
    hint = {401: " Check that your token is valid (`hf auth login`).",
            403: " Your token has no write access to this repo or namespace: use a write token or another repo id.",
            404: " The repo or revision does not exist or is not visible to your token."}.get(status, "")
    if status is None and isinstance(exc, (ConnectionError, TimeoutError, _HTTPError)):
        hint = " Check your network connection (and HF_ENDPOINT if you set it)."
    return f"{first}.{hint}"


def unprotected_files(files: list[str]) -> list[str]:
    """Those of ``files`` that hold values outside a DP run's ε (:data:`UNPROTECTED_FILES`)."""
    return list(filter_repo_objects(files, allow_patterns=UNPROTECTED_FILES))


def push_model(model_dir: str, repo_id: str, *, private: bool | None = None, revision: str | None = None,
               commit_message: str | None = None, token: str | None = None, allow_pickle: bool = False,
               include_unprotected: bool = False):
    """Upload ``model_dir`` to ``repo_id`` on the Hub; returns the ``CommitInfo`` of the upload.

    Creates the repo (``exist_ok``) and the branch ``revision`` when needed, refreshes the model card when the
    directory has none or one fair-distill wrote, and uploads :func:`select_upload_files` only (under DP without
    :data:`UNPROTECTED_FILES` unless ``include_unprotected``).
    """
    validate_model_dir(model_dir, allow_pickle=allow_pickle)
    token = check_can_push(repo_id, token)
    files = select_upload_files(model_dir, allow_pickle=allow_pickle)
    publication = None
    if read_run(model_dir).dp_enabled:
        unprotected = unprotected_files(files)
        if include_unprotected:
            publication = {"left_out": [], "included": unprotected}
        else:
            publication = {"left_out": unprotected, "included": []}
            files = [f for f in files if f not in unprotected]
        if unprotected and include_unprotected:
            logger.warning("DP run: uploading %s, which hold values outside epsilon.", ", ".join(unprotected))
        elif unprotected:
            logger.warning("DP run: leaving out %s, which hold values outside epsilon (pass --include-unprotected "
                           "to upload them).", ", ".join(unprotected))
    card = None
    card_path = os.path.join(model_dir, CARD_FILENAME)
    if not os.path.exists(card_path) or is_generated_card(card_path):
        card = build_model_card(model_dir, repo_id=repo_id, publication=publication)
        files = sorted(set(files) | {CARD_FILENAME})
    api = HfApi(token=token)
    with tempfile.TemporaryDirectory(prefix="distill-push-") as stage:
        folder = model_dir
        if card is not None:  # upload the files plus the new card from a staging directory; DIR is untouched
            folder = stage
            for name in files:
                if name != CARD_FILENAME:
                    src, dst = os.path.abspath(os.path.join(model_dir, name)), os.path.join(stage, name)
                    try:
                        os.symlink(src, dst)
                    except OSError:  # no symlinks here (e.g. Windows without the privilege)
                        shutil.copy2(src, dst)
            card.save(os.path.join(stage, CARD_FILENAME))
        try:
            url = api.create_repo(repo_id, private=private, exist_ok=True, repo_type="model")
            full_id = getattr(url, "repo_id", None) or repo_id
            if revision:
                api.create_branch(full_id, branch=revision, exist_ok=True, repo_type="model")
            info = api.upload_folder(
                repo_id=full_id, folder_path=folder, repo_type="model", revision=revision,
                commit_message=commit_message
                or f"Upload {os.path.basename(os.path.abspath(model_dir))} with fair-distill",
                allow_patterns=[glob.escape(f) for f in files], ignore_patterns=NEVER_UPLOAD,
            )
        except (HfHubHTTPError, OfflineModeIsEnabled, HFValidationError, _HTTPError, OSError, ValueError) as exc:
            raise DistillError(f"Push to '{repo_id}' failed: {_reason(exc)} {model_dir} was not changed.") from None
        if card is not None:  # the pushed card, kept next to the model (a failure here loses nothing remote)
            try:
                tmp = os.path.join(model_dir, f".README-{os.getpid()}.md.tmp")
                shutil.copyfile(os.path.join(stage, CARD_FILENAME), tmp)
                os.replace(tmp, card_path)
            except OSError as exc:
                logger.warning("Pushed, but could not save the model card into %s: %s", model_dir, exc)
    logger.info("Pushed %d files from %s to %s", len(files), model_dir, full_id)
    return info


def publish_run(args, *, push: bool | None = None, commit_message: str | None = "End of training",
                token: str | None = None, revision: str | None = None, private: bool | None = None):
    """After training: write the model card of ``args.output_dir``, then push it when ``push_to_hub`` is set.

    The Trainer's own Hub pushes are disabled in :class:`~distill.distillation.trainer.DistillationTrainer`; this is the one
    place where a training run is uploaded, so the upload always carries the card and the reports.
    """
    write_model_card(args.output_dir, repo_id=args.hub_model_id)
    if not (args.push_to_hub if push is None else push):
        return None
    repo_id = args.hub_model_id or os.path.basename(os.path.abspath(args.output_dir))
    try:
        return push_model(args.output_dir, repo_id,
                          private=args.hub_private_repo if private is None else private,
                          revision=revision or args.hub_revision, commit_message=commit_message,
                          token=token or args.hub_token, allow_pickle=args.allow_pickle)
    except DistillError as exc:
        raise DistillError(f"{exc} The trained model is saved in {args.output_dir}: retry with `distill push "
                           f"--model {args.output_dir} --repo-id {repo_id}`.") from None
