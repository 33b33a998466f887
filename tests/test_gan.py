"""The gan stage: its networks' shapes, its train step checked against finite differences on every
backend, and the stage run as a learner runs it (tiny settings): files, resume, another backend."""

import ast
import functools
import importlib.util
import json
import math

import keras
import numpy as np
import pytest

from colorlab import backends, images, lab
from conftest import ROOT, messages, run_python

STAGE = ROOT / "gan" / "train.py"
# Tiny settings: 32-pixel crops, a 3-level U-Net (multiple 8) and small networks; 2 warm-up epochs.
TINY = ["--IMAGE_SIZE=32", "--DEPTH=3", "--FILTERS=4", "--D_FILTERS=4", "--BATCH_SIZE=4", "--STEPS_PER_EPOCH=3",
        "--WARMUP_EPOCHS=2", "--LEARNING_RATE=0.005", "--WORKERS=1"]


@functools.cache
def stage():
    """The stage's imports, functions and classes (unet, patchgan, receptive_field, Pix2Pix, ...), without running it."""
    tree = ast.parse(STAGE.read_text(encoding="utf-8"))
    keep = (ast.Import, ast.ImportFrom, ast.FunctionDef, ast.ClassDef)
    tree.body = [node for node in tree.body if isinstance(node, keep)]
    namespace = {"__name__": "gan_stage"}
    exec(compile(tree, str(STAGE), "exec"), namespace)
    return namespace


# --- the networks ------------------------------------------------------------------------------------


@pytest.mark.parametrize("height, width, grid", [(24, 24, (1, 1)), (32, 32, (2, 2)), (64, 96, (6, 10)), (72, 40, (7, 3)),
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
    size = 64
    base = np.zeros((1, size, size, 1), np.float32)
    ab = np.zeros((1, size, size, 2), np.float32)
    moved = base.copy()
    moved[0, 31, 31, 0] = 1.0
    diff = np.abs(keras.ops.convert_to_numpy(discriminator([moved, ab]) - discriminator([base, ab])))[0, :, :, 0]
    rows = np.nonzero(diff.max(axis=1) > 0)[0]
    # scores are 4 pixels apart (2 stride-2 layers); a 34-pixel field covers a pixel from 34/4 ~ 8-9 of them
    assert 8 <= len(rows) <= 9


@pytest.mark.parametrize("height, width", [(33, 47), (64, 64), (1, 5), (40, 31)])
def test_generator_colours_any_size_once_padded(height, width):
    depth = 3
    generator = stage()["unet"](depth=depth, filters=2, dropout=0.5)
    l = np.random.default_rng(0).random((height, width, 1)).astype(np.float32)
    padded = images.pad_to_multiple(l, 2**depth)[None]
    ab = keras.ops.convert_to_numpy(generator(padded))[0, :height, :width]
    assert padded.shape[1] % 8 == 0 and padded.shape[2] % 8 == 0
    assert ab.shape == (height, width, 2) and np.abs(ab).max() <= 1  # tanh: the range of ab and uv
    assert generator.input_shape == (None, None, None, 1) and generator.output_shape == (None, None, None, 2)


def test_generator_needs_the_padding():
    generator = stage()["unet"](depth=3, filters=2, dropout=0.0)
    with pytest.raises(Exception):  # 36 = 4 x 9: the skips of the deepest levels no longer line up
        generator(np.zeros((1, 36, 36, 1), np.float32))


# --- the train step ----------------------------------------------------------------------------------


def check_train_step():
    """One train step with SGD (learning rate 1) moves every weight by minus its gradient. Compare each
    network's move with finite differences of *its own* loss (and not of the other network's)."""
    # Finite differences want float64. Keras 3.15 gives it on TensorFlow only: on JAX ops.mean and ops.tanh
    # round float64 to float32, and PyTorch cannot take float64 gradients of Keras's convolution kernels.
    # Elsewhere: float32, a larger step and a looser tolerance (L1 has a kink at every pixel it may cross).
    precise = keras.backend.backend() == "tensorflow"
    eps, rel, tol = (1e-5, 1e-4, 1e-7) if precise else (1e-3, 3e-2, 3e-4)
    dtype = "float64" if precise else "float32"
    previous = keras.config.floatx(), keras.config.dtype_policy()
    keras.config.set_floatx(dtype)
    keras.config.set_dtype_policy(dtype)  # the policy, not floatx, decides the layers' dtype once it exists
    try:
        keras.utils.set_random_seed(1)
        ns = stage()
        model = ns["Pix2Pix"](ns["unet"](depth=2, filters=3, dropout=0.0), ns["patchgan"](filters=3, n_layers=1), l1_weight=1.0)
        model.compile(d_optimizer=keras.optimizers.SGD(1.0), g_optimizer=keras.optimizers.SGD(1.0))
        rng = np.random.default_rng(0)
        assert all(w.dtype == dtype for w in model.weights)
        l, ab = rng.random((2, 16, 16, 1)).astype(dtype), rng.uniform(-0.5, 0.5, (2, 16, 16, 2)).astype(dtype)
        generator, discriminator = model.generator, model.discriminator
        picks = [(net, v, index) for net in (generator, discriminator) for v in net.trainable_variables[:1] + net.trainable_variables[-2:]
                 for index in [tuple(rng.integers(s) for s in v.shape)]]
        before = [np.array(w.numpy()) for w in model.weights]

        def losses():
            (d_loss, g_loss), _ = model.gan_losses(keras.ops.convert_to_tensor(l), keras.ops.convert_to_tensor(ab))
            return np.array([float(d_loss), float(g_loss)])

        numeric = []  # (d/dw d_loss, d/dw g_loss) for each picked weight
        for _, variable, index in picks:
            value = np.array(variable.numpy())
            changes = []
            for shift in (eps, -eps):
                shifted = value.copy()
                shifted[index] += shift
                variable.assign(shifted)
                changes.append(losses())
            variable.assign(value)
            numeric.append((changes[0] - changes[1]) / (2 * eps))
        model.set_weights(before)

        logs = model.train_on_batch(keras.ops.convert_to_tensor(l), keras.ops.convert_to_tensor(ab), return_dict=True)
        assert all(np.isfinite(float(value)) for value in logs.values()), logs
        assert int(model.d_optimizer.iterations.numpy()) == 1 and int(model.g_optimizer.iterations.numpy()) == 1
        for (net, variable, index), (d_grad, g_grad) in zip(picks, numeric):
            old = before[[id(w) for w in model.weights].index(id(variable))][index]
            step = old - float(variable.numpy()[index])  # SGD(1): minus the gradient it used
            own, other = (d_grad, g_grad) if net is discriminator else (g_grad, d_grad)
            assert step == pytest.approx(own, rel=rel, abs=tol), (net.name, variable.path, step, own)
            assert step != pytest.approx(other, rel=rel, abs=tol), (net.name, variable.path, step, other)

        # The warm-up step trains the generator alone: the discriminator and its optimizer stay as they were.
        d_before = [np.array(w.numpy()) for w in discriminator.weights]
        g_before = [np.array(w.numpy()) for w in generator.trainable_weights]
        model.warming_up = True
        model.make_train_function(force=True)
        logs = model.train_on_batch(keras.ops.convert_to_tensor(l), keras.ops.convert_to_tensor(ab), return_dict=True)
        assert sorted(logs) == ["g_l1"] and np.isfinite(float(logs["g_l1"]))
        assert all(np.array_equal(a, w.numpy()) for a, w in zip(d_before, discriminator.weights))
        assert int(model.d_optimizer.iterations.numpy()) == 1 and int(model.g_optimizer.iterations.numpy()) == 2
        assert all(not np.array_equal(a, w.numpy()) for a, w in zip(g_before, generator.trainable_weights))
    finally:
        keras.config.set_floatx(previous[0])
        keras.config.set_dtype_policy(previous[1])
    return keras.backend.backend()


def test_train_step_moves_each_network_along_its_own_loss():
    assert check_train_step() == keras.backend.backend()


@pytest.mark.parametrize("backend", ["jax", "torch"])
def test_train_step_on_another_backend(backend):
    if importlib.util.find_spec(backend) is None:
        pytest.skip(f"{backend} is not installed")
    code = "import sys; sys.path.insert(0, 'tests'); import test_gan; print('checked on', test_gan.check_train_step())"
    result = run_python("-c", code, env={"KERAS_BACKEND": backend}, timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
    assert f"checked on {backend}" in result.stdout


def test_checkpoint_restores_both_networks_and_both_optimizers(tmp_path):
    ns = stage()

    def build():
        model = ns["Pix2Pix"](ns["unet"](depth=2, filters=2, dropout=0.5), ns["patchgan"](filters=2, n_layers=1))
        model.compile(d_optimizer=keras.optimizers.Adam(1e-3, beta_1=0.5), g_optimizer=keras.optimizers.Adam(2e-3))
        return model

    keras.utils.set_random_seed(2)
    trained = build()
    rng = np.random.default_rng(1)
    l, ab = rng.random((4, 16, 16, 1), np.float32), rng.uniform(-1, 1, (4, 16, 16, 2)).astype(np.float32)
    trained.fit(l, ab, batch_size=2, epochs=1, verbose=0)
    trained.save_weights(tmp_path / "gan.weights.h5")  # as training.Checkpoint saves each epoch
    fresh = build()
    fresh.load_weights(tmp_path / "gan.weights.h5")
    for a, b in zip(trained.weights + trained.optimizer.variables, fresh.weights + fresh.optimizer.variables, strict=True):
        np.testing.assert_array_equal(a.numpy(), b.numpy(), err_msg=a.path)
    assert int(fresh.g_optimizer.iterations.numpy()) == 2 and len(fresh.optimizer.variables) > 20  # both Adams' moments


def test_optimizers_wrapper_refuses_misuse():
    adam = keras.optimizers.Adam()
    wrapper = backends.Optimizers(adam, keras.optimizers.Adam())
    with pytest.raises(ValueError, match="build each optimizer with its own variables first"):
        wrapper.build([])
    with pytest.raises(NotImplementedError):
        wrapper.apply([], [])
    assert type(keras.optimizers.deserialize(keras.optimizers.serialize(wrapper))) is backends.Optimizers


# --- the stage, run as a learner runs it ------------------------------------------------------------


@pytest.fixture(scope="module")
def resumed_run(tmp_path_factory):
    """EPOCHS=3 in two runs, as if interrupted after epoch 2 (the end of the warm-up): the second resumes it."""
    out = tmp_path_factory.mktemp("gan")
    first = run_python("gan/train.py", *TINY, "--EPOCHS=2", f"--OUT_DIR={out}")
    assert first.returncode == 0, first.stderr[-3000:]
    second = run_python("gan/train.py", *TINY, "--EPOCHS=3", "--RESUME=True", f"--OUT_DIR={out}")
    assert second.returncode == 0, second.stderr[-3000:]
    return out, second.stdout


def test_resumed_run_ends_at_the_epoch_count_of_an_uninterrupted_one(resumed_run):
    out, stdout = resumed_run
    assert "resuming after epoch 2 of 3" in stdout
    state = json.loads((out / "checkpoint" / "state.json").read_text())
    metrics = json.loads((out / "metrics.json").read_text())
    assert state["epoch"] == metrics["epochs"] == 3
    history = state["history"]
    assert len(history["g_l1"]) == len(history["val_g_l1"]) == 3  # 2 warm-up epochs and a GAN epoch
    assert len(history["d_loss"]) == len(history["g_adversarial"]) == 1  # the adversarial phase: epoch 3 only
    assert all(math.isfinite(v) for values in history.values() for v in values)
    assert history["g_l1"][1] < 0.9 * history["g_l1"][0]  # the warm-up taught the generator something


def test_run_writes_grids_curves_and_a_generator_that_colours_any_photo(resumed_run):
    out, _ = resumed_run
    assert sorted(p.name for p in (out / "grids").iterdir()) == ["epoch-0001.png", "epoch-0002.png", "epoch-0003.png"]
    for name in ["result.png", "loss.png", "colourfulness.png", "grids/epoch-0003.png"]:
        picture = images.load(out / name)
        assert picture.shape[0] > 100 and picture.std() > 0.05, name  # a real figure, not a blank canvas
    generator = keras.saving.load_model(out / "model.keras")  # a plain functional model: no custom objects
    assert generator.input_shape == (None, None, None, 1) and generator.output_shape == (None, None, None, 2)
    saved = json.loads((out / "settings.json").read_text())
    assert saved["IMAGE_SIZE"] == 32 and saved["COLOR_SPACE"] == "lab" and saved["MULTIPLE"] == 8
    rgb = images.load(ROOT / "data/samples/coffee.jpg", 45)  # 45x30: not a multiple of 8
    l, _ = lab.rgb_to_l_ab(rgb)
    ab = generator.predict(images.pad_to_multiple(l, saved["MULTIPLE"])[None], verbose=0)[0, :30, :45]
    assert lab.l_ab_to_rgb(l, ab).shape == rgb.shape
    warmed_up = keras.saving.load_model(out / "warmup.keras")  # the generator at the end of the warm-up
    assert any(not np.array_equal(a, b) for a, b in zip(warmed_up.get_weights(), generator.get_weights()))
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["backend"] == "tensorflow" and metrics["receptive_field"] == 70 and metrics["multiple"] == 8
    assert 0 < metrics["colourfulness_share"] < 3 and metrics["grey_val_l1"] > 0
    assert not list(out.rglob(".*.tmp-*"))  # no temporary file left behind


def test_yuv_run_on_another_backend_loads_here(tmp_path):
    backend = next((name for name in ("torch", "jax") if importlib.util.find_spec(name)), None)
    if backend is None:
        pytest.skip("neither jax nor torch is installed")
    result = run_python("gan/train.py", *TINY, "--EPOCHS=2", "--WARMUP_EPOCHS=1", "--COLOR_SPACE=yuv", f"--OUT_DIR={tmp_path}",
                        env={"KERAS_BACKEND": backend})
    assert result.returncode == 0, result.stderr[-3000:]
    metrics = json.loads((tmp_path / "metrics.json").read_text())
    assert metrics["backend"] == backend and metrics["color_space"] == "yuv" and math.isfinite(metrics["d_loss"])
    assert json.loads((tmp_path / "settings.json").read_text())["COLOR_SPACE"] == "yuv"
    generator = keras.saving.load_model(tmp_path / "model.keras")  # trained on `backend`, loaded on TensorFlow
    y, _ = lab.rgb_to_y_uv(images.load(ROOT / "data/samples/flower.jpg", 40))
    uv = generator.predict(images.pad_to_multiple(y, 8)[None], verbose=0)[0, : y.shape[0], : y.shape[1]]
    assert lab.y_uv_to_rgb(y, uv).shape == y.shape[:2] + (3,)


@pytest.mark.parametrize("args, env, message", [
    (["--IMAGE_SIZE=36"], {}, "error: IMAGE_SIZE must be a positive multiple of 2**DEPTH = 8, got 36"),
    ([], {"KERAS_BACKEND": "numpy"}, "error: the Keras backend 'numpy' cannot train this model"),
])
def test_mistakes_are_one_line_and_stop_before_training(args, env, message, tmp_path):
    result = run_python("gan/train.py", *TINY, f"--OUT_DIR={tmp_path / 'out'}", *args, env=env)
    assert result.returncode != 0
    lines = messages(result.stderr)
    assert len(lines) == 1 and message in lines[0], result.stderr[-2000:]
    assert not (tmp_path / "out").exists()  # stopped before creating anything


# --- what this stage added to the shared plumbing -------------------------------------------------


def test_photos_serve_y_uv_in_the_yuv_colour_space():
    from colorlab import data

    paths = sorted((ROOT / "data/samples").glob("*.jpg"))[:3]
    in_lab = data.Photos(paths, image_size=16, batch_size=3, steps=1, seed=4)[0]
    in_yuv = data.Photos(paths, image_size=16, batch_size=3, steps=1, seed=4, color_space="yuv")[0]
    rgb = lab.l_ab_to_rgb(*in_lab)  # the same crops, converted twice
    y, uv = lab.rgb_to_y_uv(rgb)
    np.testing.assert_allclose(in_yuv[0], y, atol=2e-3)
    np.testing.assert_allclose(in_yuv[1], uv, atol=5e-3)
    with pytest.raises(ValueError, match="unknown colour space 'rgb'"):
        data.Photos(paths, image_size=16, batch_size=3, steps=1, color_space="rgb")


def test_colourise_joins_in_the_model_colour_space():
    from colorlab import training

    no_colour = keras.Sequential([keras.Input((None, None, 1)), keras.layers.Conv2D(2, 1, kernel_initializer="zeros")])
    rgb = images.load(ROOT / "data/samples/flower.jpg", 20)
    for space in ("lab", "yuv"):
        (result,) = training.colourise(no_colour, [rgb], multiple=8, color_space=space)
        grey, _ = lab.split(rgb, space)
        np.testing.assert_allclose(result, lab.join(grey, np.zeros(grey.shape[:2] + (2,), np.float32), space), atol=1e-6)
    (yuv_grey,) = training.colourise(no_colour, [rgb], color_space="yuv")
    np.testing.assert_allclose(yuv_grey[..., 0], lab.rgb_to_y_uv(rgb)[0][..., 0], atol=1e-5)  # grey = luma in YUV


def test_stop_on_nan_watches_every_log_of_a_model_without_a_loss():
    from colorlab import training

    stop = training.StopOnNaN()
    stop.set_model(keras.Sequential([keras.Input((1,)), keras.layers.Dense(1)]))
    stop.on_train_batch_end(0, {"d_loss": 0.7, "g_l1": 0.1})
    assert stop.found is None
    stop.on_train_batch_end(1, {"d_loss": float("nan"), "g_l1": 0.1})
    assert stop.found[:2] == (0, "batch 2") and math.isnan(stop.found[2]) and stop.model.stop_training


def test_a_folder_without_photos_stops_before_creating_anything(tmp_path):
    (tmp_path / "empty").mkdir()
    result = run_python("gan/train.py", *TINY, f"--DATA={tmp_path / 'empty'}", f"--OUT_DIR={tmp_path / 'out'}")
    lines = messages(result.stderr)
    assert result.returncode != 0 and len(lines) == 1 and "no photos found" in lines[0], result.stderr[-2000:]
    assert not (tmp_path / "out").exists()


def test_checkpoint_keeps_the_dropout_random_state(tmp_path):
    """save_weights leaves random-number generator states out; the checkpoint keeps them, so that a resumed
    run draws the dropout masks an uninterrupted one would (the U-Net has dropout)."""
    from colorlab import training

    def build():
        keras.utils.set_random_seed(3)  # as the stage does before building: the same seeds, the same weights
        model = keras.Sequential([keras.Input((64,)), keras.layers.Dropout(0.5)])
        model.compile(optimizer="sgd", loss="mse")
        return model

    ones = np.ones((1, 64), np.float32)
    interrupted = build()
    for _ in range(3):  # three batches of an epoch draw three masks
        interrupted(ones, training=True)
    checkpoint = training.Checkpoint(tmp_path)
    checkpoint.set_model(interrupted)
    checkpoint.on_train_begin()
    checkpoint.on_epoch_end(0, {"loss": 1.0})
    expected = interrupted(ones, training=True)  # the mask of the next batch
    assert not np.array_equal(build()(ones, training=True), expected)  # a fresh model draws another one
    resumed = build()
    training.load_checkpoint(resumed, tmp_path)
    np.testing.assert_array_equal(resumed(ones, training=True), expected)
