"""The candidate base models of candidates.csv, as a list of frozen dataclasses."""

import csv
from dataclasses import dataclass, fields
from pathlib import Path

CANDIDATES_CSV = Path(__file__).with_name("candidates.csv")


@dataclass(frozen=True)
class Candidate:
    """One candidate base model; "unknown" marks facts not confirmed."""

    name: str
    folder: str  # under llm/models/
    architecture: str  # HF model_type, e.g. gpt_neox
    parameters: str  # e.g. "1.43B"
    license: str
    ko_leaderboard_avg: float | None  # Open Ko-LLM Leaderboard average; None where none
    korean_support: str
    note: str


COLUMNS = [f.name for f in fields(Candidate)]


def load_candidates(path: Path | str = CANDIDATES_CSV) -> list[Candidate]:
    """Read the candidates CSV; raise ValueError if a column is missing."""
    with open(path, newline="", encoding="utf-8") as f:
        reader = csv.DictReader(f)
        missing = set(COLUMNS) - set(reader.fieldnames or [])
        if missing:
            raise ValueError(f"{path}: missing columns {sorted(missing)}")
        rows = list(reader)
    return [
        Candidate(**{
            **{c: row[c].strip() for c in COLUMNS},
            "ko_leaderboard_avg": float(row["ko_leaderboard_avg"]) if row["ko_leaderboard_avg"].strip() else None,
        })
        for row in rows
    ]
