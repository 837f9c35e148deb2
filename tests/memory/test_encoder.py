"""The encoder scorer end to end on the project's tiny BERT stand-in: train, save, load, score, the chat's recall,
the side-by-side report; and a broken encoder folder, which is one line and never a silent fallback."""

import csv
import json
import re
import shutil
from pathlib import Path
from types import SimpleNamespace

import pytest

from helpers.data import write_csv
from helpers.scripts import heavy_modules_after, run_in_process
from llm.chat.chat import Chat, open_memory
from llm.common.tags import parse_memory_tag
from llm.memory.encoder_scorer import INFO_FILE, EncoderScorer
from llm.memory.offline_scorer import OfflineScorer
from llm.memory import chat_scorer
from llm.memory.chat_scorer import load_scorer
from llm.memory.relevance import ScorerError
from llm.memory.research.data import CASES_CSV, DEV2_PAIRS_CSV, DEV_PAIRS_CSV, PAIRS_CSV, read_pairs
from llm.memory.research.tiny_encoder import ensure_tiny_encoder
from llm.memory.store import MemoryStore

TRAIN, EVALUATE = "llm/memory/train_retrieval.py", "llm/memory/evaluate_retrieval.py"


def _first_rows(path: Path, count: int) -> list[dict[str, str]]:
    with path.open(encoding="utf-8", newline="") as f:
        return list(csv.DictReader(f))[:count]


@pytest.fixture(scope="module", autouse=True)
def one_torch_thread():
    """The stand-in is tiny: torch's second thread only adds waiting (20x slower on a busy 2-core machine)."""
    import torch
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="module")
def trained(tmp_path_factory) -> SimpleNamespace:
    """The stand-in fine-tuned by the script on 48 pairs, its threshold chosen on 12 cases."""
    root = tmp_path_factory.mktemp("encoder")
    pairs = write_csv(root / "pairs.csv", _first_rows(PAIRS_CSV, 48))
    cases = write_csv(root / "cases.csv", _first_rows(CASES_CSV, 12))
    out = root / "retrieval_encoder"
    result = run_in_process(TRAIN, "--encoder", str(ensure_tiny_encoder()), "--pairs", str(pairs), "--eval", str(cases),
                            "--out", str(out), "--epochs", "10", "--learning-rate", "2e-3")
    return SimpleNamespace(result=result, out=out, pairs=pairs, cases=cases)


def test_the_stand_in_is_built_once_in_the_tiny_cache(tiny_cache: Path):
    folder = ensure_tiny_encoder()
    assert folder.parent == tiny_cache and (folder / "config.json").is_file()
    weights = (folder / "model.safetensors").stat().st_mtime_ns
    assert ensure_tiny_encoder() == folder and (folder / "model.safetensors").stat().st_mtime_ns == weights
    assert json.loads((folder / "config.json").read_text())["model_type"] == "bert"


def test_training_saves_a_folder_that_loads_and_scores(trained):
    assert trained.result.returncode == 0, trained.result.stderr[-3000:]
    threshold = float(re.search(r"^threshold (\d\.\d\d): ", trained.result.stdout, re.M)[1])
    info = json.loads((trained.out / INFO_FILE).read_text(encoding="utf-8"))
    assert info["threshold"] == threshold
    assert info["fitted_on"] == "pairs.csv rows 0:48, threshold on cases.csv rows 0:12"
    # the threshold comes from held-out picks: one fine-tuning per fold (without its memories), then the saved one
    tuned = re.findall(r"^fine-tuned \S+ on (\d+) pairs( \(fold \d of 3\))? in", trained.result.stdout, re.M)
    assert [fold for _, fold in tuned] == [" (fold 1 of 3)", " (fold 2 of 3)", " (fold 3 of 3)", ""]
    assert all(int(n) < 48 for n, _ in tuned[:3]) and tuned[3][0] == "48" and info["folds"] == 3
    assert re.search(r"^cases cases\.csv \(12\) held out, at \d\.\d\d: top-1", trained.result.stdout, re.M)
    assert not list(trained.out.parent.glob(".retrieval_encoder*"))  # the trainer's scratch folder is gone

    scorer = load_scorer(trained.out)
    assert isinstance(scorer, EncoderScorer) and scorer.threshold == threshold
    pairs = read_pairs(trained.pairs)
    scores = [scorer.relevance(tag, message) for tag, message, _ in pairs]
    assert all(0.0 <= score <= 1.0 for score in scores)
    related = [s for s, (_, _, grade) in zip(scores, pairs) if grade == 1.0]
    unrelated = [s for s, (_, _, grade) in zip(scores, pairs) if grade == 0.0]
    assert min(related) > max(unrelated)  # it learned the pairs it was fitted on


def test_the_chat_recalls_through_the_encoder(trained, tmp_path: Path):
    pairs = read_pairs(trained.pairs)
    tag, message, _ = next(pair for pair in pairs if pair[2] == 1.0)
    others = list(dict.fromkeys(t for t, _, _ in pairs if parse_memory_tag(t)[0] != parse_memory_tag(tag)[0]))[:3]
    store = MemoryStore(tmp_path / "memory.db", scorer=load_scorer(trained.out))
    for memory in [tag, *others]:
        store.add(memory, "")
    inputs = []
    chat = Chat(lambda model_input: inputs.append(model_input) or SimpleNamespace(text="응"), store,
                say=lambda text: None)
    turn = chat.turn(message)
    assert turn.recalled == tag and inputs == [f"{tag} {message}"]
    assert turn.recall_score >= store.scorer.threshold


def test_the_chats_use_the_encoder_only_when_its_folder_exists(trained, tmp_path: Path, monkeypatch):
    warned = []
    monkeypatch.setattr(chat_scorer, "ENCODER_DIR", tmp_path / "retrieval_encoder")  # absent
    store, _ = open_memory(tmp_path / "a.db", warned.append)
    assert isinstance(store.scorer, OfflineScorer)
    monkeypatch.setattr(chat_scorer, "ENCODER_DIR", trained.out)
    store, _ = open_memory(tmp_path / "b.db", warned.append)
    assert store.scorer is load_scorer(trained.out)  # loaded once per process


def test_a_broken_encoder_folder_stops_the_chats_memory_before_its_file_is_made(trained, tmp_path, monkeypatch):
    monkeypatch.setattr(chat_scorer, "ENCODER_DIR", _broken(trained, tmp_path, "no weights"))
    with pytest.raises(ScorerError, match="model.safetensors missing"):  # a UserError: one line, exit code 2
        open_memory(tmp_path / "memory.db", lambda line: None)
    assert not (tmp_path / "memory.db").exists()


def _broken(trained, tmp_path: Path, how: str) -> Path:
    folder = tmp_path / how.replace(" ", "_")
    shutil.copytree(trained.out, folder)
    if how == "no weights":
        (folder / "model.safetensors").unlink()
    elif how == "corrupt weights":
        (folder / "model.safetensors").write_bytes(b"\x00" * 64)
    elif how == "weights of another model":
        (folder / "config.json").write_text(json.dumps({**json.loads((folder / "config.json").read_text()),
                                                        "hidden_size": 48}), encoding="utf-8")
    elif how == "bad threshold file":
        (folder / INFO_FILE).write_text("{\"threshold\": \"high\"}", encoding="utf-8")
    elif how == "an empty folder":
        shutil.rmtree(folder)
        folder.mkdir()
    return folder


@pytest.mark.parametrize("how", ["no weights", "corrupt weights", "bad threshold file", "an empty folder"])
def test_a_broken_encoder_folder_is_one_line_never_the_offline_scorer(trained, tmp_path: Path, how):
    folder = _broken(trained, tmp_path, how)
    with pytest.raises(ScorerError) as error:  # when the scorer is made, before the chat's memory opens
        load_scorer(folder)
    line = str(error.value)
    assert str(folder) in line and "\n" not in line and "train_retrieval.py --encoder" in line


def test_weights_that_do_not_fit_are_one_line_at_the_first_message(trained, tmp_path: Path):
    folder = _broken(trained, tmp_path, "weights of another model")
    store = MemoryStore(tmp_path / "memory.db", scorer=load_scorer(folder))  # its files look whole
    store.add("[일정: 면접]", "면접 봐")
    with pytest.raises(ScorerError) as error:
        store.most_relevant("면접 떨려")
    assert str(folder) in str(error.value) and "cannot be loaded" in str(error.value) and "\n" not in str(error.value)


def test_the_evaluation_reports_the_encoder_beside_the_others(trained):
    result = run_in_process(EVALUATE, "--eval", str(trained.cases), "--pairs", str(trained.pairs),
                            "--encoder", str(trained.out))
    assert result.returncode == 0, result.stderr
    assert re.search(r"^ +lists +offline +encoder$", result.stdout, re.M)
    assert re.search(r"^top-1 accuracy +\d\.\d{3} +\d\.\d{3} +\d\.\d{3}$", result.stdout, re.M)
    base = ensure_tiny_encoder().name
    fitted_on = " ".join(result.stdout.split("\nfitted on:\n")[1].split())  # its lines wrap between words
    assert f"encoder: {base} fine-tuned on pairs.csv rows 0:48, threshold on cases.csv rows 0:12" in fitted_on


def test_by_default_the_encoder_fits_on_every_development_pair(trained):
    result = run_in_process(TRAIN, "--encoder", str(ensure_tiny_encoder()), "--eval", str(trained.cases),
                            "--out", str(trained.out.parent / "default_pairs"), "--epochs", "1", "--folds", "2")
    assert result.returncode == 0, result.stderr[-3000:]
    files = (PAIRS_CSV, DEV_PAIRS_CSV, DEV2_PAIRS_CSV)
    assert re.search(rf"^fine-tuned \S+ on {sum(len(read_pairs(path)) for path in files)} pairs in ", result.stdout, re.M)
    info = json.loads((trained.out.parent / "default_pairs" / INFO_FILE).read_text(encoding="utf-8"))
    assert info["fitted_on"].startswith(" + ".join(f"{path.name} rows 0:{len(read_pairs(path))}" for path in files))


def test_a_missing_encoder_is_refused_before_torch_is_imported(tmp_path: Path):
    code, heavy = heavy_modules_after(TRAIN, "--encoder", str(tmp_path / "klue-roberta-base"))
    assert (code, heavy) == (2, [])
    result = run_in_process(TRAIN, "--encoder", str(tmp_path / "klue-roberta-base"))
    assert result.returncode == 2 and result.stderr.count("\n") == 1 and "no such folder" in result.stderr
