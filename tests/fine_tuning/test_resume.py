"""Resuming an interrupted fine-tuning run: kill -9, --resume, and the adapter a run never interrupted makes."""

import json
import os
import re
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from helpers.scripts import REPO, run_in_process
from safetensors.torch import load_file

from llm.common.cli import UserError, run_main
from llm.fine_tuning.options import parse_options
from llm.fine_tuning.program import fine_tune
from llm.fine_tuning.resume import resumed_settings
from llm.common.specs import POLYGLOT, Recipe

SCRIPT = "llm/run_fine_tuning_polyglot.py"
EPOCHS = 4  # 24 train rows in batches of 4: 6 steps an epoch, a checkpoint at steps 6, 12, 18, 24
KEPT = re.compile(r"^checkpoint saved at epoch \d+/\d+, step \d+; checkpoints on disk: (.*)$", re.MULTILINE)


def first_run_args(dataset: Path, root: Path) -> list[str]:
    return ["--dataset", str(dataset), "--model-dir", str(root / "no_weights"), "--epochs", str(EPOCHS),
            "--output-dir", str(root / "models" / "adapter"), "--logs-dir", str(root / "logs")]


def files(folder: Path) -> dict[str, bytes]:
    return {str(path.relative_to(folder)): path.read_bytes() for path in sorted(folder.rglob("*")) if path.is_file()}


def is_complete(checkpoint: Path) -> bool:
    """What the Trainer writes last, trainer_state.json, is there in full."""
    try:
        return json.loads((checkpoint / "trainer_state.json").read_text())["global_step"] > 0
    except (OSError, ValueError, KeyError):
        return False


def one_log(logs_dir: Path) -> str:
    (log,) = logs_dir.glob("*.txt")
    return log.read_text(encoding="utf-8")


@pytest.fixture(scope="module")
def uninterrupted(tmp_path_factory, small_dataset) -> Path:
    root = tmp_path_factory.mktemp("uninterrupted")
    result = run_in_process(SCRIPT, *first_run_args(small_dataset, root))
    assert result.returncode == 0, result.stderr[-3000:]
    return root


@pytest.fixture(scope="module")
def killed(tmp_path_factory, small_dataset, uninterrupted) -> dict:
    """The same run killed with SIGKILL once its first checkpoint is complete, over an earlier run's adapter."""
    root = tmp_path_factory.mktemp("killed")
    adapter, checkpoints = root / "models" / "adapter", root / "models" / "adapter_checkpoints"
    shutil.copytree(uninterrupted / "models" / "adapter", adapter)
    (adapter / "MARKER").write_text("the previous run's adapter")
    previous = files(adapter)
    with (root / "stderr.txt").open("w") as stderr:  # a file, not a pipe: a full pipe would stall the run
        process = subprocess.Popen([sys.executable, str(REPO / SCRIPT), *first_run_args(small_dataset, root)],
                                   cwd=REPO, stdout=subprocess.DEVNULL, stderr=stderr,
                                   env={**os.environ, "PYTHONIOENCODING": "utf-8"})
        give_up = time.monotonic() + 300  # only so that a hung run fails the test instead of hanging it
        while not is_complete(checkpoints / "checkpoint-6"):
            assert process.poll() is None, (root / "stderr.txt").read_text()[-3000:]
            assert time.monotonic() < give_up, "no checkpoint after 300 s"
            time.sleep(0.02)
        os.kill(process.pid, signal.SIGKILL)
        assert process.wait() == -signal.SIGKILL, "the run finished before the kill"
    pristine = tmp_path_factory.mktemp("pristine") / "adapter_checkpoints"
    shutil.copytree(checkpoints, pristine)  # for the refusal tests: the resume below consumes the original
    return {"root": root, "adapter": adapter, "checkpoints": checkpoints, "previous": previous,
            "after_kill": files(adapter), "folders_after_kill": sorted(p.name for p in adapter.parent.iterdir()
                                                                      if not p.name.endswith(".lock")),
            "pristine": pristine, "dataset": small_dataset}


@pytest.fixture(scope="module")
def resumed(killed) -> dict:
    """`--resume` with none of the first run's options: they must come from the checkpoint folder."""
    # What a kill while the Trainer writes the next checkpoint leaves: every file but a cut-off trainer_state.json.
    cut_off = killed["checkpoints"] / "checkpoint-12"
    shutil.copytree(killed["checkpoints"] / "checkpoint-6", cut_off)
    state_text = (cut_off / "trainer_state.json").read_text()
    (cut_off / "trainer_state.json").write_text(state_text[: len(state_text) // 2])
    logs = killed["root"] / "resumed_logs"
    result = run_in_process(SCRIPT, "--output-dir", str(killed["adapter"]), "--logs-dir", str(logs), "--resume")
    assert result.returncode == 0, result.stderr[-3000:]
    return {**killed, "log": one_log(logs)}


def test_a_killed_run_leaves_the_previous_adapter_untouched(killed):
    assert killed["after_kill"] == killed["previous"]
    # Nothing half-written beside it: no staging folder of an adapter save, only the run's checkpoints.
    assert killed["folders_after_kill"] == ["adapter", "adapter_checkpoints"]
    assert sorted(p.name for p in killed["pristine"].glob("checkpoint-*")) == ["checkpoint-6"]
    assert (killed["pristine"] / "run_settings.json").is_file()


def test_resumed_run_ends_with_the_adapter_of_an_uninterrupted_run(resumed, uninterrupted):
    # Bit for bit: the checkpoint restores weights, optimizer, scheduler and RNG states at an epoch boundary,
    # the sampler reseeds per epoch, and CPU kernels are deterministic.
    expected = load_file(uninterrupted / "models" / "adapter" / "adapter_model.safetensors")
    actual = load_file(resumed["adapter"] / "adapter_model.safetensors")
    assert sorted(actual) == sorted(expected)
    different = [name for name in expected if not torch.equal(actual[name], expected[name])]
    assert different == []
    assert not (resumed["adapter"] / "MARKER").exists()  # the new adapter replaced the old one whole
    assert not resumed["checkpoints"].exists()  # a finished run's checkpoints are spent


def test_resumed_log_says_from_where_and_skips_the_cut_off_checkpoint(resumed):
    checkpoints = resumed["checkpoints"]
    assert (f"skipped and removed {checkpoints / 'checkpoint-12'}: incomplete" in resumed["log"])
    assert (f"resumed from {checkpoints / 'checkpoint-6'} with the settings in {checkpoints / 'run_settings.json'}: "
            f"at epoch 1/{EPOCHS}, step 6/24") in resumed["log"]
    assert f"dataset: {resumed['dataset']} (24 train rows" in resumed["log"]
    assert f"hyperparameters: epochs={EPOCHS}, " in resumed["log"]  # not the stand-in's default of 30


def test_no_more_checkpoints_on_disk_than_the_recipe_keeps(resumed, uninterrupted):
    """Counted by the run after each save, once the Trainer has deleted the oldest."""
    for log in (one_log(uninterrupted / "logs"), resumed["log"]):
        assert all(len(kept.split(", ")) <= Recipe().checkpoints_kept for kept in KEPT.findall(log))
    assert KEPT.findall(one_log(uninterrupted / "logs")) == [
        "checkpoint-6", "checkpoint-6, checkpoint-12", "checkpoint-12, checkpoint-18", "checkpoint-18, checkpoint-24"]
    # The resumed run goes on rotating, from the killed run's checkpoint-6 on.
    assert KEPT.findall(resumed["log"]) == [
        "checkpoint-6, checkpoint-12", "checkpoint-12, checkpoint-18", "checkpoint-18, checkpoint-24"]


def _contradicting_option(checkpoints: Path, dataset: Path) -> tuple[list[str], str]:
    # --seed as the run has it is no contradiction: only --epochs is named.
    return ["--epochs", "5", "--seed", str(Recipe().seed)], r"--epochs 5 \(the run has 4\): leave out what differs"


def _changed_dataset(checkpoints: Path, dataset: Path) -> tuple[list[str], str]:
    # The run trained on the shared session file, which must stay as it is: point the settings at a copy.
    copy = checkpoints.parent / "data.csv"
    shutil.copy(dataset, copy)
    settings_path = checkpoints / "run_settings.json"
    settings = json.loads(settings_path.read_text())
    settings_path.write_text(json.dumps({**settings, "dataset": str(copy)}))
    copy.write_text(copy.read_text(encoding="utf-8").replace("train", "valid", 1), encoding="utf-8")
    return [], rf"{re.escape(str(copy))} changed since the run started"


def _newer_format(checkpoints: Path, dataset: Path) -> tuple[list[str], str]:
    settings_path = checkpoints / "run_settings.json"
    settings_path.write_text(json.dumps({**json.loads(settings_path.read_text()), "format": 2, "new": "field"}))
    return [], r"written by a newer Oh-LoRA \(format 2; this one knows up to 1\): update this checkout"


@pytest.mark.parametrize("change", [_contradicting_option, _changed_dataset, _newer_format])
def test_resume_refuses_what_contradicts_the_run(tmp_path, killed, change, capsys):
    """In-process through run_main, as the script calls it (test_pipeline runs a one-line refusal as a script)."""
    checkpoints = tmp_path / "adapter_checkpoints"
    shutil.copytree(killed["pristine"], checkpoints)
    extra, message = change(checkpoints, killed["dataset"])
    before = files(tmp_path)
    argv = ["--output-dir", str(tmp_path / "adapter"), "--logs-dir", str(tmp_path / "logs"), "--resume", *extra]
    with pytest.raises(SystemExit) as exit_info:
        run_main(lambda: fine_tune(POLYGLOT, parse_options(POLYGLOT, argv)))
    assert exit_info.value.code == 2
    stderr = capsys.readouterr().err
    assert stderr.count("\n") == 1
    assert re.match(rf"error: --resume: .*{message}.*, or delete {re.escape(str(checkpoints))} to start over$", stderr)
    assert files(tmp_path) == before  # no log, no adapter, the checkpoints as they were


def test_resume_with_only_a_cut_off_checkpoint_says_there_is_none(tmp_path, killed):
    checkpoints = tmp_path / "adapter_checkpoints"
    shutil.copytree(killed["pristine"], checkpoints)
    (checkpoints / "checkpoint-6" / "trainer_state.json").unlink()
    with pytest.raises(UserError, match=r"no complete checkpoint .*\(checkpoint-6: cut off while being written\): "
                                        r"run without --resume to start over"):
        fine_tune(POLYGLOT, parse_options(POLYGLOT, 
            ["--output-dir", str(tmp_path / "adapter"), "--logs-dir", str(tmp_path / "logs"), "--resume"]))


def test_a_checkpoint_of_another_run_is_refused_in_one_line(tmp_path, killed):
    """A checkpoint whose adapter the run's settings would not make (copied from another run, another rank) would
    stop the Trainer on a size mismatch: it is named instead."""
    checkpoints = tmp_path / "adapter_checkpoints"
    shutil.copytree(killed["pristine"], checkpoints)
    config_path = checkpoints / "checkpoint-6" / "adapter_config.json"
    config_path.write_text(json.dumps({**json.loads(config_path.read_text()), "r": 8}))
    with pytest.raises(UserError, match=r"--resume: .*checkpoint-6 holds a LoRA adapter of rank 8 on query_key_value, "
                                        r"but the run's settings make rank 64 on query_key_value .*: it is another "
                                        r"run's; delete .*adapter_checkpoints to start over"):
        fine_tune(POLYGLOT, parse_options(POLYGLOT, ["--output-dir", str(tmp_path / "adapter"), "--logs-dir",
                                                     str(tmp_path / "logs"), "--resume"]))


def test_a_moved_dataset_is_found_by_its_content(tmp_path, killed):
    checkpoints = tmp_path / "adapter_checkpoints"
    shutil.copytree(killed["pristine"], checkpoints)
    settings_path = checkpoints / "run_settings.json"
    settings = json.loads(settings_path.read_text())
    moved = tmp_path / "moved.csv"
    shutil.copy(settings["dataset"], moved)
    settings_path.write_text(json.dumps({**settings, "dataset": str(tmp_path / "gone.csv")}))

    def resumed(*flags: str):
        return resumed_settings(POLYGLOT, parse_options(POLYGLOT, ["--resume", *flags]), checkpoints, 1)

    with pytest.raises(UserError, match=r"the run's dataset .*gone\.csv is gone: give the same file's place with "
                                        r"--dataset"):
        resumed()
    assert resumed("--dataset", str(moved))[2] == moved
    other = tmp_path / "other.csv"
    other.write_text(moved.read_text(encoding="utf-8").replace("train", "valid", 1), encoding="utf-8")
    with pytest.raises(UserError, match=r"--dataset .*other\.csv \(the run has .*gone\.csv\)"):
        resumed("--dataset", str(other))
