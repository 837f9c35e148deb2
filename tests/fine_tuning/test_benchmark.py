"""The training benchmark on the tiny stand-in (CPU): its CSV, that the parts of each epoch add up, the speed options.

It runs on the small dataset: the real CSV's 360 train rows take 60 to 70 s for 2 epochs on 2 CPU cores, over
this file's budget of about 40 s; the code path is the same.
"""

import csv
import json
import re
import warnings
from pathlib import Path

import pytest
import torch

from helpers.scripts import heavy_modules_after_help, run_in_process, run_script
from llm.common.device import detect
from llm.fine_tuning.benchmark import compare, flops, machine, results
from llm.fine_tuning.benchmark.options import parse_options
from llm.fine_tuning.speed import SpeedOptions

SCRIPT = "llm/fine_tuning/benchmark_training.py"
# The CSV holds seconds to 3 decimals: a sum of 4 rounded parts may be off by 4 x 0.0005 s.
ROUNDING = 0.0025
# program.train's wall time = the trainer's set-up (tokenizing, attaching LoRA) + the training the epochs split.
SETUP_AT_MOST = 10.0


def rows_of(path: Path) -> list[dict[str, str]]:
    with path.open(encoding="utf-8", newline="") as handle:
        reader = csv.DictReader(handle)
        assert tuple(reader.fieldnames) == results.COLUMNS
        return list(reader)


@pytest.fixture(scope="module")
def single(tmp_path_factory: pytest.TempPathFactory, small_dataset: Path) -> dict:
    root = tmp_path_factory.mktemp("bench-single")
    output, summary = root / "bench.csv", root / "summary.json"
    result = run_in_process(SCRIPT, "--shape", "tiny", "--epochs", "2", "--dataset", str(small_dataset),
                        "--output", str(output), "--summary", str(summary))
    assert result.returncode == 0, result.stderr[-3000:]
    return {"result": result, "rows": rows_of(output), "summary": summary}


def test_one_row_per_epoch_then_the_total(single: dict) -> None:
    rows = single["rows"]
    assert [row["epoch"] for row in rows] == ["1", "2", "total"]
    assert all(row["status"] == "ok" and row["variant"] == "single" and row["flags"] == "" for row in rows)
    on_gpu = torch.cuda.is_available()
    dtype = detect().dtype_name  # what the fine-tuning scripts compute in
    assert all(row["shape"] == "tiny" and row["dtype"] == dtype for row in rows)
    if on_gpu:
        assert all(row["device"].startswith("cuda: ") and row["peak_rss_mb"] == "" for row in rows)
        assert all(0 < float(row["peak_allocated_mb"]) <= float(row["peak_reserved_mb"]) for row in rows)
    else:
        assert all(row["device"].startswith("cpu: ") for row in rows)
        # on CPU: no GPU memory and no utilisation (no peak known), the resident memory instead
        assert all(row[name] == "" for row in rows for name in ("peak_allocated_mb", "peak_reserved_mb", "mfu"))
        assert all(float(row["peak_rss_mb"]) > 100 for row in rows)
    epochs = rows[:2]
    assert [int(row["steps"]) for row in epochs] == [6, 6]  # 24 train rows in batches of 4
    assert epochs[0]["train_tokens"] == epochs[1]["train_tokens"] and int(epochs[0]["train_tokens"]) > 24
    for row in epochs:
        train_s = float(row["train_s"])  # rounded to 1 ms: the rate's relative error is up to 0.0005 / train_s
        rate = int(row["train_tokens"]) / train_s
        # Both roundings add up: the rate's from train_s, then the rate itself to 0.1.
        assert abs(float(row["tokens_per_s"]) - rate) <= rate * 6e-4 / train_s + 0.051
        assert float(row["train_tflops"]) >= 0 and float(row["train_loss"]) > 0 and float(row["eval_loss"]) > 0


def test_the_parts_of_each_epoch_add_up_to_the_total(single: dict) -> None:
    rows = single["rows"]
    epochs, total = rows[:2], rows[2]
    parts = ("train_s", "eval_s", "test_s", "other_s")
    for row in epochs:
        assert all(float(row[name]) >= 0 for name in parts)
        assert float(row["train_s"]) > 0 and float(row["eval_s"]) > 0 and float(row["test_s"]) > 0
        assert sum(float(row[name]) for name in parts) == pytest.approx(float(row["epoch_s"]), abs=ROUNDING)
    for name in (*parts, "epoch_s"):
        assert sum(float(row[name]) for row in epochs) == pytest.approx(float(total[name]), abs=2 * ROUNDING)
    # The epochs' sum is the training's wall time, measured apart from program.train's around it.
    assert 0 < float(total["run_s"]) - float(total["epoch_s"]) < SETUP_AT_MOST
    steady = float(epochs[1]["epoch_s"])  # epoch 1 also pays for warm-up
    assert float(total["projected_60_epochs_s"]) == pytest.approx(float(total["epoch_s"]) + 58 * steady, abs=0.1)


def test_last_line_is_the_total_and_its_projection(single: dict) -> None:
    total = single["rows"][2]
    last = single["result"].stdout.strip().splitlines()[-1]
    match = re.fullmatch(r"total: ([\d.]+) s for 2 epochs \(train ([\d.]+) s, eval ([\d.]+) s, test ([\d.]+) s, "
                         r"other ([\d.]+) s\); projected to 60 epochs: ([\d.]+) s \([\d.]+ min\)", last)
    assert match, last
    assert float(match[1]) == pytest.approx(float(total["epoch_s"]), abs=0.06)
    assert float(match[6]) == pytest.approx(float(total["projected_60_epochs_s"]), abs=0.06)
    stdout = single["result"].stdout
    assert "timing of epoch 2: training steps" in stdout and "epoch 2/2: train loss" in stdout  # both reports
    assert re.search(r"FLOPs per training token: [\d.]+ G = 6 x [\d,]+ trainable \+ 4 x [\d,]+ frozen", stdout)
    assert '"projected_60_epochs_s"' in single["summary"].read_text(encoding="utf-8")


CPU_SKIPS = {"compiled-test": "CUDA GPUs only", "compiled-model": "--compile-model alone runs it",
             "cuda-graphs": "--compile-model alone runs it", "flash-attention-2": "CUDA GPUs only",
             "tf32": "NVIDIA GPUs"}
SAME_TRAINING = ("test-one-batch", "static-cache", "quiet-steps", "fused-optimizer", "attn-eager")


@pytest.mark.skipif(torch.cuda.is_available(), reason="the CPU's list of variants: a GPU runs others (float32)")
def test_compare_gives_every_variant_rows_or_a_reason(tmp_path: Path, small_dataset: Path) -> None:
    output = tmp_path / "compare.csv"
    result = run_in_process(SCRIPT, "--shape", "tiny", "--epochs", "1", "--dataset", str(small_dataset),
                            "--output", str(output), "--compare", "--warm-up-epochs", "0")
    assert result.returncode == 0, result.stderr[-3000:]
    rows = rows_of(output)
    by_variant: dict[str, list[dict[str, str]]] = {}
    for row in rows:
        by_variant.setdefault(row["variant"], []).append(row)
    ran = ["plain", "test-one-batch", "eval-one-batch", "quiet-steps", "fused-optimizer", "fixed-shapes",
           "padding-free", "static-cache", "attn-eager", "packing", "bfloat16"]
    assert set(by_variant) == set(ran) | set(CPU_SKIPS) | {"liger"}
    for name in ran:
        assert [row["epoch"] for row in by_variant[name]] == ["1", "total"], name
        assert all(row["status"] == "ok" for row in by_variant[name])
    for name, reason in CPU_SKIPS.items():
        (row,) = by_variant[name]
        assert row["status"].startswith("skipped: ") and reason in row["status"] and row["epoch"] == "-"
    (liger,) = by_variant["liger"]
    assert liger["status"].startswith("skipped: ")
    assert by_variant["padding-free"][0]["flags"] == "--padding-free"
    assert by_variant["bfloat16"][0]["dtype"] == "bfloat16"
    assert by_variant["packing"][0]["steps"] == "1"  # 24 pairs, 691 tokens, packed into 3 rows of 256: 1 batch

    def loss(name: str, which: str = "eval_loss") -> float:
        return float(by_variant[name][0][which])

    # Options that only change how the same maths is computed learn the same thing: the same losses (exactly
    # where only the test or the host's waiting changes). Padding-free and fixed shapes train on the same batches
    # (Adam turns rounding differences of near-zero gradients into whole steps, hence 1 %; the exact check of
    # padding-free is below); packing's different batches give another loss; eval-one-batch trains the same, and
    # its eval loss weighs tokens instead of rows.
    for name in SAME_TRAINING:
        assert loss(name) == pytest.approx(loss("plain"), rel=1e-4), name
    for name in ("padding-free", "fixed-shapes"):
        assert loss(name) == pytest.approx(loss("plain"), rel=1e-2), name
    assert loss("eval-one-batch", "train_loss") == pytest.approx(loss("plain", "train_loss"), rel=1e-4)
    assert loss("packing") != pytest.approx(loss("plain"), rel=2e-2)
    lines = result.stdout.splitlines()
    assert "| variant | flags | status | s/epoch | vs plain |" in "\n".join(lines)
    assert sum(line.startswith("| ") for line in lines) == 1 + len(by_variant)  # the heading and a row per variant
    assert any(line.startswith("fastest combination flags: ") for line in lines)


@pytest.mark.parametrize("attention", ["sdpa", "eager"])
def test_padding_free_keeps_the_sequences_apart_without_flash_attention(attention: str, small_splits) -> None:
    """TRL's padding-free batch is one row with position ids restarting at each sequence; transformers makes a
    block-diagonal mask of them for sdpa and eager too (when no cache is made: TRL's loss passes use_cache=False)."""
    from trl.trainer.sft_trainer import DataCollatorForLanguageModeling

    from conftest import tiny_model
    from llm.common.specs import POLYGLOT

    model, tokenizer = tiny_model(POLYGLOT, small_splits)
    model.set_attn_implementation(attention)
    examples = [{"input_ids": tokenizer(example.prompt + example.completion)["input_ids"]}
                for example in small_splits.train[:4]]
    padded = DataCollatorForLanguageModeling(pad_token_id=tokenizer.pad_token_id)(examples)
    flat = DataCollatorForLanguageModeling(pad_token_id=tokenizer.pad_token_id, padding_free=True)(examples)
    assert flat["input_ids"].shape[0] == 1 and padded["input_ids"].shape[0] == 4
    with torch.no_grad():
        loss_padded = model(input_ids=padded["input_ids"], attention_mask=padded["attention_mask"],
                            labels=padded["labels"], use_cache=False).loss
        loss_flat = model(input_ids=flat["input_ids"], position_ids=flat["position_ids"], labels=flat["labels"],
                          use_cache=False).loss
    assert float(loss_flat) == pytest.approx(float(loss_padded), rel=1e-5)


def test_help_answers_before_torch_loads() -> None:
    result = run_script(SCRIPT, "--help")
    assert result.returncode == 0 and "--compare" in result.stdout
    assert heavy_modules_after_help(SCRIPT) == []  # how fast that is: scripts/benchmark_startup.py


def test_a_gpu_gets_its_own_peak_not_a_similar_names():
    """Names that contain another's (H100 PCIe and H100, L40S, L40 and L4, GH200 and H200) find their own row."""
    peak = machine.peak_tflops_for
    assert peak("NVIDIA H100 PCIe") < peak("NVIDIA H100 80GB HBM3")
    assert len({peak("NVIDIA L4"), peak("NVIDIA L40"), peak("NVIDIA L40S")}) == 3
    assert peak("NVIDIA GH200 480GB") is not None and peak("Tesla T4") is None


def test_the_flop_count_is_what_torch_counts_for_lora_training() -> None:
    """Forward and backward of a LoRA model, counted by torch's FlopCounterMode, are 6 FLOPs per trainable and 4 per
    frozen matrix weight per token (the input arrives needing its gradient, as inside a model's layers)."""
    from peft import LoraConfig, get_peft_model
    from torch.utils.flop_counter import FlopCounterMode

    class Tiny(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.proj = torch.nn.Linear(16, 32)
            self.head = torch.nn.Linear(32, 100, bias=False)

        def forward(self, x):
            return self.head(torch.relu(self.proj(x)))

    model = get_peft_model(Tiny(), LoraConfig(r=4, target_modules=["proj"], lora_dropout=0.0))
    tokens = torch.randn(3, 7, 16, requires_grad=True)
    with FlopCounterMode(display=False) as counter:
        model(tokens).sum().backward()
    assert counter.get_total_flops() == flops.flops_per_token(*flops.matmul_parameters(model)) * 3 * 7


def test_warm_up_epochs_go_to_the_csv_but_not_into_the_comparison(tmp_path: Path, small_dataset: Path) -> None:
    output, summary = tmp_path / "compare.csv", tmp_path / "compare.json"
    result = run_in_process(SCRIPT, "--shape", "tiny", "--epochs", "1", "--dataset", str(small_dataset),
                            "--output", str(output), "--summary", str(summary), "--compare",
                            "--variants", "test-one-batch", "--warm-up-epochs", "2")
    assert result.returncode == 0, result.stderr[-3000:]
    rows = rows_of(output)
    assert [(row["variant"], row["epoch"]) for row in rows] == [
        ("warm-up", "1"), ("warm-up", "2"), ("warm-up", "total"),
        ("plain", "1"), ("plain", "total"), ("test-one-batch", "1"), ("test-one-batch", "total")]
    table = [line for line in result.stdout.splitlines() if line.startswith("| ") and "---" not in line]
    assert [line.split(" | ")[0] for line in table[1:]] == ["| plain", "| test-one-batch"]
    compared = json.loads(summary.read_text(encoding="utf-8"))["variants"]
    assert [variant["variant"] for variant in compared] == ["plain", "test-one-batch"]


def test_warm_up_epochs_only_with_compare() -> None:
    result = run_in_process(SCRIPT, "--warm-up-epochs", "1")
    assert result.returncode == 2 and "go with --compare" in result.stderr


def test_compile_model_trains_the_same_recipe_through_torch_compile(single: dict, tmp_path: Path,
                                                                   small_dataset: Path) -> None:
    # aot_eager traces forward and backward as inductor does, without its code generation (slow on CPU)
    output = tmp_path / "compiled.csv"
    result = run_in_process(SCRIPT, "--shape", "tiny", "--epochs", "2", "--dataset", str(small_dataset),
                            "--output", str(output), "--compile-model", "aot_eager")
    assert result.returncode == 0, result.stderr[-3000:]
    rows = rows_of(output)
    assert [row["epoch"] for row in rows] == ["1", "2", "total"]
    assert all(row["flags"] == "--compile-model aot_eager" and row["status"] == "ok" for row in rows)
    # regional: the decoder layers (and the small modules around them) compiled, the model as a whole not
    assert re.search(r"^\[single\] the training steps ran through torch.compile \(backend aot_eager\): \d+ compiled "
                     r"regions \(.*GPTNeoXLayer.*\)$", result.stdout, re.MULTILINE), result.stdout[-2000:]
    plain = single["rows"]
    assert rows[0]["train_tokens"] == plain[0]["train_tokens"]  # the same batches
    for compiled, eager in zip(rows[:2], plain[:2]):
        assert float(compiled["eval_loss"]) == pytest.approx(float(eager["eval_loss"]), rel=1e-2)
    assert parse_options(["--compile-model"])[0].speed.flags() == ["--compile-model"]


def outcome(name: str, seconds: float, same_recipe: bool = True, status: str = "ok", **speed) -> results.Outcome:
    return results.Outcome(results.Variant(name, SpeedOptions(**speed), same_recipe), status, [],
                           steady_epoch_s=seconds)


def test_the_combination_takes_the_faster_options_that_keep_the_recipe() -> None:
    outcomes = [outcome("plain", 10.0), outcome("padding-free", 8.0, padding_free=True),
                outcome("test-one-batch", 9.2, test_batch_size=60),  # 8 % faster: within the noise, left out
                outcome("compiled-test", 6.0, static_cache=True, compile_test=True),
                outcome("packing", 5.0, same_recipe=False, packing=True),  # faster, but not the recipe
                outcome("liger", 1.0, status="skipped: not installed", liger=True)]
    speed, names = compare.combined(outcomes)
    assert names == ["padding-free", "compiled-test"]
    assert speed.flags() == ["--padding-free", "--static-cache", "--compile-test"]
    parsed = parse_options(speed.flags())[0].speed
    assert parsed == speed  # the printed flags give the same options back


@pytest.mark.parametrize("shape, trainable, frozen", [
    ("polyglot-ko-1.3b", 12_582_912, 1_269_563_392), ("gemma-2-2b", 83_066_880, 2_614_099_968),
])
def test_full_size_flops_count_as_docs_gpu_md_gives_it(shape: str, trainable: int, frozen: int) -> None:
    from types import SimpleNamespace

    from peft import get_peft_model
    from transformers import AutoModelForCausalLM

    from llm.common.specs import SHAPES, Recipe
    from llm.common.training import lora_config
    from llm.common.models import full_size_config

    spec = SHAPES[shape]
    tokenizer = SimpleNamespace(bos_token_id=2, eos_token_id=1, pad_token_id=0)
    with torch.device("meta"), warnings.catch_warnings():  # shapes only: no memory
        warnings.simplefilter("ignore", FutureWarning)  # a transformers deprecation notice raised inside peft
        model = AutoModelForCausalLM.from_config(full_size_config(spec, tokenizer), **spec.load_kwargs)
        model = get_peft_model(model, lora_config(spec, Recipe()))
    assert flops.matmul_parameters(model) == (trainable, frozen)
