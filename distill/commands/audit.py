"""`distill audit`: membership-inference AUC and canary exposure of a trained model; writes audit.json."""

from __future__ import annotations

NAME = "audit"
HELP = "Privacy audit: loss-threshold membership inference (AUC) and canary exposure; writes audit.json."
DESCRIPTION = """Privacy audit of a causal LM.

  distill audit --model runs/tiny-dp --members train.txt --non-members heldout.txt [--canary-seed 1234]

Members/non-members: .txt (one text a line), .json/.jsonl/.csv/.parquet (column --text-column).
Membership inference scores each text by -loss; AUC 0.5 means no measurable leakage.
Canary exposure ranks the canary among --num-candidates random secrets of its format by perplexity:
log2|R| - log2(rank); give the canary text (--canary) or the canary_seed used in training (--canary-seed)."""


def add_arguments(parser) -> None:
    parser.add_argument("--model", required=True, help="Model directory (or Hub name) to audit.")
    parser.add_argument("--members", help="Texts that were in the training data.")
    parser.add_argument("--non-members", help="Held-out texts from the same distribution.")
    parser.add_argument("--text-column", default="text", help="Column of the texts in json/csv/parquet files.")
    parser.add_argument("--max-examples", type=int, default=None, help="Use at most this many texts of each set.")
    parser.add_argument("--canary", action="append", default=[], help="A canary text (repeatable).")
    parser.add_argument("--canary-seed", type=int, action="append", default=[],
                        help="canary_seed of a training run that inserted canaries (repeatable).")
    parser.add_argument("--num-candidates", type=int, default=1000, help="|R|: random candidates per canary.")
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--seed", type=int, default=0, help="Seed of the random canary candidates.")
    parser.add_argument("--output", default=None, help="Where to write audit.json (default: MODEL/audit.json).")
    parser.add_argument("--allow-pickle", action="store_true", help="Allow loading non-safetensors weights.")


def _read_texts(path: str, column: str, limit: int | None) -> list[str]:
    from ..data import load_raw_datasets
    from ..errors import ConfigError

    if path.endswith((".txt", ".text")):
        from ..data import read_text

        texts = [line for line in read_text(path).splitlines() if line.strip()]
    else:
        texts = list(load_raw_datasets(train_file=path, text_column=column, validation_split_percentage=0)["train"][column])
    if not texts:
        raise ConfigError(f"'{path}' holds no texts.")
    return texts[:limit] if limit else texts


def run(args, extra) -> int:
    import json
    import os

    from ..errors import ConfigError
    from ..models import load_causal_lm, load_tokenizer
    from ..outputs import check_output_file
    from ..privacy.audit import canary_exposure, exposure_dict, membership_auc, sequence_losses
    from ..privacy.canary import make_canary

    if (args.members is None) != (args.non_members is None):
        raise ConfigError("Give both --members and --non-members for membership inference (or neither).")
    if args.output:
        check_output_file(args.output, "output")  # before any work
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
        report["membership_inference"] = {
            "attack": "loss threshold (score = -loss)", "auc": membership_auc(lm, ln),
            "num_members": len(lm), "num_non_members": len(ln),
            "mean_member_loss": sum(lm) / len(lm), "mean_non_member_loss": sum(ln) / len(ln),
        }
    if canaries:
        try:
            report["canaries"] = [exposure_dict(canary_exposure(model, tok, c, args.num_candidates, seed=args.seed))
                                  for c in canaries]
        except ValueError as exc:
            raise ConfigError(str(exc)) from None
    privacy = os.path.join(args.model, "privacy.json")
    if os.path.isfile(privacy):
        with open(privacy, encoding="utf-8") as fh:
            report["dp"] = {k: v for k, v in json.load(fh).items() if k in ("epsilon", "delta", "noise_multiplier")}
    out = args.output or (os.path.join(args.model, "audit.json") if os.path.isdir(args.model) else "audit.json")
    with open(out, "w", encoding="utf-8") as fh:
        json.dump(report, fh, indent=2)
    if "membership_inference" in report:
        print(f"membership inference AUC: {report['membership_inference']['auc']:.3f}")
    for c in report.get("canaries", []):
        print(f"canary exposure: {c['exposure']:.2f} of {c['max_exposure']:.2f} (rank {c['rank']})")
    print(f"wrote {out}")
    return 0
