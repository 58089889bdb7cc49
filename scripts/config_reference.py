"""Print the Markdown reference of fair-distill's own config keys (README "Configuration reference")."""

import dataclasses

from transformers import TrainingArguments

from distill.distillation.config import DistillationConfig


def main() -> None:
    base = {f.name for f in dataclasses.fields(TrainingArguments)}
    print("| key | default | meaning |\n|---|---|---|")
    for f in dataclasses.fields(DistillationConfig):
        if f.name in base and f.name not in ("overwrite_output_dir",) or not f.init:
            continue
        default = f.default if f.default is not dataclasses.MISSING else f.default_factory()
        print(f"| `{f.name}` | `{default}` | {f.metadata.get('help', '')} |")


if __name__ == "__main__":
    main()
