"""What a chat completion request asks for, checked as the OpenAI API checks it, and its errors in OpenAI's shape.

No FastAPI here (pydantic only): a request body becomes a `TurnRequest` (the one message the model answers, the
sampling, the user) or an `ApiError` (status, one line, the offending parameter).
"""

import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError

# Roles of OpenAI's chat API: every message is accepted, only the last user message is answered.
ROLES = ("system", "developer", "user", "assistant", "tool", "function")
USER_HEADERS = ("x-ohlora-user", "x-openwebui-user-id")  # ours, then Open WebUI's forwarded user id
MAX_USER_CHARS = 256
MAX_SEED = 2**32 - 1  # what numpy's and torch's seeding accept


class ApiError(Exception):
    """An answer in OpenAI's error shape: {"error": {"message", "type", "param", "code"}}."""

    def __init__(self, status: int, message: str, *, param: str | None = None, code: str | None = None,
                 kind: str = "invalid_request_error", headers: Mapping[str, str] | None = None) -> None:
        super().__init__(message)
        self.status, self.message, self.param, self.code, self.kind = status, message, param, code, kind
        self.headers = headers or {}

    def body(self) -> dict:
        return {"error": {"message": self.message, "type": self.kind, "param": self.param, "code": self.code}}


class _Message(BaseModel):
    model_config = ConfigDict(strict=True, extra="ignore")
    role: Literal[ROLES]
    content: str | None = None  # null only where OpenAI allows it (an assistant's tool call); never answered


class _StreamOptions(BaseModel):
    model_config = ConfigDict(strict=True, extra="ignore")
    include_usage: bool = False


class _Body(BaseModel):
    """The fields this server reads; the others (stop, penalties, tools...) are accepted and ignored."""

    model_config = ConfigDict(strict=True, extra="ignore", allow_inf_nan=False)
    model: str
    messages: list[_Message] = Field(min_length=1)
    temperature: float | None = Field(None, ge=0, le=2)
    top_p: float | None = Field(None, ge=0, le=1)
    max_tokens: int | None = Field(None, ge=1)
    max_completion_tokens: int | None = Field(None, ge=1)
    seed: int | None = Field(None, ge=0, le=MAX_SEED)
    n: int | None = Field(None, ge=1, le=1)
    stream: bool | None = False
    stream_options: _StreamOptions | None = None
    user: str | None = Field(None, max_length=MAX_USER_CHARS)


@dataclass(frozen=True)
class Sampling:
    """How one answer is generated: None keeps the server's setting (--temperature), or the chats' length."""

    temperature: float | None = None  # 0: greedy
    top_p: float = 1.0
    max_tokens: int | None = None
    seed: int | None = None


@dataclass(frozen=True)
class TurnRequest:
    message: str  # the last user message: what the model answers
    user: str | None  # None: the anonymous user
    sampling: Sampling = field(default_factory=Sampling)
    stream: bool = False
    include_usage: bool = False
    ignored_messages: int = 0  # the other messages (system prompt, history): read by nobody


def _reject_constant(name: str) -> float:
    raise ValueError(f"{name} is not a JSON number")


def read_json(raw: bytes) -> object:
    """The body as JSON (UTF-8, no NaN or Infinity), or a 400."""
    try:
        return json.loads(raw.decode("utf-8"), parse_constant=_reject_constant)
    except (UnicodeDecodeError, ValueError) as error:  # JSONDecodeError is a ValueError
        raise ApiError(400, f"the body is not valid JSON: {error}", code="invalid_json") from None


def _param(location: tuple) -> str:
    """pydantic's location as OpenAI names a parameter: messages[1].content."""
    text = ""
    for part in location:
        text += f"[{part}]" if isinstance(part, int) else (f".{part}" if text else str(part))
    return text


def _validation_error(error: ValidationError) -> ApiError:
    first = error.errors()[0]
    param = _param(first["loc"])
    if not param:
        return ApiError(400, "the body must be a JSON object: {\"model\": ..., \"messages\": [...]}",
                        code="invalid_type")
    if param == "messages" and first["type"] == "too_short":
        return ApiError(400, "messages: empty; send at least the user's message", param=param, code="invalid_value")
    if first["type"] == "missing":
        return ApiError(400, f"{param}: required", param=param, code="missing_required_parameter")
    if param.endswith(".content"):
        return ApiError(400, f"{param}: must be a string (this server reads text only; arrays of content parts "
                        "are not supported)", param=param, code="invalid_type")
    if param == "n":
        return ApiError(400, "n: only 1 answer per request is supported", param=param, code="invalid_value")
    message = first["msg"][0].lower() + first["msg"][1:]
    return ApiError(400, f"{param}: {message}", param=param, code="invalid_value")


def user_of(given: str | None, headers: Mapping[str, str]) -> str | None:
    """Whose memories a request reads and writes: the `user` it gives, else a user header, else None (the
    anonymous user)."""
    for candidate in (given, *(headers.get(name) for name in USER_HEADERS)):
        if candidate is not None and candidate.strip():
            if len(candidate) > MAX_USER_CHARS:
                raise ApiError(400, f"user: at most {MAX_USER_CHARS} characters", param="user", code="invalid_value")
            return candidate.strip()
    return None


def _message(body: _Body) -> tuple[str, int]:
    """(the last user message, how many other messages are ignored)."""
    users = [index for index, message in enumerate(body.messages) if message.role == "user"]
    if not users:
        raise ApiError(400, "messages: no user message to answer", param="messages", code="invalid_value")
    index = users[-1]
    content = body.messages[index].content
    param = f"messages[{index}].content"
    if content is None or not content.strip():
        raise ApiError(400, f"{param}: empty message", param=param, code="invalid_value")
    if any("\ud800" <= ch <= "\udfff" for ch in content):  # "\ud83d" alone: half of an emoji, not text
        raise ApiError(400, f"{param}: holds a lone surrogate (\\ud800-\\udfff), not text", param=param,
                       code="invalid_value")
    return content.strip(), len(body.messages) - 1


def parse_request(data: object, headers: Mapping[str, str], model_id: str) -> TurnRequest:
    """The turn a request asks for, or the ApiError that answers it (400, or 404 for another model)."""
    try:
        body = _Body.model_validate(data)
    except ValidationError as error:
        raise _validation_error(error) from None
    if body.model != model_id:
        raise ApiError(404, f"the model {body.model!r} does not exist: this server has {model_id!r} (GET /v1/models)",
                       param="model", code="model_not_found")
    message, ignored = _message(body)
    sampling = Sampling(temperature=body.temperature, top_p=1.0 if body.top_p is None else body.top_p,
                        max_tokens=body.max_completion_tokens or body.max_tokens, seed=body.seed)
    include_usage = bool(body.stream_options and body.stream_options.include_usage)
    return TurnRequest(message, user_of(body.user, headers), sampling, bool(body.stream), include_usage, ignored)
