"""`distill audit`: membership inference (two attacks), canary exposure and extraction; ``--sweep``: the
privacy-utility-fairness curve (:mod:`distill.demo.privacy_sweep`)."""

from __future__ import annotations


from ..cli import BoolAction, add_deprecated_alias, number

NAME = "audit"
HELP = ("Privacy audit: membership inference (loss threshold, reference-calibrated), canary exposure and "
        "extraction; --sweep trains at several epsilons and plots the privacy-utility-fairness curve.")
DESCRIPTION = """Privacy audit of a causal LM.

  distill audit --model runs/tiny-dp --members train.txt --non-members heldout.txt [--canary-seed 1234]
                [--output_dir DIR]     # writes DIR/audit.json (default: the model directory)
  distill audit --sweep --quick --seeds 3 --output_dir runs/privacy-sweep

Members/non-members: .txt (one text a line), .json/.jsonl/.csv/.parquet (column --text-column).
Membership inference: the loss-threshold attack (score = -loss) and, with a reference model (--reference, default:
the teacher named in MODEL/distill_config.yaml), the reference-calibrated attack (score = reference loss - model
loss). Each reports AUC (0.5 = no measurable leakage) and TPR at 1% and 0.1% FPR.
Canaries (--canary TEXT or --canary-seed N): exposure = log2|R| - log2(rank) among --num-candidates random secrets
of the format, and extraction: greedy and beam decoding of the digits from the prefix.
--sweep: trains the demo student at several epsilons (--epsilons), with and without CRR, --seeds times each,
and writes sweep.json, sweep.png and a table: each figure as its mean with a 95 % Student t interval over the
seeds, and a one-sided paired t-test of "CRR lowers bias vs KD" at each epsilon."""


def add_arguments(parser) -> None:
    parser.add_argument("--model", help="Model directory (or Hub name) to audit.")
    parser.add_argument("--reference", default=None,
                        help="Reference model of the calibrated attack (default: the model's teacher, when known; "
                             "'none' turns the attack off).")
    parser.add_argument("--num-beams", type=number(int, min=1), default=10, help="Beams of canary extraction.")
    parser.add_argument("--sweep", action=BoolAction,
                        help="Train the demo student at several epsilons, with and without CRR, and audit each.")
    parser.add_argument("--quick", action=BoolAction, help="--sweep: the small version (minutes on a CPU).")
    parser.add_argument("--epsilons", default=None,
                        help="--sweep: comma-separated epsilons (inf = no noise; default 1,4,8,inf, --quick 1,8,inf).")
    parser.add_argument("--seeds", type=number(int, min=1), default=1,
                        help="--sweep: train each (epsilon, method) point with this many seeds (intervals and paired "
                             "tests need 2 or more).")
    parser.add_argument("--jobs", type=number(int, min=1), default=None,
                        help="--sweep: worker processes training side by side (default: one per core, at most 2).")
    parser.add_argument("--members", help="Texts that were in the training data.")
    parser.add_argument("--non-members", help="Held-out texts from the same distribution.")
    parser.add_argument("--text-column", default="text", help="Column of the texts in json/csv/parquet files.")
    parser.add_argument("--max-examples", type=number(int, min=1), default=None, help="Use at most this many texts of each set.")
    parser.add_argument("--canary", action="append", default=[], help="A canary text (repeatable).")
    parser.add_argument("--canary-seed", type=number(int, min=0), action="append", default=[],
                        help="canary_seed of a training run that inserted canaries (repeatable).")
    parser.add_argument("--num-candidates", type=number(int, min=1), default=1000, help="|R|: random candidates per canary.")
    parser.add_argument("--batch-size", type=number(int, min=1), default=16, help="Texts per forward pass of the loss attacks.")
    parser.add_argument("--seed", type=number(int, min=0), default=0, help="Seed of the random canary candidates.")
    parser.add_argument("--output_dir", default=None, metavar="DIR",
                        help="Directory of audit.json (default: the model directory); with --sweep, the sweep's "
                             "output directory (default: runs/privacy-sweep).")
    add_deprecated_alias(parser, "--output", "--output_dir", dest="output", metavar="FILE")
    add_deprecated_alias(parser, "--out", "--output_dir", metavar="DIR")
    parser.add_argument("--allow-pickle", action=BoolAction, help="Allow loading non-safetensors weights.")


def resolve_output_dir(args, default: str) -> str:
    """--output_dir, or the deprecated --out (with a one-line warning), or ``default``."""
    import sys

    from ..errors import ConfigError

    old = getattr(args, "out_deprecated", None)
    if old is None:
        return args.output_dir or default
    if args.output_dir is not None and args.output_dir != old:
        raise ConfigError(f"--out '{old}' and --output_dir '{args.output_dir}' disagree: give --output_dir only.")
    print("warning: --out is deprecated, use --output_dir", file=sys.stderr)
    return old


def _read_texts(path: str, column: str, limit: int | None) -> list[str]:
    from ..text_data import load_raw_datasets
    from ..errors import ConfigError

    if path.endswith((".txt", ".text")):
        from ..text_data import read_text

        texts = [line for line in read_text(path).splitlines() if line.strip()]
    else:
        texts = list(load_raw_datasets(train_file=path, text_column=column, validation_split_percentage=0)["train"][column])
    if not texts:
        raise ConfigError(f"'{path}' holds no texts.")
    return texts[:limit] if limit else texts


def _reference_path(args) -> str | None:
    """--reference, else the teacher recorded in MODEL/distill_config.yaml (None when unknown or 'none')."""
    import os

    if args.reference is not None:
        return None if args.reference.lower() == "none" else args.reference
    from ..outputs import CONFIG_FILENAME

    cfg = os.path.join(args.model, CONFIG_FILENAME)
    if not os.path.isfile(cfg):
        return None
    import yaml

    with open(cfg, encoding="utf-8") as fh:
        return (yaml.safe_load(fh) or {}).get("teacher_model_name_or_path")


def run(args, extra) -> int:
    import json
    import os

    from ..errors import ConfigError
    from ..model_loading import load_causal_lm, load_tokenizer
    from ..outputs import AUDIT_FILENAME, PRIVACY_FILENAME, check_output_dir, check_output_file
    from ..privacy.audit import canary_exposure, exposure_dict, extract_canaries, membership_attacks, sequence_losses
    from ..privacy.canary import make_canary

    if args.sweep:
        from ..demo.privacy_sweep import parse_epsilons, run_sweep

        out = resolve_output_dir(args, "runs/privacy-sweep")
        epsilons = parse_epsilons(args.epsilons) if args.epsilons is not None else None
        if args.jobs is not None and args.jobs < 1:
            raise ConfigError(f"--jobs must be >= 1, got {args.jobs}.")
        run_sweep(out, quick=args.quick, epsilons=epsilons, seeds=args.seeds, jobs=args.jobs)
        return 0
    if args.model is None:
        raise ConfigError("Give --model DIR to audit a model (or --sweep to train and audit a series).")
    if (args.members is None) != (args.non_members is None):
        raise ConfigError("Give both --members and --non-members for membership inference (or neither).")
    # before any work: where audit.json goes (the deprecated --output FILE names the file itself)
    output = getattr(args, "output", None)
    if output is not None:
        check_output_file(output, "output")
    elif args.output_dir is not None:
        check_output_dir(args.output_dir, "output_dir")
        output = os.path.join(args.output_dir, AUDIT_FILENAME)
    else:
        output = os.path.join(args.model, AUDIT_FILENAME) if os.path.isdir(args.model) else AUDIT_FILENAME
    canaries = list(args.canary) + [make_canary(s) for s in args.canary_seed]
    if args.members is None and not canaries:
        raise ConfigError("Nothing to audit: give --members/--non-members and/or --canary / --canary-seed.")
    model = load_causal_lm(args.model, dtype="float32", allow_pickle=args.allow_pickle)
    tok = load_tokenizer(args.model)
    report: dict = {"model": args.model}
    if args.members is not None:
        members = _read_texts(args.members, args.text_column, args.max_examples)
        non_members = _read_texts(args.non_members, args.text_column, args.max_examples)
        lm = sequence_losses(model, tok, members, batch_size=args.batch_size)
        ln = sequence_losses(model, tok, non_members, batch_size=args.batch_size)
        rm = rn = None
        reference = _reference_path(args)
        if reference is not None:
            ref = load_causal_lm(reference, dtype="float32", allow_pickle=args.allow_pickle)
            rm = sequence_losses(ref, tok, members, batch_size=args.batch_size)
            rn = sequence_losses(ref, tok, non_members, batch_size=args.batch_size)
            del ref
        report["membership_inference"] = membership_attacks(lm, ln, rm, rn)
        report["membership_inference"]["reference_model"] = reference
    if canaries:
        try:
            report["canaries"] = [exposure_dict(canary_exposure(model, tok, c, args.num_candidates, seed=args.seed))
                                  for c in canaries]
            for entry, extracted in zip(report["canaries"], extract_canaries(model, tok, canaries, args.num_beams)):
                entry["extraction"] = extracted
        except ValueError as exc:
            raise ConfigError(str(exc)) from None
    privacy = os.path.join(args.model, PRIVACY_FILENAME)
    if os.path.isfile(privacy):
        with open(privacy, encoding="utf-8") as fh:
            report["dp"] = {k: v for k, v in json.load(fh).items() if k in ("epsilon", "delta", "noise_multiplier")}
    out = output
    if os.path.dirname(out):
        os.makedirs(os.path.dirname(out), exist_ok=True)
    with open(out, "w", encoding="utf-8") as fh:
        json.dump(report, fh, indent=2, allow_nan=False)
    for name, attack in (report.get("membership_inference") or {}).items():
        if isinstance(attack, dict):
            print(f"membership inference, {attack['attack']}: AUC {attack['auc']:.3f}, TPR@1%FPR "
                  f"{attack['tpr_at_1pct_fpr']:.3f}, TPR@0.1%FPR {attack['tpr_at_0.1pct_fpr']:.3f}")
    for c in report.get("canaries", []):
        ex = c["extraction"]
        rank = f"rank {ex['beam_rank']} of {ex['num_beams']} beams" if ex["beam_rank"] else f"not in {ex['num_beams']} beams"
        print(f"canary exposure: {c['exposure']:.2f} of {c['max_exposure']:.2f} (rank {c['rank']}); extraction: "
              f"greedy {'yes' if ex['extracted_greedy'] else 'no'}, {rank}")
    print(f"wrote {out}")
    return 0
