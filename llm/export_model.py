"""Merge the fine-tuned LoRA adapter into its base model and save a plain Hugging Face folder.

The folder (safetensors weights, tokenizer, config, generation_config.json that stops at the end marker) loads
with `AutoModelForCausalLM.from_pretrained` alone: no peft, no project code. The chats take it with --merged.

Usage: python llm/export_model.py --help
"""

import dataclasses
import sys
from pathlib import Path

try:
    from llm.chat.options import ModelChoice
except ModuleNotFoundError as missing:  # started outside the virtualenv of the README's set-up
    sys.exit(f"error: {missing}; activate the project's virtualenv first: . .venv/bin/activate")
from llm.common.cli import ArgumentParser, run_main
from llm.common.folders import MERGED_MODEL, read_adapter
from llm.common.logs import lines_above_bars
from llm.common.options import add_options, from_args, option
from llm.common.outputs import OutputError, check_not_busy, check_replaceable
from llm.common.specs import SPECS, ModelSpec, repo_relative

_DEFAULTS = ", ".join(f"{name}: {repo_relative(spec.merged_dir)}" for name, spec in sorted(SPECS.items()))


@dataclasses.dataclass(frozen=True)
class ExportOptions(ModelChoice):
    output_dir: Path | None = option(None, f"where the merged folder goes; replaced only if this project saved it "
                                     f"({_DEFAULTS})", type=Path)


def parse_options(argv: list[str] | None = None) -> ExportOptions:
    parser = ArgumentParser(
        description="Merge the LoRA adapter saved by fine-tuning into its base model and save the result as a plain "
                    "Hugging Face folder (safetensors, tokenizer with a chat template, config, generation_config.json "
                    "that stops at the EOS the model writes after the end marker), for transformers, vLLM or "
                    "llama.cpp's converter; the chats load it with --merged.",
    )
    add_options(parser, ExportOptions)
    return from_args(ExportOptions, parser.parse_args(argv))


def _check_output(output_dir: Path, model_dir: Path, adapter_dir: Path) -> Path:
    """The output folder resolved, once it is known that saving there destroys nothing (before any work)."""
    output = Path(output_dir).expanduser().resolve()
    for folder, what in ((adapter_dir, "the adapter"), (model_dir, "the base model")):
        folder = Path(folder).expanduser().resolve()
        if output == folder or output in folder.parents:
            raise OutputError(f"--output-dir {output}: {'is' if output == folder else 'holds'} {what} folder "
                              f"({folder}), which the export reads; choose another folder")
    return check_replaceable(output, "--output-dir", MERGED_MODEL)


def main() -> int:
    options = parse_options()
    spec = options.spec
    output = _check_output(options.output_dir or spec.merged_dir, options.base_dir, options.adapter)
    read_adapter(spec, options.adapter)  # a missing or broken adapter: one line before torch's seconds of import
    # torch and transformers load only now, so that --help and bad options answer at once.
    from llm.common.merged import merge_into_folder

    check_not_busy(output, "--output-dir")
    info = merge_into_folder(spec, options.base_dir, options.adapter, output,
                             trust_pickled=options.trust_pickled_weights)
    files = sorted(path for path in output.iterdir() if path.is_file())
    with lines_above_bars():  # its long lines break between words in a terminal
        _report(spec, info, output, files)
    return 0


def _report(spec: ModelSpec, info: dict, output: Path, files: list[Path]) -> None:
    """What the export wrote, and how to chat with it."""
    size = sum(path.stat().st_size for path in files) / 2**20
    print(f"merged {info['adapter']} into {info['base']} ({info['dtype']}): {output}")
    print(f"  {len(files)} files, {size:.1f} MiB: {', '.join(path.name for path in files)}")
    if info["adapter_trained_over"] != "none":
        print(f"  the adapter trained over the base's weights held in {info['adapter_trained_over']} (QLoRA); it is "
              f"merged into the base's own {info['dtype']} weights, as the chats use it")
    print(f"  chat with it: python llm/run_chat.py{'' if spec.name == 'polyglot' else ' --model ' + spec.name} "
          f"--merged {repo_relative(output)}")
    if info["tiny_stand_in"]:
        print("  (merged from the tiny stand-in, so the answers are noise: export again once the real weights "
              f"are in {repo_relative(spec.model_dir)})")


if __name__ == "__main__":
    run_main(main)
