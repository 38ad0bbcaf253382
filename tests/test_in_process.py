"""The test suite's own runner of programs inside the test process (conftest.in_process): a program that runs
past its time stops and fails the test instead of hanging its worker, and the process is put back."""

import signal

import pytest

from conftest import FAST, InProcessTimeout, in_process


@pytest.mark.slow  # waits out a time limit on purpose
def test_a_program_past_its_time_is_stopped_and_the_process_put_back(tmp_path):
    handlers = {s: signal.getsignal(s) for s in (signal.SIGINT, signal.SIGTERM, signal.SIGALRM)}
    with pytest.raises(InProcessTimeout, match=r"train.py .* ran past 3 s inside the test process"):
        in_process("train.py", *FAST, "trainer.max_epochs=100000", cwd=tmp_path, timeout=3)
    assert signal.getitimer(signal.ITIMER_REAL) == (0.0, 0.0)
    assert {s: signal.getsignal(s) for s in handlers} == handlers
    r = in_process("train.py", "experimnt=x", cwd=tmp_path)  # the next program runs as usual
    assert r.returncode == 2 and "did you mean" in r.stderr
