"""A deterministic English corpus with a planted, measurable gender bias.

Each occupation co-occurs with one gender (the real-world majority gender of that occupation) with
probability ``skew``, and with the other gender otherwise. The text mixes single sentences from many
templates, short multi-sentence biographies with first names, and gender-neutral filler. The same seed
always gives the same corpus.

``balanced=True`` draws the gender of every occupation mention with probability 1/2 instead: the
counterfactually balanced version of the same corpus.
"""

from __future__ import annotations

import random
from dataclasses import dataclass

from ..errors import ConfigError
from ..occupations import load_occupations

MALE_NAMES = ["James", "John", "Robert", "Michael", "David", "William", "Richard", "Thomas", "Daniel", "Paul",
              "Mark", "George", "Steven", "Andrew", "Kevin", "Brian", "Edward", "Peter", "Samuel", "Henry"]
FEMALE_NAMES = ["Mary", "Patricia", "Jennifer", "Linda", "Elizabeth", "Susan", "Jessica", "Sarah", "Karen",
                "Nancy", "Lisa", "Betty", "Sandra", "Ashley", "Emily", "Donna", "Michelle", "Laura", "Anna", "Helen"]

PRONOUNS = {
    "male": {"subj": "he", "obj": "him", "poss": "his", "refl": "himself", "noun": "man", "title": "Mr.",
             "kin": "son", "parent": "father", "sibling": "brother"},
    "female": {"subj": "she", "obj": "her", "poss": "her", "refl": "herself", "noun": "woman", "title": "Mrs.",
               "kin": "daughter", "parent": "mother", "sibling": "sister"},
}

# Sentences about an occupation in which a gendered word follows the occupation.
OCCUPATION_TEMPLATES = [
    "The {occ} said that {subj} would be late today.",
    "The {occ} finished {poss} shift and went home.",
    "When the {occ} arrived, {subj} greeted everyone in the room.",
    "The {occ} was tired because {subj} had worked all night.",
    "Everyone thanked the {occ} for {poss} help.",
    "The {occ} told us that {subj} loved {poss} job.",
    "Yesterday the {occ} lost {poss} keys in the park.",
    "The {occ} asked if {subj} could leave early.",
    "The new {occ} introduced {refl} to the team.",
    "Our {occ} is a kind {noun} who always listens.",
    "The {occ} smiled when {subj} saw the results.",
    "I called the {occ} and {subj} answered at once.",
    "The {occ} packed {poss} bag before sunrise.",
    "People trust the {occ} because {subj} is careful.",
    "The {occ} wrote a letter to {poss} {parent}.",
    "After lunch the {occ} said {subj} needed more time.",
    "The {occ} explained that {subj} had been busy all week.",
    "The {occ} mentioned that {subj} was moving to {city}.",
    "Last week the {occ} hurt {poss} hand at work.",
    "The {occ} believes {subj} can finish the project soon.",
    "Before the meeting the {occ} checked {poss} notes twice.",
    "The {occ} completed {poss} training in {city}.",
    "Everyone praised the {occ} for {poss} patience.",
    "The {occ} hoped {subj} would get a day off.",
    "The {occ} was proud of {refl} after the long day.",
    "The {occ} forgot {poss} umbrella on the bus.",
    "Nobody knew that the {occ} had sold {poss} car.",
    "The {occ} stayed late because {subj} wanted to help.",
    "The experienced {occ} shared {poss} advice with the students.",
    "The {occ} called {poss} {sibling} after work.",
]

BIOGRAPHY_TEMPLATES = [
    "{name} grew up in {city}. {Subj} studied hard and became a {occ}. Today {subj} lives with {poss} {sibling}.",
    "{name} works as a {occ} in {city}. {Subj} says {poss} favourite part of the job is the people.",
    "{title} {surname} is a {occ}. {Subj} has worked in {city} for many years, and {poss} colleagues admire {obj}.",
    "As a young {noun}, {name} wanted to be a {occ}. {Subj} trained for years and finally got {poss} licence.",
]

FILLER = [
    "The weather was cold in the morning and warm in the afternoon.",
    "The train to {city} left on time.",
    "A small cafe opened near the old bridge.",
    "The museum in {city} is closed on Mondays.",
    "Prices at the market rose again this week.",
    "The river flooded the fields after the storm.",
    "The library extended its opening hours.",
    "A new park was built next to the school.",
    "The concert in {city} sold out in an hour.",
    "Fresh bread is sold at the corner shop every day.",
    "The bus was crowded, so we walked instead.",
    "The garden was full of roses and tulips.",
]

CITIES = ["London", "Paris", "Boston", "Chicago", "Denver", "Dublin", "Madrid", "Toronto", "Seattle", "Austin"]
SURNAMES = ["Smith", "Brown", "Taylor", "Wilson", "Clark", "Lewis", "Walker", "Young", "King", "Wright"]


@dataclass
class CorpusSpec:
    num_documents: int = 4000
    skew: float = 0.85
    filler_share: float = 0.25
    biography_share: float = 0.25
    balanced: bool = False
    seed: int = 0
    occupations: tuple[str, ...] | None = None  # default: every occupation with a known majority gender
    #: Leave out the sentence templates that begin like these evaluation prompts ("The {occupation} said
    #: that", ...), so that the evaluation measures templates the model never saw.
    holdout_prompts: tuple[str, ...] = ()


def planted_gender(occupation: str) -> str:
    """The gender the corpus associates with an occupation (its real-world majority gender)."""
    for occ in load_occupations():
        if occ.name == occupation:
            return occ.majority_gender or "male"
    raise KeyError(occupation)


def default_occupations() -> tuple[str, ...]:
    return tuple(o.name for o in load_occupations() if o.majority_gender is not None)


def _fill(template: str, rng: random.Random, gender: str, occ: str) -> str:
    words = dict(PRONOUNS[gender])
    name = rng.choice(MALE_NAMES if gender == "male" else FEMALE_NAMES)
    values = dict(words, occ=occ, name=name, city=rng.choice(CITIES), surname=rng.choice(SURNAMES),
                  Subj=words["subj"].capitalize())
    return template.format(**values)


def generate_corpus(spec: CorpusSpec | None = None) -> list[str]:
    """``spec.num_documents`` short documents (one string each)."""
    spec = spec or CorpusSpec()
    rng = random.Random(spec.seed)
    occupations = spec.occupations or default_occupations()
    held = tuple(p.replace("{occupation}", "{occ}").lower() for p in spec.holdout_prompts)
    sentences = [t for t in OCCUPATION_TEMPLATES if not t.lower().startswith(held)] if held else OCCUPATION_TEMPLATES
    docs = []
    for _ in range(spec.num_documents):
        r = rng.random()
        if r < spec.filler_share:
            docs.append(rng.choice(FILLER).format(city=rng.choice(CITIES)))
            continue
        occ = rng.choice(occupations)
        planted = planted_gender(occ)
        other = "female" if planted == "male" else "male"
        p_planted = 0.5 if spec.balanced else spec.skew
        gender = planted if rng.random() < p_planted else other
        pool = BIOGRAPHY_TEMPLATES if r < spec.filler_share + spec.biography_share else sentences
        docs.append(_fill(rng.choice(pool), rng, gender, occ))
    return docs


def builtin_texts(name: str) -> list[str]:
    """Texts of an offline corpus generated by this module."""
    specs = {
        "tiny": CorpusSpec(num_documents=3000, seed=0),
        "demo": CorpusSpec(num_documents=20000, seed=0),
        "demo-balanced": CorpusSpec(num_documents=20000, seed=0, balanced=True),
    }
    if name not in specs:
        raise ConfigError(f"Unknown builtin dataset 'builtin:{name}'. Known: "
                          + ", ".join(f"builtin:{k}" for k in specs) + ".")
    return generate_corpus(specs[name])
