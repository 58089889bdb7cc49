"""`distill demo [--output_dir DIR] [--quick] [--seeds N] [--architecture gpt2|llama]`: the offline end-to-end bias-mitigation demo."""

from __future__ import annotations


from ..cli import BoolAction, add_deprecated_alias, number

NAME = "demo"
HELP = ("Offline end to end: a planted-bias teacher, a plain KD student, a counterfactual-role-reversal student "
        "and a CRR + DP student, with fairness metrics, perplexity and a plot.")


def add_arguments(parser) -> None:
    parser.add_argument("--output_dir", default=None, help="Output directory (must be new or empty; default runs/demo).")
    add_deprecated_alias(parser, "--out", "--output_dir", metavar="DIR")
    parser.add_argument("--quick", action=BoolAction, help="A smaller run (under 2 minutes on 2 CPU cores).")
    parser.add_argument("--seed", type=number(int, min=0), default=0, help="Seed of the corpus, the teacher and the first student.")
    parser.add_argument("--architecture", choices=("gpt2", "llama"), default="gpt2",
                        help="Architecture of the demo's teacher (and so of its students): gpt2 (LayerNorm, tied head) "
                             "or llama (RMSNorm, rotary, grouped-query attention, untied head).")
    parser.add_argument("--seeds", type=number(int, min=1), default=1,
                        help="Train each student with this many seeds (seed, seed+1, ...; one shared teacher) and "
                             "report bias and perplexity as mean and 95%% Student t interval, with paired t-tests "
                             "of the bias comparisons.")


def run(args, extra) -> int:
    from transformers.utils import logging as hf_logging

    from ..demo.pipeline import run_demo
    from ..errors import ConfigError
    from ..outputs import check_output_dir
    from .audit import resolve_output_dir

    out = resolve_output_dir(args, "runs/demo")
    check_output_dir(out, "output_dir", empty=True)
    if args.seeds < 1:
        raise ConfigError(f"--seeds must be >= 1, got {args.seeds}.")
    hf_logging.set_verbosity_error()
    run_demo(out, quick=args.quick, seed=args.seed, seeds=args.seeds, architecture=args.architecture)
    return 0
