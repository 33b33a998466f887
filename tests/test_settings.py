"""colorlab.settings: --NAME=value overrides, checked against the parameters cell's names and types."""

import pytest

from colorlab import settings
from colorlab.settings import SettingsError
from conftest import messages

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
        ("--IMAGE=None", {"IMAGE": None}),
        ("--WEIGHTS=imagenet", {"WEIGHTS": "imagenet"}),  # a None default accepts anything
        ("--SIZES=(32, 64)", {"SIZES": (32, 64)}),
    ],
)
def test_good_overrides_apply(arg, expected):
    assert settings.parse([arg], DEFAULTS) == expected


def test_apply_updates_the_namespace_and_returns_every_setting():
    namespace = dict(DEFAULTS, helper=print)
    result = settings.apply(namespace, ["--EPOCHS=5"])
    assert namespace["EPOCHS"] == 5 and result["EPOCHS"] == 5
    assert set(result) == set(DEFAULTS)  # lower-case names are not settings


def test_unknown_name_lists_the_valid_ones():
    with pytest.raises(SettingsError) as caught:
        settings.parse(["--EPOCH=5"], DEFAULTS)
    assert str(caught.value) == (
        "unknown setting --EPOCH; valid settings: IMAGE, EPOCHS, LEARNING_RATE, RESUME, WEIGHTS, SIZES"
    )


@pytest.mark.parametrize("arg, problem", [
    ("--EPOCHS=many", "--EPOCHS expects int (like 1000), got 'many'"),
    ("--EPOCHS=2.5", "--EPOCHS expects int"),
    ("--RESUME=yes", "--RESUME expects bool"),
    ("--SIZES=64", "--SIZES expects tuple"),
    ("EPOCHS=3", "settings are given as --NAME=value"),
    ("--EPOCHS", "settings are given as --NAME=value"),
])
def test_bad_values_are_refused_with_the_reason(arg, problem):
    with pytest.raises(SettingsError, match=problem.replace("(", r"\(").replace(")", r"\)")):
        settings.parse([arg], DEFAULTS)


def test_check():
    settings.check(True, "never shown")
    with pytest.raises(SettingsError, match="EPOCHS must be at least 1"):
        settings.check(False, "EPOCHS must be at least 1")


def test_from_a_terminal_errors_are_one_line_without_traceback(script):
    result = script("notebooks/color_spaces.py", "--IMAGE_SIZ=64")
    assert result.returncode != 0
    assert messages(result.stderr) == [
        "error: unknown setting --IMAGE_SIZ; valid settings: IMAGE, IMAGE_SIZE, OUT_FILE"
    ]


def test_help_prints_the_parameters_cell_with_its_comments(script):
    result = script("notebooks/color_spaces.py", "--help")
    assert result.returncode == 0
    assert '--IMAGE_SIZE = 320  # pixels on the longer side' in result.stdout
