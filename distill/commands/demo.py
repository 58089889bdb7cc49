"""`distill demo [--out DIR] [--quick]`: the offline end-to-end bias-mitigation demo."""

from __future__ import annotations

from ..cli import BoolAction

NAME = "demo"
HELP = ("Offline end to end: a planted-bias teacher, a plain KD student, a counterfactual-role-reversal student "
        "and a CRR + DP student, with fairness metrics, perplexity and a plot.")


def add_arguments(parser) -> None:
    parser.add_argument("--out", default="runs/demo", help="Output directory (must be new or empty).")
    parser.add_argument("--quick", action=BoolAction, help="A smaller run (under 2 minutes on 2 CPU cores).")
    parser.add_argument("--seed", type=int, default=0, help="Seed of data, initialisation and sampling.")


def run(args, extra) -> int:
    from transformers.utils import logging as hf_logging

    from ..demo.pipeline import run_demo
    from ..outputs import check_output_dir

    check_output_dir(args.out, "out", empty=True)
    hf_logging.set_verbosity_error()
    run_demo(args.out, quick=args.quick, seed=args.seed)
    return 0
