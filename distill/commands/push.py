"""`distill push --model DIR --repo-id NAME`: upload a trained model with its model card to the Hub."""

from __future__ import annotations

from ..cli import BoolAction

NAME = "push"
HELP = "Upload a trained model (safetensors, tokenizer, model card, fairness/privacy reports) to the Hub."
DESCRIPTION = HELP + """

Uploads the top-level model files of DIR — never checkpoint-* folders or optimizer/RNG states. The model card
is refreshed from the files on disk (fairness, privacy, federated sections) when DIR has none or one that
fair-distill wrote, uploaded with the model, then saved into DIR once the upload succeeded; a README.md you
wrote is uploaded as it is. A DP-trained model is pushed without the files its privacy disclosure lists as
outside epsilon (trainer_state.json, all_results.json, train/eval_results.json: losses and metrics computed on
private records without noise) unless --include-unprotected is given; the card says which. Any failure
(offline, no token, a repo error) prints one message and exits with code 2; DIR is left byte-identical.
"""


def add_arguments(parser) -> None:
    parser.add_argument("--model", required=True, metavar="DIR", help="The output_dir of `distill train`.")
    parser.add_argument("--repo-id", required=True, metavar="NAME", help="Hub repo id: NAME or ORG/NAME.")
    parser.add_argument("--private", action=BoolAction, help="Create the repo as private (if it is new).")
    parser.add_argument("--revision", metavar="BRANCH", default=None,
                        help="Branch to push to (created from main if missing; default: main).")
    parser.add_argument("--commit-message", default=None, help="Message of the Hub commit.")
    parser.add_argument("--token", default=None,
                        help="Hub token with write access (default: HF_TOKEN or the `hf auth login` token).")
    parser.add_argument("--allow-pickle", action=BoolAction,
                        help="Allow pushing pickle weights (*.bin), which can run code when loaded.")
    parser.add_argument("--include-unprotected", action=BoolAction,
                        help="DP runs: also upload the files outside epsilon (trainer_state.json, training "
                             "logs and metrics), which can reveal training records.")


def run(args, extra) -> int:
    from ..hub.push import push_model

    info = push_model(args.model, args.repo_id, private=True if args.private else None, revision=args.revision,
                      commit_message=args.commit_message, token=args.token, allow_pickle=args.allow_pickle,
                      include_unprotected=args.include_unprotected)
    url = getattr(info, "commit_url", None) or f"https://huggingface.co/{args.repo_id}"
    print(f"Pushed {args.model} to {args.repo_id}: {url}")
    return 0
