"""The OpenAI-compatible API (llm/run_api.py), driven by the official openai client and by raw HTTP: first over a
scripted stub model served in a thread (tags, failures and waiting are then certain), then the script itself as a
process on the tiny stand-in + adapter, started with the module so that its loading overlaps the stub tests."""

import http.client
import json
import random
import re
import socket
import subprocess
import sys
import threading
from collections.abc import Callable
from pathlib import Path
from concurrent.futures import ThreadPoolExecutor

import openai
import pytest
import uvicorn

from helpers import scripts
from helpers.scripts import REPO, free_port, run_in_process, start_script, stop
from helpers.stub_model import ScriptedModel
from llm.chat.api import build_app
from llm.chat.api_options import API_KEY_ENV, ApiOptions, users_folder
from llm.chat.api_requests import Sampling
from llm.chat.api_stream import streamable
from llm.chat.api_turns import ApiServices, user_file
from llm.chat.chat import memory_file, visible_text
from llm.common.inference import Answer
from llm.common.markers import strip_markers

SCRIPT = "llm/run_api.py"
KEY = "test-key"
TIMEOUT_S = 30
STUB_MODEL = "ohlora-stub"
TAG = "[내일 일정: 면접]"
REPLIES = {"나 내일 면접 봐": f"{TAG} 면접 잘 보고 와! 응원할게 💪"}  # raw text, as the streamer hands it on
DEFAULT_REPLY = "응응 😊"
RECALLING = "내일 면접 잘 볼 수 있을까"  # the stored tag is relevant to it: recalled
TOO_LONG_CHARS = 60


def wait_for(condition: Callable[[], object], what: str, timeout: float = TIMEOUT_S):
    """helpers.scripts.wait_for with this module's timeout, a server that is not listening yet as not yet."""
    return scripts.wait_for(condition, what, timeout, not_yet=(OSError, http.client.HTTPException))


def call(port: int, method: str, path: str, body: object = None, headers: dict | None = None,
         key: str | None = KEY) -> tuple[int, dict, object]:
    """(status, headers, JSON body) of one raw HTTP request; bytes are sent as they are."""
    data = body if isinstance(body, bytes) or body is None else json.dumps(body).encode()
    sent = {"Content-Type": "application/json", **(headers or {})}
    if key:
        sent["Authorization"] = f"Bearer {key}"
    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=TIMEOUT_S)
    try:
        connection.request(method, path, body=data, headers=sent)
        response = connection.getresponse()
        answer = json.loads(response.read() or b"null")
        return response.status, {name.lower(): value for name, value in response.getheaders()}, answer
    finally:
        connection.close()


def asking(content: object = "hi", role: str = "user", model: str = "M", **fields) -> dict:
    """A request body, for raw HTTP ("M": the served model, once a test knows its id)."""
    return {"model": model, "messages": [{"role": role, "content": content}], **fields}


def client(port: int, key: str = KEY, **kwargs) -> openai.OpenAI:
    return openai.OpenAI(base_url=f"http://127.0.0.1:{port}/v1", api_key=key, timeout=TIMEOUT_S, **kwargs)


def streamed(stream) -> tuple[list[str], list]:
    """(the text of each content chunk, every chunk)."""
    chunks = list(stream)
    return [c.choices[0].delta.content for c in chunks if c.choices and c.choices[0].delta.content], chunks


# --- over a stub model ---

class StubModel(ScriptedModel):
    """The scripted model as the API calls it, recording each request's sampling."""

    def __init__(self) -> None:
        super().__init__(REPLIES, DEFAULT_REPLY)
        self.samplings: list[Sampling] = []

    def __call__(self, model_input: str, sampling: Sampling, on_text: Callable[[str], None] | None) -> Answer:
        self.samplings.append(sampling)
        return self.answer(model_input, on_text)


def too_long(model_input: str) -> str | None:
    return "message too long (stub)" if len(model_input) > TOO_LONG_CHARS else None


@pytest.fixture(scope="module")
def stub(tmp_path_factory: pytest.TempPathFactory):
    """The app over the stub, served in a thread on a free port: queue limit 1, a key, a memory folder."""
    model, folder = StubModel(), tmp_path_factory.mktemp("api-stub") / "users"
    folder.mkdir()
    app = build_app(ApiServices(model, STUB_MODEL, too_long=too_long, users_folder=folder, api_key=KEY, queue_limit=1,
                                log=lambda text: None))
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=free_port(), log_level="warning"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    wait_for(lambda: server.started, "the stub server")
    yield {"model": model, "port": server.config.port, "folder": folder, "gate": app.state.gate}
    model.release.set()
    server.should_exit = True
    thread.join(TIMEOUT_S)


def ask(port: int, message: str, **kwargs):
    return client(port).chat.completions.create(**asking(message, model=STUB_MODEL), **kwargs)


def test_each_user_has_a_memory_of_their_own(stub: dict):
    port, model = stub["port"], stub["model"]
    told = ask(port, "나 내일 면접 봐", user="alice")
    assert told.choices[0].message.content == "면접 잘 보고 와! 응원할게 💪"  # the tag is stored, not shown
    assert told.model_extra["ohlora"]["stored"] == TAG
    recalled = ask(port, RECALLING, user="alice")
    assert model.inputs[-1] == f"{TAG} {RECALLING}"
    assert recalled.model_extra["ohlora"]["recalled"] == TAG
    ask(port, RECALLING, extra_headers={"X-OhLoRA-User": "bob"})  # the header picks a user too
    assert model.inputs[-1] == RECALLING
    ask(port, RECALLING)  # nobody named: the anonymous user
    assert model.inputs[-1] == RECALLING
    assert call(port, "GET", "/v1/memories?user=alice")[2]["data"][0]["tag"] == TAG
    assert call(port, "GET", "/v1/memories", headers={"X-OhLoRA-User": "bob"})[2]["data"] == []
    ask(port, "안녕", user="../../escape")  # an id is never a path
    names = sorted(path.name for path in stub["folder"].iterdir())
    assert names == sorted({user_file(stub["folder"], user).name for user in ("alice", "bob", "../../escape", None)})
    assert all(re.fullmatch(r"[0-9a-f]{64}\.db|anonymous\.db", name) for name in names)
    assert call(port, "DELETE", "/v1/memories?user=alice")[2]["deleted"] == 1
    assert call(port, "GET", "/v1/memories?user=alice")[2]["data"] == []


def test_a_streamed_answer_never_shows_the_tag_and_ends_as_the_plain_one(stub: dict):
    texts, chunks = streamed(ask(stub["port"], "나 내일 면접 봐", user="stream", stream=True,
                                 stream_options={"include_usage": True}))
    assert len(texts) > 2 and not any("[" in text or "일정" in text for text in texts)
    assert "".join(texts) == ask(stub["port"], "나 내일 면접 봐", user="plain").choices[0].message.content
    assert [c.choices[0].finish_reason for c in chunks if c.choices][-1] == "stop"
    assert chunks[-1].choices == [] and chunks[-1].usage.total_tokens > 0  # stream_options.include_usage


def test_the_request_sampling_reaches_the_model(stub: dict):
    ask(stub["port"], "안녕", temperature=0.3, top_p=0.5, max_tokens=7, seed=5)
    assert stub["model"].samplings[-1] == Sampling(temperature=0.3, top_p=0.5, max_tokens=7, seed=5)
    ask(stub["port"], "안녕", max_completion_tokens=9)
    assert stub["model"].samplings[-1] == Sampling(max_tokens=9)


def test_one_answer_at_a_time_a_client_gone_leaves_the_queue_and_past_the_limit_503(stub: dict):
    port, model, gate = stub["port"], stub["model"], stub["gate"]
    model.waiting.clear()
    model.release.clear()
    request = asking("떠난 손님", model=STUB_MODEL)
    with ThreadPoolExecutor(2) as pool:
        first = pool.submit(ask, port, "wait")
        wait_for(model.waiting.is_set, "the first answer to be generated")
        leaving = http.client.HTTPConnection("127.0.0.1", port, timeout=TIMEOUT_S)
        leaving.request("POST", "/v1/chat/completions", json.dumps(request).encode(),
                        {"Authorization": f"Bearer {KEY}", "Content-Type": "application/json"})
        wait_for(lambda: gate.admitted == 2, "the second request to wait in the queue")
        leaving.close()
        wait_for(lambda: gate.admitted == 1, "the request whose client left to leave the queue")
        second = pool.submit(ask, port, "안녕", stream=True)
        wait_for(lambda: gate.admitted == 2, "the third request to wait in the queue")
        status, headers, body = call(port, "POST", "/v1/chat/completions", request)
        model.release.set()
        answers = [first.result(TIMEOUT_S).choices[0].message.content, "".join(streamed(second.result(TIMEOUT_S))[0])]
    assert status == 503 and int(headers["retry-after"]) >= 1
    assert body["error"]["type"] == "server_error" and body["error"]["code"] == "queue_full"
    assert answers == ["응응 😊", "응응 😊"] and "떠난 손님" not in model.inputs


def test_a_failing_or_too_long_turn_is_an_error_and_the_server_goes_on(stub: dict):
    port = stub["port"]
    for stream in (False, True):
        status, _, body = call(port, "POST", "/v1/chat/completions",
                               asking("boom", model=STUB_MODEL, stream=stream, user="f"))
        assert status == 500 and "CUDA out of memory (stub)" in body["error"]["message"]
    ask(port, "나 내일 면접 봐", user="long")
    fits_alone = f"{RECALLING} " + "가" * (TOO_LONG_CHARS - len(RECALLING) - 5)  # not with the tag in front
    status, _, body = call(port, "POST", "/v1/chat/completions", asking(fits_alone, model=STUB_MODEL, user="long"))
    assert status == 400 and body["error"]["code"] == "context_length_exceeded"
    assert call(port, "GET", "/v1/memories?user=f")[2]["data"] == []
    assert ask(port, "안녕").choices[0].message.content == "응응 😊"


def test_streamed_text_is_always_the_beginning_of_the_answer_shown():
    """Whatever tokens come next, what was streamed stays the beginning of the final answer (tags, marker pieces,
    brackets that pair up later, control characters)."""
    pieces = ["(", ")", "[", "]", "답변", "시작", "종료", "#", "##", ":", " ", "\n", "좋아", "a1", "!", "…", TAG,
              "(답변 종료)", "### 답변:", "\u200b", "\x07", "]]", "[[", "💪", " :", "(답변", " 종", "[a: b]"]
    rng = random.Random(0)
    for _ in range(3000):
        raw = "".join(rng.choice(pieces) for _ in range(rng.randint(1, 10)))
        final = visible_text(strip_markers(raw))
        for end in range(len(raw) + 1):
            assert final.startswith(streamable(raw[:end])), (raw[:end], raw)


# --- the script, on the tiny stand-in ---

def test_the_options_listen_here_warn_elsewhere_and_take_the_key_from_the_environment(monkeypatch):
    assert ApiOptions().host == "127.0.0.1" and ApiOptions().host_warning() is None
    assert "NO --api-key" in ApiOptions(host="0.0.0.0").host_warning()
    assert "must bring the --api-key" in ApiOptions(host="0.0.0.0", api_key="k").host_warning()
    monkeypatch.setenv(API_KEY_ENV, "from-env")
    assert ApiOptions().key == "from-env" and ApiOptions(api_key="given").key == "given"
    real, stand_in = users_folder(memory_file(None, False)), users_folder(memory_file(None, True))
    assert real != stand_in  # the stand-in's users never share the real model's memories


def test_help_and_bad_options_answer_before_the_heavy_imports():
    code = ("import runpy, sys\nsys.argv = sys.argv[1:]\ntry:\n    runpy.run_path(sys.argv[0], run_name='__main__')\n"
            "except SystemExit as end:\n    code = end.code\n"
            "print(code, sorted(m for m in ('torch', 'transformers', 'fastapi', 'uvicorn') if m in sys.modules))")
    for args, expected in ((["--help"], "0 []"), (["--queue-limit", "-1"], "2 []"), (["--model-name", "a b"], "2 []")):
        result = subprocess.run([sys.executable, "-c", code, str(REPO / SCRIPT), *args], cwd=REPO, check=False,
                                capture_output=True, text=True, timeout=120)
        assert result.stdout.strip().splitlines()[-1] == expected, result.stderr[-2000:]
        if args == ["--help"]:
            assert "--api-key" in result.stdout and "--queue-limit" in result.stdout and "--merged" in result.stdout
        else:
            assert result.stderr.count("\n") == 1 and result.stderr.startswith("error: "), result.stderr


@pytest.fixture(scope="module")
def adapter_args(trained_polyglot: dict) -> list[str]:
    return ["--model-dir", str(trained_polyglot["model_dir"]), "--adapter-dir", str(trained_polyglot["adapter_dir"])]


def test_a_port_in_use_or_a_bad_combination_is_one_line_before_the_model_loads(adapter_args: list[str]):
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        result = run_in_process(SCRIPT, *adapter_args, "--port", str(busy.getsockname()[1]))
    assert result.returncode == 2 and "cannot listen there (in use)" in result.stderr
    assert "Tiny stand-in" not in result.stderr  # refused before loading
    result = run_in_process(SCRIPT, *adapter_args, "--merged", "somewhere")
    assert result.returncode == 2 and "--merged: not with --model-dir or --adapter-dir" in result.stderr


@pytest.fixture(scope="module", autouse=True)
def server_process(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory):
    """llm/run_api.py as a process, with a key and a memory file of its own, started with the module so that its
    seconds of loading overlap the stub tests (not started, nor the adapter trained, when no test needs it)."""
    if not any("server" in item.fixturenames for item in request.session.items if item.module is request.module):
        yield None
        return
    folder, port = tmp_path_factory.mktemp("api-script"), free_port()
    options = ["--memory-db", str(folder / "api.db"), "--port", str(port), "--api-key", KEY]
    process = start_script(SCRIPT, *request.getfixturevalue("adapter_args"), *options)
    yield {"process": process, "port": port, "folder": folder}
    if process.poll() is None:  # a test failed before the last one stopped it
        process.kill()
        process.communicate()


@pytest.fixture(scope="module")
def server(server_process: dict) -> dict:
    """The script's server once it answers, with the model id it serves."""
    process, port = server_process["process"], server_process["port"]
    wait_for(lambda: process.poll() is not None or call(port, "GET", "/v1/models")[0] == 200, "the API", 120)
    assert process.poll() is None, process.communicate()[1][-3000:]
    return {**server_process, "model": client(port).models.list().data[0].id}


def chat(server: dict, message: str, **kwargs):
    messages = [{"role": "system", "content": "ignored"}, {"role": "user", "content": message}]
    return client(server["port"]).chat.completions.create(model=server["model"], messages=messages, **kwargs)


def test_the_stand_in_is_announced_in_the_model_id_and_every_response(server: dict):
    assert server["model"] == "ohlora-polyglot-tiny-stand-in"
    assert client(server["port"]).models.retrieve(server["model"]).id == server["model"]
    raw = client(server["port"]).chat.completions.with_raw_response.create(**asking("안녕", model=server["model"]))
    assert "tiny stand-in" in raw.headers["x-ohlora-stand-in"]
    answer = raw.parse()
    assert answer.choices[0].message.content and answer.model == server["model"]
    assert answer.usage.prompt_tokens > 0 and answer.usage.completion_tokens > 0
    assert "tiny stand-in" in call(server["port"], "GET", "/v1/nothing")[1]["x-ohlora-stand-in"]  # errors too


def test_streamed_and_plain_answers_are_the_same_with_a_seed(server: dict):
    plain = chat(server, "안녕! 너는 누구야?", seed=11, user="seed-plain")
    texts, chunks = streamed(chat(server, "안녕! 너는 누구야?", seed=11, user="seed-stream", stream=True))
    assert "".join(texts) == plain.choices[0].message.content
    assert chunks[0].choices[0].delta.role == "assistant"
    assert chunks[-1].choices[0].finish_reason == plain.choices[0].finish_reason
    assert plain.model_extra["ohlora"]["ignored_messages"] == 1  # the system message


def test_temperature_top_p_and_max_tokens_reach_the_generation(server: dict):
    greedy = [chat(server, "오늘 뭐 해?", temperature=0, user=f"greedy-{n}").choices[0].message.content for n in (1, 2)]
    assert greedy[0] == greedy[1]
    # top_p this small keeps only the likeliest token: greedy again, whatever the seed
    nucleus = [chat(server, "오늘 뭐 해?", temperature=1.5, top_p=1e-9, seed=seed, user=f"top-p-{seed}")
               for seed in (1, 2)]
    assert [answer.choices[0].message.content for answer in nucleus] == greedy
    short = chat(server, "오늘 뭐 해?", max_tokens=3, seed=3, user="short")
    assert short.usage.completion_tokens <= 3
    assert short.choices[0].finish_reason == ("length" if short.usage.completion_tokens == 3 else "stop")


def test_three_clients_at_once_are_all_answered(server: dict):
    with ThreadPoolExecutor(3) as pool:
        answers = list(pool.map(lambda n: chat(server, f"안녕 {n}", user=f"client-{n}"), range(3)))
    assert all(answer.choices[0].message.content for answer in answers)


BAD_INPUTS = {  # name: (what is sent, the status, the parameter named)
    "invalid JSON": (b"{not json", 400, None),
    "NaN": (b'{"model": "M", "messages": [{"role": "user", "content": "hi"}], "temperature": NaN}', 400, None),
    "not an object": ([1, 2], 400, None),
    "no messages": ({"model": "M", "messages": []}, 400, "messages"),
    "no model": ({"messages": [{"role": "user", "content": "hi"}]}, 400, "model"),
    "unknown role": (asking(role="bot"), 400, "messages[0].role"),
    "number content": (asking(5), 400, "messages[0].content"),
    "content parts": (asking([{"type": "text", "text": "hi"}]), 400, "messages[0].content"),
    "no user message": (asking(role="system"), 400, "messages"),
    "empty message": (asking(" "), 400, "messages[0].content"),
    "too long": (asking("가" * 3000), 400, "messages"),
    "temperature 3": (asking(temperature=3), 400, "temperature"),
    "temperature as text": (asking(temperature="0.5"), 400, "temperature"),
    "top_p 1.5": (asking(top_p=1.5), 400, "top_p"),
    "max_tokens 0": (asking(max_tokens=0), 400, "max_tokens"),
    "seed -1": (asking(seed=-1), 400, "seed"),
    "n 2": (asking(n=2), 400, "n"),
    "unknown model": ({**asking(), "model": "gpt-4"}, 404, "model"),
    "over 1 MiB": (b"x" * (1 << 20 | 1), 413, None),
}


@pytest.mark.parametrize("name", BAD_INPUTS)
def test_each_bad_input_is_a_4xx_json_error(server: dict, name: str):
    body, status, param = BAD_INPUTS[name]
    if isinstance(body, dict) and body.get("model") == "M":
        body = {**body, "model": server["model"]}
    got, _, answer = call(server["port"], "POST", "/v1/chat/completions", body)
    assert got == status, answer
    assert set(answer["error"]) == {"message", "type", "param", "code"} and answer["error"]["param"] == param
    assert answer["error"]["type"] == "invalid_request_error" and answer["error"]["message"]


def test_the_key_is_enforced(server: dict):
    with pytest.raises(openai.AuthenticationError):
        client(server["port"], key="wrong").models.list()
    status, _, body = call(server["port"], "POST", "/v1/chat/completions", {}, key=None)
    assert status == 401 and body["error"]["code"] == "invalid_api_key"


def test_merged_serves_an_exported_folder_as_base_and_adapter_answer(server: dict, trained_polyglot: dict,
                                                                   tmp_path: Path):
    merged = tmp_path / "merged"
    exported = run_in_process("llm/export_model.py", "--model-dir", str(trained_polyglot["model_dir"]),
                              "--adapter-dir", str(trained_polyglot["adapter_dir"]), "--output-dir", str(merged))
    assert exported.returncode == 0, exported.stderr[-3000:]
    port = free_port()
    process = start_script(SCRIPT, "--merged", str(merged), "--memory-db", str(tmp_path / "api.db"), "--port",
                           str(port), "--api-key", KEY)
    try:
        wait_for(lambda: process.poll() is not None or call(port, "GET", "/v1/models")[0] == 200, "the API", 120)
        assert process.poll() is None, process.communicate()[1][-3000:]
        served = {"port": port, "model": client(port).models.list().data[0].id}
        assert served["model"] == server["model"]  # merged from the stand-in: said so in the id too
        answers = [chat(where, "나 요즘 밤에 별 보러 다녀", temperature=0, user="merged").choices[0].message.content
                   for where in (served, server)]
        assert answers[0] and answers[0] == answers[1]
    finally:
        _, err = stop(process, timeout=TIMEOUT_S)
    assert process.returncode == 143 and "Traceback" not in err, err[-3000:]


def test_sigterm_stops_the_server_cleanly(server: dict):
    """Last: the process answered everything above, and none of it crashed it."""
    process = server["process"]
    assert process.poll() is None
    out, err = stop(process, timeout=TIMEOUT_S)
    assert process.returncode == 143, err[-3000:]
    assert f"API: http://127.0.0.1:{server['port']}/v1" in out
    assert "NOTICE: no Polyglot-Ko 1.3B weights" in err and "ohlora-polyglot-tiny-stand-in" in err
    assert err.rstrip().endswith("terminated") and "Traceback" not in err, err[-3000:]
    users = server["folder"] / "api_api_users"
    assert len(list(users.glob("*.db"))) >= 10  # one file per user named above
