"""Stopping a cell's job at a step boundary when Slurm says its time is up.

Slurm warns a job before its time limit with the signal submitit asks for (USR2,
`signal_delay_s` seconds before), and preemption or `scontrol requeue` sends SIGTERM,
then SIGKILL `KillWait` seconds later. submitit's own handler checkpoints on the one
rank that gets USR2, from inside the signal handler, whatever the step is doing, and
ignores SIGTERM. Here every rank notes either signal (`StopSignals`) and goes on; the
ranks agree, at a step boundary, to stop (`StopAgreement`); rank 0 writes a checkpoint
of that position inside the epoch; the job then asks submitit to requeue it (on USR2:
Slurm's warning, whose requeue is ours to ask) or just exits (on SIGTERM: Slurm
requeues a preempted job itself, and a cancelled one is meant to end).

How the ranks agree without a collective on every step: they check together only at
steps that every rank computes the same way. At a check, one small sum over the
workers carries each rank's flag and rank 0's proposal of how many steps to go before
the next check (as many as take about CHECK_INTERVAL_S at its measured pace). Between
checks a step costs one integer comparison; a check costs one reduction of two numbers
(no device synchronisation: both live on the host). A 1-worker cell checks its own
flag on the same schedule, without the sum.
"""

from __future__ import annotations

import contextlib
import os
import signal
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, NoReturn

if TYPE_CHECKING:
    from jobs.train.workers import Workers

STOP_SIGNALS = (signal.SIGUSR2, signal.SIGTERM)  # Slurm's warning (submitit's --signal), preemption and requeue
CHECK_INTERVAL_S = 1.0  # about this many seconds of steps between two checks of several workers
INTERRUPTED_EXIT = 255  # what submitit's own handler exits with (sys.exit(-1)) when it does not requeue


@dataclass
class StopSignals:
    """The first stop signal this process received, noted by the handler and nothing more: the
    training loop reads it at its next check (a handler that wrote a checkpoint could run in the
    middle of an optimizer step)."""

    received: int | None = None
    # submitit's handler of USR2, kept: it pickles the job and requeues it (Slurm or local).
    submitit_handler: Callable[[int, Any], Any] | None = None

    def install(self) -> StopSignals:
        previous = signal.getsignal(signal.SIGUSR2)
        if callable(previous) and getattr(previous, "__name__", "") == "checkpoint_and_try_requeue":
            self.submitit_handler = previous
        for signum in STOP_SIGNALS:
            signal.signal(signum, self._note)
        return self

    def _note(self, signum: int, frame: Any) -> None:
        if self.received is None:
            self.received = signum

    @property
    def requested(self) -> bool:
        return self.received is not None

    def flags(self) -> list[float]:
        """(USR2 received, SIGTERM received): what the ranks sum to agree on a stop and its kind."""
        return [float(self.received == signal.SIGUSR2), float(self.received == signal.SIGTERM)]

    def leave(self, workers: Workers, cell: str, agreed: int) -> NoReturn:
        """End this task once rank 0's checkpoint is written. On Slurm's warning, rank 0 has
        submitit requeue the job (its countdown of timeouts applies) before any rank exits, so
        that no early exit can take the job down first; on SIGTERM every rank just exits."""
        code = INTERRUPTED_EXIT
        if workers.rank == 0:
            print(f"[{cell}] stopped on {signal.Signals(agreed).name} at a step boundary; the checkpoint holds "
                  "the position", file=sys.stderr, flush=True)
            if agreed == signal.SIGUSR2 and self.submitit_handler is not None:
                code = requeue_through_submitit(self.submitit_handler)
        code = workers.broadcast_object(code, name="exit_code")
        with contextlib.suppress(Exception):
            workers.close()
        raise SystemExit(code)


def requeue_through_submitit(handler: Callable[[int, Any], Any]) -> int:
    """submitit's USR2 handler, called from the loop rather than from the signal: it pickles the
    job (TrainingJob.checkpoint), asks Slurm to requeue it (or, locally, its controller, through
    the exit code) and exits; the exit is caught so the other ranks hear the code first."""
    try:
        handler(signal.SIGUSR2, None)
    except SystemExit as exit_:
        return exit_.code if isinstance(exit_.code, int) else INTERRUPTED_EXIT
    except Exception as error:  # no requeue left (submitit's countdown of timeouts), or scontrol failed
        print(f"not requeued: {error}", file=sys.stderr, flush=True)
    return INTERRUPTED_EXIT


@dataclass
class StopAgreement:
    """When the ranks check for a stop together, and whether they stop there."""

    signals: StopSignals
    workers: Workers
    # Testing switch (TrainParams.signal_at): {(epoch, steps done): signal} the last rank sends itself.
    planned: dict[tuple[int, int], int] = field(default_factory=dict)
    every: int = 1  # steps between two checks, agreed at the last check
    epoch: int = 0
    signum: int = 0  # the signal the ranks agreed to stop on
    checkpoint_every_s: float | None = None  # rank 0's clock decides when a periodic checkpoint is due
    checkpoint_only: bool = False  # the last stop is for a periodic checkpoint: training goes on after it
    _last_check: float = field(default_factory=time.perf_counter)
    _last_index: int = -1
    _last_saved: float = field(default_factory=time.perf_counter)

    def saved(self) -> None:
        """A checkpoint was written: the periodic one is due checkpoint_every_s from now."""
        self._last_saved = time.perf_counter()

    def first_check(self, first: int) -> int:
        """The step index (0-based) after which the epoch's first check runs, the epoch resuming
        at step `first`; `epoch` is set by the caller."""
        self._last_check, self._last_index = time.perf_counter(), first - 1
        return self._next(first - 1)

    def _next(self, index: int) -> int:
        due = index + self.every
        if not self.planned:
            return due
        planned = [steps - 1 for epoch, steps in self.planned if epoch == self.epoch and steps - 1 > index]
        return min([due, *planned])

    def check(self, index: int) -> tuple[bool, int]:
        """After step `index` (0-based): (stop here, the step index of the next check)."""
        if (signum := self.planned.get((self.epoch, index + 1))) is not None and \
                self.workers.rank == self.workers.size - 1:
            os.kill(os.getpid(), signum)
            deadline = time.monotonic() + 5.0
            while not self.signals.requested and time.monotonic() < deadline:
                time.sleep(0.001)  # Python runs the handler between bytecodes: soon, not at once
        now = time.perf_counter()
        proposal, due = 0.0, 0.0
        if self.workers.rank == 0:
            seconds_per_step = (now - self._last_check) / max(1, index - self._last_index)
            proposal = max(1.0, CHECK_INTERVAL_S / max(seconds_per_step, 1e-9))
            if self.checkpoint_every_s is not None and now - self._last_saved >= self.checkpoint_every_s:
                due = 1.0
        usr2, term = self.signals.flags()
        if self.workers.size > 1:
            import torch

            agreed = self.workers.sum(torch.tensor([usr2, term, proposal, due], dtype=torch.float64),
                                      name="stop_check")
            usr2, term, proposal, due = (float(value) for value in agreed)
        self.every = max(1, int(min(proposal, 1e9)))
        self._last_check, self._last_index = now, index
        stopping = self.agree(usr2, term)
        self.checkpoint_only = due > 0 and not stopping
        return stopping or self.checkpoint_only, self._next(index)

    def agree(self, usr2: float, term: float) -> bool:
        """From the ranks' summed flags: whether to stop, and on which signal (`signum`). SIGTERM
        wins: Slurm is requeuing (or cancelling) the job itself."""
        if term > 0:
            self.signum = signal.SIGTERM
        elif usr2 > 0:
            self.signum = signal.SIGUSR2
        return term > 0 or usr2 > 0


def planned_signals(specs: list[str]) -> dict[tuple[int, int], int]:
    """TrainParams.signal_at ("EPOCH:STEPS[:USR2|TERM]") as {(epoch, steps done): signal number}."""
    planned = {}
    for spec in specs:
        epoch, steps, *name = spec.split(":")
        planned[(int(epoch), int(steps))] = signal.Signals[f"SIG{name[0] if name else 'USR2'}"].value
    return planned
