"""One run at a time per output folder: ``DIR/.predict.lock``.

The lock file is created with ``O_CREAT | O_EXCL`` (atomic: of two runs starting together exactly one gets it) and
holds the host, pid, process start time and start date of the run, and a token of its own. A second run on the same
output is refused at once, naming the run that holds it. A lock whose run is gone (killed, crashed, machine
rebooted) is *stale*: the pid is not alive on this host, or is alive but belongs to a process started later. A stale
lock is taken over, and the run says so. A lock written on another host cannot be checked from here: it is obeyed,
and the message says which file to delete if that run is gone.

The processes of one ``torchrun`` or ``accelerate launch`` run share one lock: the first process takes it (see
``run.py``), the others trust the launch. The lock is removed when the run ends, however it ends; so are the folders
it created if nothing else was written in them.
"""

from __future__ import annotations

import json
import os
import socket
import time
import uuid
from dataclasses import asdict, dataclass
from datetime import datetime, timezone
from pathlib import Path

LOCK_NAME = ".predict.lock"
LAUNCH_VARIABLES = ("TORCHELASTIC_RUN_ID", "MASTER_ADDR", "MASTER_PORT")
STARTING_GRACE_S = 10.0  # a lock file still empty after this long was left by a run killed while creating it
ATTEMPTS = 5
REQUIRED = {"host": str, "pid": int, "token": str}  # what a lock file must name (other fields are informative)


class LockError(ValueError):
    """The output is in use by another run; the message names it and says what to do."""


@dataclass(frozen=True)
class Holder:
    """Who holds a lock (what the lock file says)."""

    host: str
    pid: int
    process_start: int | None
    started: str
    token: str
    launch: str | None = None

    @classmethod
    def this_process(cls) -> Holder:
        launch = [f"{name}={os.environ[name]}" for name in LAUNCH_VARIABLES if os.environ.get(name)]
        return cls(
            host=socket.gethostname(),
            pid=os.getpid(),
            process_start=process_start(os.getpid()),
            started=datetime.now(timezone.utc).isoformat(timespec="seconds"),
            token=uuid.uuid4().hex,
            launch=" ".join(launch) or None,
        )

    @classmethod
    def parse(cls, text: str) -> Holder | None:
        """The holder a lock file names, or None if it names none (empty, cut short, not this program's)."""
        try:
            values = json.loads(text)
        except ValueError:
            return None
        if not isinstance(values, dict) or not all(type(values.get(k)) is t for k, t in REQUIRED.items()):
            return None
        if values["pid"] <= 0:
            return None
        start = values.get("process_start")
        return cls(
            host=values["host"],
            pid=values["pid"],
            process_start=start if isinstance(start, int) else None,
            started=str(values.get("started", "at an unknown time")),
            token=values["token"],
            launch=values.get("launch") if isinstance(values.get("launch"), str) else None,
        )

    def alive(self) -> bool:
        """False only when this run is certainly gone: same host, and its pid is dead or now another process."""
        if self.host != socket.gethostname():
            return True  # another machine (a shared file system): cannot tell
        try:
            os.kill(self.pid, 0)
        except ProcessLookupError:
            return False
        except PermissionError:
            pass  # alive, another user's
        now = process_start(self.pid)
        return now is None or self.process_start is None or now == self.process_start

    def describe(self) -> str:
        launch = f", {self.launch}" if self.launch else ""
        return f"pid {self.pid} on {self.host}, started {self.started}{launch}"


def process_start(pid: int) -> int | None:
    """When process ``pid`` started (clock ticks since boot, from /proc), to tell a reused pid; None elsewhere."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
        return int(stat.rsplit(")", 1)[1].split()[19])
    except (OSError, IndexError, ValueError):
        return None


class OutputLock:
    """``DIR/.predict.lock`` for one run: :meth:`acquire` at the start, :meth:`release` at the end (always)."""

    def __init__(self, folder: Path) -> None:
        self.folder = folder
        self.path = folder / LOCK_NAME
        self.holder = Holder.this_process()
        self.created: list[Path] = []
        self.held = False

    def acquire(self) -> str | None:
        """Take the lock, creating the folder if needed. Returns a warning when a stale lock was taken over.

        Raises:
            LockError: another live run holds it.
        """
        self.created = _make_folders(self.folder)
        warning = None
        for _ in range(ATTEMPTS):
            if self._create():
                self.held = True
                return warning
            found = self._read()
            if found is None:
                continue  # removed meanwhile: try again
            holder, text, age = found
            if holder is not None and holder.alive():
                raise LockError(
                    f"--output {self.folder} is in use by another predict run ({holder.describe()}; lock file "
                    f"{self.path}). Wait for it to end or choose another --output; if that run is gone, delete "
                    f"{self.path}."
                )
            if holder is None and age < STARTING_GRACE_S:
                raise LockError(
                    f"--output {self.folder}: another predict run is starting there (lock file {self.path}). Wait "
                    "for it to end or choose another --output."
                )
            if self._remove_stale(text):
                was = holder.describe() if holder else "an unreadable lock file"
                warning = f"warning: took over the stale lock {self.path} left by a run that is gone ({was})."
        raise LockError(f"--output {self.folder}: other runs keep taking the lock {self.path}; try again later.")

    def _create(self) -> bool:
        try:
            descriptor = os.open(self.path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
        except FileExistsError:
            return False
        try:
            with os.fdopen(descriptor, "w", encoding="utf-8") as stream:
                stream.write(json.dumps(asdict(self.holder)) + "\n")
        except BaseException:
            self.path.unlink(missing_ok=True)  # (a full disk) no empty lock is left behind
            raise
        return True

    def _read(self) -> tuple[Holder | None, str, float] | None:
        """(holder or None if unreadable, the file's text, its age in seconds), or None if the lock is gone."""
        try:
            text = self.path.read_text("utf-8", errors="replace")
            age = time.time() - self.path.stat().st_mtime
        except FileNotFoundError:
            return None
        return Holder.parse(text), text, age

    def _remove_stale(self, stale_text: str) -> bool:
        """Remove the lock if it still is the stale one read (a rename is atomic: of two runs taking over the same
        stale lock, one renames it away; the other then finds the new holder's lock, or none)."""
        claimed = self.path.with_name(f"{LOCK_NAME}.stale-{self.holder.token}")
        try:
            os.rename(self.path, claimed)
        except FileNotFoundError:
            return False
        try:
            if claimed.read_text("utf-8", errors="replace") == stale_text:
                return True
            try:  # a live run's lock created since it was read: put it back
                os.link(claimed, self.path)
            except FileExistsError:
                pass
            except OSError:
                os.replace(claimed, self.path)
            return False
        finally:
            claimed.unlink(missing_ok=True)

    def release(self) -> None:
        """Remove the lock (if this run holds it) and the folders :meth:`acquire` created, if they are empty."""
        if self.held:
            self.held = False
            found = self._read()
            if found is not None and found[0] is not None and found[0].token == self.holder.token:
                self.path.unlink(missing_ok=True)
        for folder in reversed(self.created):
            try:
                folder.rmdir()
            except OSError:
                break  # not empty: the run wrote there
        self.created = []


def _make_folders(folder: Path) -> list[Path]:
    """Create ``folder`` and its missing parents; returns the ones created, outermost first."""
    missing = [path for path in (folder, *folder.parents) if not path.exists()][::-1]
    created = []
    for path in missing:
        try:
            path.mkdir()
        except FileExistsError:
            continue
        created.append(path)
    return created
