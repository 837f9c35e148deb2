"""How much Unsloth saves: the same inference and LoRA fine-tuning measured with and without it.

The options and the results file format live here, light to import: --help and compare.py start at once.
"""

import argparse
import csv
import importlib.util
import io
from pathlib import Path

from llm.common.cli import ArgumentParser, UserError, add_trust_pickled_option, first_line, positive_int
from llm.common.specs import DEFAULT_DATASET, GEMMA, SHAPES
from llm.common.outputs import append_line_safely

DEFAULT_RESULTS = Path(__file__).resolve().parent / "results.csv"
RESULT_FIELDS = (
    "date", "machine", "device", "model", "unsloth", "prompts", "train_pairs", "epochs",
    "inference_s", "inference_peak_mb", "finetune_s", "finetune_peak_mb", "peak_memory_kind",
    "inference_process_mb", "finetune_process_mb", "status",
)
STATUS_OK = "ok"
# The results.csv `unsloth` column: which side a row measured.
WITHOUT = "without"
WITH = "with"
WITH_NO_BLOCK_COMPILE = "with (UNSLOTH_BLOCK_COMPILE=0)"  # Unsloth without its per-block torch.compile
WITH_SIDES = (WITH, WITH_NO_BLOCK_COMPILE)
DEFAULT_LOGS_DIR = Path(__file__).resolve().parent / "logs"
UNSLOTH_SHAPES = (GEMMA.shape,)  # Unsloth has no fast path for GPT-NeoX, so only Gemma is compared
# The original experiment: 25 valid prompts, 20 train pairs x 3 epochs.
DEFAULT_PROMPTS = 25
DEFAULT_TRAIN_PAIRS = 20
DEFAULT_EPOCHS = 3


def build_parser(with_unsloth: bool) -> argparse.ArgumentParser:
    side = "WITH" if with_unsloth else "WITHOUT"
    shapes = UNSLOTH_SHAPES if with_unsloth else tuple(SHAPES)
    parser = ArgumentParser(
        description=f"Measure inference and LoRA fine-tuning of Gemma-2 2B {side} Unsloth: wall time and peak "
                    f"memory. Appends a row to the results file and writes a log; compare the two scripts' rows "
                    f"with llm/unsloth_test/compare.py.",
    )
    parser.add_argument("--model-dir", type=Path, default=None,
                        help=f"Gemma-2 2B weights (default: {GEMMA.model_dir}); when empty, a tiny Gemma-2 "
                             f"stand-in is used, and says so")
    parser.add_argument("--shape", choices=shapes, default=None,
                        help="instead of weights: a randomly initialised model of this real model's full size, "
                             "to measure time and memory at real scale without weights")
    parser.add_argument("--dataset", type=Path, default=DEFAULT_DATASET, help="the dataset CSV (default: %(default)s)")
    parser.add_argument("--prompts", type=positive_int, default=DEFAULT_PROMPTS,
                        help="valid prompts answered in the inference part (default: %(default)s)")
    parser.add_argument("--train-pairs", type=positive_int, default=DEFAULT_TRAIN_PAIRS,
                        help="train pairs of the fine-tuning part (default: %(default)s)")
    parser.add_argument("--epochs", type=positive_int, default=DEFAULT_EPOCHS,
                        help="fine-tuning epochs (default: %(default)s)")
    parser.add_argument("--results", type=Path, default=DEFAULT_RESULTS,
                        help="the CSV file the row is appended to (default: %(default)s)")
    parser.add_argument("--logs-dir", type=Path, default=DEFAULT_LOGS_DIR,
                        help="where the log goes (default: %(default)s)")
    parser.add_argument("--machine", default=None,
                        help="how to name this machine in the results (default: host name, CPU cores and RAM)")
    if with_unsloth:
        parser.add_argument("--no-block-compile", action="store_true",
                            help="turn off Unsloth's torch.compile of each decoder block (UNSLOTH_BLOCK_COMPILE=0; "
                                 "the row says so): with torch 2.11 its backward failed to compile on the lent "
                                 "H200 (docs/gpu.md)")
    add_trust_pickled_option(parser)
    return parser


def with_side(args: argparse.Namespace) -> str:
    """The `unsloth` column of a with-Unsloth row."""
    return WITH_NO_BLOCK_COMPILE if args.no_block_compile else WITH




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
    text = io.StringIO()
    writer = csv.DictWriter(text, fieldnames=RESULT_FIELDS)
    if not path.exists() or path.stat().st_size == 0:
        writer.writeheader()
    writer.writerow(row)
    append_line_safely(path, text.getvalue())


MIN_CAPABILITY = (7, 0)  # Unsloth's Triton kernels need Volta or newer


def unsloth_unavailable() -> str | None:
    """Why Unsloth cannot run here, or None; imports it when it can (before transformers: it patches it)."""
    if importlib.util.find_spec("unsloth") is None:
        return "unsloth is not installed (pip install -r requirements-unsloth.txt, on a machine with a CUDA GPU)"
    import torch

    if not torch.cuda.is_available():
        return "no CUDA GPU (Unsloth runs on NVIDIA GPUs only)"
    major, minor = torch.cuda.get_device_capability(0)
    if (major, minor) < MIN_CAPABILITY:
        return (f"GPU too old: {torch.cuda.get_device_name(0)} has compute capability {major}.{minor}, "
                f"Unsloth needs {MIN_CAPABILITY[0]}.{MIN_CAPABILITY[1]} or newer")
    try:
        import unsloth  # noqa: F401
    except Exception as error:  # its import checks the driver, the GPU and library versions
        return f"unsloth failed to import ({first_line(error)})"
    return None
