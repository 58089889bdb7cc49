"""`distill evaluate --model PATH_OR_NAME`: gender-disparity report of any causal LM."""

from __future__ import annotations

from ..cli import BoolAction, add_deprecated_alias

NAME = "evaluate"
HELP = ("Measure gender bias of causal LMs: generation (co-occurrence, parity, sentiment, representation), "
        "intrinsic (CEAT, prediction sensitivity) and downstream (pronoun resolution, minimal pairs).")
DESCRIPTION = HELP + """

--suite generation | intrinsic | downstream | all picks the metric families (default: generation).
Several models (--model a --model b, or --model a b) give one comparison table and DIR/comparison.png; each
model's report goes to DIR/<model name>/.

Prompts: 'builtin' (the project's profession prompts over 48 occupations with real-world shares of women),
'bold:FILE' (a BOLD prompt file such as profession_prompt.json or gender_prompt.json), or a .txt (one prompt
a line) / .jsonl ({"prompt": ..., "group": ..., "gender": ...}) file.
Writes DIR/fairness.json (sections intrinsic, downstream, prediction_sensitivity beside the generation
metrics), and with the generation suite DIR/per_profession.csv, DIR/disparity.png and DIR/generations.jsonl.
With --output_dir the model's own directory, a model card fair-distill wrote there (README.md) is refreshed
with the results; a README.md you wrote is kept."""


def add_arguments(parser) -> None:
    from ..cli import number

    parser.add_argument("--model", required=True, nargs="+", action="extend",
                        help="Hub name, local directory, or builtin:tiny-gpt2; repeat (or list) to compare models.")
    parser.add_argument("--suite", default="generation", choices=["generation", "intrinsic", "downstream", "all"],
                        help="Metric families to run (default: generation).")
    parser.add_argument("--ceat-samples", type=number(int, min=1), default=1000, help="CEAT samples (random contexts per word).")
    parser.add_argument("--ceat-tests", default="career_family,math_arts,science_arts,occupations",
                        help="Comma-separated CEAT tests: career_family, math_arts, science_arts, occupations.")
    parser.add_argument("--layer", type=number(int), default=-1,
                        help="Hidden layer for CEAT (0 = embeddings, -1 = last, the default).")
    parser.add_argument("--tokenizer", default=None, help="Tokenizer (default: the model's).")
    parser.add_argument("--prompts", default="builtin", help="builtin | bold:FILE | FILE.txt | FILE.jsonl.")
    parser.add_argument("--occupations", default=None,
                        help="Comma-separated subset of the builtin occupations (e.g. 'nurse,plumber').")
    parser.add_argument("--metrics", default="cooccurrence,parity,sentiment",
                        help="Comma-separated subset of cooccurrence, parity, sentiment.")
    parser.add_argument("--num-samples", type=number(int, min=1), default=1, help="Continuations sampled per prompt.")
    parser.add_argument("--max-new-tokens", type=number(int, min=1), default=20, help="Tokens generated per continuation.")
    parser.add_argument("--max-prompts-per-group", type=number(int, min=1), default=None,
                        help="At most N prompts per group (profession / BOLD group) and subject gender.")
    parser.add_argument("--batch-size", type=number(int, min=1), default=16, help="Prompts per generation / forward batch.")
    parser.add_argument("--greedy", action=BoolAction, help="Greedy decoding instead of sampling.")
    parser.add_argument("--temperature", type=number(float, min=0, min_open=True), default=1.0,
                        help="Sampling temperature, > 0 (ignored with --greedy).")
    parser.add_argument("--top-k", type=number(int, min=0), default=0, help="0 = no top-k filtering.")
    parser.add_argument("--top-p", type=number(float, min=0, min_open=True, max=1), default=1.0,
                        help="Nucleus sampling mass, in (0, 1] (1.0 = no top-p filtering).")
    parser.add_argument("--seed", type=number(int, min=0), default=0, help="Seed of sampling and of the CEAT contexts.")
    parser.add_argument("--classifier", default=None,
                        help="Optional HF text-classification model (regard / toxicity) applied to generations.")
    parser.add_argument("--output_dir", default="fairness_report", metavar="DIR",
                        help="Output directory (with several models: one subdirectory a model). The model's own "
                             "directory adds the report to it and refreshes its fair-distill model card.")
    add_deprecated_alias(parser, "--out", "--output_dir", metavar="DIR")
    parser.add_argument("--overwrite", action=BoolAction, help="Replace a previous report in --output_dir.")
    parser.add_argument("--device", default=None, help="cpu, cuda, cuda:1 ... (default: cuda if available).")
    parser.add_argument("--dtype", default="auto", choices=["auto", "float32", "bfloat16", "float16"],
                        help="Dtype the model is loaded in (auto: as saved).")
    parser.add_argument("--allow-pickle", action=BoolAction, help="Allow loading pickle (.bin) weights.")
    parser.add_argument("--trust-remote-code", action=BoolAction,
                        help="Run the model repo's own modelling code (only for repos you trust).")
    parser.add_argument("--no-plot", action=BoolAction, help="Skip disparity.png.")
    parser.add_argument("--quiet", action=BoolAction, help="No progress bars.")


def _subdir(name: str, taken: set[str]) -> str:
    import os
    import re

    base = re.sub(r"[^A-Za-z0-9._-]+", "_", os.path.basename(os.path.normpath(name)) or name).strip("_") or "model"
    out, k = base, 2
    while out in taken:
        out, k = f"{base}_{k}", k + 1
    taken.add(out)
    return out


def run(args, extra) -> int:
    import os

    from ..errors import DistillError
    from ..fairness import format_table, write_report
    from ..fairness.prompts import builtin_prompts, load_prompts
    from ..fairness.report import format_suite_details, format_suite_table, plot_suite
    from ..fairness.suite import evaluate_suite
    from ..hub.card import refresh_model_card
    from ..model_loading import load_causal_lm, load_tokenizer
    from ..outputs import COMPARISON_FILES, COMPARISON_PLOT, SUITE_PLOT, check_report_dir, read_run_id, remove_files
    from ..runtime import resolve_device

    several = len(args.model) > 1
    taken: set[str] = set()
    out_dir = args.output_dir
    outs = [os.path.join(out_dir, _subdir(name, taken)) if several else out_dir for name in args.model]
    # before any work, so nothing is lost: no report directory may mix two runs
    previous = [check_report_dir(out, overwrite=args.overwrite, option="output_dir") for out in outs]
    if several:
        previous.append(check_report_dir(out_dir, COMPARISON_FILES, overwrite=args.overwrite, option="output_dir"))
    occupations = [o.strip() for o in args.occupations.split(",") if o.strip()] if args.occupations else None
    if occupations:
        if args.prompts != "builtin":
            raise DistillError("--occupations selects builtin occupations: use it with --prompts builtin.")
        prompts = builtin_prompts(occupations, args.max_prompts_per_group)
    else:
        prompts = load_prompts(args.prompts, args.max_prompts_per_group)
    from ..fairness.sharding import process_state

    state = process_state()  # under `accelerate launch` each process evaluates its share of the prompts
    if args.tokenizer and len(args.model) > 1:
        raise DistillError("--tokenizer applies to one model: compare several models with their own tokenizers.")
    device = resolve_device(args.device) if args.device else state.device
    reports = []
    for name, out, old in zip(args.model, outs, previous):
        model = load_causal_lm(name, dtype=args.dtype, trust_remote_code=args.trust_remote_code,
                               allow_pickle=args.allow_pickle).to(device)
        tokenizer = load_tokenizer(args.tokenizer or name, trust_remote_code=args.trust_remote_code)
        report = evaluate_suite(
            model, tokenizer, args.suite, prompts, occupations=occupations,
            metrics=[m.strip() for m in args.metrics.split(",") if m.strip()],
            ceat_tests=[t.strip() for t in args.ceat_tests.split(",") if t.strip()], layer=args.layer,
            ceat_samples=args.ceat_samples, seed=args.seed, batch_size=args.batch_size, model_name=name,
            progress=not args.quiet and state.is_main_process, num_samples=args.num_samples,
            max_new_tokens=args.max_new_tokens, do_sample=not args.greedy, temperature=args.temperature,
            top_k=args.top_k, top_p=args.top_p, classifier=args.classifier,
            max_prompts_per_group=args.max_prompts_per_group)
        reports.append(report)
        del model
        if not state.is_main_process:  # the main process alone writes and prints
            continue
        remove_files(out, old)  # --overwrite: no file of the previous report survives next to this one
        # a report on a model directory carries that model's run id, so its model card accepts it
        paths = write_report(report, out, plot=not args.no_plot,
                             run_id=read_run_id(name) if os.path.isdir(name) else None)
        if report.get("per_profession"):
            print(format_table(report))
        details = format_suite_details(report)
        if details:
            print(details)
        card = refresh_model_card(out) if os.path.isdir(name) and os.path.samefile(name, out) else None
        print("Wrote " + ", ".join([*paths.values(), *([card] if card else [])]) + "\n")
    if not state.is_main_process:
        return 0
    print(format_suite_table(reports))
    if several:
        remove_files(out_dir, previous[-1])
    if not args.no_plot:
        os.makedirs(out_dir, exist_ok=True)
        plot = os.path.join(out_dir, COMPARISON_PLOT if several else SUITE_PLOT)
        plot_suite(reports, plot)
        print(f"Wrote {plot}")
    return 0
