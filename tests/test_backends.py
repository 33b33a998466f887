"""The models are written with keras layers and keras.ops, so every Keras backend runs them; the one
exception is gan's training step, written for TensorFlow as keras.io's GAN examples are."""

import importlib.util
import json
import re

import keras
import numpy as np
import pytest

from conftest import ROOT, run_python

FRAMEWORK_IMPORT = re.compile(r"^\s*(import|from)\s+(tensorflow|torch|jax)\b|\btf\.", re.MULTILINE)
# gan's train_step takes its gradients with tf.GradientTape, in view, as keras.io's GAN examples do: that
# stage may import TensorFlow, for the tape only. colorlab/distribute.py calls each backend's own way of
# training on several devices (that is its point): the backend Keras runs on, never another; so does
# colorlab/commands/launch.py, JAX's way of joining several machines, after checking that Keras runs on JAX.
# Every other stage, and the rest of the package, use Keras alone.
TENSORFLOW_STAGE = "gan/train.py"
BACKENDS_MODULES = {"colorlab/distribute.py", "colorlab/commands/launch.py"}


def test_stages_and_package_use_no_backend_directly():
    checked = sorted(ROOT.glob("*/train.py")) + sorted((ROOT / "colorlab").rglob("*.py"))
    allowed = {TENSORFLOW_STAGE, *BACKENDS_MODULES}
    checked = [p for p in checked if p.relative_to(ROOT).as_posix() not in allowed]
    offenders = [p.relative_to(ROOT).as_posix() for p in checked if FRAMEWORK_IMPORT.search(p.read_text())]
    assert len(checked) > 8 and offenders == []


def test_gan_uses_tensorflow_for_its_gradient_tape_only():
    source = (ROOT / TENSORFLOW_STAGE).read_text()
    imports = re.findall(r"^\s*(?:import|from)\s+tensorflow\b.*?(?=\s*#|$)", source, re.MULTILINE)
    assert imports == ["import tensorflow as tf"]
    assert set(re.findall(r"\btf\.\w+", source)) == {"tf.GradientTape"}


@pytest.mark.backends
@pytest.mark.parametrize("backend", ["jax", "torch"])
def test_alpha_trains_on_another_backend_and_its_model_loads_here(backend, tmp_path):
    if importlib.util.find_spec(backend) is None:
        pytest.skip(f"{backend} is not installed")
    result = run_python("alpha/train.py", "--IMAGE_SIZE=32", "--EPOCHS=40", f"--OUT_DIR={tmp_path}",
                        env={"KERAS_BACKEND": backend})
    assert result.returncode == 0, result.stderr[-3000:]
    metrics = json.loads((tmp_path / "metrics.json").read_text())
    assert metrics["backend"] == backend
    assert np.isfinite(metrics["final_loss"]) and metrics["final_loss"] < 0.7 * metrics["grey_loss"]
    model = keras.saving.load_model(tmp_path / "model.keras")  # trained on `backend`, loaded on this one
    assert model.predict(np.zeros((1, 16, 16, 1)), verbose=0).shape == (1, 16, 16, 2)
