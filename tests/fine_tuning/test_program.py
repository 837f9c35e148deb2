"""The fine-tuning pipeline: labels, stopping, loading real-layout folders, saving, logs, data parallel."""

import csv
import importlib.util
import json
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from PIL import Image
from peft import PeftModel, get_peft_model
from transformers import set_seed

from helpers.models import BREAKAGES, break_folder, hub_folder, tiny_model
from helpers.scripts import REPO, run_in_process
from llm.common.inference import STOP_EOS, STOP_LENGTH, STOP_MARKER, _decode_answer, generate_answers
from llm.common.adapters import load_fine_tuned
from llm.common.data import load_splits
from llm.common.logs import EpochLosses, log_file_path, loss_figure, plot_losses
from llm.common.markers import ANSWER_END, ANSWER_START
from llm.common.models import (
    ModelFolderError, check_model_folder, load_local,
)
from llm.common.outputs import OutputError
from llm.common.training import build_trainer, lora_config, save_adapter_atomically
from llm.common.cli import UserError
from llm.common.specs import GEMMA, POLYGLOT, Recipe
from llm.fine_tuning.options import parse_options
from llm.fine_tuning.program import prepare

LOG_NAME = re.compile(r"^\d{10}(-\d+)?(_[\w.-]+)?\.txt$")


# --- completion-only loss ---

def test_prompt_tokens_are_masked_and_the_answer_with_eos_is_learned(tmp_path, small_splits):
    model, tokenizer = tiny_model(POLYGLOT, small_splits)
    trainer = build_trainer(model, tokenizer, Recipe(epochs=1), lora_config(POLYGLOT, Recipe()),
                            small_splits.train[:4], [], tmp_path, "cpu", torch.float32, save_strategy="no")
    batch = next(iter(trainer.get_train_dataloader()))
    examples = {e.prompt: e for e in small_splits.train[:4]}
    for input_ids, labels, mask in zip(batch["input_ids"], batch["labels"], batch["attention_mask"]):
        learned = labels[labels != -100].tolist()
        example = examples[tokenizer.decode(input_ids[(labels == -100) & (mask == 1)])]
        assert learned[-1] == tokenizer.eos_token_id
        assert tokenizer.decode(learned[:-1]) == example.completion  # " answer (답변 종료)"
        assert ANSWER_START not in tokenizer.decode(learned)  # nothing of the prompt is learned


# --- stopping at the end marker ---

def test_decoding_cuts_at_the_end_marker_and_strips_it(small_splits):
    _, tokenizer = tiny_model(POLYGLOT, small_splits)
    tokens = tokenizer(f" 안녕! {ANSWER_END} 그 뒤의 말")["input_ids"]
    assert _decode_answer(tokenizer, tokens)[0::2] == ("안녕!", STOP_MARKER)
    assert _decode_answer(tokenizer, tokenizer(" 끝나지 않은 말")["input_ids"])[0::2] == ("끝나지 않은 말", STOP_LENGTH)
    ended = tokenizer(" 답변 종료)")["input_ids"] + [tokenizer.eos_token_id]
    assert _decode_answer(tokenizer, ended)[0::2] == ("", STOP_EOS)  # a marker's piece, then EOS: not the marker


def test_generation_stops_at_the_end_marker(small_splits):
    """A model taught to run on past the marker is stopped there by the shared inference code."""
    model, tokenizer = tiny_model(POLYGLOT, small_splits)
    user_input = small_splits.train[0].input_data
    text = f"{small_splits.train[0].prompt} 좋아! {ANSWER_END} 그리고 계속 더 말하는 긴 꼬리 문장"
    ids = tokenizer(text, return_tensors="pt")["input_ids"]
    optimizer = torch.optim.Adam(model.parameters(), lr=3e-3)
    set_seed(0)
    for _ in range(60):  # memorise the one sequence
        loss = model(input_ids=ids, labels=ids).loss
        loss.backward()
        optimizer.step()
        optimizer.zero_grad()
    (answer,) = generate_answers(model, tokenizer, [user_input])
    assert (answer.text, answer.stopped) == ("좋아!", True)
    full = tokenizer.decode(model.generate(**tokenizer(small_splits.train[0].prompt, return_tensors="pt"),
                                           max_new_tokens=30, do_sample=False,
                                           pad_token_id=tokenizer.pad_token_id)[0])
    assert "꼬리" in full  # without the stop the model would have gone on


# --- loading folders in the Hugging Face layout ---

def test_sharded_folder_is_loaded_as_real_weights(tmp_path, small_splits):
    folder = hub_folder(POLYGLOT, small_splits, tmp_path / "polyglot_original")
    index = json.loads((folder / "model.safetensors.index.json").read_text())
    shards = sorted(set(index["weight_map"].values()))
    assert len(shards) > 1 and all(re.fullmatch(r"model-\d{5}-of-\d{5}\.safetensors", s) for s in shards)
    loaded = load_local(POLYGLOT, folder, "cpu", torch.float32)
    assert not loaded.is_tiny and loaded.model.config.model_type == "gpt_neox"
    # Polyglot's tokenizer returns token_type_ids, which GPT-NeoX does not take: they are dropped.
    assert "token_type_ids" not in loaded.tokenizer("안녕")


@pytest.mark.parametrize("how", BREAKAGES)
def test_broken_folder_names_the_bad_file(tmp_path, good_polyglot_folder, how):
    folder = tmp_path / "polyglot_original"
    shutil.copytree(good_polyglot_folder, folder)
    expected = break_folder(folder, how)
    with pytest.raises(ModelFolderError, match=expected):
        check_model_folder(POLYGLOT, folder)


# --- pickled weights: refused unless trusted, and then only plain tensors ---

class CodeOnUnpickle:
    """Unpickling this creates a file: the proof that a pickle was (or was not) run."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return Path.touch, (self.marker,)


def pickled_folder(good: Path, folder: Path, weights: dict) -> Path:
    """The good folder with its safetensors replaced by a torch.save'd pytorch_model.bin of `weights`."""
    shutil.copytree(good, folder, ignore=shutil.ignore_patterns("model*.safetensors*"))
    torch.save(weights, folder / "pytorch_model.bin")
    return folder


def test_pickled_weights_are_not_unpickled_by_default(tmp_path, good_polyglot_folder, monkeypatch):
    marker = tmp_path / "code_ran"
    folder = pickled_folder(good_polyglot_folder, tmp_path / "pickled", {"weight": CodeOnUnpickle(marker)})
    unpickled = []
    monkeypatch.setattr(torch, "load", lambda *args, **kwargs: unpickled.append(args))
    with pytest.raises(ModelFolderError, match=r"only pickled \.bin weights.*add --trust-pickled-weights"):
        load_local(POLYGLOT, folder, "cpu", torch.float32)
    assert unpickled == [] and not marker.exists()


def test_trusted_pickled_code_is_still_not_run(tmp_path, good_polyglot_folder):
    marker = tmp_path / "code_ran"
    folder = pickled_folder(good_polyglot_folder, tmp_path / "pickled", {"weight": CodeOnUnpickle(marker)})
    # Even when trusted, transformers unpickles with weights_only=True: the code in the file never runs.
    with pytest.raises(ModelFolderError, match="hold more than tensors.*not loaded even with --trust-pickled"):
        load_local(POLYGLOT, folder, "cpu", torch.float32, trust_pickled=True)
    assert not marker.exists()


@pytest.mark.parametrize("sharded", [False, True], ids=["one file", "sharded with an index"])
def test_trusted_pickled_tensors_load_as_the_safetensors_do(tmp_path, good_polyglot_folder, sharded):
    reference = load_local(POLYGLOT, good_polyglot_folder, "cpu", torch.float32).model.state_dict()
    folder = pickled_folder(good_polyglot_folder, tmp_path / "plain_tensors", reference)
    if sharded:  # the layout of older Hugging Face repos: pytorch_model-0000N-of-00002.bin and an index
        (folder / "pytorch_model.bin").unlink()
        names = list(reference)
        shards = {f"pytorch_model-0000{n}-of-00002.bin": names[n - 1::2] for n in (1, 2)}
        for shard, keys in shards.items():
            torch.save({key: reference[key] for key in keys}, folder / shard)
        weight_map = {key: shard for shard, keys in shards.items() for key in keys}
        (folder / "pytorch_model.bin.index.json").write_text(json.dumps({"metadata": {}, "weight_map": weight_map}))
    loaded = load_local(POLYGLOT, folder, "cpu", torch.float32, trust_pickled=True).model.state_dict()
    assert loaded.keys() == reference.keys()
    assert all(torch.equal(value, loaded[name]) for name, value in reference.items())
    if sharded:
        (folder / "pytorch_model-00002-of-00002.bin").unlink()
        with pytest.raises(ModelFolderError, match=r"pytorch_model-00002-of-00002\.bin: listed in "
                                                   r"pytorch_model\.bin\.index\.json but missing"):
            load_local(POLYGLOT, folder, "cpu", torch.float32, trust_pickled=True)


# --- one epoch end to end through the real scripts, on folders laid out like the downloads ---

@pytest.mark.parametrize("script, spec", [("llm/run_fine_tuning_polyglot.py", POLYGLOT),
                                          ("llm/run_fine_tuning.py", GEMMA)])
def test_script_trains_one_epoch_on_a_downloaded_layout_folder(tmp_path, small_splits, small_dataset, script, spec):
    folder = hub_folder(spec, small_splits, tmp_path / spec.model_dir.name)
    result = run_in_process(script, "--model-dir", str(folder), "--dataset", str(small_dataset), "--epochs", "1",
                        "--output-dir", str(tmp_path / "adapter"), "--logs-dir", str(tmp_path / "logs"),
                        "--log-name", "one_epoch")
    assert result.returncode == 0, result.stderr[-3000:]
    assert "NOTICE" not in result.stdout  # real-layout weights: no stand-in
    (log,) = (tmp_path / "logs").glob("*.txt")
    assert LOG_NAME.match(log.name) and log.name.endswith("_one_epoch.txt")
    text = log.read_text(encoding="utf-8")
    assert f"model folder: {folder}" in text and "inference test after epoch 1/1" in text
    adapter_config = json.loads((tmp_path / "adapter" / "adapter_config.json").read_text())
    assert sorted(adapter_config["target_modules"]) == sorted(spec.lora_targets)
    assert adapter_config["r"] == 64 and adapter_config["lora_alpha"] == 16


# --- the run with no weights: tiny stand-in, log and plot ---

def test_run_without_weights_uses_the_stand_in_and_says_so(trained_polyglot):
    assert "NOTICE: no Polyglot-Ko 1.3B weights" in trained_polyglot["stdout"]
    (log,) = trained_polyglot["logs_dir"].glob("*.txt")
    assert LOG_NAME.match(log.name)
    assert log.with_suffix(".png").stat().st_size > 1000
    text = log.read_text(encoding="utf-8")
    assert text.startswith("!" * 78 + "\n!! NOTICE")
    for expected in [f"dataset: {trained_polyglot['dataset']} (24 train rows, 6 valid rows",
                     "hyperparameters: epochs=2, lora_rank=64, lora_alpha=16, lora_dropout=0.05",
                     "LoRA targets: query_key_value", "device: cpu: ", "dtype: float32 (the CPU); processes: 1",
                     "speed options: (plain recipe)",
                     "transformers ", "peft ", "trl ",
                     "=== inference test after epoch 1/2", "=== inference test after epoch 2/2",
                     "=== final test 1/2 with the saved adapter", "=== final test 2/2 with the saved adapter",
                     "(trials: ", "output tokens: ", "total time: "]:
        assert expected in text, expected
    assert text.count("    answer: ") == 6 * 4  # 6 valid prompts: 2 epochs + 2 final rounds
    assert text.rstrip().splitlines()[-1] == f"adapter saved to {trained_polyglot['adapter_dir']}"


def test_the_terminal_gets_one_line_per_epoch_and_the_log_gets_the_answers(trained_polyglot):
    stdout = trained_polyglot["stdout"]
    epochs = re.findall(r"^epoch (\d)/2: train loss [\d.]+, eval loss [\d.]+, empty answers \d/6, "
                        r"ended at the end marker \d/6, [\d.]+ s$", stdout, re.MULTILINE)
    assert epochs == ["1", "2"]
    assert "answer: " not in stdout and "{" not in stdout  # no answer blocks, no loss dicts
    assert len(stdout.splitlines()) < 40
    assert re.search(r"^lowest eval loss: epoch \d \([\d.]+\); the adapter saved is epoch 2's \(--keep last\)$",
                     stdout, re.MULTILINE)
    stderr = trained_polyglot["stderr"]
    assert "FutureWarning" not in stderr and "Truncating" not in stderr
    assert "\x1b[A" not in stderr  # stderr is a file here: no cursor moves of nested bars (a terminal's business)


def test_the_log_writes_numbers_and_ends_with_the_epoch_table(trained_polyglot):
    (log,) = trained_polyglot["logs_dir"].glob("*.txt")
    text = log.read_text(encoding="utf-8")
    logged = [json.loads(line) for line in text.splitlines() if line.startswith("{")]
    assert any("loss" in entry for entry in logged) and any("eval_loss" in entry for entry in logged)
    assert all(isinstance(value, (int, float)) for entry in logged for value in entry.values())
    table = text.split("per-epoch summary:\n", 1)[1].splitlines()
    assert table[0].split() == ["epoch", "train_loss", "eval_loss", "empty", "at_marker", "seconds"]
    rows = [line.split() for line in table[1:3]]
    assert [row[0] for row in rows] == ["1", "2"]
    eval_losses = [entry["eval_loss"] for entry in logged if "eval_loss" in entry]
    assert [float(row[2]) for row in rows] == pytest.approx(eval_losses, abs=1e-4)
    assert sum("<- lowest eval loss" in line for line in table[1:3]) == 1


def test_keep_best_saves_the_epoch_with_the_lowest_eval_loss(tmp_path, small_dataset):
    result = run_in_process("llm/run_fine_tuning_polyglot.py", "--dataset", str(small_dataset), "--epochs", "3",
                        "--learning-rate", "0.03", "--keep", "best", "--model-dir", str(tmp_path / "none"),
                        "--output-dir", str(tmp_path / "adapter"), "--logs-dir", str(tmp_path / "logs"))
    assert result.returncode == 0, result.stderr[-3000:]
    best = re.search(r"^lowest eval loss: epoch (\d) \(([\d.]+)\); the adapter saved is epoch (\d)'s", result.stdout,
                     re.MULTILINE)
    assert best and best[1] == best[3]
    # The saved adapter, evaluated afresh on the same rows, has that loss: it is that epoch's adapter.
    splits = load_splits(small_dataset)
    loaded = load_fine_tuned(POLYGLOT, tmp_path / "none", tmp_path / "adapter", "cpu", torch.float32, say=None)
    trainer = build_trainer(loaded.model, loaded.tokenizer, Recipe(), None, splits.train, splits.valid_with_answers,
                            tmp_path / "eval", "cpu", torch.float32, save_strategy="no")
    assert trainer.evaluate()["eval_loss"] == pytest.approx(float(best[2]), abs=2e-4)


def test_a_one_epoch_plot_has_whole_epoch_ticks_and_labelled_points(tmp_path):
    figure = loss_figure([EpochLosses(1, 2.5, 2.7)], "title")
    (axes,) = figure.axes
    figure.canvas.draw()
    assert [tick for tick in axes.get_xticks() if axes.get_xlim()[0] <= tick <= axes.get_xlim()[1]] == [1.0]
    assert sorted(text.get_text() for text in axes.texts) == ["2.500", "2.700"]
    plot_losses([EpochLosses(1, 2.5, 2.7)], tmp_path / "one.png", "title")
    assert (tmp_path / "one.png").read_bytes().startswith(b"\x89PNG")
    assert [path.name for path in tmp_path.iterdir()] == ["one.png"]  # written beside, then renamed


def test_the_plot_of_a_stand_in_run_says_so(trained_polyglot):
    (log,) = trained_polyglot["logs_dir"].glob("*.txt")
    with Image.open(log.with_suffix(".png")) as plot:
        assert plot.info["Title"] == "Polyglot-Ko 1.3B (TINY STAND-IN, not the real model) LoRA fine-tuning"


def test_saved_adapter_files_are_readable_by_other_users(trained_polyglot):
    for path in [trained_polyglot["adapter_dir"], *trained_polyglot["adapter_dir"].iterdir()]:
        assert path.stat().st_mode & 0o044 == 0o044, path  # group and others may read (umask 022 here)


def test_without_the_virtualenv_a_script_says_so_in_one_line():
    # -S: no site-packages, as a system python3 without the project's editable install sees it
    result = subprocess.run([sys.executable, "-S", str(REPO / "llm/run_fine_tuning_polyglot.py"), "--help"],
                            cwd=REPO, capture_output=True, text=True, timeout=60)
    assert result.returncode == 1
    assert result.stderr.strip().splitlines() == [
        "error: No module named 'llm'; activate the project's virtualenv first: . .venv/bin/activate"]


@pytest.mark.skipif(importlib.util.find_spec("tensorboard") is not None, reason="tensorboard is installed here")
def test_report_to_tensorboard_without_it_is_refused_before_any_work(tmp_path, small_dataset):
    args = parse_options(POLYGLOT, ["--dataset", str(small_dataset), "--report-to", "tensorboard",
                                              "--output-dir", str(tmp_path / "adapter"), "--logs-dir", str(tmp_path / "logs")])
    with pytest.raises(UserError, match=r"^--report-to tensorboard: tensorboard is not installed \(pip install tensorboard\)$"):
        prepare(POLYGLOT, args)
    assert list(tmp_path.iterdir()) == []


def test_log_names_never_overwrite(tmp_path):
    first = log_file_path(tmp_path, now=0)
    first.write_text("x")
    second = log_file_path(tmp_path, now=0)
    assert second != first and LOG_NAME.match(second.name)
    assert log_file_path(tmp_path, "lr 1e-4", now=0).name.endswith("_lr_1e-4.txt")
    assert log_file_path(tmp_path, "../..", now=0).parent == tmp_path


# --- saving ---

def test_saved_adapter_reloads_with_the_same_greedy_answers(tmp_path, small_splits):
    base, tokenizer = tiny_model(POLYGLOT, small_splits)
    set_seed(1)
    model = get_peft_model(base, lora_config(POLYGLOT, Recipe()))
    with torch.no_grad():  # a freshly initialised LoRA is the identity; give it weight so it matters
        for name, parameter in model.named_parameters():
            if "lora_B" in name:
                parameter.normal_(std=0.05)
    inputs = [e.input_data for e in small_splits.valid]
    before = [a.text for a in generate_answers(model, tokenizer, inputs)]
    save_adapter_atomically(model, tokenizer, tmp_path / "adapter")
    fresh_base, _ = tiny_model(POLYGLOT, small_splits)
    plain = [a.text for a in generate_answers(fresh_base, tokenizer, inputs)]
    reloaded = PeftModel.from_pretrained(fresh_base, tmp_path / "adapter")
    assert [a.text for a in generate_answers(reloaded, tokenizer, inputs)] == before
    assert plain != before  # the adapter really changes the answers


def test_a_crash_while_saving_keeps_the_previous_adapter(tmp_path, small_splits, monkeypatch):
    base, tokenizer = tiny_model(POLYGLOT, small_splits)
    model = get_peft_model(base, lora_config(POLYGLOT, Recipe()))
    target = tmp_path / "polyglot_fine_tuned"
    save_adapter_atomically(model, tokenizer, target)
    saved = {p.name: p.read_bytes() for p in target.iterdir()}

    def crash(self, directory, **kwargs):
        (Path(directory) / "adapter_model.safetensors").write_bytes(b"half")
        raise OSError("disk full")

    monkeypatch.setattr(PeftModel, "save_pretrained", crash)
    with pytest.raises(OutputError, match="adapter not saved: .*disk full"):
        save_adapter_atomically(model, tokenizer, target)
    assert {p.name: p.read_bytes() for p in target.iterdir()} == saved
    assert [p.name for p in tmp_path.iterdir()] == ["polyglot_fine_tuned"]  # no half-written folder beside it


# --- data parallel ---

def test_two_process_data_parallel_run(tmp_path, small_dataset):
    """torchrun with 2 CPU ranks over gloo: each rank trains on half the data; only rank 0 writes."""
    command = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", "--master_port", "29517",
               str(REPO / "llm/run_fine_tuning_polyglot.py"), "--dataset", str(small_dataset), "--epochs", "1",
               "--model-dir", str(tmp_path / "none"), "--output-dir", str(tmp_path / "adapter"),
               "--logs-dir", str(tmp_path / "logs")]
    result = subprocess.run(command, cwd=REPO, capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stderr[-3000:]
    ranks = dict(re.findall(r"\[rank (\d)/2\] trained (\d+) steps", result.stderr))
    # 24 train rows, batch 4 per rank, 2 ranks: 3 steps each (one process alone would take 6)
    assert ranks == {"0": "3", "1": "3"}
    assert len(list((tmp_path / "logs").glob("*.txt"))) == 1
    assert (tmp_path / "adapter" / "adapter_model.safetensors").is_file()
    assert "processes: 2" in next((tmp_path / "logs").glob("*.txt")).read_text(encoding="utf-8")


# --- QLoRA on the stand-in: 4-bit base weights, gradient checkpointing and a recipe file, then the chat ---

@pytest.fixture(scope="module")
def qlora_run(tmp_path_factory, small_dataset):
    root = tmp_path_factory.mktemp("qlora")
    recipe = root / "recipe.yaml"
    recipe.write_text("quantization: 4bit\nlora_rank: 16\nepochs: 3\nlearning-rate: 0.003\n", encoding="utf-8")
    paths = {"model_dir": root / "no_weights", "adapter": root / "adapter", "logs": root / "logs", "recipe": recipe}
    args = ["--config", str(recipe), "--gradient-checkpointing", "--epochs", "2", "--dataset", str(small_dataset),
            "--model-dir", str(paths["model_dir"]), "--output-dir", str(paths["adapter"]), "--logs-dir", str(paths["logs"])]
    result = run_in_process("llm/run_fine_tuning_polyglot.py", *args)
    assert result.returncode == 0, result.stderr[-3000:]
    dry = run_in_process("llm/run_fine_tuning_polyglot.py", *args, "--dry-run")
    return paths | {"stdout": result.stdout, "stderr": result.stderr, "dry_run": dry.stdout,
                    "log": next(paths["logs"].glob("*.txt")).read_text(encoding="utf-8")}


def test_a_4bit_run_from_a_recipe_file_says_so_and_its_losses_fall(qlora_run):
    assert "Warning" not in qlora_run["stderr"], qlora_run["stderr"][-3000:]  # the libraries' notices stay out
    log = qlora_run["log"]
    assert "memory: base weights in 4 bits (NF4, double quantisation; bitsandbytes), LoRA trained over them; " \
           "gradient checkpointing on" in log
    assert (f"config {qlora_run['recipe']}: quantization=4bit, lora_rank=16, epochs=3 (the command line: 2), "
            f"learning_rate=0.003") in log
    assert "hyperparameters: epochs=2, lora_rank=16, " in log
    # the header says what the real model would need on a GPU with these options, as --dry-run does
    peak = re.search(r"^estimate: Polyglot-Ko 1\.3B on a GPU, 4bit weights, batch 4: peak ([\d,]+) MiB", log, re.M)
    assert peak and f"peak GPU memory: {peak[1]} MiB allocated" in qlora_run["dry_run"], qlora_run["dry_run"]
    losses = [float(loss) for loss in re.findall(r"^epoch \d/2: train loss ([\d.]+),", qlora_run["stdout"], re.M)]
    assert len(losses) == 2 and losses[1] < losses[0]


def test_the_chat_answers_with_the_adapter_a_4bit_run_saved(qlora_run, tmp_path):
    result = run_in_process("llm/run_chat.py", "--model-dir", str(qlora_run["model_dir"]), "--adapter-dir",
                            str(qlora_run["adapter"]), "--memory-db", str(tmp_path / "m.db"), "--prompt", "안녕!")
    assert result.returncode == 0, result.stderr[-3000:]
    assert [line for line in result.stdout.splitlines() if line.startswith("오로라: ")]


def test_a_recipe_file_with_an_unknown_or_bad_option_is_one_line(tmp_path):
    for text, says in (("lora_rnk: 16\n", r"'lora_rnk' is not an option of this script \(did you mean lora_rank\?\)"),
                       ("quantization: 2bit\n", r"quantization: '2bit' is not one of none, 4bit, 8bit"),
                       ("epochs: [1, 2]\n", r"epochs: expected one value"), ("- a\n- b\n", r"expected option: value")):
        recipe = tmp_path / "recipe.yaml"
        recipe.write_text(text, encoding="utf-8")
        result = run_in_process("llm/run_fine_tuning_polyglot.py", "--config", str(recipe))
        assert result.returncode == 2 and len(result.stderr.splitlines()) == 1, result.stderr
        assert re.match(rf"error: --config {re.escape(str(recipe))}: .*{says}", result.stderr), result.stderr


def test_a_row_too_long_for_the_stand_in_is_refused_before_the_stand_in_is_built(tmp_path, monkeypatch, small_dataset):
    rows = list(csv.DictReader(small_dataset.open(encoding="utf-8", newline="")))
    rows[1]["input_data"] = " ".join(f"단어{number}" for number in range(400))
    dataset = tmp_path / "long.csv"
    with dataset.open("w", encoding="utf-8", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    cache = tmp_path / "tiny-cache"
    monkeypatch.setenv("OHLORA_TINY_CACHE", str(cache))
    with pytest.raises(UserError, match=r"row 3: prompt and answer are \d+ tokens, longer than the model's context of "
                                        r"256; shorten the row"):
        prepare(POLYGLOT, parse_options(POLYGLOT, ["--dataset", str(dataset), "--model-dir", str(tmp_path / "none"),
                                                   "--output-dir", str(tmp_path / "adapter"), "--logs-dir",
                                                   str(tmp_path / "logs")]))
    assert not cache.exists() or not any(cache.iterdir())
