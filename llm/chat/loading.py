"""The model behind both chats: loaded from the chat options (base + adapter, or a merged folder), answering with
llm.common.inference.generate_answers, one generation at a time, optionally streaming the text as it comes."""

import threading
from collections.abc import Callable
from dataclasses import dataclass, field

from transformers import PreTrainedTokenizerBase, set_seed
from transformers.generation.streamers import BaseStreamer

from llm.common.adapters import load_fine_tuned
from llm.common.cli import to_stderr
from llm.common.inference import Answer, generate_answers, length_guard
from llm.common.markers import ANSWER_END
from llm.common.merged import check_not_merged, load_merged
from llm.chat.options import ChatOptions
from llm.common.device import detect
from llm.common.models import LoadedModel
from llm.common.specs import ModelSpec


class _TextSoFar(BaseStreamer):
    """Hands `on_text` the answer generated so far (decoded, cut at the end marker) after every new token.

    generate() puts the prompt first, then one token per step, and calls end() when done; an empty answer is
    generated again, so each generation starts over.
    """

    def __init__(self, tokenizer: PreTrainedTokenizerBase, on_text: Callable[[str], None]) -> None:
        self.tokenizer = tokenizer
        self.on_text = on_text
        self.tokens: list[int] | None = None  # None until the prompt of this generation has gone by
        self.stop_ids = {tokenizer.eos_token_id, tokenizer.pad_token_id}
        self.stopped = False

    def put(self, value) -> None:
        if self.tokens is None:
            self.tokens = []
            return
        if self.stopped:
            return
        token = int(value.reshape(-1)[0])
        if token in self.stop_ids:
            self.stopped = True
            return
        self.tokens.append(token)
        text = self.tokenizer.decode(self.tokens, skip_special_tokens=True)
        marker_at = text.find(ANSWER_END)
        if marker_at >= 0:
            self.stopped = True
            text = text[:marker_at]
        self.on_text(text)

    def end(self) -> None:
        self.tokens, self.stopped = None, False  # a retry's text replaces this one's from its first token


class _Streaming:
    """The model, with every generate() call streaming to one streamer (for generate_answers, which calls it)."""

    def __init__(self, model, streamer: BaseStreamer) -> None:
        self._model = model
        self._streamer = streamer

    def __getattr__(self, name: str):
        return getattr(self._model, name)

    def generate(self, **kwargs):
        return self._model.generate(**kwargs, streamer=self._streamer)


@dataclass
class ChatModel:
    """The loaded model and how the chats call it."""

    spec: ModelSpec
    loaded: LoadedModel
    temperature: float
    max_trials: int
    lock: threading.Lock = field(default_factory=threading.Lock)

    def answer(self, model_input: str, on_text: Callable[[str], None] | None = None, *,
               temperature: float | None = None, greedy: bool = False, top_p: float = 1.0,
               max_new_tokens: int | None = None, seed: int | None = None) -> Answer:
        """What the chats answer; with on_text, the raw text so far goes there while it is generated (the same
        Answer comes back either way: streaming only watches). One generation at a time, so a seed set here is
        the one this generation draws from. By default at the chat's temperature and length limit."""
        model = self.loaded.model
        if on_text is not None:
            model = _Streaming(model, _TextSoFar(self.loaded.tokenizer, on_text))
        with self.lock:
            if seed is not None:
                set_seed(seed)
            return generate_answers(model, self.loaded.tokenizer, [model_input],
                                    temperature=None if greedy else (temperature or self.temperature),
                                    top_p=top_p, max_new_tokens=max_new_tokens, max_trials=self.max_trials,
                                    batch_size=1)[0]

    def too_long(self) -> Callable[[str], str | None]:
        return length_guard(self.loaded.tokenizer, self.loaded.model.config.max_position_embeddings)

    @property
    def banner(self) -> str | None:
        """One line for a page when the answers come from the tiny stand-in (None for real weights)."""
        if not self.loaded.is_tiny:
            return None
        return (f"Tiny stand-in: no {self.spec.display_name} weights were loaded. These answers come from a tiny, "
                f"randomly initialised {self.spec.architecture} model built by this project ({self.loaded.model_dir}), "
                f"fine-tuned for a few steps: the pipeline is real, the answers are not Oh-LoRA's.")


def load_chat_model(options: ChatOptions, say: Callable[[str], None] | None = to_stderr) -> ChatModel:
    """The model the chat options name; every way it can be wrong is one UserError line. Seeds after loading."""
    spec, device = options.spec, detect()
    if options.merged is not None:
        loaded = load_merged(spec, options.merged, device.kind, device.dtype,
                             trust_pickled=options.trust_pickled_weights, say=say)
    else:
        check_not_merged(options.base_dir)
        loaded = load_fine_tuned(spec, options.base_dir, options.adapter, device.kind, device.dtype, say=say,
                                 trust_pickled=options.trust_pickled_weights)
    if options.seed is not None:
        set_seed(options.seed)  # after loading: peft's LoRA init draws random numbers
    return ChatModel(spec, loaded, options.temperature, options.max_trials)
