"""llm/export_model.py: the adapter merged into its base is a plain Hugging Face folder that loads with transformers
alone (no peft, no project code: checked in a separate process that cannot import them) and answers exactly as
base + adapter; the chats take it with --merged; the save is atomic and replaces only what this project saved."""

import csv
import errno
import json
import textwrap
from pathlib import Path

import pytest
import torch
from safetensors import safe_open
from transformers import set_seed

from helpers.scripts import run_in_process, run_script
from llm.chat.chat import BOT_LABEL, visible_text
from llm.common.adapters import load_fine_tuned
from llm.common.inference import MAX_LENGTH, MIN_NEW_TOKENS, generate_answers
from llm.common.markers import ANSWER_END, build_prompt, strip_markers
from llm.common.merged import MERGED_INFO, merge_into_folder
from llm.common.models import load_local
from llm.common.outputs import SAVE_MARKER, OutputError
from llm.common.specs import POLYGLOT

SCRIPT = "llm/export_model.py"
CHAT_PROMPTS = ["안녕! 너는 누구야?", "나 내일 면접 봐", "[내일 일정: 면접] 면접 너무 떨려"]

# Run as its own process: transformers alone, with peft and this project made unimportable.
PLAIN_TRANSFORMERS = textwrap.dedent("""
    import json, sys
    sys.modules["peft"] = None  # `import peft` now fails: the folder must load without it
    sys.modules["llm"] = None  # and without this project's code
    from transformers import AutoModelForCausalLM, AutoTokenizer

    folder, prompts = sys.argv[1], json.loads(sys.argv[2])
    tokenizer = AutoTokenizer.from_pretrained(folder)
    model = AutoModelForCausalLM.from_pretrained(folder).eval()
    greedy = []
    for prompt in prompts:
        inputs = tokenizer(prompt, return_tensors="pt")
        start = inputs["input_ids"].shape[1]
        # The folder's generation_config.json (EOS); greedy, and the chat's length budget (prompt included).
        budget = max(MAX_LENGTH - start, MIN_NEW_TOKENS)
        greedy.append(tokenizer.decode(model.generate(**inputs, do_sample=False, max_new_tokens=budget)[0, start:],
                                       skip_special_tokens=True))
    first = tokenizer(prompts[0], return_tensors="pt")
    sampled = model.generate(**first)  # its defaults, nothing passed
    print(json.dumps({"greedy": greedy, "sampled_new_tokens": sampled.shape[1] - first["input_ids"].shape[1],
                      "dtype": str(model.dtype),
                      "loaded": sorted(name for name in sys.modules
                                       if name.split(".")[0] in ("peft", "llm") and sys.modules[name] is not None)}))
""").replace("MAX_LENGTH", str(MAX_LENGTH)).replace("MIN_NEW_TOKENS", str(MIN_NEW_TOKENS))


def valid_prompts(dataset: Path) -> list[str]:
    with dataset.open(encoding="utf-8", newline="") as handle:
        return [row["input_data"] for row in csv.DictReader(handle) if row["data_type"] == "valid"]


def project_answer(text: str) -> str:
    """What llm/common/inference.py keeps of a generated text: up to the end marker, markers stripped."""
    at = text.find(ANSWER_END)
    return strip_markers(text if at < 0 else text[:at])


@pytest.fixture(scope="module")
def exported(trained_polyglot: dict, tmp_path_factory: pytest.TempPathFactory) -> dict:
    output = tmp_path_factory.mktemp("export") / "polyglot_merged"
    result = run_in_process(SCRIPT, "--model-dir", str(trained_polyglot["model_dir"]),
                        "--adapter-dir", str(trained_polyglot["adapter_dir"]), "--output-dir", str(output))
    assert result.returncode == 0, result.stderr[-3000:]
    return {"dir": output, "stdout": result.stdout, "stderr": result.stderr}


@pytest.fixture(scope="module")
def base_with_adapter(trained_polyglot: dict):
    return load_fine_tuned(POLYGLOT, trained_polyglot["model_dir"], trained_polyglot["adapter_dir"], "cpu",
                           torch.float32, say=None)


def test_the_folder_is_a_plain_hugging_face_model(exported: dict, base_with_adapter):
    folder = exported["dir"]
    names = {path.name for path in folder.iterdir()}
    assert {"config.json", "generation_config.json", "model.safetensors", "tokenizer.json", "tokenizer_config.json",
            MERGED_INFO, SAVE_MARKER} <= names
    assert not names & {"adapter_config.json", "adapter_model.safetensors"}
    assert not list(folder.parent.glob(f".{folder.name}.*"))  # nothing left of the staging folder
    with safe_open(str(folder / "model.safetensors"), framework="pt") as weights:
        keys = list(weights.keys())
    assert keys and not any("lora" in key for key in keys)

    generation = json.loads((folder / "generation_config.json").read_text(encoding="utf-8"))
    tokenizer = base_with_adapter.tokenizer
    assert "stop_strings" not in generation and "max_length" not in generation  # plain generate() cannot use them
    assert generation["eos_token_id"] == tokenizer.eos_token_id and generation["pad_token_id"] == tokenizer.pad_token_id
    assert (generation["do_sample"], generation["temperature"], generation["max_new_tokens"]) == (True, 0.6, MAX_LENGTH)
    assert (generation["top_k"], generation["top_p"]) == (0, 1.0)  # plain temperature sampling, as the chat samples

    info = json.loads((folder / MERGED_INFO).read_text(encoding="utf-8"))
    assert info["tiny_stand_in"] is True and info["model"] == "polyglot" and info["dtype"] == "float32"
    assert f"chat with it: python llm/run_chat.py --merged {folder}" in exported["stdout"]
    assert "NOTICE" in exported["stderr"]  # the tiny stand-in was the base, and the run said so


def test_plain_transformers_answers_like_base_plus_adapter(exported: dict, base_with_adapter, trained_polyglot: dict,
                                                           tmp_path: Path):
    prompts = valid_prompts(trained_polyglot["dataset"]) + CHAT_PROMPTS[-1:]  # and one with a recalled tag
    script = tmp_path / "plain.py"
    script.write_text(PLAIN_TRANSFORMERS, encoding="utf-8")
    result = run_script(str(script), str(exported["dir"]), json.dumps([build_prompt(p) for p in prompts]))
    assert result.returncode == 0, result.stderr[-3000:]
    plain = json.loads(result.stdout)
    assert plain["loaded"] == [] and plain["dtype"] == "torch.float32"
    assert 0 < plain["sampled_new_tokens"] <= MAX_LENGTH  # the folder's max_new_tokens applies

    expected = [answer.text for answer in generate_answers(base_with_adapter.model, base_with_adapter.tokenizer,
                                                           prompts, batch_size=1)]  # greedy
    assert [project_answer(text) for text in plain["greedy"]] == expected
    assert any(expected)

    # And it is the adapter that makes them: the base alone answers otherwise.
    base = load_local(POLYGLOT, Path(json.loads((exported["dir"] / MERGED_INFO).read_text())["base"]), "cpu",
                      torch.float32)
    alone = generate_answers(base.model, base.tokenizer, prompts[:3], batch_size=1)
    assert [answer.text for answer in alone] != expected[:3]


def test_the_chat_takes_the_merged_folder(exported: dict, base_with_adapter, tmp_path: Path):
    """run_chat.py --merged answers as base + adapter does with the same seed (the web chat loads it the same way)."""
    result = run_in_process("llm/run_chat.py", "--merged", str(exported["dir"]), "--seed", "4",
                        "--memory-db", str(tmp_path / "m.db"), "--prompt", CHAT_PROMPTS[0])
    assert result.returncode == 0, result.stderr[-3000:]
    assert "merged from the TINY RANDOMLY INITIALISED" in result.stderr
    [shown] = [line.removeprefix(BOT_LABEL) for line in result.stdout.splitlines() if line.startswith(BOT_LABEL)]
    set_seed(4)
    [answer] = generate_answers(base_with_adapter.model, base_with_adapter.tokenizer, [CHAT_PROMPTS[0]],
                                temperature=0.6, batch_size=1)
    assert shown == visible_text(answer.text)


def test_a_merged_folder_is_not_a_base_model(exported: dict, trained_polyglot: dict, tmp_path: Path):
    """Given as --model-dir it would get the adapter twice: one line naming --merged instead."""
    result = run_in_process("llm/run_chat.py", "--model-dir", str(exported["dir"]), "--adapter-dir",
                        str(trained_polyglot["adapter_dir"]), "--memory-db", str(tmp_path / "m.db"), "--prompt", "안녕")
    assert result.returncode == 2 and result.stdout == ""
    assert result.stderr.splitlines() == [
        f"error: --model-dir {exported['dir']}: a merged model (the adapter is already in its weights), not a base "
        f"model; chat with it by --merged {exported['dir']}, without --model-dir and --adapter-dir"]
    assert not (tmp_path / "m.db").exists()


def test_export_again_replaces_its_folder_and_a_failed_save_keeps_the_old_one(trained_polyglot: dict, tmp_path: Path,
                                                                             monkeypatch: pytest.MonkeyPatch):
    output = tmp_path / "merged"
    args = (POLYGLOT, trained_polyglot["model_dir"], trained_polyglot["adapter_dir"], output)
    merge_into_folder(*args, say=None)
    (output / "model.safetensors").write_bytes(b"stale")  # so that a replacement shows
    merge_into_folder(*args, say=None)
    assert (output / "model.safetensors").stat().st_size > 1000
    before = {path.name: path.read_bytes() for path in output.iterdir()}

    def disk_full(model, tokenizer, folder):
        (folder / "model.safetensors").write_bytes(b"half")
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr("llm.common.merged.save_in_hub_layout", disk_full)
    with pytest.raises(OutputError, match=r"merged model not saved: no space left on"):
        merge_into_folder(*args, say=None)
    assert {path.name: path.read_bytes() for path in output.iterdir()} == before
    assert not list(tmp_path.glob(".merged.*"))


def test_a_plain_model_given_as_merged_is_not_called_merged(good_polyglot_folder, tmp_path: Path):
    result = run_in_process("llm/run_chat.py", "--merged", str(good_polyglot_folder), "--memory-db",
                            str(tmp_path / "m.db"), "--prompt", "안녕")
    assert result.returncode == 0, result.stderr[-3000:]
    assert f"--merged {good_polyglot_folder}: not a folder llm/export_model.py wrote (ohlora_merged.json is " \
           f"missing); it is answered as it is, with no adapter added" in result.stderr
    assert "was merged from" not in result.stderr
