"""Time budgets for symbolic work on what a user typed.

SymPy's simplify, solve and factor can run for minutes (or for ever) on a short formula.
Every such step on user input runs here: in a forked child that is killed when its budget
is spent, so the command always finishes. A step whose result is optional (rewriting f' in
the activation's output) goes on without it; a step that is needed becomes a one-line error
naming the formula and the step.
"""

from __future__ import annotations

import multiprocessing
import os
import warnings
from collections.abc import Callable, Iterator, Sequence
from typing import TypeVar

T = TypeVar("T")

# Seconds one symbolic step on user input may take (SYMBP_BUDGET overrides, e.g. for a slow machine).
SECONDS = float(os.environ.get("SYMBP_BUDGET", "5"))


class OverBudget(Exception):
    """A symbolic step did not finish within its budget."""


def within(function: Callable[..., T], *args: object, seconds: float | None = None) -> T:
    """``function(*args)`` computed in a child process that is stopped after ``seconds``.

    The result must pickle (SymPy expressions do). Where fork is missing, it runs here, unbounded.
    """
    ((ok, value),) = _each(lambda given: function(*given), [args], seconds)
    if not ok:
        raise value
    return value


def within_each(function: Callable[[object], T], items: Sequence[object],
                seconds: float | None = None) -> Iterator[T | Exception]:
    """``function(item)`` for each item, in order, each within its own ``seconds``.

    One child computes them one after another and sends each result as it is done, so a long
    list costs one fork rather than one per item. An item past its budget yields OverBudget (and
    a failed item its exception); the child is then stopped and a new one goes on with the rest.
    """
    return (value for _, value in _each(function, items, seconds))


def _each(function: Callable[[object], T], items: Sequence[object],
          seconds: float | None) -> Iterator[tuple[bool, T | Exception]]:
    """(True, result) or (False, the exception) for each item, as ``within_each`` describes."""
    limit = SECONDS if seconds is None else seconds
    if "fork" not in multiprocessing.get_all_start_methods():
        for item in items:
            try:
                outcome = (True, function(item))
            except Exception as error:  # noqa: BLE001 -- handed to the caller, as the child's are
                outcome = (False, error)
            yield outcome
        return
    context = multiprocessing.get_context("fork")
    start = 0
    while start < len(items):
        receiver, sender = context.Pipe(duplex=False)
        child = context.Process(target=_run_each, args=(function, items[start:], sender), daemon=True)
        with warnings.catch_warnings():
            # The child runs SymPy only: a library that warns about forking its threads (JAX, once
            # loaded) has none of its work in the child.
            warnings.filterwarnings("ignore", message=r"os\.fork\(\) was called", category=RuntimeWarning)
            child.start()
        sender.close()
        try:
            while start < len(items):
                try:
                    if not receiver.poll(limit):
                        raise OverBudget(f"gave up after {limit:g} s")
                    ok, value = receiver.recv()
                except EOFError:  # the child died (out of memory, a crash in a C library)
                    ok, value = False, OverBudget("the computation failed")
                except OverBudget as error:
                    ok, value = False, error
                start += 1
                yield ok, value
                if isinstance(value, OverBudget):
                    break  # this child is stuck or gone: a fresh one takes the next item
        finally:
            child.kill()
            child.join()
            receiver.close()


def _run_each(function: Callable, items: Sequence[object], sender) -> None:
    for item in items:
        try:
            result = (True, function(item))
        except Exception as error:  # noqa: BLE001 -- whatever went wrong is the parent's to raise
            result = (False, error)
        try:
            sender.send(result)
        except Exception as error:  # noqa: BLE001 -- a result that does not pickle
            sender.send((False, RuntimeError(f"unpicklable result: {error}")))
    sender.close()
