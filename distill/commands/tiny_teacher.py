"""`distill tiny-teacher --output_dir DIR`: make the small offline teacher used by configs/tiny.yaml."""

from __future__ import annotations

NAME = "tiny-teacher"
HELP = "Create and train a tiny GPT-2 teacher offline (GPT-2's real tokenizer, a few hundred K block params)."


def add_arguments(parser) -> None:
    from ..builtin.tiny_models import TinyTeacherSpec
    from ..cli import number

    d = TinyTeacherSpec()
    parser.add_argument("--output_dir", required=True, help="Where to save the teacher (must be new or empty).")
    parser.add_argument("--n_layer", type=number(int, min=1), default=d.n_layer, help=f"Transformer blocks (default {d.n_layer}).")
    parser.add_argument("--n_embd", type=number(int, min=1), default=d.n_embd, help=f"Hidden width (default {d.n_embd}).")
    parser.add_argument("--n_head", type=number(int, min=1), default=d.n_head,
                        help=f"Attention heads; must divide --n_embd (default {d.n_head}).")
    parser.add_argument("--steps", type=number(int, min=1), default=d.steps, help="Training steps on the builtin:tiny corpus.")
    parser.add_argument("--dataset", default=d.dataset, help="builtin:NAME corpus to train on.")
    parser.add_argument("--seed", type=number(int, min=0), default=d.seed, help="Seed of initialisation and training data order.")


def run(args, extra) -> int:
    from ..outputs import check_output_dir
    from ..builtin.tiny_models import TinyTeacherSpec, train_tiny_teacher

    from ..errors import ConfigError

    if args.n_embd % args.n_head:
        nearest = args.n_head * max(1, round(args.n_embd / args.n_head))
        raise ConfigError(f"--n_embd {args.n_embd} is not a multiple of --n_head {args.n_head}: each attention head "
                          f"gets n_embd / n_head dimensions; choose e.g. --n_embd {nearest}.")
    check_output_dir(args.output_dir, "output_dir", empty=True)
    spec = TinyTeacherSpec(n_layer=args.n_layer, n_embd=args.n_embd, n_head=args.n_head, steps=args.steps,
                           dataset=args.dataset, seed=args.seed)
    path = train_tiny_teacher(args.output_dir, spec)
    print(f"Saved the tiny teacher to {path}")
    return 0
