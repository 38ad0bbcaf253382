"""What a run prints, as a terminal shows it and as a file keeps it.

`logged_to(path)` sends everything the process writes through `sys.stdout` and `sys.stderr` to the console
and, as plain lines, to `<run dir>/train.log`: escape codes (colours, cursor moves) removed, a line redrawn
with carriage returns kept as its last state, progress bars left out (their figures are in the epoch
lines). When the console is not a terminal (output redirected to a file, a batch system's log), the
console gets the same plain text: no colours there either, and the programs draw no bars
(`is_terminal`), one line per epoch instead.
"""

import contextlib
import datetime
import os
import re
import sys
import traceback
from pathlib import Path

from experiments.errors import UserError
from experiments.untrusted import open_regular

# OSC sequences (links, window titles) with their text, CSI sequences (colours, cursor moves), 2-byte escapes
ESCAPE = re.compile(r"\x1b\][^\x07\x1b]*(?:\x07|\x1b\\)|\x1b\[[0-9;?]*[ -/]*[@-~]|\x1b[@-Z\\-_]")
BAR = re.compile(r"\[\d+:\d\d[^\]]*(it/s|s/it)\]\s*$")  # a tqdm bar's "[00:02<00:00, 14.2it/s]"


def is_terminal(stream=None) -> bool:
    stream = stream or sys.stdout
    try:
        return bool(stream.isatty())
    except (AttributeError, ValueError):  # a closed or bare stream
        return False


def plain(line: str) -> str | None:
    """A console line as a log file keeps it: the last state of a line redrawn with carriage returns,
    without escape codes; None for a progress bar's line or a blank redraw."""
    text = ESCAPE.sub("", line)
    redrawn = "\r" in text
    text = next((s for s in reversed(text.split("\r")) if s.strip()), "").rstrip()
    if redrawn and not text or BAR.search(text):
        return None
    return text


class PlainLines:
    """Text written in pieces, passed on (to `write`) one plain line at a time."""

    def __init__(self, write):
        self.write_line, self.pending = write, ""

    def write(self, text: str) -> None:
        if "\n" not in text:  # a bar redrawn many times before its line ends: keep only what `plain` can keep
            self.pending += text
            if len(self.pending) > 4096 and "\r" in self.pending:
                segments = self.pending.split("\r")
                kept = next((s for s in reversed(segments) if s.strip()), "")
                self.pending = "\r" + kept + ("\r" + segments[-1] if segments[-1] is not kept else "")
            return
        *lines, self.pending = (self.pending + text).split("\n")
        for line in lines:
            kept = plain(line)
            if kept is not None:
                self.write_line(kept + "\n")

    def close(self) -> None:
        if self.pending:
            self.write("\n")


class Tee:
    """A text stream that writes to `console` (plain text unless it is a terminal) and to `log`."""

    def __init__(self, console, log: PlainLines):
        self.console, self.log = console, log
        self.to_console = None if is_terminal(console) else PlainLines(console.write)

    def write(self, text: str) -> int:
        (self.console if self.to_console is None else self.to_console).write(text)
        self.log.write(text)
        return len(text)

    def writelines(self, lines) -> None:
        for line in lines:
            self.write(line)

    def flush(self) -> None:
        self.console.flush()

    def __getattr__(self, name):  # encoding, isatty, fileno...: the console's
        return getattr(self.console, name)


def open_for_append(path: Path):
    """A log file opened to append to, never through a link (the console would be appended to whatever it
    points at) and only when it is a regular file (a FIFO would block)."""
    try:
        return open_regular(
            path,
            os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_NOFOLLOW,
            "a",
            one_name=True,
            encoding="utf-8",
            buffering=1,
        )
    except UserError as e:
        raise UserError(f"{e}; it should be the run's log: remove it, then rerun")


class LogFile:
    """`path`, appended to; for a run that has none yet, held in memory until `keep()` (the run has started
    for good), so that a start refused before (bad data, a failed preflight) leaves no file behind."""

    def __init__(self, path: Path):
        self.path, self.held, self.file = path, [], None
        if path.exists() or path.is_symlink():
            self.keep()

    def keep(self) -> None:
        if self.file is None:
            self.file = open_for_append(self.path)
            self.file.write("".join(self.held))
            self.held = []

    def write(self, text: str) -> None:
        (self.held.append if self.file is None else self.file.write)(text)

    def close(self) -> None:
        if self.file is not None:
            self.file.close()


def console_handlers(out, err) -> list:
    """(handler, its stream) of every logging handler that writes to the console's streams."""
    import logging

    loggers = [logging.getLogger()] + [
        lg for lg in logging.Logger.manager.loggerDict.values() if isinstance(lg, logging.Logger)
    ]
    return [
        (h, h.stream)
        for lg in loggers
        for h in lg.handlers
        if isinstance(h, logging.StreamHandler) and getattr(h, "stream", None) in (out, err)
    ]


@contextlib.contextmanager
def logged_to(path: Path, command: str):
    """Everything printed inside the block also goes to `path` (appended: a resumed run's starts follow one
    another, each headed by its time and command). Yields the LogFile: `keep()` once the run is under way."""
    out, err = sys.stdout, sys.stderr
    log = LogFile(path)
    started = datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%d %H:%M:%S UTC")
    log.write(f"==== {started}: {command}\n")
    tees = Tee(out, PlainLines(log.write)), Tee(err, PlainLines(log.write))  # a line each: never mixed
    sys.stdout, sys.stderr = tees
    handlers = console_handlers(out, err)  # Lightning's and Hydra's log lines (a model summary) too
    for handler, stream in handlers:
        handler.setStream(tees[0] if stream is out else tees[1])
    try:
        yield log
    except UserError as e:  # printed by the program once this block is left: kept here too
        log.write(f"error: {e}\n")
        raise
    except Exception:
        log.write(traceback.format_exc())
        raise
    finally:
        for tee in tees:
            for lines in (tee.to_console, tee.log):
                if lines is not None:
                    lines.close()
        sys.stdout, sys.stderr = out, err
        for handler, stream in handlers:
            handler.setStream(stream)
        log.close()


def with_progress(datamodule, loader: str = "val_dataloader", desc: str = "evaluating") -> None:
    """A bar over the batches of the data module's `loader` (eval.py's validation batches, predict.py's
    prediction batches: decoding a large task set on CPU takes minutes), where the task reads them; none where
    output is not a terminal."""
    from tqdm import tqdm

    batches = getattr(datamodule, loader)
    setattr(datamodule, loader, lambda: tqdm(batches(), desc=desc, unit="batch", leave=False, disable=None))
