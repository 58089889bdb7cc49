"""`distill push --model DIR --repo-id NAME`: upload a trained model with its model card to the Hub."""

from __future__ import annotations

NAME = "push"
HELP = "Upload a trained model (safetensors, tokenizer, model card, fairness/privacy reports) to the Hub."
DESCRIPTION = HELP + """

Uploads the top-level model files of DIR — never checkpoint-* folders or optimizer/RNG states. When DIR has
no README.md, its model card is generated (as `distill card` does) and uploaded with the model, then saved into
DIR once the upload succeeded. Any failure (offline, no token, a repo error) prints one message and exits with
code 2; DIR is left byte-identical.
"""


def add_arguments(parser) -> None:
    parser.add_argument("--model", required=True, metavar="DIR", help="The output_dir of `distill train`.")
    parser.add_argument("--repo-id", required=True, metavar="NAME", help="Hub repo id: NAME or ORG/NAME.")
    parser.add_argument("--private", action="store_true", help="Create the repo as private (if it is new).")
    parser.add_argument("--revision", metavar="BRANCH", default=None,
                        help="Branch to push to (created from main if missing; default: main).")
    parser.add_argument("--commit-message", default=None, help="Message of the Hub commit.")
    parser.add_argument("--token", default=None,
                        help="Hub token with write access (default: HF_TOKEN or the `hf auth login` token).")
    parser.add_argument("--allow-pickle", action="store_true",
                        help="Allow pushing pickle weights (*.bin), which can run code when loaded.")


def run(args, extra) -> int:
    from ..hub.push import push_model

    info = push_model(args.model, args.repo_id, private=True if args.private else None, revision=args.revision,
                      commit_message=args.commit_message, token=args.token, allow_pickle=args.allow_pickle)
    url = getattr(info, "commit_url", None) or f"https://huggingface.co/{args.repo_id}"
    print(f"Pushed {args.model} to {args.repo_id}: {url}")
    return 0
