"""docs/configuration.md is generated from the config dataclasses and must match them."""

import importlib.util
import os

from conftest import REPO


def test_the_configuration_page_is_up_to_date():
    spec = importlib.util.spec_from_file_location("config_reference", os.path.join(REPO, "scripts",
                                                                                   "config_reference.py"))
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    with open(os.path.join(REPO, "docs", "configuration.md"), encoding="utf-8") as fh:
        committed = fh.read()
    assert committed == module.render(), "docs/configuration.md is stale: run `python scripts/config_reference.py`"
    for key in ("teacher_model_name_or_path", "loss_chunk_size", "dp_target_epsilon", "max_steps", "num_rounds"):
        assert f"| `{key}` |" in committed
