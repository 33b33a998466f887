"""colorlab.settings: --NAME=value overrides, checked against the parameters cell's names and types and
against the common rules (settings.RULES); every mistake is one line that names the setting."""

import sys

import pytest

from colorlab import UserError, settings
from colorlab.settings import SettingsError
from conftest import ROOT

DEFAULTS = {"IMAGE": "data/samples/astronaut.jpg", "EPOCHS": 1000, "LEARNING_RATE": 0.001, "RESUME": False,
            "WEIGHTS": None, "SIZES": (64, 128)}


@pytest.mark.parametrize(
    "arg, expected",
    [
        ("--EPOCHS=20", {"EPOCHS": 20}),
        ("--LEARNING_RATE=3e-4", {"LEARNING_RATE": 3e-4}),
        ("--LEARNING_RATE=1", {"LEARNING_RATE": 1.0}),  # an int where a float is expected
        ("--RESUME=True", {"RESUME": True}),
        ("--RESUME=false", {"RESUME": False}),
        ("--IMAGE=my photos/cat 1.jpg", {"IMAGE": "my photos/cat 1.jpg"}),  # a bare word is a string
        ("--IMAGE=2024", {"IMAGE": "2024"}),  # a file named 2024 stays a string
        ("--IMAGE='quoted.png'", {"IMAGE": "quoted.png"}),
        ("--IMAGE=__import__('os').system('x')", {"IMAGE": "__import__('os').system('x')"}),  # never run
        ("--IMAGE=None", {"IMAGE": None}),
        ("--WEIGHTS=imagenet", {"WEIGHTS": "imagenet"}),  # a None default accepts anything
        ("--SIZES=(32, 64)", {"SIZES": (32, 64)}),
    ],
)
def test_good_overrides_apply(arg, expected):
    result = settings.parse([arg], DEFAULTS)
    assert result == expected and type(result[next(iter(result))]) is type(expected[next(iter(expected))])


def test_apply_updates_the_namespace_and_returns_every_setting():
    namespace = dict(DEFAULTS, helper=print, _PRIVATE=1)
    result = settings.apply(namespace, ["--EPOCHS=5"])
    assert namespace["EPOCHS"] == 5 and result["EPOCHS"] == 5
    assert set(result) == set(DEFAULTS)  # lower-case and _PRIVATE names are not settings


def test_unknown_name_lists_the_valid_ones():
    with pytest.raises(SettingsError) as caught:
        settings.apply(dict(DEFAULTS), ["--EPOCH=5"])
    assert str(caught.value) == (
        "unknown setting --EPOCH; valid settings: IMAGE, EPOCHS, LEARNING_RATE, RESUME, WEIGHTS, SIZES"
    )


@pytest.mark.parametrize("arg, problem", [
    ("--EPOCHS=many", "--EPOCHS expects int (like 1000), got 'many'"),
    ("--EPOCHS=2.5", "--EPOCHS expects int (like 1000), got '2.5'"),
    ("--EPOCHS=True", "--EPOCHS expects int"),  # a bool is not a count
    ("--RESUME=yes", "--RESUME expects bool (like False), got 'yes'"),
    ("--SIZES=64", "--SIZES expects tuple"),
    ("--LEARNING_RATE=inf", "--LEARNING_RATE expects float (like 0.001), got 'inf'"),
    ("--LEARNING_RATE=nan", "--LEARNING_RATE expects float (like 0.001), got 'nan'"),
    ("EPOCHS=3", "unexpected argument 'EPOCHS=3': settings are given as --NAME=value"),
    ("--EPOCHS", "settings are given as --NAME=value"),
])
def test_bad_values_are_refused_in_one_line_with_the_reason(arg, problem):
    with pytest.raises(SettingsError) as caught:
        settings.apply(dict(DEFAULTS), [arg])
    assert problem in str(caught.value) and "\n" not in str(caught.value)


# ----------------------------------------------------------------------------------------------------
# The common rules: every setting of settings.RULES refuses what no stage can use

RULE_CASES = {  # name -> (a good default, good values at the limits, bad values)
    "EPOCHS": (10, [1], [0, -3]),
    "BATCH_SIZE": (8, [1], [0]),
    "STEPS_PER_EPOCH": (10, [1], [0]),
    "WORKERS": (2, [1], [0]),
    "IMAGE_SIZE": (128, [1, 8192], [0, 8193, -8]),
    "ZOOM": (1.3, [1.0, 8.0], [0.5, 8.5]),
    "LEARNING_RATE": (0.001, [1e-12], [0.0, -0.1]),
    "VALIDATION_FRACTION": (0.25, [0.01, 0.99], [0.0, 1.0]),
    "SEED": (0, [0, 2**32 - 1], [-1, 2**32]),
    "WARMUP_EPOCHS": (2, [0], [-1]),
    "LAMBDA": (100.0, [0.0], [-0.5]),
    "BETA_1": (0.5, [0.0, 0.999], [1.0, -0.1]),
    "DROPOUT": (0.1, [0.0], [1.0]),
    "FILTERS": (32, [1], [0]),
    "D_FILTERS": (32, [1], [0]),
}


def test_every_rule_has_cases():
    assert set(RULE_CASES) == set(settings.RULES)


@pytest.mark.parametrize("name", sorted(RULE_CASES))
def test_each_rule_accepts_its_limits_and_refuses_a_bad_value_in_one_line_naming_the_setting(name):
    default, good, bad = RULE_CASES[name]
    for value in good:
        assert settings.apply({name: default}, [f"--{name}={value}"])[name] == value
    for value in bad:
        with pytest.raises(SettingsError) as caught:
            settings.apply({name: default}, [f"--{name}={value}"])
        message = str(caught.value)
        shown = float(value) if isinstance(default, float) else value
        assert message.startswith(f"{name} must be ") and message.endswith(f", got {shown}")
        assert "\n" not in message
    with pytest.raises(SettingsError, match=f"^{name} must be "):  # a bad default in the parameters cell, too
        settings.apply({name: type(default)(bad[0])}, [])


@pytest.mark.parametrize("arg", ["--ZOOM=1e999", "--ZOOM=-1e999", "--LEARNING_RATE=1e999", "--LAMBDA=1e400"])
def test_infinite_numbers_are_refused(arg):
    name = arg[2:].partition("=")[0]
    with pytest.raises(SettingsError) as caught:
        settings.apply({"ZOOM": 1.3, "LEARNING_RATE": 0.001, "LAMBDA": 100.0}, [arg])
    assert str(caught.value).startswith(f"{name} must be a finite number, got ")
    assert "inf" in str(caught.value)


def test_a_non_finite_default_is_refused_too():
    with pytest.raises(SettingsError, match="^THRESHOLD must be a finite number, got nan$"):
        settings.apply({"THRESHOLD": float("nan")}, [])


def test_an_integer_too_large_for_a_float_is_refused_in_one_line():
    with pytest.raises(SettingsError, match="ZOOM"):
        settings.apply({"ZOOM": 1.3}, ["--ZOOM=" + "9" * 400])


def test_check():
    settings.check(True, "never shown")
    with pytest.raises(SettingsError, match="^IMAGE_SIZE must be a multiple of 8$"):
        settings.check(False, "IMAGE_SIZE must be a multiple of 8")
    assert issubclass(SettingsError, UserError)


# ----------------------------------------------------------------------------------------------------
# Terminal and notebook


def test_flag_speaks_the_terms_of_the_terminal_or_the_notebook(monkeypatch):
    monkeypatch.setattr(settings, "in_notebook", lambda: False)
    assert settings.flag("RESUME", True) == "--RESUME=True"
    assert settings.flag("OUT_DIR", "outputs/new") == "--OUT_DIR=outputs/new"
    monkeypatch.setattr(settings, "in_notebook", lambda: True)
    assert settings.flag("RESUME", True) == "RESUME = True in the parameters cell"
    assert settings.flag("OUT_DIR", "outputs/new") == "OUT_DIR = 'outputs/new' in the parameters cell"


def test_from_the_command_line_help_prints_the_parameters_cell_with_its_comments(monkeypatch, capsys):
    monkeypatch.chdir(ROOT)
    monkeypatch.setattr(settings, "in_notebook", lambda: False)
    monkeypatch.setattr(sys, "excepthook", sys.excepthook)
    monkeypatch.setattr(sys, "argv", ["alpha/train.py", "--EPOCHS=3", "--help"])
    with pytest.raises(SystemExit) as caught:
        settings.apply({"IMAGE_SIZE": 256, "EPOCHS": 1000})
    assert caught.value.code == 0
    out = capsys.readouterr().out
    assert out.startswith("usage: python alpha/train.py [--NAME=value ...]")
    assert "  --IMAGE_SIZE = 256  # pixels on the photo's longer side" in out
    assert "import" not in out  # the parameters cell only


def test_from_the_command_line_a_user_error_is_one_line_and_a_bug_keeps_its_traceback(monkeypatch, capsys):
    monkeypatch.setattr(settings, "in_notebook", lambda: False)
    seen = []
    monkeypatch.setattr(sys, "excepthook", lambda *args: seen.append(args[0]))  # what Python would print
    monkeypatch.setattr(sys, "argv", ["stage.py", "--EPOCHS=0"])
    with pytest.raises(SettingsError) as caught:
        settings.apply({"EPOCHS": 10})
    sys.excepthook(SettingsError, caught.value, caught.value.__traceback__)
    sys.excepthook(KeyboardInterrupt, KeyboardInterrupt(), None)
    assert capsys.readouterr().err == "error: EPOCHS must be at least 1, got 0\ninterrupted\n"
    sys.excepthook(ZeroDivisionError, ZeroDivisionError("a bug"), None)
    assert seen == [ZeroDivisionError]  # a bug still shows its traceback


def test_in_a_notebook_the_command_line_is_ignored_but_the_rules_hold(monkeypatch, tmp_path):
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(settings, "in_notebook", lambda: True)
    monkeypatch.setattr(sys, "argv", ["ipykernel_launcher.py", "-f", "kernel.json"])
    assert settings.apply({"EPOCHS": 10}) == {"EPOCHS": 10}
    from pathlib import Path

    assert Path.cwd() == ROOT  # paths mean what they mean on the command line
    with pytest.raises(SettingsError, match="EPOCHS must be at least 1, got 0"):
        settings.apply({"EPOCHS": 0})
