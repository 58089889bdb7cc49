"""The model card lists the intrinsic, downstream and prediction-sensitivity sections of fairness.json."""

import json
import os
import shutil

import pytest
from huggingface_hub import ModelCard

SECTIONS = {
    "representation": {"representation_tvd": 0.21, "association_tvd": 0.33},
    "intrinsic": {"ceat": {"layer": -1, "num_samples": 100, "tests": {
        "career_family": {"effect_size": 0.61, "p_value": 1e-9, "se": 0.01},
        "occupations": {"effect_size": -0.12, "p_value": 0.02, "se": 0.01}}, "mean_effect_size": 0.245}},
    "prediction_sensitivity": {"prediction_sensitivity": 0.0123, "directional_sensitivity": 0.4},
    "downstream": {"pronoun_resolution": {"gap": 0.175, "accuracy": 0.55},
                   "minimal_pairs": {"stereotype_share": 0.8125, "ci_low": 0.64, "ci_high": 0.91}},
}


@pytest.mark.parametrize("with_generation", [True, False])
def test_card_lists_every_family(tmp_path, tiny_teacher_dir, with_generation):
    from distill.hub import write_model_card

    model = tmp_path / "m"
    shutil.copytree(tiny_teacher_dir, model)
    fairness = {"model": "m", "per_profession": [], **SECTIONS}
    if with_generation:
        fairness.update(cooccurrence_bias_mean_abs=1.5, mean_parity=0.4)
    (model / "fairness.json").write_text(json.dumps(fairness))
    if os.path.exists(model / "README.md"):
        os.remove(model / "README.md")
    write_model_card(str(model))
    card = ModelCard.load(str(model / "README.md"))
    metrics = {r.metric_type: r.metric_value for r in card.data.eval_results}
    assert metrics["ceat_career_family"] == pytest.approx(0.61)
    assert metrics["ceat_occupations"] == pytest.approx(-0.12)
    assert metrics["prediction_sensitivity"] == pytest.approx(0.0123)
    assert metrics["pronoun_resolution_gap"] == pytest.approx(0.175)
    assert metrics["minimal_pairs_stereotype_share"] == pytest.approx(0.8125)
    assert metrics["association_tvd"] == pytest.approx(0.33)
    assert "Other metric families" in card.text and "| downstream | minimal pairs" in card.text
    assert "(95% CI 0.64-0.91)" in card.text and "No fairness results" not in card.text
    assert ("cooccurrence_bias_mean_abs" in metrics) == with_generation


def test_refresh_rewrites_only_a_card_fair_distill_wrote(tmp_path, tiny_teacher_dir):
    from distill.hub.card import GENERATED_MARKER, refresh_model_card, write_model_card

    model = tmp_path / "m"
    shutil.copytree(tiny_teacher_dir, model)
    card = model / "README.md"
    card.write_text("# mine\n")
    (model / "fairness.json").write_text(json.dumps({"model": "m", "per_profession": [], **SECTIONS}))
    assert refresh_model_card(str(model)) is None and card.read_text() == "# mine\n"
    os.remove(card)
    if not (model / "distill_config.yaml").exists():  # not a fair-distill run: nothing is created
        assert refresh_model_card(str(model)) is None and not card.exists()
    write_model_card(str(model))
    assert GENERATED_MARKER in card.read_text()
    (model / "fairness.json").write_text(json.dumps({"model": "m", "per_profession": [], "mean_parity": 0.25}))
    assert refresh_model_card(str(model)) == str(card)
    text = card.read_text()
    assert "mean_parity" in text and "Other metric families" not in text
