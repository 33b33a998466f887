"""Stage settings: UPPER_CASE constants in one notebook cell tagged ``parameters``.

A stage file sets its defaults in that cell and then calls ``settings.apply(globals())``:

- run as a script, ``python alpha/train.py --EPOCHS=200 --IMAGE=photo.jpg`` overrides them. Values are
  Python literals (``200``, ``0.5``, ``True``, ``None``, ``(1, 2)``); a bare word is a string. A name
  that is not a setting, or a value of the wrong type, is a one-line error that lists what is valid.
  ``--help`` prints the parameters cell, with its comments.
- in Jupyter it does nothing to the values (papermill injects its own cell after the parameters cell)
  and makes the repository root the working folder, so paths mean the same as on the command line.

Either way it returns the settings as a dict, for the run's ``settings.json``.
"""

import ast
import os
import sys
from pathlib import Path

from colorlab import UserError

REPO_ROOT = Path(__file__).resolve().parent.parent


class SettingsError(UserError):
    """A bad ``--NAME=value`` or an impossible setting."""


def in_notebook():
    """True inside a Jupyter kernel (including papermill runs)."""
    return "ipykernel" in sys.modules


def apply(namespace, argv=None):
    """Override the UPPER_CASE settings in ``namespace`` from ``argv`` (default: the command line)."""
    defaults = {name: value for name, value in namespace.items() if name.isupper() and not name.startswith("_")}
    if argv is None:
        if in_notebook():
            if (REPO_ROOT / "colorlab").is_dir():
                os.chdir(REPO_ROOT)
            return dict(defaults)
        argv = sys.argv[1:]
        _show_user_errors_as_one_line()
        if any(arg in ("-h", "--help") for arg in argv):
            print(_describe(sys.argv[0], defaults))
            raise SystemExit(0)
    overrides = parse(argv, defaults)
    namespace.update(overrides)
    return {**defaults, **overrides}


def parse(argv, defaults):
    """Turn ``["--NAME=value", ...]`` into ``{NAME: value}``, checked against the defaults' names and types."""
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
        value = ast.literal_eval(text)
    except (ValueError, SyntaxError):
        value = text  # a bare word, such as a path: a string
    if default is None or type(value) is type(default):
        return value
    if isinstance(default, str):
        return None if value is None else text  # optional names and paths; --IMAGE=2024 is the file "2024"
    if isinstance(default, float) and type(value) is int:
        return float(value)
    if isinstance(default, bool) and text.lower() in ("true", "false"):
        return text.lower() == "true"
    raise SettingsError(
        f"--{name} expects {type(default).__name__} (like {default!r}), got {text!r}"
    )


def _describe(script, defaults):
    """The script's parameters cell, comments included, or the bare defaults if it cannot be found."""
    lines, inside = [], False
    try:
        source = Path(script).read_text(encoding="utf-8").splitlines()
    except OSError:
        source = []
    for line in source:
        if line.startswith("# %%"):
            if inside:
                break
            inside = "parameters" in line
        elif inside and line.strip():
            lines.append("  --" + line)
    body = "\n".join(lines) or "\n".join(f"  --{k} = {v!r}" for k, v in defaults.items())
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
