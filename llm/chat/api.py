"""Oh-LoRA behind the OpenAI chat API (FastAPI): GET /v1/models, POST /v1/chat/completions (plain or streamed),
and GET / DELETE /v1/memories (what she remembers of one user, and forgetting it).

The turns themselves (each user's memory, one generation at a time) are llm/chat/api_turns.py's; the model comes in
as ApiServices.answer (llm/chat/api_model.py), so tests serve the app over a stub.
"""

import asyncio
import secrets
import time
from collections.abc import Callable
from concurrent.futures import Future

import uvicorn
from fastapi import APIRouter, Depends, FastAPI, Request
from fastapi.concurrency import run_in_threadpool
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, Response, StreamingResponse
from starlette.exceptions import HTTPException

from llm.chat.api_requests import ApiError, TurnRequest, parse_request, read_json, user_of
from llm.chat.api_stream import DONE, Completion, event, streamable
from llm.chat.api_turns import ApiServices, ModelGate, Turns
from llm.common.cli import error_line
from llm.memory.store import MemoryStore

MAX_BODY_BYTES = 1 << 20  # a request past this is a 413, before any of it is parsed
STAND_IN_HEADER = "X-OhLoRA-Stand-In"
STAND_IN_NOTICE = "tiny stand-in: randomly initialised, not Oh-LoRA's weights; the answers are noise"


async def read_body(request: Request) -> bytes:
    """The request's body, or a 413 past MAX_BODY_BYTES (read no further)."""
    too_large = ApiError(413, f"the request is larger than {MAX_BODY_BYTES} bytes", code="request_too_large")
    length = request.headers.get("content-length", "")
    if length.isdigit() and int(length) > MAX_BODY_BYTES:
        raise too_large
    body = bytearray()
    async for chunk in request.stream():
        body += chunk
        if len(body) > MAX_BODY_BYTES:
            raise too_large
    return bytes(body)


def _authorize(key: str | None) -> Callable[[Request], None]:
    def check(request: Request) -> None:
        if key is None:
            return
        scheme, _, token = request.headers.get("authorization", "").partition(" ")
        if scheme.lower() != "bearer" or not secrets.compare_digest(token.strip().encode(), key.encode()):
            raise ApiError(401, "missing or wrong API key: send the server's --api-key as Authorization: Bearer KEY",
                           code="invalid_api_key")
    return check


class _StandInHeader:
    """ASGI middleware: every response says that the answers come from the tiny stand-in."""

    def __init__(self, app, notice: str) -> None:
        self.app = app
        self.header = (STAND_IN_HEADER.lower().encode(), notice.encode("ascii", "replace"))

    async def __call__(self, scope, receive, send) -> None:
        async def send_marked(message) -> None:
            if message["type"] == "http.response.start":
                message = {**message, "headers": [*message.get("headers", []), self.header]}
            await send(message)

        await self.app(scope, receive, send_marked if scope["type"] == "http" else send)


def _error_handlers(app: FastAPI) -> None:
    """Every error in OpenAI's shape; FastAPI's 422 is a 400, as OpenAI answers a bad parameter."""

    @app.exception_handler(ApiError)
    async def api_error(request: Request, error: ApiError) -> JSONResponse:
        return JSONResponse(error.body(), error.status, headers=dict(error.headers))

    @app.exception_handler(HTTPException)
    async def http_error(request: Request, error: HTTPException) -> JSONResponse:
        message = {404: f"unknown URL {request.url.path} (this server has /v1/models, /v1/chat/completions and "
                        "/v1/memories)", 405: f"{request.method} is not allowed on {request.url.path}"}
        return await api_error(request, ApiError(error.status_code, message.get(error.status_code, str(error.detail)),
                                                 code="not_found" if error.status_code == 404 else None,
                                                 headers=error.headers))

    @app.exception_handler(RequestValidationError)
    async def validation_error(request: Request, error: RequestValidationError) -> JSONResponse:
        return await api_error(request, ApiError(400, f"bad request: {error.errors()[0]['msg']}"))

    @app.exception_handler(Exception)
    async def unexpected(request: Request, error: Exception) -> JSONResponse:  # uvicorn logs the traceback
        return await api_error(request, ApiError(500, f"internal error ({error_line(error)[:300]})",
                                                 kind="server_error", code="internal_error"))


def build_app(services: ApiServices) -> FastAPI:
    """The API. Serve it with `serve`; the gate is app.state.gate (tests watch its queue)."""
    app = FastAPI(title="Oh-LoRA", docs_url=None, redoc_url=None, openapi_url=None)
    app.state.gate = gate = ModelGate(services.queue_limit)
    turns = Turns(services)
    card = {"id": services.model_id, "object": "model", "created": int(time.time()), "owned_by": "ohlora"}
    router = APIRouter(prefix="/v1", dependencies=[Depends(_authorize(services.api_key))])

    @router.get("/models")
    def models() -> dict:
        return {"object": "list", "data": [card]}

    @router.get("/models/{model_id:path}")
    def model(model_id: str) -> dict:
        if model_id != services.model_id:
            raise ApiError(404, f"the model {model_id!r} does not exist: this server has {services.model_id!r}",
                           param="model", code="model_not_found")
        return card

    @router.post("/chat/completions")
    async def chat_completions(request: Request):
        turn = parse_request(read_json(await read_body(request)), request.headers, services.model_id)
        reason = await run_in_threadpool(services.too_long, turn.message)  # before it waits in the queue
        if reason is not None:
            raise ApiError(400, reason, param="messages", code="context_length_exceeded")
        completion = Completion(services.model_id)
        if turn.stream:
            return await _stream(request, gate, turns, turn, completion)
        future = gate.submit(lambda: turns.run(turn, None))
        if await _unless_gone(request, _ended(future)) is None:
            return _gone(future)
        return completion.body(turns.outcome(future), turn.ignored_messages)

    @router.get("/memories")
    def memories(request: Request, user: str | None = None) -> dict:
        memory = _memory_or_error(turns, user_of(user, request.headers))
        items = [{"tag": item.tag, "user_message": item.user_message,
                  "time": item.time.isoformat() if item.time else None} for item in memory.memories()]
        return {"object": "list", "data": items}

    @router.delete("/memories")
    def forget(request: Request, user: str | None = None) -> dict:
        memory = _memory_or_error(turns, user_of(user, request.headers))
        count = len(memory.memories())
        memory.clear()
        return {"object": "memories.deleted", "deleted": count}

    app.include_router(router)
    _error_handlers(app)
    if services.stand_in:
        app.add_middleware(_StandInHeader, notice=services.stand_in)
    return app


def _memory_or_error(turns: Turns, user: str | None) -> MemoryStore:
    memory, off = turns.memory_of(user)
    if memory is None:
        raise ApiError(409, off or "memory is off", code="memory_off")
    return memory


async def _ended(future: Future) -> None:
    """Returns once the turn has ended, without raising: Turns.outcome reads how it ended."""
    ended = asyncio.wrap_future(future)
    await asyncio.wait([ended])
    if not ended.cancelled():
        ended.exception()  # read here, so that asyncio does not log it as never retrieved


def _gone(future: Future) -> Response:
    """For a client that left while its turn waited: the turn leaves the queue (one being generated is finished)."""
    future.cancel()
    return Response(status_code=499)  # nginx's "client closed request": nobody reads it


async def _disconnect(request: Request) -> None:
    """Returns when the client has gone (the body is read by then: what comes next is the disconnect)."""
    while (await request.receive())["type"] != "http.disconnect":
        pass


async def _unless_gone(request: Request, waiting) -> asyncio.Future | None:
    """`waiting`, once done; None when the client left first (then it is cancelled)."""
    waited, gone = asyncio.ensure_future(waiting), asyncio.ensure_future(_disconnect(request))
    await asyncio.wait({waited, gone}, return_when=asyncio.FIRST_COMPLETED)
    gone.cancel()
    if waited.done():
        return waited
    waited.cancel()
    return None


async def _stream(request: Request, gate: ModelGate, turns: Turns, turn: TurnRequest,
                  completion: Completion) -> Response:
    """The answer as server-sent events. The response starts with the first text generated, so that a message that
    fails before (too long once a memory is put in front) is still a plain error."""
    loop = asyncio.get_running_loop()
    events: asyncio.Queue = asyncio.Queue()  # raw text so far (str), then the finished Future

    def put(item: object) -> None:
        loop.call_soon_threadsafe(events.put_nowait, item)

    future = gate.submit(lambda: turns.run(turn, put))
    future.add_done_callback(put)
    waited = await _unless_gone(request, events.get())
    if waited is None:
        return _gone(future)
    first = waited.result()
    if isinstance(first, Future):
        turns.outcome(first)  # raises the error, if it failed
    return StreamingResponse(_events(first, events, turns, turn, completion), media_type="text/event-stream",
                             headers={"Cache-Control": "no-cache"})


async def _events(item: object, events: asyncio.Queue, turns: Turns, turn: TurnRequest, completion: Completion):
    """The stream's chunks: what can be shown of the text so far as it grows, then the rest, the end, [DONE]."""
    sent = ""
    yield completion.chunk({"role": "assistant", "content": ""})
    while not isinstance(item, Future):
        shown = streamable(item)
        if len(shown) > len(sent) and shown.startswith(sent):
            yield completion.chunk({"content": shown[len(sent):]})
            sent = shown
        item = await events.get()
    try:
        finished = turns.outcome(item)
    except ApiError as error:  # the client's library raises it
        yield event(error.body())
        return
    answer = finished.turn.shown
    if not answer.startswith(sent):  # streamable's promise broken: say so, the client keeps what it has
        turns.services.log(f"API: streamed {sent!r}, but the answer is {answer!r}")
    elif len(answer) > len(sent):
        yield completion.chunk({"content": answer[len(sent):]})
    yield completion.chunk({}, finished.finish_reason, ohlora=finished.memory_note(turn.ignored_messages))
    if turn.include_usage:
        yield completion.usage_chunk(finished)
    yield DONE


class _Server(uvicorn.Server):
    """uvicorn, saying where it listens once it does."""

    def __init__(self, config: uvicorn.Config, on_started: Callable[[], None]) -> None:
        super().__init__(config)
        self.on_started = on_started

    async def startup(self, sockets=None) -> None:
        await super().startup(sockets)
        if self.started:
            self.on_started()


def serve(app: FastAPI, host: str, port: int, say: Callable[[str], None] = print) -> None:
    """Serve until Ctrl-C or SIGTERM (uvicorn finishes the answers under way, then run_main reports the signal)."""
    shown = f"[{host}]" if ":" in host else host
    config = uvicorn.Config(app, host=host, port=port, log_level="warning", access_log=False)
    _Server(config, lambda: say(f"API: http://{shown}:{port}/v1  (Ctrl-C stops it)")).run()
