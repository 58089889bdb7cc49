"""Which ``accelerate`` engine a run uses, and what distillation supports under each (checked at start-up).

=================  ===========================================  ==============================================
engine             without DP (KD, CRR)                         with DP (``dp_enabled``)
=================  ===========================================  ==============================================
one process / DDP  yes (teacher replicated on each device)      yes (the DP engine reduces the clipped sums)
FSDP               refused                                      refused
DeepSpeed ZeRO-1/2 teacher replicated on each device            refused
DeepSpeed ZeRO-3   refused                                      refused
=================  ===========================================  ==============================================

Why refused: under FSDP ``accelerate`` prepares a model that only runs inference (the frozen teacher) without
wrapping or moving it (it would stay on the CPU), and saving a sharded student needs every process; under
ZeRO-3 ``from_pretrained`` partitions the teacher's weights at load time, and a partitioned teacher outside a
DeepSpeed engine has empty weights. DP-SGD clips each record's gradient of the *whole* student and reduces
the clipped sums itself, which sharded parameters (FSDP, ZeRO) do not allow. The engine is read from the
config (``fsdp``, ``deepspeed``) and from what ``accelerate launch`` passes to its processes
(``ACCELERATE_USE_FSDP``, ``ACCELERATE_USE_DEEPSPEED``, ``ACCELERATE_DEEPSPEED_ZERO_STAGE``,
``ACCELERATE_DEEPSPEED_CONFIG_FILE``).
"""

from __future__ import annotations

import json
import os
from typing import Any

from ..errors import ConfigError

DDP_HINT = ("use DDP instead: `accelerate launch --multi_gpu --num_processes N -m distill train ...` "
            "(or an accelerate config with distributed_type: MULTI_GPU)")


def _true(name: str) -> bool:
    return os.environ.get(name, "false").lower() in ("1", "true", "yes")


def _zero_stage(deepspeed: Any) -> int | None:
    """ZeRO stage from a DeepSpeed config (dict or JSON file) or accelerate's launch environment; None: unknown."""
    if os.environ.get("ACCELERATE_DEEPSPEED_ZERO_STAGE", "").isdigit():
        return int(os.environ["ACCELERATE_DEEPSPEED_ZERO_STAGE"])
    config = deepspeed or os.environ.get("ACCELERATE_DEEPSPEED_CONFIG_FILE")
    if isinstance(config, str) and config.lstrip().startswith("{"):  # inline JSON (--deepspeed '{...}')
        try:
            config = json.loads(config)
        except ValueError:
            return None
    elif isinstance(config, str) and os.path.isfile(config):
        try:
            with open(config, encoding="utf-8") as fh:
                config = json.load(fh)
        except (OSError, ValueError):
            return None
    if isinstance(config, dict):
        stage = (config.get("zero_optimization") or {}).get("stage", 0)
        return int(stage) if str(stage).isdigit() else None
    return None


def check_deepspeed_setting(args) -> None:
    """Check the ``deepspeed`` key when the config is built, before transformers imports DeepSpeed: a ZeRO stage
    this project refuses (3, unknown ones), an unreadable DeepSpeed config, or DeepSpeed not installed is one
    :class:`ConfigError` (instead of a ``PackageNotFoundError`` from deep inside ``TrainingArguments``)."""
    deepspeed = getattr(args, "deepspeed", None)
    if not deepspeed:
        return
    if isinstance(deepspeed, str) and not deepspeed.lstrip().startswith("{") and not os.path.isfile(deepspeed):
        raise ConfigError(f"deepspeed '{deepspeed}' is neither a DeepSpeed JSON file nor inline JSON: give the path "
                          "of a DeepSpeed config, or drop --deepspeed.")
    stage = _zero_stage(deepspeed)
    if stage is None or stage not in (0, 1, 2, 3):
        raise ConfigError(f"The DeepSpeed config has an unknown ZeRO stage ({_raw_stage(deepspeed)}): "
                          f"zero_optimization.stage must be 0, 1 or 2 (ZeRO-3 is refused); or {DDP_HINT}.")
    check_parallel_engine(args, ("deepspeed", stage))  # ZeRO-3 and dp_enabled: refused whatever is installed
    import importlib.util

    if importlib.util.find_spec("deepspeed") is None:
        raise ConfigError(f"deepspeed is set (ZeRO stage {stage}) but DeepSpeed is not installed: "
                          f"`pip install deepspeed`, or drop --deepspeed and {DDP_HINT}.")


def _raw_stage(deepspeed: Any) -> str:
    """The ``zero_optimization.stage`` value as written, for error messages."""
    config = deepspeed
    try:
        if isinstance(config, str):
            if config.lstrip().startswith("{"):
                config = json.loads(config)
            else:
                with open(config, encoding="utf-8") as fh:
                    config = json.load(fh)
        return repr((config.get("zero_optimization") or {}).get("stage"))
    except (OSError, ValueError, AttributeError):
        return "unreadable config"


def parallel_engine(args) -> tuple[str, int | None]:
    """``("fsdp" | "deepspeed" | "ddp", zero_stage)`` for a config (``ddp`` also covers one process)."""
    fsdp = getattr(args, "fsdp", None)
    if (fsdp not in (None, False, "", [])) or _true("ACCELERATE_USE_FSDP"):
        return "fsdp", None
    deepspeed = getattr(args, "deepspeed", None)
    if deepspeed or _true("ACCELERATE_USE_DEEPSPEED"):
        return "deepspeed", _zero_stage(deepspeed)
    return "ddp", None


def check_parallel_engine(args, engine: tuple[str, int | None] | None = None) -> None:
    """One :class:`ConfigError` at start-up when the run's engine (default: :func:`parallel_engine`) cannot run
    it (see the module table)."""
    engine, stage = engine or parallel_engine(args)
    if engine == "ddp":
        return
    name = "FSDP" if engine == "fsdp" else f"DeepSpeed (ZeRO stage {stage if stage is not None else 'unknown'})"
    if getattr(args, "dp_enabled", False):
        raise ConfigError(f"dp_enabled does not run under {name}: DP-SGD clips each record's gradient of the whole "
                          f"student and reduces the clipped sums itself, which sharded parameters prevent; {DDP_HINT}.")
    if engine == "fsdp":
        raise ConfigError("Distillation does not run under FSDP: the frozen teacher would stay unwrapped on the CPU "
                          f"and the sharded student could not be saved safely; {DDP_HINT}.")
    if stage is None or stage >= 3:
        raise ConfigError(f"Distillation does not run under {name}: ZeRO-3 partitions the teacher's weights when it "
                          f"is loaded, outside any DeepSpeed engine; use ZeRO stage 1 or 2, or {DDP_HINT}.")
