"""The gan stage: its networks' shapes, its hand-written train_step checked against finite differences, and
the stage run as a learner runs it (tiny settings): the GAN phase makes the colours bolder where L1 alone
does not, both phases are logged and saved, and another backend is refused in one line."""

import ast
import functools
import importlib.util
import json
import math
import subprocess
import sys

import keras
import numpy as np
import pytest

from colorlab import coloring, images, training
from conftest import ROOT, messages, run_python

STAGE = ROOT / "gan" / "train.py"


@functools.cache
def stage():
    """The stage's imports, functions and classes (unet, patchgan, Pix2Pix, ...), without running it."""
    tree = ast.parse(STAGE.read_text(encoding="utf-8"))
    keep = (ast.Import, ast.ImportFrom, ast.FunctionDef, ast.ClassDef)
    tree.body = [node for node in tree.body if isinstance(node, keep)]
    namespace = {"__name__": "gan_stage"}
    exec(compile(tree, str(STAGE), "exec"), namespace)
    return namespace


# --- the networks ------------------------------------------------------------------------------------


@pytest.mark.parametrize("height, width, grid", [(24, 24, (1, 1)), (64, 96, (6, 10)), (72, 40, (7, 3)),
                                                 (256, 256, (30, 30))])
def test_discriminator_scores_a_grid_of_patches(height, width, grid):
    discriminator = stage()["patchgan"](filters=2, n_layers=3)
    logits = discriminator([np.zeros((2, height, width, 1)), np.zeros((2, height, width, 2))])
    assert tuple(logits.shape) == (2, *grid, 1)  # pix2pix: 30x30 scores for a 256-pixel photo


@pytest.mark.parametrize("n_layers, field", [(1, 16), (2, 34), (3, 70), (4, 142)])
def test_receptive_field_of_the_patchgan(n_layers, field):
    assert stage()["receptive_field"](stage()["patchgan"](filters=2, n_layers=n_layers)) == field


def test_receptive_field_by_brute_force():
    """Change one input pixel and see which scores move: the field is as wide as receptive_field says."""
    discriminator = stage()["patchgan"](filters=2, n_layers=2)  # 34 pixels
    for layer in discriminator.layers:  # weights of one sign: no cancellation can hide an influence
        if layer.weights and "conv" in layer.name:
            layer.kernel.assign(np.abs(keras.ops.convert_to_numpy(layer.kernel)) + 0.01)
    base = np.zeros((1, 64, 64, 1), np.float32)
    ab = np.zeros((1, 64, 64, 2), np.float32)
    moved = base.copy()
    moved[0, 31, 31, 0] = 1.0
    diff = keras.ops.convert_to_numpy(discriminator([moved, ab]) - discriminator([base, ab]))[0, :, :, 0]
    rows = np.nonzero(np.abs(diff).max(axis=1) > 0)[0]
    # scores are 4 pixels apart (2 stride-2 layers); a 34-pixel field covers a pixel from 34/4 ~ 8-9 of them
    assert 8 <= len(rows) <= 9


@pytest.mark.parametrize("height, width", [(33, 47), (1, 5), (40, 31)])
def test_generator_colors_any_size_once_padded(height, width):
    generator = stage()["unet"](depth=3, filters=2, dropout=0.5)
    l = np.random.default_rng(0).random((height, width, 1)).astype(np.float32)
    padded = images.pad_to_multiple(l, 8)[None]
    ab = keras.ops.convert_to_numpy(generator(padded))[0, :height, :width]
    assert padded.shape[1] % 8 == 0 and padded.shape[2] % 8 == 0
    assert ab.shape == (height, width, 2) and np.abs(ab).max() <= 1  # tanh: the range of ab and uv
    with pytest.raises(Exception):  # 36 = 4 x 9: without the padding, the deepest skips no longer line up
        generator(np.zeros((1, 36, 36, 1), np.float32))


# --- the train step ----------------------------------------------------------------------------------


def in_float64(model):
    """The same network with every layer in float64 (the stage pins its last layers to float32)."""
    config = json.dumps(keras.saving.serialize_keras_object(model)).replace('"float32"', '"float64"')
    return keras.saving.deserialize_keras_object(json.loads(config))


def reference_losses(generator, discriminator, l, ab, weight):
    """pix2pix's two losses, written out in NumPy: (discriminator loss, generator loss)."""
    def bce(target, logits):  # binary cross-entropy from logits, the numerically stable form
        return np.mean(np.maximum(logits, 0) - logits * target + np.log1p(np.exp(-np.abs(logits))))

    fake = np.asarray(generator(l, training=True))
    real_scores = np.asarray(discriminator([l, ab], training=True))
    fake_scores = np.asarray(discriminator([l, fake], training=True))
    d_loss = 0.5 * (bce(1.0, real_scores) + bce(0.0, fake_scores))
    g_loss = bce(1.0, fake_scores) + weight * np.mean(np.abs(ab - fake))
    return np.array([d_loss, g_loss])


def test_train_step_moves_each_network_along_its_own_loss():
    """One train step with SGD (learning rate 1) moves every weight by minus its gradient. Compare each
    network's move with finite differences of *its own* loss, computed in NumPy, and not of the other's."""
    previous = keras.config.floatx(), keras.config.dtype_policy()
    keras.config.set_floatx("float64")
    keras.config.set_dtype_policy("float64")
    try:
        keras.utils.set_random_seed(1)
        ns = stage()
        generator = in_float64(ns["unet"](depth=2, filters=3, dropout=0.0))
        discriminator = in_float64(ns["patchgan"](filters=3, n_layers=1))
        model = ns["Pix2Pix"](generator, discriminator, l1_weight=2.0)
        model.compile(d_optimizer=keras.optimizers.SGD(1.0), g_optimizer=keras.optimizers.SGD(1.0))
        assert all(w.dtype == "float64" for w in model.weights)
        rng = np.random.default_rng(0)
        l, ab = rng.random((2, 16, 16, 1)), rng.uniform(-0.5, 0.5, (2, 16, 16, 2))
        picks = [(net, v, tuple(rng.integers(s) for s in v.shape)) for net in (generator, discriminator)
                 for v in net.trainable_variables[:1] + net.trainable_variables[-2:]]
        before = {id(v): np.array(v.numpy()) for _, v, _ in picks}

        eps, numeric = 1e-6, []  # (d/dw d_loss, d/dw g_loss) for each picked weight
        for _, variable, index in picks:
            value = before[id(variable)]
            changes = []
            for shift in (eps, -eps):
                shifted = value.copy()
                shifted[index] += shift
                variable.assign(shifted)
                changes.append(reference_losses(generator, discriminator, l, ab, 2.0))
            variable.assign(value)
            numeric.append((changes[0] - changes[1]) / (2 * eps))

        history = model.fit(l, ab, batch_size=2, verbose=0).history  # one step
        logs = {name: values[0] for name, values in history.items()}
        assert sorted(logs) == ["d_fake", "d_loss", "d_real", "g_adversarial", "g_l1", "loss"]
        assert logs["loss"] == pytest.approx(logs["g_adversarial"] + 2.0 * logs["g_l1"])  # TerminateOnNaN's
        assert int(model.d_optimizer.iterations.numpy()) == int(model.g_optimizer.iterations.numpy()) == 1
        for (net, variable, index), (d_grad, g_grad) in zip(picks, numeric):
            step = before[id(variable)][index] - float(variable.numpy()[index])  # SGD(1): minus the gradient
            own, other = (d_grad, g_grad) if net is discriminator else (g_grad, d_grad)
            assert step == pytest.approx(own, rel=1e-4, abs=1e-8), (net.name, variable.path, step, own)
            assert step != pytest.approx(other, rel=1e-4, abs=1e-8), (net.name, variable.path, step, other)
    finally:
        keras.config.set_floatx(previous[0])
        keras.config.set_dtype_policy(previous[1])


def test_backup_restores_both_networks_and_both_optimizers(tmp_path):
    """What BackupAndRestore saves each epoch (save_weights) holds both networks and both optimizers."""
    ns = stage()

    def build():
        generator, discriminator = ns["unet"](depth=2, filters=2, dropout=0.5), ns["patchgan"](2, n_layers=1)
        model = ns["Pix2Pix"](generator, discriminator)
        model.compile(d_optimizer=keras.optimizers.Adam(1e-3, beta_1=0.5),
                      g_optimizer=keras.optimizers.Adam(2e-3))
        return model

    keras.utils.set_random_seed(2)
    trained = build()
    rng = np.random.default_rng(1)
    l, ab = rng.random((4, 16, 16, 1), np.float32), rng.uniform(-1, 1, (4, 16, 16, 2)).astype(np.float32)
    trained.fit(l, ab, batch_size=2, epochs=1, verbose=0)
    trained.save_weights(tmp_path / "latest.weights.h5")
    fresh = build()
    fresh.load_weights(tmp_path / "latest.weights.h5")
    optimizers = [(trained.d_optimizer, fresh.d_optimizer), (trained.g_optimizer, fresh.g_optimizer)]
    states = [pair for old, new in optimizers for pair in zip(old.variables, new.variables, strict=True)]
    for a, b in list(zip(trained.weights, fresh.weights, strict=True)) + states:
        np.testing.assert_array_equal(a.numpy(), b.numpy(), err_msg=a.path)
    assert int(fresh.d_optimizer.iterations.numpy()) == int(fresh.g_optimizer.iterations.numpy()) == 2
    assert len(states) > 20  # both Adams' moments, one pair per weight


# --- the stage, run as a learner runs it ------------------------------------------------------------

# Tiny settings: 32-pixel crops, a 3-level U-Net (multiple 8), small networks, a high learning rate.
TINY = ["--IMAGE_SIZE=32", "--DEPTH=3", "--FILTERS=8", "--D_FILTERS=8", "--D_LAYERS=2", "--DROPOUT=0.0",
        "--BATCH_SIZE=8", "--STEPS_PER_EPOCH=24", "--LEARNING_RATE=0.002", "--WORKERS=1"]
WARMUP, GAN = 2, 2  # epochs of L1 alone, then epochs of GAN (or, for the comparison, of more L1)
LAMBDA = 0.1  # in 48 steps at this size, pix2pix's 100 (or 1) leaves the adversarial part too weak to show
BOLDER = 1.5  # the GAN phase must raise the validation colourfulness to this many times the warm-up's
# Calibrated with these settings for SEED = 0 to 5 (TensorFlow 2.21, CPU). After the GAN phase, the
# validation colourfulness was 2.77, 1.90, 1.84, 1.91, 2.64 and 2.09 times the warm-up's; after as many
# epochs of L1 alone, 0.80, 1.21, 1.13, 1.03, 0.96 and 1.08 times. BOLDER lies between the two ranges.
# With LAMBDA = 1 the GAN phase fails it too (0.99, 1.29, 0.93 and 1.11 times, seeds 0 to 3).


def start(*args):
    return subprocess.Popen([sys.executable, str(STAGE), *TINY, *args], cwd=ROOT, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)


def finish(process):
    stdout, stderr = process.communicate(timeout=600)
    assert process.returncode == 0, stderr[-3000:]
    return stdout


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    """Two runs side by side, with the same seed, so the same warm-up: one goes on with the GAN phase, the
    other with as many epochs of L1 alone (WARMUP_EPOCHS = EPOCHS: a GAN phase of no epoch)."""
    root = tmp_path_factory.mktemp("gan")
    gan, l1 = root / "gan", root / "l1"
    epochs = f"--EPOCHS={WARMUP + GAN}"
    both = [start(f"--WARMUP_EPOCHS={WARMUP}", epochs, f"--LAMBDA={LAMBDA}", f"--OUT_DIR={gan}"),
            start(f"--WARMUP_EPOCHS={WARMUP + GAN}", epochs, f"--OUT_DIR={l1}")]
    stdouts = [finish(process) for process in both]
    return gan, l1, stdouts[0]


@pytest.mark.slow
def test_the_gan_phase_makes_colors_bolder_where_l1_alone_does_not(runs):
    gan, l1, _ = runs
    warmed_up = training.history(gan / "warmup.csv")["val_colorfulness"]
    after_l1 = training.history(l1 / "warmup.csv")["val_colorfulness"]
    assert len(warmed_up) == WARMUP and len(after_l1) == WARMUP + GAN
    assert after_l1[WARMUP - 1] == pytest.approx(warmed_up[-1], rel=1e-3)  # one warm-up: both start there
    after_gan = json.loads((gan / "metrics.json").read_text())["val_colorfulness"]
    assert after_gan > BOLDER * warmed_up[-1], (warmed_up, after_gan)
    assert after_l1[-1] < BOLDER * warmed_up[-1], (warmed_up, after_l1)
    assert json.loads((l1 / "metrics.json").read_text())["val_colorfulness"] == after_l1[-1]


@pytest.mark.slow
def test_the_run_logs_both_phases(runs):
    gan, l1, stdout = runs
    warmup, history = training.history(gan / "warmup.csv"), training.history(gan / "history.csv")
    assert len(warmup["loss"]) == len(warmup["val_loss"]) == WARMUP and len(history["loss"]) == GAN
    assert f"Epoch {WARMUP + 1}/{WARMUP + GAN}" in stdout  # the GAN phase's epochs follow the warm-up's
    assert all(math.isfinite(v) for values in history.values() for v in values)
    assert sorted(history) == ["d_fake", "d_loss", "d_real", "g_adversarial", "g_l1", "loss",
                               "val_colorfulness", "val_g_l1"]
    whole = np.add(history["g_adversarial"], np.multiply(LAMBDA, history["g_l1"]))
    np.testing.assert_allclose(history["loss"], whole, rtol=1e-5)  # the epoch means of the loss and its parts
    assert warmup["val_loss"][-1] < 0.9 * warmup["val_loss"][0]  # the warm-up taught the generator something
    metrics = json.loads((gan / "metrics.json").read_text())
    assert metrics["epochs"] == WARMUP + GAN and metrics["warmup_epochs"] == WARMUP
    assert metrics["backend"] == "tensorflow"
    assert metrics["multiple"] == 8 and metrics["receptive_field"] == 34
    assert math.isfinite(metrics["d_loss"])
    assert json.loads((l1 / "metrics.json").read_text())["d_loss"] is None  # no GAN epoch, no d_loss


@pytest.mark.slow
def test_run_writes_grids_curves_and_generators_that_load_anywhere(runs):
    gan, _, _ = runs
    grids = sorted(p.name for p in (gan / "grids").iterdir())
    assert grids == [f"epoch-{e:04d}.png" for e in range(1, WARMUP + GAN + 1)]  # both phases
    for name in ["result.png", "loss.png", "colorfulness.png"]:
        picture = images.load(gan / name)
        assert picture.shape[0] > 100 and picture.std() > 0.05, name  # a real figure, not a blank canvas
    generator = keras.saving.load_model(gan / "model.keras")  # a plain functional model: no custom objects
    warmed_up = keras.saving.load_model(gan / "warmup.keras")
    assert generator.input_shape == (None, None, None, 1) and generator.output_shape == (None, None, None, 2)
    assert any(not np.array_equal(a, b) for a, b in zip(warmed_up.get_weights(), generator.get_weights()))
    saved = json.loads((gan / "settings.json").read_text())
    assert saved["IMAGE_SIZE"] == 32 and saved["COLOR_SPACE"] == "lab" and saved["MULTIPLE"] == 8
    rgb = images.load(ROOT / "data/samples/coffee.jpg", 45)  # 45x30: not a multiple of 8
    (colored,) = coloring.colorize(generator, [rgb], multiple=saved["MULTIPLE"])
    assert colored.shape == rgb.shape
    assert not list(gan.rglob(".*.colorlab-tmp*"))  # no temporary file left behind


@pytest.mark.backends
@pytest.mark.parametrize("backend", ["jax", "torch"])
def test_another_backend_is_refused_in_one_line(backend, tmp_path):
    if importlib.util.find_spec(backend) is None:
        pytest.skip(f"{backend} is not installed")
    out = tmp_path / "out"
    result = run_python(STAGE, "--IMAGE_SIZE=32", f"--OUT_DIR={out}", env={"KERAS_BACKEND": backend})
    lines = messages(result.stderr)
    assert result.returncode == 1 and len(lines) == 1, result.stderr[-2000:]
    assert lines[0] == (f"error: gan's training step is written for TensorFlow (its GradientTape), not the "
                        f"Keras backend '{backend}': run it with KERAS_BACKEND=tensorflow "
                        f"python gan/train.py")
    assert not out.exists()  # stopped before anything was read or written
