"""The persona dataset file itself, and the loader's checks of good and bad files."""

import csv
import re
from collections import Counter

import pytest

from conftest import BAD_DATASETS, DATASET, REPO, dataset_rows, write_csv
from llm.common.data import REQUIRED_COLUMNS, DatasetError, load_splits
from llm.common.korean import hangul_ratio
from llm.common.tags import parse_memory_tag, parse_tag, split_memory_tag

CATEGORIES = REPO / "llm" / "OhLoRA_fine_tuning_categories.csv"


@pytest.fixture(scope="module")
def rows() -> list[dict[str, str]]:
    return dataset_rows()


def test_columns_are_exactly_the_documented_ones():
    with DATASET.open(encoding="utf-8", newline="") as handle:
        assert next(csv.reader(handle)) == list(REQUIRED_COLUMNS)


def test_split_sizes(rows):
    assert Counter(row["data_type"] for row in rows) == {"train": 360, "valid": 60}


def test_no_prompt_is_repeated_or_shared_between_splits(rows):
    inputs = Counter(row["input_data"] for row in rows)
    assert [text for text, count in inputs.items() if count > 1] == []
    normalised = lambda text: re.sub(r"\W", "", text)  # noqa: E731 - also catch copies that differ in punctuation
    train = {normalised(row["input_data"]) for row in rows if row["data_type"] == "train"}
    assert [row["input_data"] for row in rows if row["data_type"] == "valid" and normalised(row["input_data"]) in train] == []


def test_memory_is_the_leading_tag_of_the_answer(rows):
    for row in rows:
        tag, message = split_memory_tag(row["output_data"])
        assert (tag or "") == row["memory"], row
        assert message == row["output_message"], row
        if row["memory"]:  # a memory "[key: value]", or a bare mark such as "[경고]"
            assert parse_tag(row["memory"]) is not None, row


def test_every_answer_is_mostly_hangul(rows):
    low = [(row["output_message"], round(hangul_ratio(row["output_message"]), 2)) for row in rows
           if hangul_ratio(row["output_message"]) < 0.7]
    assert low == []


@pytest.mark.parametrize("data_type, minimum", [("train", 60), ("valid", 8)])
def test_answers_that_store_a_memory(rows, data_type, minimum):
    assert sum(parse_memory_tag(row["memory"]) is not None for row in rows if row["data_type"] == data_type) >= minimum


@pytest.mark.parametrize("data_type, minimum", [("train", 30), ("valid", 8)])
def test_prompts_that_carry_a_retrieved_memory(rows, data_type, minimum):
    retrieved = [row for row in rows if row["data_type"] == data_type and split_memory_tag(row["input_data"])[0]]
    assert len(retrieved) >= minimum
    assert all(split_memory_tag(row["input_data"])[1] for row in retrieved)  # a message follows the tag


def test_category_file_has_a_category_per_row(rows):
    with CATEGORIES.open(encoding="utf-8", newline="") as handle:
        categories = [row["category"] for row in csv.DictReader(handle)]
    assert len(categories) == len(rows) and all(categories)


def test_rows_that_use_a_recalled_tag_and_store_a_new_fact(rows):
    """The model must learn that a turn with a recalled memory may still store a new one."""
    both = Counter(row["data_type"] for row in rows if split_memory_tag(row["input_data"])[0] and row["memory"])
    assert both["train"] >= 15 and both["valid"] >= 3


# --- the loader accepts what spreadsheets and pandas write ---

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


# --- bad files: one clear line naming the file, the row and the problem; exit code 2 from the scripts ---

@pytest.mark.parametrize("case", BAD_DATASETS)
def test_bad_file_is_refused_with_file_row_and_problem(tmp_path, rows, case):
    make, expected = BAD_DATASETS[case]
    path = tmp_path / "bad.csv"
    make(rows, path)
    with pytest.raises(DatasetError, match=rf"^{re.escape(str(path))}: .*{expected}"):
        load_splits(path)
