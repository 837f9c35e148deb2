"""The web chat: a Gradio page over the same Chat the terminal uses (llm/chat/chat.py).

The model comes in as `answer(model_input, on_text) -> Answer` (on_text gets the raw text generated so far, for
streaming; see llm/chat/loading.py), so tests drive the page with a stub. Every browser tab has its own
conversation (a Chat in gr.State); the memory store is shared (each call opens its own short connection), and
generation runs one message at a time (a queue with concurrency limit 1): a second tab waits in the queue, and
the page shows its place.
"""

import contextlib
import functools
import html
import os
import queue
import re
import shutil
import signal
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field

os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")  # no calls home: the page works offline
# The page takes no files, but Gradio's upload route accepts them: they go to a folder of this process's own,
# removed when it stops, and each may be 1 kB at most (read by Gradio at import, hence here).
UPLOADS = tempfile.mkdtemp(prefix="ohlora-web-uploads-")
os.environ["GRADIO_TEMP_DIR"] = UPLOADS
MAX_UPLOAD = "1kb"
import gradio as gr  # noqa: E402

from llm.chat.chat import (  # noqa: E402
    EMPTY_ANSWER, MAX_MESSAGE_CHARS, NOT_TEXT, Chat, HasText, MessageTooLong, Turn, not_utf8, visible_text,
)
from llm.common.cli import UserError, first_line  # noqa: E402
from llm.memory.store import MemoryStore, MemoryUnavailable  # noqa: E402

Answerer = Callable[[str, Callable[[str], None] | None], HasText]  # (model input, on_text or None) -> the answer

TITLE = "오로라 (Oh-LoRA)"
COMMAND = re.compile(r"/[a-z]+")
_TAG_BEING_WRITTEN = re.compile(r"^\s*\[[^\]]*$")
MODEL_CONCURRENCY = "model"
# System fonts only: Gradio's default theme fetches Google Fonts, which an offline machine cannot reach.
THEME = gr.themes.Default(font=["Noto Sans KR", "NanumGothic", "ui-sans-serif", "system-ui", "sans-serif"],
                          font_mono=["ui-monospace", "monospace"])
CSS = """
#tiny-banner { background: #fff3cd; color: #664d03; border: 2px solid #e0a800; border-radius: 8px;
               padding: 10px 14px; font-weight: 600; }
#status { min-height: 1.5em; color: #6c2d00; }
#memory-panel table { width: 100%; border-collapse: collapse; font-size: 0.9em; }
#memory-panel th, #memory-panel td { text-align: left; padding: 4px 6px; border-bottom: 1px solid #ddd; }
"""


def _log(text: str) -> None:
    print(text, file=sys.stderr, flush=True)


@dataclass
class PageServices:
    """What the page needs from outside: the model, its length check, the shared memory, the stand-in notice."""

    answer: Answerer
    too_long: Callable[[str], str | None] = lambda model_input: None
    memory: MemoryStore | None = None
    memory_off_reason: str = "memory is off (--no-memory)"
    banner: str | None = None  # shown at the top of the page (the tiny stand-in's notice)
    log: Callable[[str], None] = field(default=_log)  # the server's console: model errors, memory failures


def shown_so_far(raw: str) -> str:
    """What the page shows while an answer is generated: as the final answer will be shown (no markers, no
    leading tag), and nothing yet while a leading tag is still being written."""
    return EMPTY_ANSWER if _TAG_BEING_WRITTEN.match(raw) else visible_text(raw)


class Conversation:
    """One browser tab's chat: its own turns and /why, the shared memory and model."""

    def __init__(self, services: PageServices) -> None:
        self.services = services
        self.lines: list[str] = []  # what the Chat says for a command
        self.notices: list[str] = []  # memory failures mid-chat, shown once in the status line
        self._on_text: Callable[[str], None] | None = None
        self.chat = Chat(self._answer, services.memory, say=self.lines.append, warn=self._warn,
                         memory_off_reason=services.memory_off_reason, too_long=services.too_long)

    def _warn(self, text: str) -> None:
        self.notices.append(text)
        self.services.log(text)

    def _answer(self, model_input: str) -> HasText:
        return self.services.answer(model_input, self._on_text)

    def command(self, text: str) -> str:
        """A /command typed in the box, answered as in the terminal chat."""
        self.lines.clear()
        if not self.chat.handle(text):
            return "(this is the web chat: close the tab to leave)"
        return "\n".join(self.lines)

    def stream(self, message: str) -> Iterator[tuple[str, object]]:
        """("text", shown so far)... then ("done", Turn), ("refused", line) or ("failed", line)."""
        events: queue.Queue = queue.Queue()
        self._on_text = lambda raw: events.put(("text", shown_so_far(raw)))

        def work() -> None:
            try:
                turn = self.chat.turn(message)
                self.chat.last_turn = turn
                events.put(("done", turn))
            except MessageTooLong as error:  # nothing was generated or stored
                events.put(("refused", f"({error})"))
            except Exception as error:  # noqa: BLE001 (the page keeps serving whatever the model does)
                what = f"{type(error).__name__}: {first_line(error)[:300]}"
                self.services.log(f"web chat: the model failed on a message: {what}")
                events.put(("failed", f"(she could not answer: {what}; nothing was stored, send it again)"))

        threading.Thread(target=work, name="web-chat-turn", daemon=True).start()
        shown = None
        while True:
            kind, value = events.get()
            if kind == "text":
                if value != shown:
                    shown = value
                    yield kind, value
                continue
            yield kind, value
            return

    def memory_html(self) -> str:
        return memory_html(self.chat.memory, self.chat.memory_off_reason)


def memory_html(memory: MemoryStore | None, off_reason: str) -> str:
    """The panel of what she remembers: tag, time, the message it came from (newest first)."""
    head = "<h3>What she remembers</h3>"
    try:
        memories = None if memory is None else memory.memories()
    except MemoryUnavailable as error:
        memories, off_reason = None, f"memory is off: {error}"
    if memories is None:
        return f'{head}<p class="memory-off">({html.escape(off_reason)})</p>'
    if not memories:
        return f'{head}<p class="memory-count">(no memories yet)</p>'
    rows = "".join(
        f'<tr class="memory"><td>{html.escape(item.tag)}</td>'
        f'<td>{item.time.strftime("%Y-%m-%d %H:%M") if item.time else "time unknown"}</td>'
        f"<td>{html.escape(item.user_message)}</td></tr>"
        for item in memories)
    return (f'{head}<p class="memory-count">{len(memories)} remembered, newest first</p>'
            f"<table><tr><th>tag</th><th>when</th><th>from your message</th></tr>{rows}</table>")


def _status(text: str) -> str:
    return f"<p>{html.escape(text)}</p>" if text else ""


def _turn_note(turn: Turn) -> str:
    notes = []
    if turn.recalled:
        notes.append(f"recalled {turn.recalled}, relevance {turn.recall_score:.2f}")
    if turn.stored:
        notes.append(f"she will remember {turn.stored}")
    if turn.forgot:
        notes.append(f"she forgot {turn.forgot}")
    return f"({'; '.join(notes)})" if notes else ""


class PageEvents:
    """What the page does when the user sends a message, opens the page or asks her to forget."""

    def __init__(self, services: PageServices) -> None:
        self.services = services

    def conversation_of(self, state: Conversation | None) -> Conversation:
        return state if isinstance(state, Conversation) else Conversation(self.services)

    def respond(self, message: str, history: list | None, state: Conversation | None):
        conversation = self.conversation_of(state)
        history = list(history or [])
        text = (message or "").strip()
        if not text:
            yield history, _status("(empty message: type something first)"), message, conversation
            return
        if not_utf8(text):
            yield history, _status(NOT_TEXT), "", conversation
            return
        if COMMAND.fullmatch(text.lower()):
            reply = conversation.command(text)
            history += [{"role": "user", "content": text}, {"role": "assistant", "content": reply}]
            yield history, _status(" ".join(conversation.notices)), "", conversation
            conversation.notices.clear()
            return
        history += [{"role": "user", "content": text}, {"role": "assistant", "content": EMPTY_ANSWER}]
        yield history, _status("(she is answering...)"), "", conversation
        for kind, value in conversation.stream(text):
            if kind == "text":
                history[-1] = {"role": "assistant", "content": value}
                yield history, _status("(she is answering...)"), "", conversation
            elif kind == "done":
                history[-1] = {"role": "assistant", "content": value.shown}
                note = " ".join([*conversation.notices, _turn_note(value)]).strip()
                conversation.notices.clear()
                yield history, _status(note), "", conversation
            else:  # refused or failed: the message goes back into the box, the conversation is as it was
                yield history[:-2], _status(value), text, conversation

    def show_memory(self, state: Conversation | None) -> str:
        if isinstance(state, Conversation):
            return state.memory_html()
        return memory_html(self.services.memory, self.services.memory_off_reason)

    def forget(self, state: Conversation | None):
        conversation = self.conversation_of(state)
        said = conversation.command("/forget")
        return conversation.memory_html(), _status(said), conversation


def build_app(services: PageServices) -> gr.Blocks:
    """The page. Start it with `launch` (tests) or `serve` (the script)."""
    events = PageEvents(services)
    with gr.Blocks(title=TITLE, analytics_enabled=False) as app:
        state = gr.State(None)
        if services.banner:
            gr.HTML(f'<div id="tiny-banner" role="alert">⚠ {html.escape(services.banner)}</div>')
        gr.Markdown(f"## {TITLE}")
        with gr.Row():
            with gr.Column(scale=3):
                chatbot = gr.Chatbot(elem_id="conversation", label="conversation", height=420,
                                     render_markdown=False, group_consecutive_messages=False,
                                     feedback_options=None, buttons=[])
                status = gr.HTML("", elem_id="status")
                with gr.Row():
                    box = gr.Textbox(elem_id="message", show_label=False, scale=5, autofocus=True,
                                     max_length=MAX_MESSAGE_CHARS,
                                     placeholder="메시지를 입력하세요 (Enter: 보내기; /memory, /why, /forget)")
                    send = gr.Button("Send", elem_id="send", variant="primary", scale=1)
            with gr.Column(scale=2):
                panel = gr.HTML(elem_id="memory-panel")
                forget_button = gr.Button("Forget everything", elem_id="forget", variant="stop")
        answered = gr.on([box.submit, send.click], events.respond, [box, chatbot, state], [chatbot, status, box, state],
                         concurrency_limit=1, concurrency_id=MODEL_CONCURRENCY, show_progress_on=[chatbot])
        # Quick reads and writes of the memory file: beside the model's queue, without a progress overlay.
        quick = {"queue": False, "show_progress": "hidden"}
        answered.then(events.show_memory, [state], [panel], **quick)
        forget_button.click(events.forget, [state], [panel, status, state], **quick)
        app.load(events.show_memory, [state], [panel], **quick)
    return app


def launch(app: gr.Blocks, host: str, port: int) -> str:
    """Start serving in a background thread; the page's address. Never a public share link."""
    app.queue()
    try:
        app.launch(server_name=host, server_port=port, share=False, prevent_thread_lock=True, quiet=True,
                   inbrowser=False, show_error=False, ssr_mode=False, mcp_server=False, pwa=False,
                   enable_monitoring=False, footer_links=[], theme=THEME, css=CSS, max_file_size=MAX_UPLOAD)
    except OSError as error:
        raise UserError(f"--port {port}: cannot listen on {host}:{port} ({first_line(error)[:300]}); "
                        f"choose another port with --port") from None
    return f"http://{host}:{port}/"


def serve(app: gr.Blocks, host: str, port: int, say: Callable[[str], None] = print) -> None:
    """Serve until Ctrl-C or SIGTERM (which run_main reports), then stop the server."""
    try:
        with _stop_signals_noted() as stops:
            url = launch(app, host, port)
            say(f"web chat: {url}  (Ctrl-C stops it)")
            while not stops:
                time.sleep(0.5)
            stops[0]()  # the signal's exception was lost while the server started: raise it now
    finally:
        app.close()  # also when Ctrl-C came while it was starting
        shutil.rmtree(UPLOADS, ignore_errors=True)


@contextlib.contextmanager
def _stop_signals_noted() -> Iterator[list[Callable[[], None]]]:
    """While open, Ctrl-C and SIGTERM raise their exception as before and are also noted (a call that raises it
    again); their handlers are put back afterwards.

    Python drops an exception raised inside a finaliser or weakref callback ("Exception ignored in ..."); a Ctrl-C
    that lands there while the server starts would be lost, and the page would serve on. The note keeps it.
    """
    stops: list[Callable[[], None]] = []
    previous = {number: signal.getsignal(number) for number in (signal.SIGINT, signal.SIGTERM)}

    def noted(handler, signum, frame):
        stops.append(lambda: handler(signum, None))
        handler(signum, frame)

    for number, handler in previous.items():
        if callable(handler):  # ignored or default: nothing is raised, nothing to keep
            signal.signal(number, functools.partial(noted, handler))
    try:
        yield stops
    finally:
        for number, handler in previous.items():
            signal.signal(number, handler)
