"""Fault injection for the resume tests: a callback that signals its own process at a chosen training step or
predict batch, and runs of the CLI in a forked child that is SIGKILLed inside (or just after) the n-th write
of an image or of a record.

The child is a fork of the test process: nothing is imported again (a fresh interpreter spends ~8 s importing
lightning, diffusers and transformers), so several killed runs cost a few seconds.
"""

from __future__ import annotations

import os
import signal
import sys
import traceback
from pathlib import Path

from lightning import Callback


class SignalAt(Callback):
    """Sends ``signal`` (a name) to this process after training step ``step`` or predict batch ``batch``:
    what a scheduler's SIGTERM or a user's Ctrl-C does, at a known point."""

    def __init__(self, signal: str = "SIGTERM", step: int | None = None, batch: int | None = None) -> None:
        self.signal, self.step, self.batch = signal, step, batch

    def _send(self) -> None:
        os.kill(os.getpid(), getattr(signal, self.signal))

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        if self.step is not None and trainer.global_step == self.step:
            self._send()

    def on_predict_batch_end(self, trainer, pl_module, outputs, batch, batch_idx, dataloader_idx=0) -> None:
        if self.batch is not None and batch_idx == self.batch:
            self._send()


def _kill_inside_writes(kind: str, n: int, where: str) -> None:
    """SIGKILL this process at the n-th write of ``kind`` (``image``: a PNG's temporary file; ``record``: a
    records shard): ``inside`` after half its bytes, ``after`` with all of them written (an image not yet
    renamed, a record line not yet fsynced)."""
    import lightning_search.runs as runs

    original, seen = runs._write_all, {"image": 0, "record": 0}

    def write_all(fd: int, data: bytes) -> None:
        name = os.path.basename(os.readlink(f"/proc/self/fd/{fd}"))
        what = "image" if ".png." in name else "record" if name.startswith("records.rank") else None
        if what is not None:
            seen[what] += 1
            if what == kind and seen[what] == n:
                if where == "inside":
                    os.write(fd, bytes(data)[: max(1, len(data) // 2)])
                else:
                    original(fd, data)
                os.kill(os.getpid(), signal.SIGKILL)
        original(fd, data)

    runs._write_all = write_all


def run_forked(args: list[str], log: Path, kill_at: tuple[str, int, str] | None = None) -> int:
    """``lightning-search ARGS`` in a forked child, its output into ``log`` -> its exit code, or minus the
    signal that ended it (``os.waitstatus_to_exitcode``)."""
    pid = os.fork()
    if pid == 0:  # the child: never returns into the test process
        code = 1
        try:
            fd = os.open(log, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
            os.dup2(fd, 1)
            os.dup2(fd, 2)
            # pytest's capture replaced sys.stdout / sys.stderr: write to the log instead, line by line
            sys.stdout = sys.stderr = open(fd, "w", buffering=1, closefd=False)
            if kill_at is not None:
                _kill_inside_writes(*kill_at)
            from lightning_search.cli import main

            main(args)
            code = 0
        except SystemExit as err:
            code = err.code if isinstance(err.code, int) else 1
        except BaseException:
            traceback.print_exc()
        finally:
            sys.stderr.flush()
            os._exit(code)
    _, status = os.waitpid(pid, 0)
    return os.waitstatus_to_exitcode(status)
