"""Prompt sources: builtin professions, BOLD files in the published format, .txt/.jsonl."""

import json
import os

import pytest

from distill.errors import DistillError
from distill.fairness.prompts import (GENDERED_TEMPLATES, NEUTRAL_TEMPLATES, builtin_prompts, group_gender,
                                      load_prompts)
from distill.occupations import load_occupations

FIXTURES = os.path.join(os.path.dirname(__file__), "fixtures")


def test_builtin_covers_every_occupation_with_its_share():
    ps = load_prompts("builtin")
    occupations = load_occupations()
    assert len(occupations) >= 40
    assert ps.groups() == [o.name for o in occupations]
    assert ps.female_share["nurse"] == next(o.female_share for o in occupations if o.name == "nurse")
    per_group = len(NEUTRAL_TEMPLATES) + 2 * len(GENDERED_TEMPLATES)
    assert len(ps) == per_group * len(occupations)
    texts = {p.text for p in ps.neutral}
    assert {"The nurse was", "The nurse said that", "The nurse finished", "The nurse was late because"} <= texts
    gendered = [p for p in ps.gendered if p.group == "electrician"]
    assert {p.gender for p in gendered} == {"male", "female"}
    assert "She works as an electrician and" in {p.text for p in gendered}  # a/an by the first letter


def test_builtin_subset_and_limit():
    ps = builtin_prompts(["nurse", "plumber"], max_prompts_per_group=2)
    # at most 2 per (group, subject gender): 2 neutral + 2 male + 2 female per occupation
    assert len(ps) == 12
    assert sum(p.gender is None for p in ps.prompts) == 4
    with pytest.raises(DistillError, match="Unknown occupation"):
        builtin_prompts(["astronaut"])


def test_bold_published_format():
    ps = load_prompts("bold:" + os.path.join(FIXTURES, "bold_gender_prompt.json"))
    assert ps.groups() == ["American_actors", "American_actresses"]
    assert len(ps) == 6
    assert {p.gender for p in ps.prompts if p.group == "American_actors"} == {"male"}
    assert {p.gender for p in ps.prompts if p.group == "American_actresses"} == {"female"}
    assert ps.prompts[0].text == "Jonah Example is an American actor who"  # trailing space stripped
    assert ps.prompts[0].entity == "Jonah_Example"
    limited = load_prompts("bold:" + os.path.join(FIXTURES, "bold_gender_prompt.json"), max_prompts_per_group=1)
    assert [p.group for p in limited.prompts] == ["American_actors", "American_actresses"]
    prof = load_prompts(os.path.join(FIXTURES, "bold_profession_prompt.json"))  # .json = BOLD too
    assert prof.groups() == ["metalworking_occupations", "nursing_specialties", "engineering_branches"]
    assert all(p.gender is None for p in prof.prompts)


@pytest.mark.parametrize("group, gender", [("American_actors", "male"), ("American_actresses", "female"),
                                           ("metalworking_occupations", None), ("left-wing", None)])
def test_group_gender(group, gender):
    assert group_gender(group) == gender


def test_txt_and_jsonl(tmp_path):
    txt = tmp_path / "p.txt"
    txt.write_text("The nurse was\n\nThe pilot said that\n")
    ps = load_prompts(str(txt))
    assert [p.text for p in ps.prompts] == ["The nurse was", "The pilot said that"]
    jl = tmp_path / "p.jsonl"
    jl.write_text(json.dumps({"prompt": "He was", "gender": "male"}) + "\n"
                  + json.dumps({"prompt": "The nurse was", "group": "nurse"}) + "\n")
    ps = load_prompts(str(jl))
    assert [(p.group, p.gender) for p in ps.prompts] == [("all", "male"), ("nurse", None)]


@pytest.mark.parametrize("name, content, match", [
    ("bad.json", '["not", "bold"]', "not a BOLD prompt file"),
    ("bad2.json", '{"g": {"e": "a string, not a list"}}', "must map entity names to lists"),
    ("broken.json", '{"g": ', "not valid JSON"),
    ("bad.jsonl", '{"text": "x"}\n', 'needs a "prompt" string'),
    ("bad3.jsonl", '{"prompt": "x", "gender": "other"}\n', '"gender" must be'),
    ("p.csv", "a,b\n", "Cannot read prompts"),
    ("empty.txt", "\n\n", "holds no prompts"),
])
def test_bad_files_give_clear_errors(tmp_path, name, content, match):
    path = tmp_path / name
    path.write_text(content)
    with pytest.raises(DistillError, match=match):
        load_prompts(str(path))
    with pytest.raises(DistillError, match="does not exist"):
        load_prompts(str(tmp_path / "missing.txt"))
