"""Stage settings: the UPPER_CASE constants of a stage's ``parameters`` cell, overridden by ``--NAME=value``
(a Python literal; a bare word is a string) in a terminal; in Jupyter, papermill injects its own cell."""

import ast
import math
import os
import sys
from pathlib import Path

from colorlab import UserError

REPO_ROOT = Path(__file__).resolve().parent.parent


class SettingsError(UserError):
    """A bad ``--NAME=value`` or an impossible setting."""


RULES = {  # the checks every stage shares: name -> (test, what a good value is)
    **dict.fromkeys(["EPOCHS", "BATCH_SIZE", "STEPS_PER_EPOCH", "WORKERS", "FILTERS", "D_FILTERS"],
                    (lambda v: v >= 1, "at least 1")),
    **dict.fromkeys(["WARMUP_EPOCHS", "LAMBDA"], (lambda v: v >= 0, "at least 0")),
    **dict.fromkeys(["BETA_1", "DROPOUT"], (lambda v: 0 <= v < 1, "in [0, 1)")),
    "IMAGE_SIZE": (lambda v: 1 <= v <= 8192, "between 1 and 8192 pixels"),
    "ZOOM": (lambda v: 1 <= v <= 8, "between 1 (no zoom) and 8"),
    "LEARNING_RATE": (lambda v: v > 0, "positive"),
    "VALIDATION_FRACTION": (lambda v: 0 < v < 1, "between 0 and 1"),
    "SEED": (lambda v: 0 <= v < 2**32, "between 0 and 2**32 - 1"),
}


def _shell():
    ipython = sys.modules.get("IPython")
    return ipython.get_ipython() if ipython else None


def in_notebook():
    """True inside a Jupyter kernel (papermill's too), not merely where ipykernel was imported."""
    return type(_shell()).__name__ == "ZMQInteractiveShell"


def flag(name, value):
    """How the user sets a setting where they are: ``--NAME=value`` in a terminal, the cell in a notebook."""
    return f"{name} = {value!r} in the parameters cell" if in_notebook() else f"--{name}={value}"


def apply(namespace, argv=None):
    """Override the UPPER_CASE settings in ``namespace`` from ``argv`` (default: the command line), check
    them all against ``RULES``, and return them as a dict (for ``settings.json``)."""
    defaults = {name: value for name, value in namespace.items() if name.isupper() and name[0] != "_"}
    if argv is None and in_notebook():
        if (REPO_ROOT / "colorlab").is_dir():
            os.chdir(REPO_ROOT)  # so that paths mean the same as on the command line
        if (shell := _shell()) is not None:
            shell.set_custom_exc((UserError, KeyboardInterrupt), _one_line)
        argv = []
    elif argv is None:
        argv = sys.argv[1:]
        previous = sys.excepthook  # a bug keeps its traceback
        sys.excepthook = lambda kind, error, traceback: (
            _one_line(None, kind, error, traceback) if issubclass(kind, (UserError, KeyboardInterrupt))
            else previous(kind, error, traceback))
        if any(arg in ("-h", "--help") for arg in argv):
            print(_describe(sys.argv[0], defaults))
            raise SystemExit(0)
    overrides = parse(argv, defaults)
    namespace.update(overrides)
    values = {**defaults, **overrides}
    for name, value in values.items():
        if isinstance(value, float) and not math.isfinite(value):
            raise SettingsError(f"{name} must be a finite number, got {value}")
        test, good = RULES.get(name, (None, None))
        if test is not None and isinstance(value, (int, float)) and not test(value):
            raise SettingsError(f"{name} must be {good}, got {value}")
    return values


def parse(argv, defaults):
    """``["--NAME=value", ...]`` -> ``{NAME: value}``, checked against the defaults' names and types."""
    overrides = {}
    for arg in argv:
        name, sep, text = arg.removeprefix("--").partition("=")
        if not arg.startswith("--") or not sep:
            raise SettingsError(f"unexpected argument {arg!r}: settings are given as --NAME=value")
        if name not in defaults:
            raise SettingsError(f"unknown setting --{name}; valid settings: {', '.join(defaults)}")
        overrides[name] = _convert(name, text, defaults[name])
    return overrides


def check(condition, message):
    """Stop with a one-line error, before any long work starts, if a setting is impossible."""
    if not condition:
        raise SettingsError(message)


def _convert(name, text, default):
    try:
        value = ast.literal_eval(text)  # a literal only: nothing is run
    except (ValueError, SyntaxError, MemoryError, RecursionError):
        value = text  # a bare word, such as a path: a string
    if default is None or type(value) is type(default):
        return value
    if isinstance(default, str):
        return None if value is None else text  # optional names and paths; --IMAGE=2024 is the file "2024"
    if isinstance(default, float) and type(value) is int:
        try:
            return float(value)
        except OverflowError:
            raise SettingsError(f"{name} must be a finite number, got {text[:20]}...") from None
    if isinstance(default, bool) and text.lower() in ("true", "false"):
        return text.lower() == "true"
    raise SettingsError(f"--{name} expects {type(default).__name__} (like {default!r}), got {text!r}")


def _describe(script, defaults):
    """The ``--help`` text: the script's parameters cell, comments included (or the bare defaults)."""
    try:  # the lines after "# %% tags=["parameters"]", up to the next blank line
        text = Path(script).read_text(encoding="utf-8").partition('tags=["parameters"]\n')[2]
    except OSError:
        text = ""
    body = "\n".join("  --" + line for line in text.partition("\n\n")[0].splitlines() if line.strip())
    body = body or "\n".join(f"  --{k} = {v!r}" for k, v in defaults.items())
    return f"usage: python {script} [--NAME=value ...]\n\nsettings and their defaults:\n{body}"


def _one_line(shell, kind, error, traceback, tb_offset=None):
    """A UserError or Ctrl-C as one line, no traceback: in a terminal (Python then exits with status 1) and in
    Jupyter (the cell fails, so Run All stops there; the run is over, so its folder is unlocked)."""
    if shell is not None:
        from colorlab import files
        files.unlock()
    print("interrupted" if issubclass(kind, KeyboardInterrupt) else f"{error.prefix}{error}", file=sys.stderr)
