"""`distill evaluate --model PATH_OR_NAME`: gender-disparity report of any causal LM."""

from __future__ import annotations

NAME = "evaluate"
HELP = "Measure gender disparity of a causal LM (co-occurrence bias, parity, sentiment gap) and write a report."
DESCRIPTION = HELP + """

Prompts: 'builtin' (the project's profession prompts over 48 occupations with real-world shares of women),
'bold:FILE' (a BOLD prompt file such as profession_prompt.json or gender_prompt.json), or a .txt (one prompt
a line) / .jsonl ({"prompt": ..., "group": ..., "gender": ...}) file.
Writes DIR/fairness.json, DIR/per_profession.csv, DIR/disparity.png and DIR/generations.jsonl."""


def add_arguments(parser) -> None:
    parser.add_argument("--model", required=True, help="Hub name, local directory, or builtin:tiny-gpt2.")
    parser.add_argument("--tokenizer", default=None, help="Tokenizer (default: the model's).")
    parser.add_argument("--prompts", default="builtin", help="builtin | bold:FILE | FILE.txt | FILE.jsonl.")
    parser.add_argument("--occupations", default=None,
                        help="Comma-separated subset of the builtin occupations (e.g. 'nurse,plumber').")
    parser.add_argument("--metrics", default="cooccurrence,parity,sentiment",
                        help="Comma-separated subset of cooccurrence, parity, sentiment.")
    parser.add_argument("--num-samples", type=int, default=1, help="Continuations sampled per prompt.")
    parser.add_argument("--max-new-tokens", type=int, default=20)
    parser.add_argument("--max-prompts-per-group", type=int, default=None,
                        help="At most N prompts per group (profession / BOLD group) and subject gender.")
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--greedy", action="store_true", help="Greedy decoding instead of sampling.")
    parser.add_argument("--temperature", type=float, default=1.0)
    parser.add_argument("--top-k", type=int, default=0, help="0 = no top-k filtering.")
    parser.add_argument("--top-p", type=float, default=1.0)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--classifier", default=None,
                        help="Optional HF text-classification model (regard / toxicity) applied to generations.")
    parser.add_argument("--out", default="fairness_report", help="Output directory.")
    parser.add_argument("--overwrite", action="store_true", help="Replace a previous report in --out.")
    parser.add_argument("--device", default=None, help="cpu, cuda, cuda:1 ... (default: cuda if available).")
    parser.add_argument("--dtype", default="auto", choices=["auto", "float32", "bfloat16", "float16"])
    parser.add_argument("--allow-pickle", action="store_true", help="Allow loading pickle (.bin) weights.")
    parser.add_argument("--trust-remote-code", action="store_true")
    parser.add_argument("--no-plot", action="store_true", help="Skip disparity.png.")
    parser.add_argument("--quiet", action="store_true", help="No progress bars.")


def run(args, extra) -> int:
    from ..errors import DistillError
    from ..fairness import evaluate_disparity, format_table, write_report
    from ..fairness.prompts import builtin_prompts, load_prompts
    from ..models import load_causal_lm, load_tokenizer
    from ..outputs import check_report_dir, remove_files
    from ..runtime import resolve_device

    previous = check_report_dir(args.out, overwrite=args.overwrite)  # before any work: nothing is lost
    if args.occupations:
        if args.prompts != "builtin":
            raise DistillError("--occupations selects builtin occupations: use it with --prompts builtin.")
        prompts = builtin_prompts([o.strip() for o in args.occupations.split(",") if o.strip()],
                                  args.max_prompts_per_group)
    else:
        prompts = load_prompts(args.prompts, args.max_prompts_per_group)
    from ..fairness.sharding import process_state

    state = process_state()  # under `accelerate launch` each process evaluates its share of the prompts
    device = resolve_device(args.device) if args.device else state.device
    model = load_causal_lm(args.model, dtype=args.dtype, trust_remote_code=args.trust_remote_code,
                           allow_pickle=args.allow_pickle).to(device)
    tokenizer = load_tokenizer(args.tokenizer or args.model, trust_remote_code=args.trust_remote_code)
    report = evaluate_disparity(
        model, tokenizer, prompts, metrics=[m.strip() for m in args.metrics.split(",") if m.strip()],
        num_samples=args.num_samples, max_new_tokens=args.max_new_tokens, batch_size=args.batch_size,
        do_sample=not args.greedy, temperature=args.temperature, top_k=args.top_k, top_p=args.top_p,
        seed=args.seed, classifier=args.classifier, model_name=args.model, progress=not args.quiet,
        max_prompts_per_group=args.max_prompts_per_group)
    if not state.is_main_process:  # the main process alone writes and prints
        return 0
    remove_files(args.out, previous)  # --overwrite: no file of the previous report survives next to this one
    paths = write_report(report, args.out, plot=not args.no_plot)
    print(format_table(report))
    print("\nWrote " + ", ".join(paths.values()))
    return 0
