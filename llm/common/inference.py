"""Answering prompts: batched generation that stops at the end marker and retries empty answers."""

import sys
from collections.abc import Callable
from dataclasses import dataclass

import torch
from tqdm.auto import tqdm
from transformers import PreTrainedModel, PreTrainedTokenizerBase

from llm.common.data import token_count
from llm.common.markers import ANSWER_END, build_prompt, printable_line, strip_markers
from llm.common.tags import split_memory_tag
from llm.common.specs import DEFAULT_BATCH_SIZE, MAX_LENGTH

MIN_NEW_TOKENS = 8  # so that a prompt near MAX_LENGTH still gets a chance to answer
DEFAULT_MAX_TRIALS = 5


STOP_MARKER, STOP_EOS, STOP_LENGTH = "end marker", "EOS", "length limit"


def inner_bar_position() -> int | None:
    """Where a bar opened under another one goes: stacked below it on a terminal (tqdm's choice, None); on the
    first line when stderr is a file or a pipe, where stacking would write cursor moves (ESC [A) into it."""
    return None if getattr(sys.stderr, "isatty", lambda: False)() else 0


@dataclass(frozen=True)
class Answer:
    user_input: str
    text: str  # markers and their pieces stripped; a leading memory tag is kept
    trials: int  # generations it took (more than 1 when earlier answers were empty)
    output_tokens: int  # tokens generated in the last trial
    stop: str = STOP_MARKER  # what ended it: STOP_MARKER, STOP_EOS or STOP_LENGTH

    @property
    def stopped(self) -> bool:
        """Ended on its own (the end marker or EOS), not cut off at the length limit."""
        return self.stop != STOP_LENGTH


def _decode_answer(tokenizer: PreTrainedTokenizerBase, new_tokens: list[int]) -> tuple[str, int, str]:
    """(answer text, tokens generated, what stopped it) from the tokens generated after the prompt."""
    stop_ids = {tokenizer.eos_token_id, tokenizer.pad_token_id}
    length = next((i for i, token in enumerate(new_tokens) if token in stop_ids), None)
    tokens = new_tokens if length is None else new_tokens[:length]
    text = tokenizer.decode(tokens, skip_special_tokens=True)
    marker_at = text.find(ANSWER_END)
    if marker_at >= 0:
        return strip_markers(text[:marker_at]), len(tokens), STOP_MARKER
    return strip_markers(text), len(tokens), STOP_LENGTH if length is None else STOP_EOS


def format_answers(title: str, answers: list[Answer]) -> str:
    """The block a log shows for one inference test."""
    lines = [f"=== {title} ==="]
    for number, answer in enumerate(answers, start=1):
        lines.append(f"[{number}/{len(answers)}] prompt: {answer.user_input}")
        lines.append(f"    answer: {printable_line(answer.text)}")
        lines.append(f"    (trials: {answer.trials}, output tokens: {answer.output_tokens}, stopped by: {answer.stop})")
    return "\n".join(lines)


@torch.no_grad()
def _generate_batch(model: PreTrainedModel, tokenizer: PreTrainedTokenizerBase, prompts: list[str],
                    temperature: float | None, max_length: int, top_p: float = 1.0,
                    max_new_tokens: int | None = None) -> list[tuple[str, int, str]]:
    encoded = tokenizer(prompts, return_tensors="pt", padding=True).to(model.device)
    prompt_lengths = encoded["attention_mask"].sum(dim=1).tolist()
    # Each prompt gets its own budget, so an answer does not depend on the batch it landed in.
    budgets = [max(max_length - length, MIN_NEW_TOKENS) for length in prompt_lengths]
    if max_new_tokens is not None:  # a caller may shorten an answer, never lengthen it past max_length
        budgets = [min(budget, max_new_tokens) for budget in budgets]
    sampling = {"do_sample": True, "temperature": temperature, "top_k": 0, "top_p": top_p} \
        if temperature else {"do_sample": False, "temperature": None, "top_k": None, "top_p": None}
    output = model.generate(
        **encoded,
        max_new_tokens=max(budgets),
        stop_strings=[ANSWER_END],
        tokenizer=tokenizer,
        pad_token_id=tokenizer.pad_token_id,
        eos_token_id=tokenizer.eos_token_id,
        **sampling,
    )
    new_tokens = output[:, encoded["input_ids"].shape[1]:].tolist()
    return [_decode_answer(tokenizer, tokens[:budget]) for tokens, budget in zip(new_tokens, budgets)]


def length_guard(tokenizer: PreTrainedTokenizerBase, context: int) -> Callable[[str], str | None]:
    """For the chat: why an input is too long for the model's context (None when it fits), so that it is
    refused in a line instead of run past the positions the model was trained on."""
    limit = context - MIN_NEW_TOKENS  # the room the shortest answer needs

    def too_long(user_input: str) -> str | None:
        tokens = token_count(tokenizer, build_prompt(user_input))
        if tokens <= limit:
            return None
        return f"message too long: {tokens} tokens with the prompt markers, she reads at most {limit}; say it in fewer words"

    return too_long


def generate_answers(model: PreTrainedModel, tokenizer: PreTrainedTokenizerBase, user_inputs: list[str], *,
                     temperature: float | None = None, max_length: int = MAX_LENGTH,
                     batch_size: int = DEFAULT_BATCH_SIZE, max_trials: int = DEFAULT_MAX_TRIALS,
                     top_p: float = 1.0, max_new_tokens: int | None = None,
                     progress: str | None = None) -> list[Answer]:
    """Answer every input, in batches of similar length; sample at `temperature` (nucleus `top_p`), or greedy
    when None; `max_new_tokens` only shortens the budget `max_length` leaves.

    Empty answers are generated again (sampling only: greedy would repeat them) up to `max_trials`.
    """
    was_training = model.training
    model.eval()
    prompts = [build_prompt(user_input) for user_input in user_inputs]
    lengths = [len(tokenizer(prompt)["input_ids"]) for prompt in prompts]
    results: dict[int, tuple[str, int, str]] = {}
    trials = [0] * len(prompts)
    pending = sorted(range(len(prompts)), key=lambda i: lengths[i])
    bar = tqdm(total=len(prompts), desc=progress, disable=progress is None, leave=False, position=inner_bar_position())
    while pending:
        for start in range(0, len(pending), batch_size):
            batch = pending[start:start + batch_size]
            outputs = _generate_batch(model, tokenizer, [prompts[i] for i in batch], temperature, max_length,
                                      top_p, max_new_tokens)
            for index, output in zip(batch, outputs):
                results[index] = output
                trials[index] += 1
        answered = {i for i in pending if split_memory_tag(results[i][0])[1]}
        retry_allowed = temperature is not None
        still_pending = [i for i in pending if i not in answered and retry_allowed and trials[i] < max_trials]
        bar.update(len(pending) - len(still_pending))
        pending = still_pending
    bar.close()
    model.train(was_training)
    return [
        Answer(user_inputs[i], results[i][0], trials[i], results[i][1], results[i][2])
        for i in range(len(prompts))
    ]
