"""How much Unsloth saves: the same inference and LoRA fine-tuning measured with and without it.

The options and the results file format live here, light to import: --help and compare.py start at once.
"""

import csv
import dataclasses
import importlib.util
import io
from pathlib import Path

from llm.common.cli import TRUST_PICKLED_HELP, ArgumentParser, UserError, first_line, positive_int
from llm.common.options import add_options, from_args, option
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


@dataclasses.dataclass(frozen=True)
class UnslothTestOptions:
    """What one measurement run (with or without Unsloth) was asked to do."""

    model_dir: Path | None = option(None, f"Gemma-2 2B weights (default: {GEMMA.model_dir}); when empty, a tiny "
                                    f"Gemma-2 stand-in is used, and says so", type=Path)
    shape: str | None = option(None, "instead of weights: a randomly initialised model of this real model's full "
                               "size, to measure time and memory at real scale without weights", choices=tuple(SHAPES))
    dataset: Path = option(DEFAULT_DATASET, "the dataset CSV", type=Path)
    prompts: int = option(DEFAULT_PROMPTS, "valid prompts answered in the inference part", type=positive_int)
    train_pairs: int = option(DEFAULT_TRAIN_PAIRS, "train pairs of the fine-tuning part", type=positive_int)
    epochs: int = option(DEFAULT_EPOCHS, "fine-tuning epochs", type=positive_int)
    results: Path = option(DEFAULT_RESULTS, "the CSV file the row is appended to", type=Path)
    logs_dir: Path = option(DEFAULT_LOGS_DIR, "where the log goes", type=Path)
    machine: str | None = option(None, "how to name this machine in the results (default: host name, CPU cores "
                                 "and RAM)")
    trust_pickled_weights: bool = option(False, TRUST_PICKLED_HELP)
    no_block_compile: bool = False  # with Unsloth only: WithUnslothOptions makes it an option

    @property
    def side(self) -> str:
        """The results.csv `unsloth` column of a with-Unsloth row."""
        return WITH_NO_BLOCK_COMPILE if self.no_block_compile else WITH


@dataclasses.dataclass(frozen=True)
class WithUnslothOptions(UnslothTestOptions):
    no_block_compile: bool = option(False, "turn off Unsloth's torch.compile of each decoder block "
                                    "(UNSLOTH_BLOCK_COMPILE=0; the row says so): with torch 2.11 its backward failed "
                                    "to compile on an H200 (docs/gpu.md)")


def parse_options(with_unsloth: bool, argv: list[str] | None = None) -> UnslothTestOptions:
    side = "WITH" if with_unsloth else "WITHOUT"
    parser = ArgumentParser(
        description=f"Measure inference and LoRA fine-tuning of Gemma-2 2B {side} Unsloth: wall time and peak "
                    f"memory. Appends a row to the results file and writes a log; compare the two scripts' rows "
                    f"with llm/unsloth_test/compare.py.",
    )
    cls = WithUnslothOptions if with_unsloth else UnslothTestOptions
    add_options(parser, cls)
    options = from_args(cls, parser.parse_args(argv))
    if with_unsloth and options.shape not in (None, *UNSLOTH_SHAPES):
        parser.error(f"argument --shape: Unsloth is compared on {', '.join(UNSLOTH_SHAPES)} only (it has no fast "
                     f"path for GPT-NeoX)")
    return options


def read_results(path: Path) -> list[dict[str, str]]:
    """The rows of a results file, oldest first; [] when it does not exist yet."""
    if not path.exists():
        return []
    if path.is_dir():
        raise UserError(f"{path}: a folder, not a results file; give a file name")
    try:
        with path.open(encoding="utf-8", newline="") as handle:
            reader = csv.DictReader(handle)
            if reader.fieldnames is None:
                return []
            if tuple(reader.fieldnames) != RESULT_FIELDS:
                raise UserError(f"{path}: not a results file of these scripts (columns "
                                f"{', '.join(reader.fieldnames)[:200]}; expected {', '.join(RESULT_FIELDS)})")
            return list(reader)
    except (UnicodeDecodeError, csv.Error) as error:
        raise UserError(f"{path}: not a results file of these scripts (not CSV text: {first_line(error)[:120]})") from None
    except OSError as error:
        raise UserError(f"{path}: cannot be read ({error.strerror or error})") from None


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


def unsloth_missing() -> str | None:
    """Why Unsloth cannot run here, from what is installed and the GPU alone (nothing imported), or None."""
    if importlib.util.find_spec("unsloth") is None:
        return "unsloth is not installed (pip install -r requirements-unsloth.txt, on a machine with a CUDA GPU)"
    import torch

    if not torch.cuda.is_available():
        return "no CUDA GPU (Unsloth runs on NVIDIA GPUs only)"
    major, minor = torch.cuda.get_device_capability(0)
    if (major, minor) < MIN_CAPABILITY:
        return (f"GPU too old: {torch.cuda.get_device_name(0)} has compute capability {major}.{minor}, "
                f"Unsloth needs {MIN_CAPABILITY[0]}.{MIN_CAPABILITY[1]} or newer")
    return None


def unsloth_unavailable() -> str | None:
    """Why Unsloth cannot run here, or None; imports it when it can (before transformers: it patches it)."""
    reason = unsloth_missing()
    if reason is not None:
        return reason
    try:
        import unsloth  # noqa: F401
    except Exception as error:  # its import checks the driver, the GPU and library versions
        return f"unsloth failed to import ({first_line(error)})"
    return None
