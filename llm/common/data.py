"""The persona dataset: load and validate the CSV, and turn rows into prompt/completion pairs."""

import csv
import io
from dataclasses import dataclass
from pathlib import Path

from typing import TYPE_CHECKING

from llm.common.cli import UserError
from llm.common.specs import DEFAULT_DATASET
from llm.common.markers import build_completion, build_prompt
from llm.common.tags import split_memory_tag

if TYPE_CHECKING:  # light at import: --dry-run and the option checks read the dataset without these libraries
    from datasets import Dataset
    from transformers import PreTrainedTokenizerBase

REQUIRED_COLUMNS = ("data_type", "input_data", "output_data", "output_message", "memory")
DATA_TYPES = ("train", "valid")


class DatasetError(UserError):
    """The dataset file cannot be used as it is."""


@dataclass(frozen=True)
class Example:
    """One dataset row; `output_data` is empty for valid rows that are only test prompts."""

    input_data: str
    output_data: str
    memory: str
    line: int = 0  # its line in the CSV file, for error messages (0: not from a file)

    @property
    def prompt(self) -> str:
        return build_prompt(self.input_data)

    @property
    def completion(self) -> str:
        return build_completion(self.output_data)


@dataclass(frozen=True)
class Splits:
    path: Path
    train: list[Example]
    valid: list[Example]

    @property
    def valid_with_answers(self) -> list[Example]:
        """Valid rows that can be scored by the eval loss."""
        return [example for example in self.valid if example.output_data]


def _read_rows(path: Path) -> tuple[list[str], list[tuple[int, dict[str, str]]]]:
    """(header, [(line where the record starts, row)]): parsed as CSV, so a quoted cell may span lines."""
    if not path.is_file():
        raise DatasetError(f"{path}: dataset file not found; give its path with --dataset")
    try:
        # utf-8-sig also strips a BOM, as Excel writes one.
        text = path.read_text(encoding="utf-8-sig")
    except UnicodeDecodeError as error:
        raise DatasetError(f"{path}: not UTF-8 text (byte {error.start}); save it as UTF-8") from None
    except OSError as error:
        raise DatasetError(f"{path}: cannot be read ({error.strerror or error})") from None
    reader = csv.reader(io.StringIO(text, newline=""), strict=True)
    rows: list[tuple[int, list[str]]] = []
    start = 1
    try:
        for record in reader:
            rows.append((start, record))
            start = reader.line_num + 1
    except csv.Error as error:
        where = "a quote opened there is never closed" if "end of data" in str(error) else str(error)
        raise DatasetError(f"{path}: line {start}: not readable as CSV ({where})") from None
    if not rows:
        return [], []
    header = [name.strip() for name in rows[0][1]]
    repeated = sorted({name for name in header if name and header.count(name) > 1})
    if repeated:
        raise DatasetError(f"{path}: column(s) {', '.join(repeated)} appear more than once in the header")
    records = []
    for line, record in rows[1:]:
        if not any(cell.strip() for cell in record):
            continue  # a blank line
        if len(record) > len(header):
            raise DatasetError(f"{path}: line {line}: more cells than columns (an unquoted comma?)")
        records.append((line, dict(zip(header, record))))
    return header, records


def load_splits(path: str | Path = DEFAULT_DATASET) -> Splits:
    """Read the dataset CSV, check every row, and return its train and valid examples.

    Extra columns (an unnamed index column, anything unknown) are ignored.
    """
    path = Path(path)
    header, rows = _read_rows(path)
    if not header:
        raise DatasetError(f"{path}: the file is empty")
    missing = [column for column in REQUIRED_COLUMNS if column not in header]
    if missing:
        raise DatasetError(f"{path}: missing column(s) {', '.join(missing)}; expected {', '.join(REQUIRED_COLUMNS)}")

    splits: dict[str, list[Example]] = {data_type: [] for data_type in DATA_TYPES}
    for line_number, row in rows:
        where = f"{path}: row {line_number}"
        cells = {column: (row.get(column) or "").strip() for column in REQUIRED_COLUMNS}
        for column, text in cells.items():
            if text.lower() == "nan":
                raise DatasetError(f"{where}: {column} is {text!r}, a missing value as pandas writes it; "
                                   f"write the text, or leave the cell empty where the column may be empty")
        data_type = cells["data_type"]
        if data_type not in DATA_TYPES:
            raise DatasetError(f"{where}: data_type {data_type!r} is not 'train' or 'valid'")
        if not cells["input_data"]:
            raise DatasetError(f"{where}: input_data is empty")
        output_data, memory = cells["output_data"], cells["memory"]
        if data_type == "train" and not output_data:
            raise DatasetError(f"{where}: a train row needs output_data")
        if output_data:
            tag, message = split_memory_tag(output_data)
            if memory and tag != memory:
                raise DatasetError(f"{where}: memory {memory!r} is not the leading tag of output_data")
            if not memory and tag is not None:
                raise DatasetError(f"{where}: output_data starts with tag {tag!r} but memory is empty")
            if cells["output_message"] and cells["output_message"] != message:
                raise DatasetError(f"{where}: output_message is not output_data without its memory tag")
        elif memory or cells["output_message"]:
            raise DatasetError(f"{where}: memory/output_message given but output_data is empty")
        splits[data_type].append(Example(cells["input_data"], output_data, memory, line_number))

    for data_type in DATA_TYPES:
        if not splits[data_type]:
            raise DatasetError(f"{path}: no '{data_type}' rows")
    return Splits(path, splits["train"], splits["valid"])


def token_count(tokenizer: "PreTrainedTokenizerBase", text: str) -> int:
    """Tokens of a text, for length checks; verbose=False, because transformers would also warn about a text
    longer than the model reads, a second line beside the check's own."""
    return len(tokenizer(text, verbose=False)["input_ids"])


def row_tokens(splits: Splits, tokenizer: "PreTrainedTokenizerBase") -> list[tuple[Example, int]]:
    """Each row with its tokens, prompt and answer together."""
    return [(example, token_count(tokenizer, example.prompt + example.completion))
            for example in splits.train + splits.valid]


def check_fits_context(splits: Splits, tokenizer: "PreTrainedTokenizerBase", context: int) -> None:
    """Refuse a row longer than the model reads: training would cut off its end, and the end marker with it."""
    for example, tokens in row_tokens(splits, tokenizer):
        if tokens > context:
            raise DatasetError(f"{splits.path}: row {example.line}: prompt and answer are {tokens} tokens, longer "
                               f"than the model's context of {context}; shorten the row")


def to_prompt_completion(examples: list[Example]) -> "Dataset":
    """A datasets.Dataset of prompt/completion pairs, the format TRL masks to completion-only loss."""
    from datasets import Dataset

    return Dataset.from_dict({
        "prompt": [example.prompt for example in examples],
        "completion": [example.completion for example in examples],
    })
