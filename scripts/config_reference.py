"""Print the Markdown reference of fair-distill's own config keys (README "Configuration reference").

Each key's type, default and range come from its declaration in :class:`~distill.distillation.config.DistillationConfig`.
"""

import dataclasses

from distill.distillation.config import DistillationConfig, own_field_names
from distill.distillation.config_loader import field_range, field_types, metavar


def main() -> None:
    own = set(own_field_names()) | {"overwrite_output_dir"}
    types = field_types(DistillationConfig)
    print("| key | type | default | range | meaning |\n|---|---|---|---|---|")
    for f in dataclasses.fields(DistillationConfig):
        if f.name not in own or not f.init:
            continue
        default = f.default if f.default is not dataclasses.MISSING else f.default_factory()
        bounds = field_range(f)
        kind = metavar(types[f.name]).replace("|", " or ")
        print(f"| `{f.name}` | {kind} | `{default}` | {bounds.describe() if bounds else ''} | "
              f"{f.metadata.get('help', '')} |")


if __name__ == "__main__":
    main()
