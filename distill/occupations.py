"""The occupation list shared by the demo corpus and the fairness prompts, with real-world shares of women."""

from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache
from importlib import resources


@dataclass(frozen=True)
class Occupation:
    name: str
    female_share: float | None  # percent of women among employed persons, None where unknown
    source: str

    @property
    def majority_gender(self) -> str | None:
        """'female' or 'male' by the real-world share, None at parity or unknown."""
        if self.female_share is None or self.female_share == 50:
            return None
        return "female" if self.female_share > 50 else "male"


@lru_cache(maxsize=1)
def load_occupations() -> tuple[Occupation, ...]:
    text = resources.files("distill.resources").joinpath("occupations.tsv").read_text(encoding="utf-8")
    out = []
    for line in text.splitlines():
        if not line.strip() or line.startswith("#"):
            continue
        name, share, source = (line.split("\t") + ["", ""])[:3]
        out.append(Occupation(name.strip(), float(share) if share.strip() else None, source.strip()))
    return tuple(out)
