"""Output folders: what a run may replace, checked before any work, and saves that an interruption cannot half-do.

A run replaces a folder only when it is empty or holds what this project saved there (marked by SAVE_MARKER);
anything else (the dataset's folder, llm/models/, a file) is refused in one line before training starts.
"""

import errno
import fcntl
import json
import os
import shutil
import signal
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

from llm.common.cli import UserError

SAVE_MARKER = "ohlora_saved.json"  # written last into every folder this project saves: "complete, and ours"
# The marker's format: a folder whose marker is newer than this code knows is left alone, never replaced.
MARKER_FORMAT = 1
# What peft and a tokenizer write into an adapter folder: a folder saved before SAVE_MARKER existed is
# recognised by holding these files only.
ADAPTER_FILES = {
    "adapter_config.json", "adapter_model.safetensors", "README.md", "tokenizer.json", "tokenizer_config.json",
    "special_tokens_map.json", "tokenizer.model", "chat_template.jinja", "added_tokens.json",
}
_SAVING, _PREVIOUS = "saving", "previous"
LOW_SPACE_BYTES = 16 * 2**20


class OutputError(UserError):
    """An output place that cannot be used; nothing has been written."""


def _visible(folder: Path) -> list[Path]:
    return [child for child in folder.iterdir() if not child.name.startswith(".")]


def saved_what(folder: Path) -> str | None:
    """What this project saved in a folder (its marker's "what"; "adapter" for an adapter folder saved before
    markers existed), or None when the folder is not one it saved."""
    marker = folder / SAVE_MARKER
    if marker.is_file():
        info = read_saved_info(folder)
        check_format(marker, info.get("format", 1), MARKER_FORMAT, "choose another folder")
        what = info.get("what")
        return what if isinstance(what, str) else "unknown"
    names = {child.name for child in _visible(folder)}
    legacy_adapter = "adapter_config.json" in names and names <= ADAPTER_FILES and all(
        (folder / name).is_file() for name in names)
    return "adapter" if legacy_adapter else None


def check_format(where: str | Path, found: object, known: int, instead: str) -> None:
    """Refuse, before anything is written over it, a file (named by `where`) of a newer format than this code
    knows."""
    if isinstance(found, int) and found > known:
        raise OutputError(f"{where}: written by a newer Oh-LoRA (format {found}; this one knows up to {known}): "
                          f"update this checkout, or {instead}")


def read_saved_info(folder: Path) -> dict:
    """The marker's record of what was saved (the training's settings for an adapter); {} without one."""
    try:
        info = json.loads((folder / SAVE_MARKER).read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, ValueError):
        return {}
    return info if isinstance(info, dict) else {}


def _no_space(error: BaseException) -> bool:
    if isinstance(error, OSError):
        return error.errno in (errno.ENOSPC, errno.EDQUOT)
    return "no space left" in str(error).lower()  # safetensors' and torch's errors keep only the system's words


def storage_error(error: BaseException, path: Path) -> bool:
    """Whether an exception from a library's write (safetensors, torch, PIL, SQLite: each has its own type) is the
    storage failing under `path`, not a bug: the one-line answer then applies."""
    if isinstance(error, OSError):
        return True
    return type(error).__name__ in ("SafetensorError", "RuntimeError", "OperationalError") and (
        _no_space(error) or disk_full(path, error))


def disk_full(path: Path, error: BaseException) -> bool:
    """Whether an error while writing under `path` came from a full disk: its errno, or (for writers that lose
    the errno, like torch.save's "basic_ios::clear: iostream error") almost no space left there now."""
    if isinstance(error, OSError) and _no_space(error):
        return True
    existing = next((parent for parent in (Path(path), *Path(path).parents) if parent.exists()), None)
    return existing is not None and shutil.disk_usage(existing).free < LOW_SPACE_BYTES


def describe_os_error(error: BaseException, path: Path) -> str:
    """One line for a failed write: 'no space left on <path>' for a full disk, the system's words otherwise."""
    if _no_space(error) or (not isinstance(error, OSError) and disk_full(path, error)):
        return f"no space left on {path}"
    return f"{path}: {getattr(error, 'strerror', None) or error}"


def _can_create_in(folder: Path) -> bool:
    """Whether a file can really be made in the folder: root passes os.access where an immutable flag or a
    read-only mount still refuses. The probe is an unnamed temporary file (O_TMPFILE): nothing appears."""
    try:
        with tempfile.TemporaryFile(dir=folder):
            return True
    except OSError:
        return False


def check_writable_folder(path: Path, option: str) -> Path:
    """The folder resolved, after checking that it is (or can be made as) a folder this user can write."""
    path = Path(path).expanduser().resolve()
    if path.exists() and not path.is_dir():
        raise OutputError(f"{option} {path}: exists and is not a folder")
    existing = next(parent for parent in (path, *path.parents) if parent.exists())
    if not existing.is_dir() or not os.access(existing, os.W_OK | os.X_OK) or not _can_create_in(existing):
        raise OutputError(f"{option} {path}: {existing} is not writable")
    return path


def check_replaceable(path: Path, option: str, what: str | None = None) -> Path:
    """The output folder resolved, once it is known that a save may put a folder there.

    Allowed: nothing there, an empty folder, or a folder this project saved (of the same kind, `what`, when given:
    an export never replaces a trained adapter). The parent must be writable (the save renames into it).
    """
    path = Path(path).expanduser().resolve()
    if path == Path(path.anchor):
        raise OutputError(f"{option} {path}: the root of the file system cannot be an output folder")
    if path.exists():
        if not path.is_dir():
            raise OutputError(f"{option} {path}: exists and is a file, not a folder this project saved; "
                              f"choose another path")
        saved = saved_what(path) if _visible(path) else None
        if _visible(path) and saved is None:
            raise OutputError(f"{option} {path}: holds files this project did not save there (it would be "
                              f"replaced); choose an empty or new folder")
        if what is not None and saved not in (None, what):
            article = "an" if what[0] in "aeiou" else "a"
            raise OutputError(f"{option} {path}: holds this project's {saved}, not {article} {what} (it would be "
                              f"replaced); choose another folder")
        check_writable_folder(path, option)  # an immutable folder cannot be moved aside either
    check_writable_folder(path.parent, option)
    return path


def _leftovers(path: Path, kind: str) -> list[Path]:
    return sorted(path.parent.glob(f".{path.name}.{kind}-*"))


def recover_interrupted_save(path: Path) -> str | None:
    """Put back what an interrupted save left beside `path`; returns a line saying what it did, or None.

    A save moves the old folder to .NAME.previous-PID and the new one from .NAME.saving-PID: when `path` is
    missing, the old folder (else a complete new one) is moved back; the rest is removed.
    """
    path = Path(path)
    previous, saving = _leftovers(path, _PREVIOUS), _leftovers(path, _SAVING)
    if not previous and not saving:
        return None
    said = None
    if not path.exists():
        complete = [folder for folder in saving if (folder / SAVE_MARKER).is_file()]
        restored = (previous or complete or [None])[-1]
        if restored is not None:
            restored.rename(path)
            said = f"restored {path} from {restored.name}, left by an interrupted save"
    for leftover in _leftovers(path, _PREVIOUS) + _leftovers(path, _SAVING):
        shutil.rmtree(leftover, ignore_errors=True)
    return said or f"removed what an interrupted save left beside {path}"


@contextmanager
def _signals_deferred() -> Iterator[None]:
    """Ctrl-C and SIGTERM wait until the block ends: the two renames of a save happen both or neither.

    Python runs signal handlers in the main thread between bytecodes, so swapping the handlers there is
    enough (blocking the signal would not be: torch's threads would receive it).
    """
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    received: list[int] = []
    handlers = {number: signal.signal(number, lambda signum, frame: received.append(signum))
                for number in (signal.SIGINT, signal.SIGTERM)}
    try:
        yield
    finally:
        for number, handler in handlers.items():
            signal.signal(number, handler)
        if received:
            signal.raise_signal(received[0])


def _usual_permissions(folder: Path) -> None:
    """Files and folders as the umask makes them: some writers (safetensors) create their files 0600."""
    umask = os.umask(0)
    os.umask(umask)
    for path in [folder, *folder.rglob("*")]:
        path.chmod((0o777 if path.is_dir() else 0o666) & ~umask)


def save_folder_atomically(path: Path, write: Callable[[Path], None], what: str, info: dict | None = None) -> None:
    """Write a folder beside `path` with `write(staging)`, then swap it in: an interruption anywhere leaves the
    old folder or the new one at `path` (recover_interrupted_save tidies up after a kill).

    Raises OutputError (one line) when the disk is full or the place is not writable; the old folder stays.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    recover_interrupted_save(path)
    staging = path.with_name(f".{path.name}.{_SAVING}-{os.getpid()}")
    previous = path.with_name(f".{path.name}.{_PREVIOUS}-{os.getpid()}")
    try:
        staging.mkdir()  # default permissions (umask): other users may load what is saved
        write(staging)
        _usual_permissions(staging)
        marker = {"format": MARKER_FORMAT, "what": what, "saved": time.strftime("%Y-%m-%dT%H:%M:%S%z"), **(info or {})}
        (staging / SAVE_MARKER).write_text(json.dumps(marker) + "\n", encoding="utf-8")
        with _signals_deferred():
            if path.exists():
                path.rename(previous)
            staging.rename(path)
    except Exception as error:
        if not storage_error(error, path):
            raise
        if not path.exists() and previous.exists():
            previous.rename(path)  # the new folder could not be moved in: the old one goes back
        raise OutputError(f"{what} not saved: {describe_os_error(error, path)}") from None
    finally:
        # Whatever happened (a Ctrl-C deferred until after the renames included), `path` holds a whole folder.
        shutil.rmtree(staging, ignore_errors=True)
        if path.exists():
            shutil.rmtree(previous, ignore_errors=True)


def write_text_atomically(path: Path, text: str) -> None:
    """Write beside, then rename: the old file stays whole until the new one is; OutputError (one line) when the
    place cannot be written."""
    partial = path.with_name(f".{path.name}.partial-{os.getpid()}")
    try:
        partial.write_text(text, encoding="utf-8")
        os.replace(partial, path)
    except OSError as error:
        partial.unlink(missing_ok=True)
        raise OutputError(f"{path} not written: {describe_os_error(error, path)}") from None


class Busy(UserError):
    """Another process is writing the same output."""


def _lock_path(path: Path) -> Path:
    path = Path(path).expanduser().resolve()
    return path.with_name(f".{path.name}.lock")


def _take(handle, path: Path, option: str) -> None:
    try:
        fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        handle.seek(0)
        owner = handle.read().strip() or "another process"
        raise Busy(f"{option} {Path(path).expanduser().resolve()}: in use by {owner}; wait for it to end, or "
                   f"choose another {option}") from None


def check_not_busy(path: Path, option: str) -> None:
    """Refuse, before any other check and without writing anything, a place another run holds (output_lock)."""
    lock_path = _lock_path(path)
    if lock_path.is_file():
        with lock_path.open("r", encoding="utf-8") as handle:
            _take(handle, path, option)  # released at once by closing


@contextmanager
def output_lock(path: Path, option: str) -> Iterator[None]:
    """Hold an advisory lock on an output place for as long as a run writes it: a second run on the same place is
    refused in one line instead of losing one run's result. The lock is a file beside the place, made once the
    place is known to be usable and removed when the run ends; the system releases the lock when its owner ends,
    however it ends (a kill -9 too), so a stale file never blocks."""
    lock_path = _lock_path(path)
    lock_path.parent.mkdir(parents=True, exist_ok=True)
    while True:
        handle = lock_path.open("a+", encoding="utf-8")
        try:
            _take(handle, path, option)
        except BaseException:
            handle.close()
            raise
        try:  # the previous owner may have removed the file between our open and our lock: lock the new one
            if os.stat(lock_path).st_ino == os.fstat(handle.fileno()).st_ino:
                break
        except FileNotFoundError:
            pass
        handle.close()
    try:
        handle.seek(0)
        handle.truncate()
        handle.write(f"process {os.getpid()} (since {time.strftime('%H:%M:%S')})")
        handle.flush()
        yield
    finally:
        lock_path.unlink(missing_ok=True)  # while still held, so nobody locks a file that is about to go
        handle.close()


def append_line_safely(path: Path, text: str) -> None:
    """Append text to a file, first ending its last line when a hand edit left it without a newline."""
    with path.open("a+b") as handle:
        handle.seek(0, os.SEEK_END)
        if handle.tell() > 0:
            handle.seek(-1, os.SEEK_END)
            if handle.read(1) != b"\n":
                handle.write(b"\n")
        handle.write(text.encode("utf-8"))
