"""The estimate of peak GPU memory and time (llm/fine_tuning/estimate.py, --dry-run, the card table of
docs/gpu.md): built from the models' real shapes, and within reach of every figure measured on a GPU."""

import csv
import re
from pathlib import Path

import pandas as pd
import pytest
import torch

from helpers.data import DATASET
from helpers.scripts import REPO, heavy_modules_after, run_in_process
from llm.common.specs import GEMMA, POLYGLOT, SPECS, Recipe
from llm.fine_tuning.card_table import markdown
from llm.fine_tuning.estimate import Plan, lora_parameters, memory, shape_of

EXAMPLES = REPO / "llm"
MEASURED_ROW_TOKENS = 88  # the longest padded row of those runs (the stand-in's tokenizer drove the full shapes)


@pytest.mark.parametrize("spec", SPECS.values(), ids=lambda spec: spec.name)
def test_the_counts_are_the_real_models(spec):
    """The parameter and LoRA counts the estimate starts from are those of the models transformers and peft build."""
    from types import SimpleNamespace

    from peft import get_peft_model
    from transformers import AutoModelForCausalLM

    from llm.common.models import full_size_config
    from llm.common.training import lora_config

    tokenizer = SimpleNamespace(bos_token_id=2, eos_token_id=1, pad_token_id=0)
    with torch.device("meta"):  # shapes only: no memory
        model = AutoModelForCausalLM.from_config(full_size_config(spec, tokenizer), **spec.load_kwargs)
        assert sum(p.numel() for p in model.parameters()) == shape_of(spec).parameters
        model = get_peft_model(model, lora_config(spec, Recipe()))
    assert sum(p.numel() for p in model.parameters() if p.requires_grad) == lora_parameters(spec, Recipe.lora_rank)


def _rows(path):
    with path.open(encoding="utf-8", newline="") as handle:
        return list(csv.DictReader(handle))


def measured_figures() -> list[tuple[str, float, float]]:
    """(what, measured MiB, estimated MiB) for every GPU figure in the committed examples."""
    figures = []
    polyglot = [row for row in _rows(EXAMPLES / "fine_tuning" / "examples" / "gpu_2611261056" / "full.csv")
                if row["epoch"] not in ("total", "-") and row["peak_allocated_mb"]]
    plan = Plan(POLYGLOT, "bf16", row_tokens=MEASURED_ROW_TOKENS, test_batch=60)
    figures.append(("Polyglot-Ko 1.3B LoRA bf16, an epoch with the test of 60 prompts in one batch",
                    max(float(row["peak_allocated_mb"]) for row in polyglot), memory(plan).peak))
    gpu = [row for row in _rows(EXAMPLES / "unsloth_test" / "examples" / "results.csv")
           if row["device"].startswith("cuda") and row["unsloth"] == "without" and row["status"] == "ok"]
    for row in gpu:
        train = Plan(GEMMA, "bf16", row_tokens=MEASURED_ROW_TOKENS, test_batch=16)
        need = memory(train)
        figures.append(("Gemma-2 2B LoRA bf16, fine-tuning", float(row["finetune_peak_mb"]), need.training))
        figures.append(("Gemma-2 2B bf16, inference in batches of 16", float(row["inference_peak_mb"]),
                        need.weights + need.test_cache))
    return figures


def test_the_estimate_is_within_15_percent_of_every_measured_peak():
    figures = measured_figures()
    assert len(figures) >= 3
    for what, measured, estimated in figures:
        assert abs(estimated - measured) <= 0.15 * measured, (what, measured, estimated)


def test_each_memory_saving_option_saves_what_it_should():
    base = Plan(POLYGLOT, "bf16")
    assert memory(Plan(POLYGLOT, "4bit")).weights < memory(Plan(POLYGLOT, "8bit")).weights \
        < memory(base).weights < memory(Plan(POLYGLOT, "fp32")).weights
    checkpointed = Plan(POLYGLOT, "bf16", gradient_checkpointing=True)
    assert memory(checkpointed).activations < memory(base).activations / 5
    assert memory(Plan(POLYGLOT, "bf16", test_batch=16)).test_cache < memory(base).test_cache


def test_the_card_table_in_the_docs_is_the_one_the_script_prints():
    docs = (REPO / "docs" / "gpu.md").read_text(encoding="utf-8")
    assert markdown() in docs


def test_dry_run_estimates_without_loading_a_model():
    result = run_in_process("llm/run_fine_tuning.py", "--dry-run", "--quantization", "4bit", "--batch-size", "8")
    assert result.returncode == 0, result.stderr[-2000:]
    assert re.search(r"^peak GPU memory: [\d,]+ MiB allocated", result.stdout, re.MULTILINE)
    assert "4bit weights" in result.stdout and "batch 8" in result.stdout
    assert "over the 80 tokens a chat gives" not in result.stdout  # the repo's rows fit
    code, heavy = heavy_modules_after("llm/run_fine_tuning_polyglot.py", "--dry-run")
    assert code == 0 and heavy == []  # no torch, no transformers: it answers in about a second


def test_dry_run_says_when_a_row_is_longer_than_a_chat_allows(tmp_path: Path):
    rows = pd.read_csv(DATASET, encoding="utf-8")
    long_answer = "아주 긴 대답이야. " * 40
    rows.loc[0, ["output_data", "output_message"]] = long_answer
    dataset = tmp_path / "long.csv"
    rows.to_csv(dataset, index=False, encoding="utf-8")
    result = run_in_process("llm/run_fine_tuning_polyglot.py", "--dry-run", "--dataset", str(dataset))
    assert result.returncode == 0, result.stderr[-2000:]
    assert "over the 80 tokens a chat gives" in result.stdout
