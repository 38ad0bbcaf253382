"""Stopping a fit on purpose, in one place: Ctrl-C's request, its signal handler, and the one touch of
Lightning's private state that makes the fit stop as it does for a cluster's SIGTERM.

A first Ctrl-C asks the fit to stop; the checkpoint policy acts on the request at the end of the current
batch, or at the end of the epoch when it came during the epoch's closing validation (so that the epoch's
figures are logged), and saves `last.ckpt` there; Lightning then raises its SIGTERMException, which the
training program turns into exit 130 (a SIGTERM's into 143). Further presses are ignored until the process
has exited, so the save cannot be cut short. Under DDP, Lightning's own handling stays (the processes
would each see the signal at a different batch).
"""
import contextlib
import signal
import threading


class StopRequest:
    """Whether the user asked the fit to stop (Ctrl-C), and whether the request came as the last epoch ended
    (then nothing was left to stop: the run completes)."""

    def __init__(self) -> None:
        self.requested = False


def stop_lightning(trainer, stop: bool = True) -> None:
    """Make the fit stop as for SIGTERM after the current batch (or, set at an epoch's end, after that
    epoch), its loop state complete. Lightning has no public switch for it: this sets its signal connector's
    flag, the only place the framework touches a private Lightning attribute (the installed version is pinned)."""
    trainer._signal_connector.received_sigterm = stop


@contextlib.contextmanager
def ctrl_c_stops(request: StopRequest, trainer):
    """While the fit runs (one process, main thread), the first Ctrl-C sets `request` instead of raising
    KeyboardInterrupt; after a stop, further presses are ignored until exit."""
    from lightning.pytorch.utilities.exceptions import SIGTERMException

    if trainer.world_size > 1 or threading.current_thread() is not threading.main_thread():
        yield
        return

    def handler(signum, frame):
        if request.requested:
            print("Ctrl-C again: still stopping; the checkpoint is being saved", flush=True)
            return
        request.requested = True
        print("\nCtrl-C: stopping after this batch (or at this epoch's end, if it is validating) with a "
              "checkpoint", flush=True)

    before = signal.signal(signal.SIGINT, handler)
    try:
        yield
    except SIGTERMException:  # stopping: further presses are ignored until the process has exited with 130
        signal.signal(signal.SIGINT, signal.SIG_IGN if request.requested else before)
        raise
    except BaseException:
        signal.signal(signal.SIGINT, before)
        raise
    signal.signal(signal.SIGINT, before)
