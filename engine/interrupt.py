"""One Ctrl-C stops a run, wherever it lands.

Python turns SIGINT into KeyboardInterrupt at the next bytecode the main thread runs. When that
bytecode belongs to code whose exceptions Python cannot propagate, the interrupt is printed as
"Exception ignored in: ..." and dropped, and the run goes on. The common case: the DataLoader
forks its worker processes at the start of every epoch, right after the epoch line; a Ctrl-C
that arrives during the fork is raised inside the fork hooks (`logging._releaseLock`), whose
exceptions are ignored. `__del__` methods and weakref callbacks drop exceptions the same way.

`install()` puts a hook on `sys.unraisablehook`: an ignored KeyboardInterrupt is delivered to the
main thread again 50 ms later (`_thread.interrupt_main` from a timer thread), and raised at its
next bytecode; inside another such place it is dropped and delivered again, until it lands where
it propagates. Nothing else
changes: other ignored exceptions go to the previous hook, the SIGINT handler stays Python's.
"""
import _thread
import signal
import sys
import threading

_previous = None


REDELIVER_S = 0.05  # long past the fork hook or __del__ that dropped it; short for a person


def _hook(unraisable):
    if unraisable.exc_type is not None and issubclass(unraisable.exc_type, KeyboardInterrupt):
        # Delivered now, it would be raised inside this hook and dropped again: deliver it from
        # another thread a moment later (interrupt_main does nothing if SIGINT is ignored).
        timer = threading.Timer(REDELIVER_S, _thread.interrupt_main, args=(signal.SIGINT,))
        timer.daemon = True
        timer.start()
        return
    (_previous or sys.__unraisablehook__)(unraisable)


def install():
    """Idempotent; from the main thread (where signals are handled)."""
    global _previous
    if threading.current_thread() is threading.main_thread() and sys.unraisablehook is not _hook:
        _previous = sys.unraisablehook
        sys.unraisablehook = _hook
