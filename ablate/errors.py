"""The errors the command line turns into one line: bad input (exit 2), a failing machine (exit 1)."""

import difflib
import os
import sys
import traceback


class UsageError(ValueError):
    """Bad input from the user: the message says what was wrong and what is allowed."""


def unknown_name(kind: str, name: str, known: list[str], hint: str = "") -> UsageError:
    """An error for a name that is not one of `known`, naming the closest matches."""
    close = difflib.get_close_matches(name, known, n=3, cutoff=0.5)
    message = f"unknown {kind} {name!r}"
    if close:
        message += " (did you mean " + ", ".join(repr(c) for c in close) + "?)"
    if hint:
        message += f"; {hint}"
    elif len(known) <= 12:
        message += "; allowed: " + ", ".join(known)
    return UsageError(message)


class EnvironmentFailure(RuntimeError):
    """The machine failed us (a full disk, a dead worker): one line, exit 1, no saved run lost."""


def _user_frame(error: BaseException) -> str:
    """Where in the user's own code `error` was raised: " (at mymod.py, line 4)", or "" when no
    frame of its traceback is theirs (torch's, ablate's, the standard library's)."""
    own = os.path.dirname(os.path.abspath(__file__))
    skip = tuple({os.path.abspath(p) + os.sep for p in (sys.prefix, sys.base_prefix, sys.exec_prefix, own)})
    frames = [f for f in traceback.extract_tb(error.__traceback__)
              if not f.filename.startswith("<") and not os.path.abspath(f.filename).startswith(skip)]
    if not frames:
        return ""
    path = os.path.abspath(frames[-1].filename)
    if path.startswith(os.getcwd() + os.sep):
        path = os.path.relpath(path)
    return f" (at {path}, line {frames[-1].lineno})"


def first_line(error: BaseException) -> str:
    """The first line of `error`'s message, or its type's name when it has none."""
    lines = str(error).strip().splitlines()
    return lines[0] if lines else type(error).__name__


def one_line(error: BaseException) -> str:
    """An exception in one line: its type and the first line of its message."""
    return f"{type(error).__name__}: {first_line(error)}" if str(error).strip() else type(error).__name__


def describe_error(error: BaseException) -> str:
    """`one_line`, and the line of the user's code that raised it."""
    return one_line(error) + ("" if isinstance(error, SyntaxError) else _user_frame(error))  # its own says where
