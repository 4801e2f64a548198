"""SIGTERM as Ctrl-C, and interrupts that land where Python cannot raise them: a stopped
run cleans up as an interrupted one (every write atomic; --resume continues)."""

from __future__ import annotations

import os
import sys

import click


def install() -> list:
    """On the main thread: SIGTERM raises Terminated where the run is (as Ctrl-C, the same
    clean-up paths), and the unraisable and thread hooks are ours. Returns the hooks an
    embedding host (a test runner) had, for ``restore``."""
    import signal
    import threading

    hosted = []
    if threading.current_thread() is threading.main_thread():
        global _CLI_PID
        _CLI_PID = os.getpid()
        signal.signal(signal.SIGTERM, _terminate)
        for module, name, ours in ((sys, "unraisablehook", _unraisable),
                                   (threading, "excepthook", _thread_error)):
            if getattr(module, name) is not getattr(module, f"__{name}__"):
                hosted.append((module, name, getattr(module, name)))
            setattr(module, name, ours)  # kept to the process's end where it is ours
    return hosted


def restore(hosted: list) -> None:
    for module, name, theirs in hosted:
        setattr(module, name, theirs)


class Terminated(KeyboardInterrupt):
    """SIGTERM, raised where Ctrl-C would be, so a killed run cleans up as an interrupted one."""


_CLI_PID = None  # the process whose SIGTERM means "stop the run"
_STOPPING = False  # a SIGTERM arrived: the run is stopping


def _terminate(signum, frame) -> None:
    """Raise Terminated where the run is; should it land where Python swallows exceptions (a
    finalizer), a watchdog still ends the process in one line after 20 s (every write is
    atomic, so nothing is half-written; a left lock is taken over by the next run). A forked
    child (a DataLoader worker, which its loader stops with SIGTERM) inherits this handler:
    there SIGTERM keeps its default meaning, no traceback, no second message."""
    import signal
    import threading

    global _STOPPING
    if os.getpid() != _CLI_PID:
        signal.signal(signal.SIGTERM, signal.SIG_DFL)
        os.kill(os.getpid(), signal.SIGTERM)
        return
    _STOPPING = True

    def give_up() -> None:
        click.echo("terminated (SIGTERM): files finished before are kept, none is "
                   "half-written (train/search: --resume continues)", err=True)
        os._exit(143)

    watchdog = threading.Timer(20.0, give_up)
    watchdog.daemon = True
    watchdog.start()
    raise Terminated()


def _unraisable(info) -> None:
    """An interrupt that landed where Python cannot raise it (a finalizer; the fork hooks
    a DataLoader's workers run): deliver it again a moment later, from a thread, so that it
    lands in the run's own code. Once the run is stopping, the errors of objects the
    interrupt left half-built (a DataLoader iterator stopped while starting its workers
    fails in its ``__del__``) are its echo, not news: dropped. Anything else as Python
    reports it."""
    import signal
    import threading

    if isinstance(info.exc_value, KeyboardInterrupt):
        again = signal.SIGTERM if isinstance(info.exc_value, Terminated) else signal.SIGINT
        threading.Timer(0.05, os.kill, (os.getpid(), again)).start()
        return
    if not _STOPPING:
        sys.__unraisablehook__(info)


def _thread_error(args) -> None:
    """A thread's uncaught error, as Python reports it, unless the run is stopping (then a
    thread that loses what the main thread tore down is the interrupt's echo)."""
    import threading

    if not _STOPPING:
        threading.__excepthook__(args)
