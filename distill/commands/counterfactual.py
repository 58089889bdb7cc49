"""`distill counterfactual "TEXT"`: print the gender-swapped counterfactual of a text."""

from __future__ import annotations

import sys

from ..cli import BoolAction

NAME = "counterfactual"
HELP = "Print the gender-swapped counterfactual of a text (he <-> she, his <-> her, man <-> woman, ...)."
DESCRIPTION = HELP + """

examples:
  distill counterfactual "He thanked his sister."     # -> She thanked her brother.
  echo "The king and his sons" | distill counterfactual -
  distill counterfactual --names "James met his father."   # -> Mary met her mother.
"""


def add_arguments(parser) -> None:
    parser.add_argument("text", help="The text to swap, or '-' to read standard input.")
    parser.add_argument("--names", action=BoolAction,
                        help="Also swap capitalised first names (James <-> Mary, John <-> Patricia, ...).")
    parser.add_argument("--pairs_file", "--cda_pairs_file", dest="pairs_file", default=None,
                        help="Your own 'male<TAB>female' word pairs, added to the built-in lexicon.")


def run(args, extra: list[str]) -> int:
    from ..counterfactual.swap import swap_gender

    if args.text == "-":
        text = sys.stdin.read()
        sys.stdout.write(swap_gender(text, names=args.names, pairs=args.pairs_file))
    else:
        print(swap_gender(args.text, names=args.names, pairs=args.pairs_file))
    return 0
