"""The errors the command line turns into one line: bad input (exit 2), a failing machine (exit 1)."""

import difflib


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
