"""The loaded model as the API calls it: the chats' ChatModel.answer, at one request's sampling."""

from collections.abc import Callable

from llm.chat.api_requests import Sampling
from llm.chat.loading import ChatModel
from llm.common.data import token_count
from llm.common.inference import Answer
from llm.common.markers import build_prompt

GREEDY_BELOW = 0.01  # the chats' lowest --temperature: below it softmax overflows, so such a request is greedy


def api_answerer(model: ChatModel) -> Callable[[str, Sampling, Callable[[str], None] | None], Answer]:
    """answer(model input, sampling, on_text): ChatModel.answer at this request's settings."""

    def answer(model_input: str, sampling: Sampling, on_text: Callable[[str], None] | None) -> Answer:
        greedy = sampling.temperature is not None and sampling.temperature < GREEDY_BELOW
        return model.answer(model_input, on_text, temperature=sampling.temperature, greedy=greedy,
                            top_p=sampling.top_p, max_new_tokens=sampling.max_tokens, seed=sampling.seed)

    return answer


def prompt_tokens(model: ChatModel) -> Callable[[str], int]:
    """Tokens of the prompt the model reads for a model input (the usage's prompt_tokens)."""
    return lambda model_input: token_count(model.loaded.tokenizer, build_prompt(model_input))
