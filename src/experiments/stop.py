"""Stopping a fit on purpose, in one place: Ctrl-C's request, a cluster's warning that it will stop the job,
their signal handlers, and the one touch of Lightning's private state that makes the fit stop as it does
for a cluster's SIGTERM.

A first Ctrl-C asks the fit to stop; the checkpoint policy acts on the request at the end of the current
batch, or at the end of the epoch when it came during the epoch's closing validation (so that the epoch's
figures are logged), and saves `last.ckpt` there; Lightning then raises its SIGTERMException, which the
training program turns into exit 130 (a SIGTERM's into 143). Further presses are ignored until the process
has exited, so the save cannot be cut short. Under DDP, Lightning's own handling stays (the processes
would each see the signal at a different batch).

In a Slurm job that submitit started (`hydra/launcher=slurm`), submitit's preemption signal (USR2: Slurm sends
it on preemption and `signal_delay_s` before the time limit) would have submitit requeue the job at once and
exit, saving nothing. While the job runs, `preemption_saves` takes that signal over: the fit stops at the end
of the batch (or epoch, as for Ctrl-C) with `last.ckpt` saved, and only then is submitit's handler called,
which requeues the job (the next start resumes from that checkpoint) or says why it does not (timed out
`max_num_timeout` times). A SIGTERM (`scontrol requeue`, `scancel`, a preemption without the warning signal)
saves the same way through Lightning's handler; Slurm requeues or ends the job on its own.
"""

import contextlib
import signal
import sys
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
        print(
            "\nCtrl-C: stopping after this batch (or at this epoch's end, if it is validating) with a checkpoint",
            flush=True,
        )

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


class Preemption:
    """The cluster's warning for this process's job: whether it came, by which signal, and submitit's handler
    to call once the checkpoint is saved. Signals belong to the process: there is one (PREEMPTION)."""

    def __init__(self) -> None:
        self.received = False
        self.signal: int | None = None
        self.requeue = None

    def requeue_job(self) -> None:
        """submitit's own handling of the signal, now that the state is saved: it requeues the job and exits
        the process, or raises UncompletedJobError saying why it does not."""
        self.requeue(self.signal, None)


PREEMPTION = Preemption()


def preempted(trainer) -> bool:
    """Whether the cluster's warning has come. Under DDP each process gets the signal at its own moment: the
    processes decide together (any of them received it), so that all stop after the same batch."""
    if PREEMPTION.signal is None:  # not a job submitit started: nothing to take over
        return False
    if trainer.world_size == 1:
        return PREEMPTION.received
    agreed = trainer.strategy.reduce_boolean_decision(PREEMPTION.received, all=False)
    if agreed:  # (never set back to False: the signal may have come during the reduction, for the next batch)
        PREEMPTION.received = True
    return agreed


def submitit_preemption() -> tuple[int, object] | None:
    """(signal, handler) of submitit's preemption handler when this process is a job submitit started
    (the signal is USR2 unless SUBMITIT_PREEMPT_SIGNAL names another); None otherwise."""
    job_environment = sys.modules.get("submitit.core.job_environment")
    if job_environment is None:
        return None
    ours = job_environment.SignalHandler.checkpoint_and_try_requeue
    for signum in sorted(signal.valid_signals() - {signal.SIGKILL, signal.SIGSTOP}):
        handler = signal.getsignal(signum)
        if getattr(handler, "__func__", None) is ours:
            return signum, handler
    return None


@contextlib.contextmanager
def preemption_saves():
    """While a job submitit started runs, its preemption signal asks the fit to stop with a checkpoint
    (the checkpoint policy acts on PREEMPTION.received) instead of requeueing at once; yields PREEMPTION,
    or None outside such a job. The caller requeues (PREEMPTION.requeue_job) once the save is done."""
    found = submitit_preemption()
    if found is None or threading.current_thread() is not threading.main_thread():
        yield None
        return
    PREEMPTION.signal, PREEMPTION.requeue = found
    PREEMPTION.received = False

    def handler(signum, frame):
        if not PREEMPTION.received:
            print(
                f"{signal.Signals(signum).name}: Slurm is about to stop this job (preemption or its time limit): "
                f"stopping after this batch with a checkpoint, then requeueing",
                flush=True,
            )
        PREEMPTION.received = True

    signal.signal(PREEMPTION.signal, handler)
    try:
        yield PREEMPTION
    finally:
        signal.signal(PREEMPTION.signal, PREEMPTION.requeue)
