"""Which Snakemake runs are working on a results directory right now.

Snakemake's own directory lock is off (profiles set `nolock`: a killed login session
would leave it behind), and each cell's launcher lock already keeps a cell to one
launcher. What that lock cannot do is tell a second run, at its start, that the studies
it is about to run are another run's: its launchers would find the cells locked and
report them failed. So each run that executes writes a marker,
`<results>/.runs/<host>.<pid>.json`, naming the studies it works on, and touches it
every HEARTBEAT_S seconds; a run that starts later leaves those studies alone, in one
line. A marker is live while its process runs (on this host, where the pid can be
checked) or, for a run on another login node, while its heartbeat is younger than
STALE_AFTER_S; a killed run's marker goes stale by itself, and removing it clears it at
once.
"""

from __future__ import annotations

import contextlib
import json
import os
import socket
import threading
import time
from dataclasses import dataclass
from pathlib import Path

import psutil

RUNS_DIR = ".runs"
HEARTBEAT_S = 30.0
STALE_AFTER_S = 120.0


@dataclass(frozen=True)
class ActiveRun:
    host: str
    pid: int
    started_at: float
    studies: tuple[str, ...]
    marker: Path
    heartbeat_at: float  # the marker's modification time

    @classmethod
    def read(cls, marker: Path) -> ActiveRun | None:
        try:
            record = json.loads(marker.read_text())
            return cls(str(record["host"]), int(record["pid"]), float(record["started_at"]),
                       tuple(record["studies"]), marker, marker.stat().st_mtime)
        except (OSError, ValueError, KeyError, TypeError):
            return None  # gone meanwhile, or not a marker

    def is_live(self, now: float | None = None) -> bool:
        if self.host == socket.gethostname() and not psutil.pid_exists(self.pid):
            return False
        return (now if now is not None else time.time()) - self.heartbeat_at < STALE_AFTER_S

    def describe(self, now: float | None = None) -> str:
        age = (now if now is not None else time.time()) - self.heartbeat_at
        started = time.strftime("%Y-%m-%d %H:%M", time.localtime(self.started_at))
        return f"host {self.host}, pid {self.pid}, started {started}, last heartbeat {age:.0f} s ago"


def other_active_runs(results_dir: Path) -> list[ActiveRun]:
    """The live runs on these results other than this process. Reads only."""
    found = []
    for marker in sorted((results_dir / RUNS_DIR).glob("*.json")):
        run = ActiveRun.read(marker)
        if run is not None and run.is_live() and not (run.host == socket.gethostname() and run.pid == os.getpid()):
            found.append(run)
    return found


def studies_left_alone(results_dir: Path, studies: list[str]) -> dict[str, ActiveRun]:
    """{study: the other live run working on it}, each run said in one line."""
    busy: dict[str, ActiveRun] = {}
    for run in other_active_runs(results_dir):
        mine = [study for study in run.studies if study in studies and study not in busy]
        if not mine:
            continue
        busy.update(dict.fromkeys(mine, run))
        print(f"another snakemake run is active on {results_dir} ({run.describe()}): this run leaves "
              f"{', '.join(mine)} alone. A run that is gone leaves a marker that goes stale "
              f"{STALE_AFTER_S:.0f} s after its last heartbeat; to clear it now: rm {run.marker}", flush=True)
    return busy


class RunMarker:
    """This run's marker, touched by a daemon thread until the run ends."""

    def __init__(self, results_dir: Path, studies: list[str]) -> None:
        self.path = results_dir / RUNS_DIR / f"{socket.gethostname()}.{os.getpid()}.json"
        self.path.parent.mkdir(parents=True, exist_ok=True)
        record = {"host": socket.gethostname(), "pid": os.getpid(), "started_at": time.time(),
                  "studies": sorted(studies)}
        temporary = self.path.with_name(self.path.name + ".tmp")
        temporary.write_text(json.dumps(record))
        temporary.chmod(0o644)  # readable by a run of the group, writable by this user only
        os.replace(temporary, self.path)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._beat, name="run-heartbeat", daemon=True)
        self._thread.start()

    def _beat(self) -> None:
        while not self._stop.wait(HEARTBEAT_S):
            with contextlib.suppress(OSError):
                os.utime(self.path)

    def withdraw(self) -> None:
        self._stop.set()
        self.path.unlink(missing_ok=True)
