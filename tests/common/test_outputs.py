"""A run never deletes what it did not write: checkpoints, interrupted saves, memory files, full disks, signals.

The output places refused before training (the dataset's folder, a file, the root, logs inside the output) are
cases of tests/test_faults.py, which also checks that nothing was written.
"""

import os
import re
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from helpers.scripts import start_script
from llm.common.cli import UserError
from llm.common.specs import POLYGLOT
from llm.fine_tuning.options import parse_options
from llm.fine_tuning.program import prepare
from llm.common.outputs import (
    SAVE_MARKER, Busy, OutputError, check_not_busy, disk_full, output_lock, recover_interrupted_save,
    save_folder_atomically,
)
from llm.fine_tuning.resume import remove_run_files, scan

FINE_TUNE = "llm/run_fine_tuning_polyglot.py"


def test_spent_checkpoints_are_removed_but_nothing_else(tmp_path):
    checkpoints = tmp_path / "adapter_checkpoints"
    (checkpoints / "checkpoint-10").mkdir(parents=True)
    (checkpoints / "checkpoint-10" / "trainer_state.json").write_text("{}")
    (checkpoints / "run_settings.json").write_text("{}")
    assert [path.name for path in scan(checkpoints).complete] == []  # only what a run writes: accepted
    (checkpoints / "later.txt").write_text("appeared during the run")
    remove_run_files(checkpoints)
    assert sorted(path.name for path in checkpoints.iterdir()) == ["later.txt"]
    (checkpoints / "later.txt").unlink()
    remove_run_files(checkpoints)
    assert not checkpoints.exists()


def write_files(content: str):
    def write(folder: Path) -> None:
        (folder / "adapter_config.json").write_text(content)
    return write


def test_interrupted_while_writing_keeps_the_old_adapter(tmp_path):
    target = tmp_path / "adapter"
    save_folder_atomically(target, write_files("old"), "adapter")

    def interrupted(folder: Path) -> None:
        (folder / "adapter_config.json").write_text("half")
        raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        save_folder_atomically(target, interrupted, "adapter")
    assert (target / "adapter_config.json").read_text() == "old"
    assert sorted(path.name for path in tmp_path.iterdir()) == ["adapter"]


def test_ctrl_c_between_the_renames_is_deferred_until_the_new_adapter_is_in_place(tmp_path, monkeypatch):
    target = tmp_path / "adapter"
    save_folder_atomically(target, write_files("old"), "adapter")
    real_rename = Path.rename

    def rename_then_interrupt(self, destination):
        result = real_rename(self, destination)
        if ".previous-" in str(destination):  # the old one has just been moved aside: Ctrl-C now
            signal.raise_signal(signal.SIGINT)  # delivered to this thread at once (os.kill may pick another)
        return result

    monkeypatch.setattr(Path, "rename", rename_then_interrupt)
    before = signal.signal(signal.SIGINT, signal.default_int_handler)  # Python's own Ctrl-C, whatever ran before
    try:
        with pytest.raises(KeyboardInterrupt):
            save_folder_atomically(target, write_files("new"), "adapter")
    finally:
        signal.signal(signal.SIGINT, before)
    assert (target / "adapter_config.json").read_text() == "new"
    assert sorted(path.name for path in tmp_path.iterdir()) == ["adapter"]


@pytest.mark.parametrize("left", ["previous only", "previous and saving", "saving, complete", "saving, partial"])
def test_next_run_restores_or_cleans_what_a_killed_save_left(tmp_path, left):
    target = tmp_path / "adapter"
    if "previous" in left:
        (tmp_path / ".adapter.previous-99").mkdir()
        (tmp_path / ".adapter.previous-99" / "adapter_config.json").write_text("old")
    if "saving" in left:
        (tmp_path / ".adapter.saving-99").mkdir()
        (tmp_path / ".adapter.saving-99" / "adapter_config.json").write_text("new")
        if left == "saving, complete":
            (tmp_path / ".adapter.saving-99" / SAVE_MARKER).write_text("{}")
    said = recover_interrupted_save(target)
    assert said
    names = sorted(path.name for path in tmp_path.iterdir())
    if left == "saving, partial":
        assert names == []
    else:
        assert names == ["adapter"]
        assert (target / "adapter_config.json").read_text() == ("new" if left == "saving, complete" else "old")


def test_saved_folder_is_readable_by_others(tmp_path):
    old_umask = os.umask(0o022)
    try:
        save_folder_atomically(tmp_path / "adapter", write_files("x"), "adapter")
    finally:
        os.umask(old_umask)
    assert (tmp_path / "adapter").stat().st_mode & 0o777 == 0o755
    assert (tmp_path / "adapter" / "adapter_config.json").stat().st_mode & 0o044 == 0o044


def test_full_disk_on_save_is_one_line_and_keeps_the_old(tmp_path):
    target = tmp_path / "adapter"
    save_folder_atomically(target, write_files("old"), "adapter")

    def disk_full(folder: Path) -> None:
        raise OSError(28, "No space left on device")

    with pytest.raises(OutputError, match="no space left on"):
        save_folder_atomically(target, disk_full, "adapter")
    assert (target / "adapter_config.json").read_text() == "old"










def test_a_full_disk_in_a_library_without_an_oserror_is_the_same_one_line(tmp_path):
    """safetensors reports a full disk as its own SafetensorError: still one line, and the old folder stays."""
    from safetensors import SafetensorError

    target = tmp_path / "adapter"
    save_folder_atomically(target, write_files("old"), "adapter")

    def full(folder: Path) -> None:
        raise SafetensorError("Error while serializing: IoError(Os { code: 28, kind: StorageFull, message: "
                              "\"No space left on device\" })")

    with pytest.raises(OutputError, match=rf"^adapter not saved: no space left on {re.escape(str(target))}$"):
        save_folder_atomically(target, full, "adapter")
    assert (target / "adapter_config.json").read_text() == "old"

    def bug(folder: Path) -> None:
        raise RuntimeError("a bug, not the disk")

    with pytest.raises(RuntimeError, match="a bug"):  # not every error is the storage's
        save_folder_atomically(target, bug, "adapter")


def test_a_place_another_process_writes_is_refused_and_freed_when_it_ends_however(tmp_path):
    place = tmp_path / "adapter"
    with output_lock(place, "--output-dir"):
        with pytest.raises(Busy, match=rf"--output-dir {re.escape(str(place))}: in use by process {os.getpid()} "):
            check_not_busy(place, "--output-dir")
        with pytest.raises(Busy):
            with output_lock(place, "--output-dir"):
                pass
    check_not_busy(place, "--output-dir")  # released
    assert list(tmp_path.iterdir()) == []  # and nothing is left beside the place
    holder = subprocess.Popen([sys.executable, "-c", "import sys, time\nfrom llm.common.outputs import output_lock\n"
                               "with output_lock(sys.argv[1], '--output-dir'):\n    print('held', flush=True)\n"
                               "    time.sleep(600)\n", str(place)], stdout=subprocess.PIPE, text=True)
    assert holder.stdout.readline().strip() == "held"
    with pytest.raises(Busy, match=rf"in use by process {holder.pid} "):
        check_not_busy(place, "--output-dir")
    holder.kill()  # kill -9: no clean-up ran, yet the lock is not stale
    holder.wait()
    check_not_busy(place, "--output-dir")
    with output_lock(place, "--output-dir"):  # the file the killed run left is taken over, then removed
        pass
    assert list(tmp_path.iterdir()) == []


def test_a_full_disk_is_recognised_without_an_errno(tmp_path, monkeypatch):
    """torch.save reports a full disk as RuntimeError('basic_ios::clear: iostream error'): the free space tells."""
    error = RuntimeError("[enforce fail at inline_container.cc:664] . unexpected pos: basic_ios::clear: iostream error")
    usage = shutil.disk_usage(tmp_path)
    monkeypatch.setattr(shutil, "disk_usage", lambda path: usage._replace(free=1024))
    assert disk_full(tmp_path / "checkpoints" / "checkpoint-6", error)
    monkeypatch.setattr(shutil, "disk_usage", lambda path: usage._replace(free=10 * 2**30))
    assert not disk_full(tmp_path, error)
    assert disk_full(tmp_path, OSError(28, "No space left on device"))


def test_sigterm_stops_a_run_with_a_closed_log_and_says_how_to_continue(tmp_path, small_dataset):
    logs = tmp_path / "logs"
    process = start_script(FINE_TUNE, "--dataset", str(small_dataset), "--model-dir", str(tmp_path / "none"),
                           "--output-dir", str(tmp_path / "adapter"), "--logs-dir", str(logs), "--epochs", "20")
    give_up = time.monotonic() + 300  # only so that a hung run fails the test instead of hanging it
    while not list((tmp_path / "adapter_checkpoints").glob("checkpoint-*/trainer_state.json")):
        assert process.poll() is None and time.monotonic() < give_up
        time.sleep(0.05)
    process.send_signal(signal.SIGTERM)
    _, stderr = process.communicate(timeout=120)
    assert process.returncode == 143
    # (on the line of a progress bar, which may also redraw once more as the process exits)
    assert "terminated (run the same command with --resume to continue from the last saved epoch)\n" in stderr
    assert "Traceback" not in stderr
    (log,) = logs.glob("*.txt")
    assert log.read_text(encoding="utf-8").endswith("\nRUN STOPPED: terminated (SIGTERM)\n")
    assert not (tmp_path / "adapter").exists()


def _immutable(folder: Path) -> bool:
    """chattr +i: even root cannot write there (os.access says it can)."""
    return shutil.which("chattr") is not None and \
        subprocess.run(["chattr", "+i", str(folder)], capture_output=True).returncode == 0


@pytest.mark.parametrize("which", ["--output-dir", "--logs-dir"])
def test_an_immutable_output_place_is_refused_before_training(tmp_path, small_dataset, which):
    adapter, logs = tmp_path / "adapter", tmp_path / "logs"
    save_folder_atomically(adapter, write_files("an earlier adapter"), "adapter")
    logs.mkdir()
    locked = adapter if which == "--output-dir" else logs
    if not _immutable(locked):
        pytest.skip("chattr +i is not available here")
    try:
        args = parse_options(POLYGLOT, ["--dataset", str(small_dataset), "--output-dir", str(adapter),
                                                  "--logs-dir", str(logs), "--model-dir", str(tmp_path / "none")])
        with pytest.raises(UserError, match=rf"^{which} .*: .* is not writable$"):
            prepare(POLYGLOT, args)
    finally:
        subprocess.run(["chattr", "-i", str(locked)], check=True)
    assert (adapter / "adapter_config.json").read_text() == "an earlier adapter"
