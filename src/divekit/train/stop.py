"""Ctrl-C during training, as a request the training loop honours at a step boundary."""

from __future__ import annotations

import signal
import threading


class StopRequest:
    """Ctrl-C as a request to stop at the next step boundary; a second Ctrl-C stops at once.

    While active, SIGINT only sets :attr:`requested`. The loop checks it between steps, so the
    weights, the optimizer, the step counters and the random state it saves all belong to the same
    step. Only the main thread may install signal handlers; elsewhere this does nothing.
    """

    def __init__(self, log) -> None:
        self.requested = False
        self._log = log
        self._previous = None

    def _handle(self, signum, frame) -> None:
        if self.requested:
            raise Abort  # the second Ctrl-C: the user does not want to wait
        self.requested = True
        self._log("stopping after this step to save a checkpoint (Ctrl-C again to stop at once)")

    def __enter__(self) -> "StopRequest":
        if threading.current_thread() is threading.main_thread():
            self._previous = signal.signal(signal.SIGINT, self._handle)
        return self

    def __exit__(self, *exc) -> None:
        if self._previous is not None:
            signal.signal(signal.SIGINT, self._previous)
            self._previous = None


class Abort(BaseException):
    """A second Ctrl-C: leave without saving (the state may be between two halves of a step)."""
