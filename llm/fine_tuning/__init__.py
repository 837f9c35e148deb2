"""The fine-tuning program (program.py: prepare -> train -> finish), its resume logic and its benchmarks."""

from llm.common.cli import run_main
from llm.common.specs import ModelSpec

RESUME_HINT = " (run the same command with --resume to continue from the last saved epoch)"


def run_fine_tuning(spec: ModelSpec) -> None:
    """What a run_fine_tuning script does; --help and bad options answer before torch is imported."""
    from llm.fine_tuning.options import parse_options

    def main() -> int:
        options = parse_options(spec)
        if options.dry_run:
            from llm.common.logs import lines_above_bars
            from llm.fine_tuning.dry_run import dry_run

            with lines_above_bars():  # its long lines break between words in a terminal
                return dry_run(spec, options)
        from llm.fine_tuning.program import fine_tune

        return fine_tune(spec, options)

    run_main(main, interrupted_hint=RESUME_HINT)
