"""The LoRA adapter merged into its base: a plain Hugging Face folder that loads without peft or this project.

`llm/export_model.py` writes it (`merge_into_folder`); the chats load it with `--merged DIR` (`load_merged`).
Besides the weights, tokenizer and config, the folder holds a generation_config.json that carries the recipe's
sampling and stops at the EOS the model writes right after the end marker, so
`AutoModelForCausalLM.from_pretrained(DIR).generate(**inputs)` or `pipeline("text-generation", model=DIR)` (or
vLLM) answers like the chat, and ohlora_merged.json, which says what was merged (and marks the folder as merged, so
that it is never used as a base for a second copy of the adapter).
"""

import json
import warnings
from collections.abc import Callable
from pathlib import Path

import torch
from transformers import GenerationConfig, PreTrainedModel, PreTrainedTokenizerBase

from llm.common.adapters import load_fine_tuned
from llm.common.cli import UserError, to_stderr
from llm.common.inference import MAX_LENGTH
from llm.common.markers import ANSWER_START
from llm.common.folders import MERGED_MODEL, folder_is_empty, is_tiny_stand_in, read_json_object
from llm.common.models import LoadedModel, load_local, read_config, save_in_hub_layout
from llm.common.outputs import output_lock, read_saved_info, save_folder_atomically
from llm.common.specs import Recipe, ModelSpec, repo_relative

MERGED_INFO = "ohlora_merged.json"  # what was merged into what; its presence marks a merged folder
EXPORT_SCRIPT = "llm/export_model.py"
DTYPES = {"float32": torch.float32, "float16": torch.float16, "bfloat16": torch.bfloat16}


class MergedError(UserError):
    """A merged folder that is absent, or one used where a base model is expected."""


def is_merged_folder(folder: Path) -> bool:
    return (Path(folder) / MERGED_INFO).is_file()


def read_merged_info(folder: Path) -> dict:
    """What ohlora_merged.json says ({} when it is missing or unreadable: a merged folder made elsewhere)."""
    return read_json_object(Path(folder) / MERGED_INFO) or {}


def check_not_merged(model_dir: Path, option: str = "--model-dir") -> None:
    """A merged folder as the base would get the adapter a second time: refused in one line."""
    if is_merged_folder(model_dir):
        raise MergedError(f"{option} {model_dir}: a merged model (the adapter is already in its weights), not a base "
                          f"model; chat with it by --merged {model_dir}, without --model-dir and --adapter-dir")


def export_command(spec: ModelSpec, output_dir: Path) -> str:
    command = f"python {EXPORT_SCRIPT}" + ("" if spec.name == "polyglot" else f" --model {spec.name}")
    if spec.merged_dir is None or Path(output_dir).resolve() != spec.merged_dir.resolve():
        command += f" --output-dir {output_dir}"
    return command


def generation_config(tokenizer: PreTrainedTokenizerBase) -> GenerationConfig:
    """The chat's sampling as defaults for other programs: the recipe's temperature, no top-k / top-p cut (as
    llm/common/inference.py samples), at most MAX_LENGTH new tokens, and the end as a token id: fine-tuning
    taught the model to write EOS right after the end marker, and an `eos_token_id` is what plain `generate`,
    `pipeline`, vLLM and llama.cpp all stop on (stop strings need `generate(..., tokenizer=...)`; a length in
    `max_length` would clash with a caller's `max_new_tokens`)."""
    return GenerationConfig(
        do_sample=True, temperature=Recipe.temperature, top_k=0, top_p=1.0, max_new_tokens=MAX_LENGTH,
        eos_token_id=tokenizer.eos_token_id, pad_token_id=tokenizer.pad_token_id, bos_token_id=tokenizer.bos_token_id,
    )


# For programs that speak in chat messages (pipeline with messages, vLLM's chat API): the model was trained on
# single turns, so the prompt is the last user message in the training format.
CHAT_TEMPLATE = ("{%- for message in messages if message['role'] == 'user' %}{%- if loop.last %}"
                 "{{ message['content'] | trim }} " + ANSWER_START + "{%- endif %}{%- endfor %}")


def base_dtype(model_dir: Path) -> torch.dtype:
    """The dtype the base weights were published in (config.json's), float32 when it names none."""
    recorded = getattr(read_config(model_dir), "dtype", None)
    if isinstance(recorded, str):
        recorded = DTYPES.get(recorded)
    return recorded if recorded in DTYPES.values() else torch.float32


def merge_into_folder(spec: ModelSpec, model_dir: Path, adapter_dir: Path, output_dir: Path,
                      trust_pickled: bool = False, say: Callable[[str], None] | None = to_stderr) -> dict:
    """Merge the adapter into its base (in fp32 on the CPU) and save the result atomically at output_dir, in the
    base's dtype; returns what ohlora_merged.json records. The adapter's errors are load_fine_tuned's lines."""
    model_dir, adapter_dir, output_dir = Path(model_dir), Path(adapter_dir), Path(output_dir)
    check_not_merged(model_dir)
    loaded = load_fine_tuned(spec, model_dir, adapter_dir, "cpu", torch.float32, say=say, trust_pickled=trust_pickled)
    dtype = base_dtype(loaded.model_dir)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # peft's notices about merging; the result is checked by the tests
        merged: PreTrainedModel = loaded.model.merge_and_unload()
    merged = merged.to(dtype)
    merged.generation_config = generation_config(loaded.tokenizer)
    loaded.tokenizer.chat_template = CHAT_TEMPLATE
    info = {
        "model": spec.name, "architecture": spec.architecture, "base": repo_relative(loaded.model_dir),
        "adapter": repo_relative(adapter_dir), "tiny_stand_in": loaded.is_tiny,
        "dtype": str(dtype).removeprefix("torch."),
        "adapter_trained_over": read_saved_info(adapter_dir).get("quantization", "none"),
    }

    def write(staging: Path) -> None:
        save_in_hub_layout(merged, loaded.tokenizer, staging)
        (staging / MERGED_INFO).write_text(json.dumps(info, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")

    with output_lock(output_dir, "--output-dir"):  # a second export to the same folder is refused, not mixed in
        save_folder_atomically(output_dir, write, MERGED_MODEL)
    return info


def merged_tiny_notice(spec: ModelSpec, merged_dir: Path) -> str:
    bar = "!" * 78
    return (
        f"{bar}\n"
        f"!! NOTICE: {merged_dir} was merged from the TINY RANDOMLY INITIALISED {spec.architecture} stand-in\n"
        f"!! built by this project, not from {spec.display_name}. The pipeline is real; the answers are not\n"
        f"!! Oh-LoRA's. Export again once the weights are in {repo_relative(spec.model_dir)}.\n"
        f"{bar}"
    )


def load_merged(spec: ModelSpec, merged_dir: Path, device: str, dtype: torch.dtype, trust_pickled: bool = False,
                say: Callable[[str], None] | None = to_stderr) -> LoadedModel:
    """A merged folder, checked like any weights folder (one line when it is broken), ready to answer."""
    merged_dir = Path(merged_dir)
    if folder_is_empty(merged_dir):
        raise MergedError(f"no merged model in {merged_dir}: make one with `{export_command(spec, merged_dir)}`")
    loaded = load_local(spec, merged_dir, device, dtype, trust_pickled)
    recorded = read_merged_info(merged_dir).get("tiny_stand_in")
    loaded.is_tiny = recorded if isinstance(recorded, bool) else is_tiny_stand_in(spec, merged_dir)
    if say is not None:
        if not is_merged_folder(merged_dir):  # a base model, or one merged elsewhere: nothing says it was merged
            say(f"--merged {merged_dir}: not a folder llm/export_model.py wrote ({MERGED_INFO} is missing); it is "
                f"answered as it is, with no adapter added"
                + (" (it is the TINY RANDOMLY INITIALISED stand-in: the answers are noise)" if loaded.is_tiny else ""))
        elif loaded.is_tiny:
            say(merged_tiny_notice(spec, merged_dir))
    # The folder's generation_config.json is for other programs; the chats pass every setting themselves
    # (llm/common/inference.py), exactly as on base + adapter, so its defaults (max_length) must not mix in.
    loaded.model.generation_config = GenerationConfig.from_model_config(loaded.model.config)
    loaded.model.eval()
    return loaded
