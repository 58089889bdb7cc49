"""`distill card --model DIR`: (re)write the model card README.md of a trained model directory."""

from __future__ import annotations

from ..cli import BoolAction

NAME = "card"
HELP = "Write the model card (README.md) of a trained model: metadata, perplexity, fairness and privacy."
DESCRIPTION = HELP + """

`distill evaluate --model DIR --output_dir DIR` and `distill push` refresh a card that fair-distill wrote; run
this to rewrite it by hand. A README.md that fair-distill did not write is kept unless --force is given (then
it is replaced by a full card: training, CRR, DP, federated, fairness, compute and citation sections).
"""


def add_arguments(parser) -> None:
    parser.add_argument("--model", required=True, metavar="DIR", help="The output_dir of `distill train`.")
    parser.add_argument("--repo-id", default=None, metavar="NAME",
                        help="Hub repo id shown in the card's usage example (default: the directory name).")
    parser.add_argument("--force", action=BoolAction, help="Replace a README.md that fair-distill did not write.")


def run(args, extra) -> int:
    import os

    from ..errors import DistillError
    from ..hub.card import write_model_card
    from ..outputs import CARD_FILENAME, MODEL_CONFIG_FILENAME

    if not os.path.isfile(os.path.join(args.model, MODEL_CONFIG_FILENAME)):
        raise DistillError(f"{args.model} has no {MODEL_CONFIG_FILENAME}: pass the output_dir of `distill train`.")
    path = write_model_card(args.model, repo_id=args.repo_id, overwrite=True if args.force else None)
    if path is None:
        raise DistillError(f"{os.path.join(args.model, CARD_FILENAME)} was not written by fair-distill: "
                           "pass --force to replace it.")
    print(f"Wrote {path}")
    return 0
