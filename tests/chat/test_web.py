"""The web chat (llm/run_chat_web.py): its page in a real browser (Debian's headless Chromium, driven by Selenium),
first over a scripted stub model (tags, errors and waiting are then certain), then the script itself as a
process on the tiny stand-in + adapter (started with the module), whose answer must be the terminal chat's.

The stub page is served once for the module, in a thread, on a free port of 127.0.0.1; every server stops at the
end. The stub test takes the screenshot after a tagged answer (saved where OHLORA_SCREENSHOT says:
`OHLORA_SCREENSHOT=docs/web-chat.png python -m pytest tests/chat/test_web.py` updates the README's picture).
"""

import os
import re
import signal
import socket
import time
import urllib.request
from collections.abc import Callable
from pathlib import Path

import pytest

from helpers import scripts
from helpers.memory import ValueScorer
from helpers.stub_model import ScriptedModel
from helpers.scripts import free_port, heavy_modules_after_help, run_in_process, run_script, start_script, stop
from llm.chat.chat import BOT_LABEL, EMPTY_ANSWER
from llm.common.markers import ANSWER_END, ANSWER_START, strip_markers
from llm.memory.store import MemoryStore

SCRIPT = "llm/run_chat_web.py"
CHROMIUM, CHROMEDRIVER = Path("/usr/bin/chromium"), Path("/usr/bin/chromedriver")
TIMEOUT_S = 30  # the longest any step waits for the page
# Gradio's queue statistics use pandas options that pandas 3 deprecates: not this project's warnings.
pytestmark = pytest.mark.filterwarnings("ignore:.*no_silent_downcasting:Warning", "ignore:The copy keyword:Warning")

try:
    import selenium  # noqa: F401
except ImportError:
    selenium = None
HAS_BROWSER = selenium is not None and CHROMIUM.is_file() and CHROMEDRIVER.is_file()
needs_browser = pytest.mark.skipif(
    not HAS_BROWSER,
    reason=f"no headless browser: needs {CHROMIUM} and {CHROMEDRIVER} (Debian: apt-get install -y chromium "
           f"chromium-driver; .ci/run installs them as root) and selenium (requirements.txt)")


def wait_for(condition: Callable[[], object], what: str, timeout: float = TIMEOUT_S):
    """helpers.scripts.wait_for with this module's timeout; any error counts as not yet (an element that is being
    re-rendered, a page still loading)."""
    return scripts.wait_for(condition, what, timeout, not_yet=(Exception,))


# --- the stub model ---

TAGGED = f"[내일 일정: 면접] 면접 잘 보고 와! 응원할게 💪 {ANSWER_END}"
REPLIES = {
    "나 내일 면접 봐": TAGGED,
    "면접 너무 떨려": f"떨리는 게 당연해! 준비한 만큼 잘할 거야 ✨ {ANSWER_END}",
}
DEFAULT_REPLY = f"응응 😊 {ANSWER_END}"
TOO_LONG_CHARS = 200


class StubModel(ScriptedModel):
    """The scripted model as the web page calls it, pausing between streamed pieces as a real model does."""

    def __init__(self) -> None:
        super().__init__(REPLIES, DEFAULT_REPLY, pause_s=0.01)

    __call__ = ScriptedModel.answer


def too_long(model_input: str) -> str | None:
    if len(model_input) <= TOO_LONG_CHARS:
        return None
    return f"message too long: {len(model_input)} tokens with the prompt markers, she reads at most 200; say it in fewer words"


# --- without a browser ---

def test_help_answers_before_torch_and_gradio_load():
    result = run_script(SCRIPT, "--help")
    assert result.returncode == 0 and "--port" in result.stdout and "--merged" in result.stdout
    assert heavy_modules_after_help(SCRIPT) == []  # how fast that is: scripts/benchmark_startup.py


def test_a_port_in_use_is_one_line_before_the_model_loads(tmp_path: Path):
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        result = run_script(SCRIPT, "--port", str(port), "--merged", str(tmp_path / "none"),
                            "--memory-db", str(tmp_path / "m.db"))
    assert result.returncode == 2 and result.stdout == ""
    assert result.stderr.splitlines() == [f"error: --host 127.0.0.1 --port {port}: cannot listen there (in use); "
                                          f"choose another port with --port"]
    # (the merged folder does not exist: had loading come first, the line would say so)
    assert not (tmp_path / "m.db").exists()


@pytest.mark.parametrize("raw, shown", [
    ("", EMPTY_ANSWER),
    ("[내일 일", EMPTY_ANSWER),  # a tag still being written is not shown
    ("[내일 일정: 면접] 면접 잘", "면접 잘"),
    (f"안녕 {ANSWER_START} 반가워 (답", "안녕 반가워"),
])
def test_text_shown_while_streaming_has_no_tag_or_markers(raw: str, shown: str):
    from llm.chat.web import shown_so_far

    assert shown_so_far(raw) == shown


def test_a_conversation_streams_then_ends_with_the_turn(tmp_path: Path):
    from llm.chat.web import PageServices, Conversation

    memory = MemoryStore(tmp_path / "m.db", scorer=ValueScorer())
    conversation = Conversation(PageServices(StubModel(), too_long=too_long, memory=memory, log=lambda text: None))
    events = list(conversation.stream("나 내일 면접 봐"))
    texts = [value for kind, value in events if kind == "text"]
    kind, turn = events[-1]
    assert kind == "done" and turn.shown == "면접 잘 보고 와! 응원할게 💪" and turn.stored == "[내일 일정: 면접]"
    assert len(texts) > 3 and texts[-1] == turn.shown  # streamed in pieces, ending on the answer as shown
    assert all("[" not in text and "답변" not in text for text in texts)
    assert [m.tag for m in memory.memories()] == ["[내일 일정: 면접]"]
    assert [kind for kind, _ in conversation.stream("x" * 300)] == ["refused"]
    assert [kind for kind, _ in conversation.stream("boom")] == ["failed"]


def test_the_real_model_streams_the_answer_it_returns(trained_polyglot: dict, tmp_path: Path):
    """Streaming only watches: the same Answer as without it, and the last text streamed is that answer."""
    from llm.chat.loading import load_chat_model
    from llm.chat.options import ChatOptions
    from llm.chat.web import shown_so_far
    from llm.chat.chat import visible_text
    from transformers import set_seed

    model = load_chat_model(ChatOptions(model_dir=trained_polyglot["model_dir"],
                                        adapter_dir=trained_polyglot["adapter_dir"]), say=None)
    assert model.banner and "Tiny stand-in" in model.banner
    for message in ("안녕! 너는 누구야?", "나 내일 면접 봐"):
        set_seed(5)
        plain = model.answer(message)
        set_seed(5)
        streamed: list[str] = []
        answer = model.answer(message, on_text=streamed.append)
        assert answer == plain
        assert streamed and visible_text(strip_markers(streamed[-1])) == visible_text(answer.text)
        assert shown_so_far(streamed[-1]) == visible_text(answer.text)


# --- in the browser ---

@pytest.fixture(scope="module")
def browser():
    if not HAS_BROWSER:
        pytest.skip("no headless browser")
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = str(CHROMIUM)
    for argument in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage", "--disable-gpu",
                     "--window-size=1200,820", "--lang=ko-KR", "--no-first-run", "--disable-extensions"):
        options.add_argument(argument)
    driver = webdriver.Chrome(service=Service(str(CHROMEDRIVER)), options=options)
    driver.set_page_load_timeout(TIMEOUT_S)
    yield driver
    driver.quit()


@pytest.fixture(scope="module")
def stub_page(tmp_path_factory: pytest.TempPathFactory):
    """The page over the stub model, served in a thread on 127.0.0.1 for the module."""
    from llm.chat.web import PageServices, build_app, launch

    model = StubModel()
    memory = MemoryStore(tmp_path_factory.mktemp("web") / "memory.db", scorer=ValueScorer())
    app = build_app(PageServices(model, too_long=too_long, memory=memory, log=lambda text: None))
    url = launch(app, "127.0.0.1", free_port())
    try:
        yield url, model, memory
    finally:
        model.release.set()
        app.close()


class Page:
    """One browser tab on the chat."""

    def __init__(self, driver, url: str) -> None:
        from selenium.webdriver.common.by import By

        self.driver, self.by = driver, By
        driver.get(url)
        self.handle = driver.current_window_handle
        wait_for(lambda: "What she remembers" in self.text("#memory-panel"), "the page and its memory panel")

    def find(self, css: str):
        return self.driver.find_element(self.by.CSS_SELECTOR, css)

    def text(self, css: str) -> str:
        return self.find(css).text

    def box(self):
        return self.find("#message textarea")

    def send(self, text: str) -> None:
        self.driver.switch_to.window(self.handle)
        box = self.box()
        box.clear()
        if text:
            box.send_keys(text)
        self.find("#send").click()

    def answers(self) -> list[str]:
        return [element.text for element in self.driver.find_elements(self.by.CSS_SELECTOR, '[data-testid="bot"]')]

    def messages(self) -> list[str]:
        return [element.text for element in self.driver.find_elements(self.by.CSS_SELECTOR, '[data-testid="user"]')]

    def wait_answers(self, *expected: str, seen: set[str] | None = None) -> None:
        """Until the answers shown are `expected` (the page renders the last streamed pieces a little after the
        status line changes, so the text itself is what is waited for); every text on the way goes into `seen`."""
        last: list[list[str]] = [[]]

        def shown():
            last[0] = answers = self.answers()
            if seen is not None:
                seen.update(answers)
            return answers == list(expected)
        try:
            wait_for(shown, f"the answers {list(expected)}")
        except AssertionError as error:
            raise AssertionError(f"{error}; the page shows {last[0]}") from None


def save_screenshot(driver) -> None:
    """The page as a PNG: into the path OHLORA_SCREENSHOT names (docs/web-chat.png, to update the README's
    picture), replaced in one step; without it nothing in the checkout changes."""
    png = driver.get_screenshot_as_png()
    assert png.startswith(b"\x89PNG")
    if not os.environ.get("OHLORA_SCREENSHOT"):
        return
    target = Path(os.environ["OHLORA_SCREENSHOT"])
    partial = target.with_name(f".{target.name}.{os.getpid()}")
    partial.write_bytes(png)
    os.replace(partial, target)


@needs_browser
def test_answers_hide_the_tag_and_the_memory_panel_follows(browser, stub_page):
    url, model, memory = stub_page
    page = Page(browser, url)
    assert not browser.find_elements(page.by.ID, "tiny-banner")  # real weights (here, the stub): no banner
    assert "(no memories yet)" in page.text("#memory-panel")

    seen: set[str] = set()
    page.send("나 내일 면접 봐")
    page.wait_answers("면접 잘 보고 와! 응원할게 💪", seen=seen)
    assert page.messages() == ["나 내일 면접 봐"]
    assert all("[" not in text and "답변" not in text for text in seen), seen  # not even while streaming
    assert page.box().get_attribute("value") == ""
    panel = wait_for(lambda: "[내일 일정: 면접]" in page.text("#memory-panel") and page.text("#memory-panel"),
                     "the memory in the panel")
    assert "나 내일 면접 봐" in panel and re.search(r"\d{4}-\d\d-\d\d \d\d:\d\d", panel), panel
    wait_for(lambda: "she will remember [내일 일정: 면접]" in page.text("#status"), "the stored tag in the status line")

    page.send("면접 너무 떨려")  # related: the memory goes in front of the message, as in the terminal chat
    page.wait_answers("면접 잘 보고 와! 응원할게 💪", "떨리는 게 당연해! 준비한 만큼 잘할 거야 ✨")
    assert model.inputs[-1] == "[내일 일정: 면접] 면접 너무 떨려"
    wait_for(lambda: "recalled [내일 일정: 면접], relevance" in page.text("#status"), "the recall in the status line")
    save_screenshot(browser)

    page.find("#forget").click()
    wait_for(lambda: "(no memories yet)" in page.text("#memory-panel"), "the panel after forgetting")
    wait_for(lambda: "memory cleared: 1 forgotten" in page.text("#status"), "the forget line")
    assert memory.memories() == []


@needs_browser
def test_empty_too_long_and_failed_messages_are_a_line_and_the_page_goes_on(browser, stub_page):
    url, _, memory = stub_page
    page = Page(browser, url)
    page.send("")
    wait_for(lambda: "empty message" in page.text("#status"), "the empty-message line")

    long_message = "오늘 있었던 일을 길게 얘기해 줄게 " * 12
    page.send(long_message)
    wait_for(lambda: "message too long" in page.text("#status"), "the too-long line")
    assert page.box().get_attribute("value") == long_message.strip()  # given back, to be shortened
    assert page.answers() == [] and page.messages() == []

    page.send("boom")
    wait_for(lambda: "she could not answer: RuntimeError: CUDA out of memory (stub)" in page.text("#status"),
             "the model-error line")
    assert page.answers() == [] and memory.memories() == []

    page.send("안녕")
    page.wait_answers("응응 😊")
    page.send("/memory")
    page.wait_answers("응응 😊", "(no memories yet)")


@needs_browser
def test_two_tabs_have_their_own_conversations_and_take_turns_on_the_model(browser, stub_page):
    url, model, _ = stub_page
    first = Page(browser, url)
    browser.switch_to.new_window("tab")
    second = Page(browser, url)
    try:
        model.waiting.clear()
        first.send("wait for me")
        wait_for(model.waiting.is_set, "the first tab's generation")
        second.send("안녕")
        # The second tab waits its turn, and says so (Gradio's queue status), rather than failing.
        status = wait_for(lambda: re.search(r"queue: ?\d+/\d+", second.text("#conversation")), "the queue status")
        assert status and second.answers() == []
        assert model.inputs[-1] == "wait for me"
        model.release.set()
        second.wait_answers("응응 😊")
        assert second.messages() == ["안녕"]
        browser.switch_to.window(first.handle)
        first.wait_answers("응응 😊")
        assert first.messages() == ["wait for me"]
    finally:
        model.release.set()
        browser.switch_to.window(second.handle)
        browser.close()
        browser.switch_to.window(first.handle)


@pytest.fixture(scope="module", autouse=True)
def script_server(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory):
    """llm/run_chat_web.py as a process, started with the module so that its seconds of imports and loading
    overlap the tests above; the last test talks to it and stops it. Not started (nor the adapter trained) when
    that test is not selected."""
    user = test_the_script_serves_the_tiny_model_and_answers_as_the_terminal_chat.__name__
    if not HAS_BROWSER or user not in {item.name for item in request.session.items}:
        yield None
        return
    trained_polyglot = request.getfixturevalue("trained_polyglot")
    folder = tmp_path_factory.mktemp("web-script")
    common = ["--model-dir", str(trained_polyglot["model_dir"]), "--adapter-dir", str(trained_polyglot["adapter_dir"]),
              "--seed", "11"]
    port = free_port()
    server = start_script(SCRIPT, *common, "--memory-db", str(folder / "web.db"), "--port", str(port))
    yield {"process": server, "port": port, "common": common, "folder": folder}
    if server.poll() is None:  # the test failed before it stopped the server
        server.kill()
        server.communicate()


@needs_browser
def test_the_script_serves_the_tiny_model_and_answers_as_the_terminal_chat(browser, script_server: dict):
    """llm/run_chat_web.py as a process: banner, an answer equal to run_chat.py's with the same seed, memory panel."""
    server, port, common = script_server["process"], script_server["port"], script_server["common"]
    try:
        terminal = run_in_process("llm/run_chat.py", *common, "--memory-db", str(script_server["folder"] / "terminal.db"),
                                  "--prompt", "안녕! 너는 누구야?")
        assert terminal.returncode == 0, terminal.stderr[-2000:]
        [terminal_answer] = [line.removeprefix(BOT_LABEL) for line in terminal.stdout.splitlines()
                             if line.startswith(BOT_LABEL)]
        url = f"http://127.0.0.1:{port}/"
        wait_for(lambda: urllib.request.urlopen(url, timeout=2).status == 200, "the script's page", timeout=90)
        page = Page(browser, url)
        banner = page.text("#tiny-banner")
        assert "Tiny stand-in" in banner and "not Oh-LoRA's" in banner
        page.send("안녕! 너는 누구야?")
        page.wait_answers(terminal_answer)
        assert page.messages() == ["안녕! 너는 누구야?"]
        assert re.search(r"\(no memories yet\)|remembered", page.text("#memory-panel"))
    finally:
        out, err = stop(server, timeout=TIMEOUT_S)
    assert server.returncode == 143, err[-3000:]
    assert f"web chat: http://127.0.0.1:{port}/" in out
    assert err.rstrip().endswith("terminated")
    assert "Traceback" not in err, err[-3000:]


def test_a_ctrl_c_lost_while_the_server_starts_still_stops_it(monkeypatch):
    """Python drops an exception raised in a finaliser ("Exception ignored in ..."): a Ctrl-C that lands there while
    gradio starts must still stop the server, not leave the page serving."""
    from llm.chat import web

    closed = []

    class App:  # what serve needs of a gradio app
        def close(self):
            closed.append(True)

    def launch(app, host, port):
        try:
            os.kill(os.getpid(), signal.SIGINT)
            time.sleep(2)  # the Ctrl-C is raised here...
        except KeyboardInterrupt:
            pass  # ...and lost, as in a finaliser
        return "http://127.0.0.1:1/"

    def too_long(signum, frame):
        raise TimeoutError("the server went on after the Ctrl-C")

    monkeypatch.setattr(web, "launch", launch)
    previous = signal.signal(signal.SIGALRM, too_long)
    # Ctrl-C as in a terminal: a suite started in the background (`cmd &`) has SIGINT ignored
    previous_int = signal.signal(signal.SIGINT, signal.default_int_handler)
    signal.alarm(10)
    try:
        with pytest.raises(KeyboardInterrupt):
            web.serve(App(), "127.0.0.1", 1, say=lambda text: None)
        assert signal.getsignal(signal.SIGINT) is signal.default_int_handler  # put back as it was
    finally:
        signal.alarm(0)
        signal.signal(signal.SIGALRM, previous)
        signal.signal(signal.SIGINT, previous_int)
    assert closed
