"""What a run reports as it trains: a progress bar, each epoch's valid-prompt test and summary line, the table.

The terminal gets the bar and one line per epoch; the log gets those, every logged value as numbers, and the
full answers of each test (printed too with --verbose).
"""

import difflib
import json
import math
import time
from collections.abc import Callable
from dataclasses import dataclass

import torch
from tqdm.auto import tqdm
from transformers import PreTrainedModel, PreTrainedTokenizerBase, TrainerCallback
from transformers.trainer_utils import has_length

from llm.common.data import Example
from llm.common.inference import (
    DEFAULT_BATCH_SIZE, STOP_MARKER, Answer, format_answers, generate_answers, inner_bar_position,
)
from llm.common.logs import RunLog, epoch_losses
from llm.common.tags import split_memory_tag
from llm.common.specs import Recipe


@dataclass
class EpochSummary:
    epoch: int
    train_loss: float | None
    eval_loss: float | None
    empty: int  # answers with nothing left once the memory tag is set aside
    at_marker: int  # answers that ended at the end marker
    prompts: int
    seconds: float
    test_seconds: float = 0.0  # of `seconds`, the valid-prompt test's (read by the training benchmark)


def empty_count(answers: list[Answer]) -> int:
    return sum(not split_memory_tag(answer.text)[1] for answer in answers)


def _number(value: float | None, digits: int = 4) -> str:
    return "-" if value is None or math.isnan(value) else f"{value:.{digits}f}"


def summary_line(row: EpochSummary, epochs: int) -> str:
    return (f"epoch {row.epoch}/{epochs}: train loss {_number(row.train_loss)}, eval loss {_number(row.eval_loss)}, "
            f"empty answers {row.empty}/{row.prompts}, ended at the end marker {row.at_marker}/{row.prompts}, "
            f"{row.seconds:.1f} s")


def best_epoch(rows: list[EpochSummary]) -> EpochSummary | None:
    """The epoch with the lowest eval loss (the earliest on a tie); None without eval losses."""
    scored = [row for row in rows if row.eval_loss is not None and not math.isnan(row.eval_loss)]
    return min(scored, key=lambda row: row.eval_loss) if scored else None


def epoch_table(rows: list[EpochSummary]) -> str:
    """The per-epoch table at the end of the log, the best epoch marked."""
    best = best_epoch(rows)
    lines = ["epoch  train_loss  eval_loss  empty  at_marker  seconds",
             *(f"{row.epoch:>5}  {_number(row.train_loss):>10}  {_number(row.eval_loss):>9}  "
               f"{row.empty:>5}  {row.at_marker:>9}  {row.seconds:>7.1f}" + ("  <- lowest eval loss" if row is best else "")
               for row in rows)]
    return "\n".join(lines)


class RunProgress(TrainerCallback):
    """The progress bars of a run: "training" over all its steps, and "eval loss" while the eval loss is computed
    (removed when done); the logged values go to the log file as numbers, not to the screen."""

    def __init__(self, log: RunLog) -> None:
        self.log = log
        self.training: tqdm | None = None
        self.evaluating: tqdm | None = None

    def on_train_begin(self, args, state, control, **kwargs):
        if state.is_world_process_zero:
            self.training = tqdm(total=state.max_steps, initial=state.global_step, desc="training", dynamic_ncols=True)

    def on_step_end(self, args, state, control, **kwargs):
        if self.training is not None:
            self.training.update(state.global_step - self.training.n)

    def on_prediction_step(self, args, state, control, eval_dataloader=None, **kwargs):
        if state.is_world_process_zero and has_length(eval_dataloader):
            if self.evaluating is None:
                self.evaluating = tqdm(total=len(eval_dataloader), desc="eval loss", leave=False, dynamic_ncols=True,
                                       position=inner_bar_position())
            self.evaluating.update(1)

    def on_evaluate(self, args, state, control, **kwargs):
        if self.evaluating is not None:
            self.evaluating.close()
            self.evaluating = None

    def on_log(self, args, state, control, logs=None, **kwargs):
        if state.is_world_process_zero and logs:
            numbers = {key: value for key, value in logs.items() if key != "total_flos"}
            self.log.detail(json.dumps(numbers, ensure_ascii=False))

    def on_train_end(self, args, state, control, **kwargs):
        if self.training is not None:
            self.training.close()
            self.training = None


class EpochReport(TrainerCallback):
    """After every epoch: answer the valid prompts (sampling) into the log, then one summary line."""

    def __init__(self, valid_inputs: list[str], recipe: Recipe, log: RunLog, has_eval: bool,
                 batch_size: int = DEFAULT_BATCH_SIZE,
                 on_summary: Callable[[EpochSummary], None] | None = None) -> None:
        self.valid_inputs = valid_inputs
        self.recipe = recipe
        self.batch_size = batch_size  # prompts per generate() call of the test
        self.on_summary = on_summary  # called with each epoch's row once it is complete (the training benchmark)
        self.log = log
        self.has_eval = has_eval
        self.rows: list[EpochSummary] = []
        self._started = time.perf_counter()
        self._pending: EpochSummary | None = None

    def on_epoch_begin(self, args, state, control, **kwargs):
        self._started = time.perf_counter()

    def on_epoch_end(self, args, state, control, model=None, processing_class=None, **kwargs):
        if not state.is_world_process_zero:
            return
        epoch = round(state.epoch)
        torch.manual_seed(self.recipe.seed + epoch)
        test_started = time.perf_counter()
        answers = generate_answers(  # ends on the host (token ids as lists): the time needs no GPU synchronising
            model, processing_class, self.valid_inputs, temperature=self.recipe.temperature,
            max_trials=self.recipe.max_trials, batch_size=self.batch_size, progress=f"epoch {epoch} test",
        )
        test_seconds = time.perf_counter() - test_started
        self.log.detail(format_answers(
            f"inference test after epoch {epoch}/{round(args.num_train_epochs)} "
            f"({len(answers)} valid prompts, temperature {self.recipe.temperature})", answers))
        self._pending = EpochSummary(epoch, None, None, empty_count(answers),
                                     sum(answer.stop == STOP_MARKER for answer in answers), len(answers), 0.0,
                                     test_seconds)
        if not self.has_eval:
            self._summarise(args, state)

    def on_evaluate(self, args, state, control, metrics=None, **kwargs):
        if state.is_world_process_zero and self._pending is not None:
            self._pending.eval_loss = (metrics or {}).get("eval_loss")
            self._summarise(args, state)

    def _summarise(self, args, state) -> None:
        row, self._pending = self._pending, None
        losses = {entry.epoch: entry for entry in epoch_losses(state.log_history)}
        row.train_loss = losses[row.epoch].train_loss if row.epoch in losses else None
        row.seconds = time.perf_counter() - self._started
        self.rows.append(row)
        print(summary_line(row, round(args.num_train_epochs)))
        if self.on_summary is not None:
            self.on_summary(row)


def match_report(model: PreTrainedModel, tokenizer: PreTrainedTokenizerBase, examples: list[Example]) -> str:
    """How close greedy answers to train prompts come to the dataset's: exact matches, mean similarity, stops."""
    answers = generate_answers(model, tokenizer, [example.input_data for example in examples])
    exact = sum(answer.text == example.output_data for answer, example in zip(answers, examples))
    similarity = sum(
        difflib.SequenceMatcher(None, answer.text, example.output_data, autojunk=False).ratio()
        for answer, example in zip(answers, examples)
    ) / len(examples)
    at_marker = sum(answer.stop == STOP_MARKER for answer in answers)
    return (f"exact {exact}/{len(examples)}, mean character similarity {similarity:.3f}, "
            f"ended at the end marker {at_marker}/{len(examples)}")
