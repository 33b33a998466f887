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


def _at_least(low):
    return lambda v: v >= low, f"at least {low}"


_BELOW_1 = (lambda v: 0 <= v < 1, "in [0, 1)")
RULES = {  # the checks every stage shares: name -> (test, what a good value is)
    "EPOCHS": _at_least(1), "BATCH_SIZE": _at_least(1), "STEPS_PER_EPOCH": _at_least(1),
    "WORKERS": _at_least(1), "FILTERS": _at_least(1), "D_FILTERS": _at_least(1),
    "WARMUP_EPOCHS": _at_least(0), "LAMBDA": _at_least(0), "BETA_1": _BELOW_1, "DROPOUT": _BELOW_1,
    "IMAGE_SIZE": (lambda v: 1 <= v <= 8192, "between 1 and 8192 pixels"),
    "ZOOM": (lambda v: 1 <= v <= 8, "between 1 (no zoom) and 8"),
    "LEARNING_RATE": (lambda v: v > 0, "positive"),
    "VALIDATION_FRACTION": (lambda v: 0 < v < 1, "between 0 and 1"),
    "SEED": (lambda v: 0 <= v < 2**32, "between 0 and 2**32 - 1"),
}


def in_notebook():
    """True inside a Jupyter kernel (papermill's too), not merely where ipykernel was imported."""
    ipython = sys.modules.get("IPython")
    return type(ipython.get_ipython() if ipython else None).__name__ == "ZMQInteractiveShell"


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
        argv = []
    elif argv is None:
        argv = sys.argv[1:]
        _show_user_errors_as_one_line()
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
    try:  # the cells, each from the rest of its "# %%" line
        cells = ("\n" + Path(script).read_text(encoding="utf-8")).split("\n# %%")[1:]
    except OSError:
        cells = []
    cell = next((c.splitlines()[1:] for c in cells if "parameters" in c.partition("\n")[0]), [])
    body = "\n".join("  --" + line for line in cell if line.strip())
    body = body or "\n".join(f"  --{k} = {v!r}" for k, v in defaults.items())
    return f"usage: python {script} [--NAME=value ...]\n\nsettings and their defaults:\n{body}"


def _show_user_errors_as_one_line():
    """From a terminal, a UserError (bad file, bad setting) prints one line instead of a traceback."""
    previous = sys.excepthook

    def hook(kind, error, traceback):
        if issubclass(kind, UserError):
            print(f"error: {error}", file=sys.stderr)  # Python then exits with status 1
        elif issubclass(kind, KeyboardInterrupt):
            print("interrupted", file=sys.stderr)
        else:
            previous(kind, error, traceback)

    sys.excepthook = hook
