"""The speed settings (MIXED_PRECISION, JIT_COMPILE) and what they must not change."""

import keras
import numpy as np
import pytest

from colorlab import settings, speed, training


@pytest.fixture(autouse=True)
def float32_afterwards():
    yield
    keras.config.set_dtype_policy("float32")


def test_mixed_precision_settings():
    on_gpu = speed.accelerator() is not None
    assert speed.mixed_precision("auto") == ("mixed_float16" if on_gpu else "float32")
    assert speed.mixed_precision(True) == speed.mixed_precision("True") == "mixed_float16"
    assert keras.config.dtype_policy().name == "mixed_float16"
    assert speed.mixed_precision("bfloat16") == "mixed_bfloat16"
    assert speed.mixed_precision(False) == speed.mixed_precision("false") == "float32"
    with pytest.raises(settings.SettingsError, match="MIXED_PRECISION must be one of"):
        speed.mixed_precision("half")
    if keras.backend.backend() != "jax":
        assert speed.mixed_precision(True, custom_step=True) == "mixed_float16"  # loss scaling: backends.minimize


def test_jit_compile_settings():
    assert speed.jit_compile("auto") == "auto" and speed.jit_compile("True") is True and speed.jit_compile(False) is False
    with pytest.raises(settings.SettingsError, match="JIT_COMPILE"):
        speed.jit_compile("xla")


def test_a_mixed_precision_model_is_saved_in_float32_with_its_weights(tmp_path):
    speed.mixed_precision("bfloat16")
    keras.utils.set_random_seed(0)
    model = keras.Sequential([
        keras.Input(shape=(None, None, 1)),
        keras.layers.Conv2D(4, 3, activation="relu", padding="same"),
        keras.layers.Conv2D(2, 3, activation="tanh", padding="same", dtype="float32"),
    ])
    assert model.layers[0].compute_dtype == "bfloat16" and model.layers[-1].compute_dtype == "float32"
    keras.config.set_dtype_policy("float32")
    training.save_model(model, tmp_path / "model.keras")
    loaded = keras.saving.load_model(tmp_path / "model.keras")
    assert all(layer.compute_dtype == "float32" for layer in loaded.layers)
    for a, b in zip(loaded.get_weights(), model.get_weights()):
        np.testing.assert_array_equal(a, b)
    x = np.random.default_rng(0).random((1, 8, 8, 1), np.float32)
    np.testing.assert_allclose(loaded.predict(x, verbose=0), model.predict(x, verbose=0), atol=0.02)  # bfloat16 rounding
