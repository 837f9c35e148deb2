"""The persona dataset as tests use it: its rows, small cuts of it, and broken copies with the error each gives."""

import csv
from pathlib import Path

from helpers.scripts import REPO

DATASET = REPO / "llm" / "OhLoRA_fine_tuning.csv"


def write_csv(path: Path, rows: list[dict[str, str]], fieldnames: list[str] | None = None) -> Path:
    fieldnames = fieldnames or list(rows[0])
    with path.open("w", encoding="utf-8", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=fieldnames)
        writer.writeheader()
        writer.writerows(rows)
    return path


def dataset_rows() -> list[dict[str, str]]:
    with DATASET.open(encoding="utf-8", newline="") as handle:
        return list(csv.DictReader(handle))


def _rows_with(rows, line, **changes):
    """The first 6 train and 2 valid rows, with `changes` applied to the row on CSV line `line`."""
    picked = [row for row in rows if row["data_type"] == "train"][:6] + \
             [row for row in rows if row["data_type"] == "valid"][:2]
    picked = [dict(row) for row in picked]
    picked[line - 2].update(changes)
    return picked


# Each bad dataset: how to write it from the real rows, and what the error says (a regex).
BAD_DATASETS = {
    "unknown data_type": (lambda rows, path: write_csv(path, _rows_with(rows, 4, data_type="test")),
                          r"row 4: data_type 'test' is not 'train' or 'valid'"),
    "train row without answer": (lambda rows, path: write_csv(path, _rows_with(rows, 3, output_data="", output_message="")),
                                 r"row 3: a train row needs output_data"),
    "memory not the answer's prefix": (
        lambda rows, path: write_csv(path, _rows_with(rows, 5, memory="[내일 일정: 면접]")),
        r"row 5: memory '\[내일 일정: 면접\]' is not the leading tag of output_data"),
    "missing column": (lambda rows, path: write_csv(path, [{k: v for k, v in row.items() if k != "memory"}
                                                           for row in _rows_with(rows, 2)]),
                       r"missing column\(s\) memory"),
    "no train rows": (lambda rows, path: write_csv(path, [row for row in _rows_with(rows, 2) if row["data_type"] == "valid"]),
                      r"no 'train' rows"),
    "no valid rows": (lambda rows, path: write_csv(path, [row for row in _rows_with(rows, 2) if row["data_type"] == "train"]),
                      r"no 'valid' rows"),
    "not UTF-8": (lambda rows, path: path.write_bytes("data_type,input_data\ntrain,안녕\n".encode("cp949")),
                  r"not UTF-8 text"),
    "NaN cell": (lambda rows, path: write_csv(path, _rows_with(rows, 3, output_data="NaN", output_message="NaN")),
                 r"row 3: output_data is 'NaN', a missing value as pandas writes it"),
    "empty file": (lambda rows, path: path.write_bytes(b""), r"the file is empty"),
    # A cell over three lines (quoted, as spreadsheets write it) shifts the next records' line numbers.
    "multi-line cell, then a bad row": (
        lambda rows, path: write_csv(path, _rows_with(_rows_with(rows, 2, output_data="첫 줄\n둘째 줄\n셋째 줄",
                                                                 output_message="첫 줄\n둘째 줄\n셋째 줄"),
                                                      4, data_type="test")),
        r"row 8: data_type 'test' is not 'train' or 'valid'"),  # lines 2-6 hold the first record
    "duplicate column": (lambda rows, path: path.write_text(
        "data_type,input_data,output_data,output_message,memory,output_data\ntrain,안녕,응,응,,응\n", encoding="utf-8"),
        r"column\(s\) output_data appear more than once"),
    "unterminated quote": (lambda rows, path: path.write_text(
        'data_type,input_data,output_data,output_message,memory\ntrain,안녕,응,응,\ntrain,"뭐해,응,응,\n',
        encoding="utf-8"), r"line 3: not readable as CSV \(a quote opened there is never closed\)"),
    "missing file": (lambda rows, path: None, r"dataset file not found"),
}

