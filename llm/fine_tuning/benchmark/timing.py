"""Where an epoch's time goes: a TrainerCallback that splits each epoch into the training steps, the eval loss, the
valid-prompt test and the rest, with the peak memory of each epoch."""

import time
from collections.abc import Callable
from dataclasses import dataclass

import torch
from transformers import TrainerCallback

from llm.common.measure import peak_rss_mb, reset_peak_rss
from llm.fine_tuning.benchmark.flops import matmul_parameters
from llm.fine_tuning.benchmark.results import EpochTimes

@dataclass
class _OpenEpoch:
    begin: float
    first_step: int
    steps_end: float | None = None
    steps: int = 0
    eval_end: float | None = None
    summary: object = None  # the epoch's EpochSummary, once EpochReport has made it


class EpochTimer(TrainerCallback):
    """Runs before the run's own callbacks, so its on_epoch_end marks the end of the steps before the test, and its
    on_evaluate the end of the eval loss; the test's seconds come with the epoch's summary row (`summary`). An
    epoch ends where the next begins (the last where training ends): the parts add up to the training's wall time.
    Each finished epoch goes to `emit`; with max_seconds, training stops after the epoch that would end past it."""

    def __init__(self, on_gpu: bool, epochs: int, max_seconds: float | None,
                 emit: Callable[[EpochTimes], None]) -> None:
        self.on_gpu, self.epochs, self.max_seconds, self.emit = on_gpu, epochs, max_seconds, emit
        self.rows: list[EpochTimes] = []
        self.train_begin: float | None = None
        self.train_end: float | None = None
        self.tokens_per_epoch: int | None = None
        self.parameters = (0, 0)
        self.stopped_early = False
        self._open: _OpenEpoch | None = None
        self._setup = 0.0

    def now(self) -> float:
        if self.on_gpu:
            torch.cuda.synchronize()  # GPU work is asynchronous: time what has run, not what was queued
        return time.perf_counter()

    def on_train_begin(self, args, state, control, model=None, train_dataloader=None, **kwargs):
        self.train_begin = self.now()
        self.parameters = matmul_parameters(model)
        dataset = getattr(train_dataloader, "dataset", None)
        if dataset is not None and "input_ids" in getattr(dataset, "column_names", ()):
            self.tokens_per_epoch = sum(len(ids) for ids in dataset["input_ids"])

    def on_epoch_begin(self, args, state, control, **kwargs):
        now = self.now()
        if self._open is None and not self.rows:
            self._setup = now - self.train_begin  # the Trainer's own set-up: counted in epoch 1's rest
        self._close(now)
        if self.on_gpu:
            torch.cuda.reset_peak_memory_stats()
        else:
            reset_peak_rss()
        self._open = _OpenEpoch(begin=now, first_step=state.global_step)

    def on_epoch_end(self, args, state, control, **kwargs):
        now = self.now()
        opened = self._open
        opened.steps_end, opened.steps = now, state.global_step - opened.first_step
        done = self.rows[-1].epoch_s if self.rows else None
        if self.max_seconds is not None and done is not None and round(state.epoch) < self.epochs:
            rest_of_this = max(done - (now - opened.begin), 0.0)
            if now - self.train_begin + rest_of_this + done > self.max_seconds:
                control.should_training_stop = True
                self.stopped_early = True

    def on_evaluate(self, args, state, control, **kwargs):
        if self._open is not None and self._open.steps_end is not None and self._open.eval_end is None:
            self._open.eval_end = self.now()

    def summary(self, row) -> None:
        """EpochReport's on_summary: the epoch's test seconds and losses."""
        if self._open is not None:
            self._open.summary = row

    def on_train_end(self, args, state, control, **kwargs):
        self.train_end = self.now()
        self._close(self.train_end)

    def _memory(self) -> dict[str, float | None]:
        if self.on_gpu:
            return dict(peak_allocated_mb=torch.cuda.max_memory_allocated() / 2**20,
                        peak_reserved_mb=torch.cuda.max_memory_reserved() / 2**20, peak_rss_mb=None)
        return dict(peak_allocated_mb=None, peak_reserved_mb=None, peak_rss_mb=peak_rss_mb())

    def _close(self, boundary: float) -> None:
        opened, self._open = self._open, None
        if opened is None:
            return
        row = opened.summary
        test = row.test_seconds if row is not None else 0.0
        steps_end = opened.steps_end or boundary
        if opened.eval_end is None:  # no eval loss (a dataset without valid answers): the test, then the rest
            eval_s, other = 0.0, boundary - steps_end - test
        else:
            eval_s, other = opened.eval_end - steps_end - test, boundary - opened.eval_end
        if not self.rows:
            other += self._setup
        times = EpochTimes(len(self.rows) + 1, opened.steps, steps_end - opened.begin, eval_s, test, other,
                           self.tokens_per_epoch, **self._memory(),
                           train_loss=row.train_loss if row is not None else None,
                           eval_loss=row.eval_loss if row is not None else None)
        self.rows.append(times)
        self.emit(times)
