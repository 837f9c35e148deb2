"""How much Unsloth saves: the same inference and LoRA fine-tuning measured with and without it.

The results file format lives here, light to import, so that compare.py starts without loading torch.
"""

import csv
from pathlib import Path

from llm.common.cli import UserError

DEFAULT_RESULTS = Path(__file__).resolve().parent / "results.csv"
RESULT_FIELDS = (
    "date", "machine", "device", "model", "unsloth", "prompts", "train_pairs", "epochs",
    "inference_s", "inference_peak_mb", "finetune_s", "finetune_peak_mb", "peak_memory_kind",
    "inference_process_mb", "finetune_process_mb", "status",
)
STATUS_OK = "ok"


def read_results(path: Path) -> list[dict[str, str]]:
    """The rows of a results file, oldest first; [] when it does not exist yet."""
    if not path.exists():
        return []
    with path.open(encoding="utf-8", newline="") as handle:
        reader = csv.DictReader(handle)
        if reader.fieldnames is None:
            return []
        if tuple(reader.fieldnames) != RESULT_FIELDS:
            raise UserError(f"{path}: not a results file of these scripts (columns {', '.join(reader.fieldnames)}; "
                            f"expected {', '.join(RESULT_FIELDS)})")
        return list(reader)


def append_result(path: Path, row: dict[str, object]) -> None:
    """Append one row, writing the header first when the file is new or empty."""
    read_results(path)  # refuses a file with other columns
    path.parent.mkdir(parents=True, exist_ok=True)
    new = not path.exists() or path.stat().st_size == 0
    with path.open("a", encoding="utf-8", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=RESULT_FIELDS)
        if new:
            writer.writeheader()
        writer.writerow(row)
