"""The dataset loader (llm/common/data.py): what spreadsheets and pandas write is accepted, and a bad file is one
line naming the file, the row and the problem."""

import csv
import re

import pytest

from helpers.data import BAD_DATASETS, dataset_rows, write_csv
from llm.common.data import REQUIRED_COLUMNS, DatasetError, load_splits


@pytest.fixture(scope="module")
def rows() -> list[dict[str, str]]:
    return dataset_rows()


def test_index_column_extra_columns_and_bom_are_accepted(tmp_path, rows):
    path = tmp_path / "exported.csv"
    with path.open("w", encoding="utf-8-sig", newline="") as handle:  # utf-8-sig writes a BOM
        writer = csv.writer(handle)
        writer.writerow(["", *REQUIRED_COLUMNS, "note"])
        for number, row in enumerate(rows):
            writer.writerow([number, *(row[column] for column in REQUIRED_COLUMNS), "ignored"])
    splits = load_splits(path)
    assert (len(splits.train), len(splits.valid)) == (360, 60)
    assert splits.train[0].input_data == rows[0]["input_data"]


def test_a_bare_tag_is_accepted_as_the_answers_mark(tmp_path, rows):
    """The original marked its answers to insults about parents with a bare "[경고]" in output_data and memory."""
    train = [row for row in rows if row["data_type"] == "train" and not row["memory"]][:3]
    warned = {**train[0], "output_data": "[경고] " + train[0]["output_message"], "memory": "[경고]"}
    valid = [row for row in rows if row["data_type"] == "valid"][:1]
    splits = load_splits(write_csv(tmp_path / "d.csv", [warned, *train[1:], *valid]))
    assert splits.train[0].memory == "[경고]"


def test_valid_rows_without_answers_are_test_prompts_only(tmp_path, rows):
    train = [row for row in rows if row["data_type"] == "train"][:5]
    prompts_only = [{**row, "output_data": "", "output_message": "", "memory": ""}
                    for row in rows if row["data_type"] == "valid"][:3]
    answered = [row for row in rows if row["data_type"] == "valid"][3:4]
    splits = load_splits(write_csv(tmp_path / "d.csv", train + prompts_only + answered))
    assert len(splits.valid) == 4
    assert [example.input_data for example in splits.valid_with_answers] == [answered[0]["input_data"]]


@pytest.mark.parametrize("case", BAD_DATASETS)
def test_bad_file_is_refused_with_file_row_and_problem(tmp_path, rows, case):
    make, expected = BAD_DATASETS[case]
    path = tmp_path / "bad.csv"
    make(rows, path)
    with pytest.raises(DatasetError, match=rf"^{re.escape(str(path))}: .*{expected}"):
        load_splits(path)
