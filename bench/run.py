"""How fast is colorlab? Training and colouring speed of every stage, side by side, on this machine.

    python bench/run.py                      # the full run (an hour on a 2-core CPU; minutes on a GPU)
    python bench/run.py --quick              # about 2 minutes on a 2-core CPU: small crops, few repeats
    python bench/run.py --backend jax        # any Keras backend; on a GPU, install its GPU build first
    python bench/run.py --size 256 --batch 8 --json outputs/bench/cpu.json

It measures, in one process, compared variants taking turns (round after round, each variant one
chunk of steps per round, the median kept), so that a busy machine slows all of them alike and the
RATIOS hold even where absolute timings do not:

- training throughput (crops/s) of each stage from JPEG files on disk, and the same training step fed
  from batches already in memory: their ratio is the input pipeline's efficiency (1 = the model
  never waits for photos);
- the same, with the pipeline of the 2017 tutorial this project grows from: every photo in memory,
  per batch ImageDataGenerator-style random affine transforms in NumPy/SciPy and scikit-image's
  ``rgb2lab`` in the main thread, nothing read ahead (and, for the full stage, the classifier run on
  every batch, twice, as the original did): our speed-up over it;
- uint8 RGB batches converted inside the training step (the default) against float32 ``(l, ab)``
  batches converted in the reading threads; mixed precision and compiled (XLA) steps;
- ``colorize`` on one 1024x768 photo end to end (read, model, recombine at full resolution, write),
  and its throughput on a folder of photos;
- how the model's cost grows with photo size and batch size;
- the peak memory of each measurement (the process's resident-set high-water mark, reset before each
  measurement where Linux allows it; on a GPU, the backend's peak device memory too).

The photos are generated from ``data/samples`` (64 JPEGs of 640x480 and 8 of 1024x768, in
``outputs/bench/photos``, ignored by git). The table comes last; ``--json`` keeps every number,
including the ratio of every round (``paired_ratios_per_round``), to show how much they vary.
``--quick`` measures training for every stage, and precision, ``colorize`` and the cost table for beta
only, with a small classifier for the full stage: a check that everything runs, with rough ratios.
Timing a GPU: ``pip install "jax[cuda12]"`` and ``python bench/run.py --backend jax``.
"""

import argparse
import json
import os
import platform
import statistics
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
DEFAULTS = {  # full run / --quick
    "size": (256, 64), "batch": (8, 4), "min_steps": (2, 3), "chunk_seconds": (2.0, 0.3), "rounds": (7, 3),
    "scale_sizes": ("256,512,1024", "128,256"), "scale_batches": ("1,4,8", "1,4"),
    "colorize_photos": (8, 4), "repeats": (5, 3), "classifier": ("inception_resnet_v2", "mobilenet_v3_small"),
    "cell_budget": (60.0, 3.0), "cell_repeats": (2, 1),
}


def parse_args(argv=None):
    parser = argparse.ArgumentParser(prog="bench/run.py", description=__doc__.split("\n\n")[0])
    parser.add_argument("--backend", choices=("tensorflow", "jax", "torch"),
                        default=os.environ.get("KERAS_BACKEND", "tensorflow"), help="Keras backend (default tensorflow)")
    parser.add_argument("--quick", action="store_true", help="small crops and few repeats: about 2 minutes on a 2-core CPU")
    parser.add_argument("--size", type=int, help="training crop side in pixels (default 256; 64 with --quick)")
    parser.add_argument("--batch", type=int, help="crops per training step (default 8; 4 with --quick)")
    parser.add_argument("--steps", type=int, help="training steps per timed chunk (default: enough for about 2 s, "
                        "at least 2; 0.3 s and 3 with --quick)")
    parser.add_argument("--rounds", type=int, help="timed rounds; each compared variant runs once per round (default 7; 3 with --quick)")
    parser.add_argument("--workers", type=int, default=min(8, os.cpu_count() or 1),
                        help="reading threads of the photo pipeline (default: the CPU cores, at most 8)")
    parser.add_argument("--work-size", type=int, default=256, help="colorize's working size (the shorter side the model sees)")
    parser.add_argument("--photo-size", default="1024x768", help="size of the photos colorize colours, WxH")
    parser.add_argument("--scale-sizes", help="photo sides for the cost table (default 256,512,1024)")
    parser.add_argument("--scale-batches", help="batch sizes for the cost table (default 1,4,8)")
    parser.add_argument("--cell-budget", type=float, help="seconds a cost-table cell may take; bigger ones are skipped")
    parser.add_argument("--stages", default="all", help="stages to measure, e.g. beta,full (default: every stage present)")
    parser.add_argument("--parts", default="train,precision,colorize,scaling", help="which measurements to run")
    parser.add_argument("--classifier", help="the full stage's classifier (default inception_resnet_v2, the 2017 "
                        "choice; mobilenet_v3_small with --quick)")
    parser.add_argument("--photos", default="outputs/bench/photos", help="folder for the generated photos")
    parser.add_argument("--json", default=None, help="where to write every number (default outputs/bench/<backend>.json)")
    args = parser.parse_args(argv)
    quick = int(args.quick)
    for name, values in DEFAULTS.items():
        if getattr(args, name, None) is None:
            setattr(args, name, values[quick])
    args.scale_sizes = [int(v) for v in str(args.scale_sizes).split(",")]
    args.scale_batches = [int(v) for v in str(args.scale_batches).split(",")]
    args.photo_size = tuple(int(v) for v in args.photo_size.lower().split("x"))
    args.parts = set(args.parts.split(","))
    args.json = Path(args.json or f"outputs/bench/{args.backend}.json")
    if args.size % 8:
        parser.error(f"--size must be a multiple of 8, got {args.size}")
    return args


ARGS = parse_args()
os.environ["KERAS_BACKEND"] = ARGS.backend  # before Keras is imported, by colorlab or anyone
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
sys.path.insert(0, str(ROOT))

import keras  # noqa: E402
import numpy as np  # noqa: E402
from PIL import Image  # noqa: E402

from colorlab import colorize, data, files, images, lab, speed, training  # noqa: E402


# ----------------------------------------------------------------------------------------------------
# Memory and time


def _status(field):
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith(field + ":"):
                return int(line.split()[1]) / 1024  # kB -> MB
    except OSError:
        pass
    return None


class Peak:
    """Peak resident memory (MB) of this process while the ``with`` block runs, and how much above the
    start it went; the device's peak too on a GPU. Linux lets a process reset its high-water mark
    (``/proc/self/clear_refs``); elsewhere the peak is that of the whole run so far."""

    def __enter__(self):
        try:
            Path("/proc/self/clear_refs").write_text("5")
            self.reset = True
        except OSError:
            self.reset = False
        self.start = _status("VmRSS")
        _device_peak(reset=True)
        return self

    def __exit__(self, *exc):
        import resource

        peak = _status("VmHWM") if self.reset else resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
        self.result = {"peak_rss_mb": round(peak or 0.0, 1),
                       "extra_rss_mb": round((peak or 0.0) - (self.start or 0.0), 1)}
        device = _device_peak()
        if device is not None:
            self.result["peak_device_mb"] = round(device, 1)
        return False


def _device_peak(reset=False):
    """Peak device memory in MB on a GPU (None on a CPU), per backend."""
    if speed.accelerator() != "gpu":
        return None
    try:
        backend = keras.backend.backend()
        if backend == "torch":
            import torch

            if reset:
                torch.cuda.reset_peak_memory_stats()
            return torch.cuda.max_memory_allocated() / 2**20
        if backend == "tensorflow":
            import tensorflow as tf

            if reset:
                tf.config.experimental.reset_memory_stats("GPU:0")
            return tf.config.experimental.get_memory_info("GPU:0")["peak"] / 2**20
        import jax  # no reset: the peak of the run so far

        return jax.devices()[0].memory_stats().get("peak_bytes_in_use", 0) / 2**20
    except Exception:  # a backend without these statistics: no device figure
        return None


class Window(keras.callbacks.Callback):
    """Times an epoch from its first training batch to its end, leaving out what ``fit`` does before
    (on TensorFlow it reads two batches to learn their shapes at each call)."""

    def on_train_batch_begin(self, batch, logs=None):
        if batch == 0:
            self.start = time.perf_counter()

    def on_epoch_end(self, epoch, logs=None):
        self.seconds = time.perf_counter() - self.start


class InMemory(keras.utils.PyDataset):
    """Batches already in memory, ``steps`` of them (cycling over those given): what a perfect input
    pipeline would hand the model."""

    def __init__(self, batches, steps=None):
        super().__init__()
        self.batches = batches
        self.steps = steps or len(batches)

    def __len__(self):
        return self.steps

    def __getitem__(self, index):
        return self.batches[index % len(self.batches)]


def median(values):
    return float(statistics.median(values)) if values else None


def alternate(variants, rounds, warmup=True):
    """Run each variant's ``run(round) -> (seconds, items)`` once per round, in turns (the order
    rotates every round); returns {name: {"items_per_s": median, "samples": [...], memory...}} and the
    per-round ratios are computed from the same rounds by :func:`paired`."""
    names = list(variants)
    if warmup:
        for name in names:  # compile and fill caches; not timed
            variants[name](None)
    results = {name: {"rates": [], "seconds": [], "memory": []} for name in names}
    for r in range(rounds):
        order = names[r % len(names):] + names[: r % len(names)]
        for name in order:
            with Peak() as peak:
                seconds, items = variants[name](r)
            results[name]["rates"].append(items / seconds)
            results[name]["seconds"].append(seconds)
            results[name]["memory"].append(peak.result)
    for name, result in results.items():
        result["items_per_s"] = median(result["rates"])
        memory = result.pop("memory")
        result.update({key: max(m[key] for m in memory) for key in memory[0]})
    return results


def paired(results, a, b):
    """The median over rounds of rate(a) / rate(b), both measured in the same round (the ratio of
    each round is kept in ``results["paired"]``, to show how much it varies)."""
    if a not in results or b not in results:
        return None
    ratios = [x / y for x, y in zip(results[a]["rates"], results[b]["rates"])]
    PAIRED[f"{a} / {b}"] = [round(r, 3) for r in ratios]
    return median(ratios)


PAIRED = {}  # every paired ratio of every round, for the JSON


# ----------------------------------------------------------------------------------------------------
# Photos


def make_photos(folder, count, size, seed):
    """``count`` JPEGs of ``size`` (w, h) cut from the sample photos (random crops, flips, colour
    casts), in ``folder``; reused if already there."""
    folder = Path(folder) / f"{size[0]}x{size[1]}"
    paths = [folder / f"photo-{i:03d}.jpg" for i in range(count)]
    if all(p.exists() for p in paths):
        return paths
    folder.mkdir(parents=True, exist_ok=True)
    samples = [images.load(p) for p in images.list_images(ROOT / "data" / "samples")]
    rng = np.random.default_rng(seed)
    w, h = size
    for i, path in enumerate(paths):
        rgb = samples[i % len(samples)]
        scale = rng.uniform(0.6, 1.0)
        ch = int(min(rgb.shape[0], rgb.shape[1] * h / w) * scale)
        cw = int(ch * w / h)
        top, left = rng.integers(rgb.shape[0] - ch + 1), rng.integers(rgb.shape[1] - cw + 1)
        crop = rgb[top : top + ch, left : left + cw] * rng.uniform(0.85, 1.15, 3)  # a colour cast
        crop = crop[:, ::-1] if rng.random() < 0.5 else crop
        pixels = (np.clip(crop, 0, 1) * 255 + 0.5).astype(np.uint8)
        Image.fromarray(pixels).resize((w, h), Image.Resampling.LANCZOS).save(path, quality=90)
    return paths


# ----------------------------------------------------------------------------------------------------
# The 2017 way of feeding a model


class Reference2017:
    """Batches as the 2017 tutorial made them (its beta and full notebooks), same crops size and batch.

    Every photo is loaded into memory first, as float64 (the original's ``np.array(X, dtype=float)``).
    Then, per batch, in the main thread, with nothing read ahead: Keras's ImageDataGenerator-style
    random transform of each photo (rotation up to 20 degrees, shear, zoom 0.8-1.2, flip; SciPy
    ``affine_transform``, one channel at a time, float64), then scikit-image's ``rgb2lab`` on the batch.
    With ``embed`` (the full stage), the classifier is also run on every batch: the grey batch is
    resized to the classifier's size one photo at a time with scikit-image, and the classifier runs
    twice (the original computed ``create_inception_embedding`` once into an unused variable, then again
    in its ``yield``).
    """

    def __init__(self, paths, size, batch_size, seed, embed=None, embed_size=299):
        self.photos = np.array([_square(images.load(p, size, side="shorter"), size) for p in paths], dtype=float)
        self.batch_size = batch_size
        self.rng = np.random.default_rng(seed)
        self.embed, self.embed_size = embed, embed_size

    def batch(self):
        from skimage import color

        chosen = self.rng.choice(len(self.photos), self.batch_size, replace=False)
        rgb = np.stack([_random_transform(self.photos[i], self.rng) for i in chosen])
        lab_batch = color.rgb2lab(rgb)
        l = (lab_batch[..., :1] / lab.L_SCALE).astype(np.float32)  # (the original fed L unscaled, float64)
        ab = (lab_batch[..., 1:] / lab.AB_SCALE).astype(np.float32)
        if self.embed is None:
            return l, ab
        grey = color.gray2rgb(color.rgb2gray(rgb))
        _unused = self._embedding(grey)  # noqa: F841  (the original's first, unused call)
        return (l, self._embedding(grey).astype(np.float32)), ab

    def _embedding(self, grey):
        from skimage import transform

        resized = np.array([transform.resize(g, (self.embed_size, self.embed_size, 3), mode="constant") for g in grey])
        return self.embed(resized)


def _square(rgb, size):
    top, left = (rgb.shape[0] - size) // 2, (rgb.shape[1] - size) // 2
    return rgb[top : top + size, left : left + size]


def _random_transform(x, rng, rotation=20.0, shear=0.2, zoom=(0.8, 1.2)):
    """ImageDataGenerator(rotation_range=20, shear_range=0.2, zoom_range=0.2, horizontal_flip=True).random_transform."""
    from scipy import ndimage

    theta = np.deg2rad(rng.uniform(-rotation, rotation))
    s = np.deg2rad(rng.uniform(-shear, shear))
    zx, zy = rng.uniform(zoom[0], zoom[1], 2)
    matrix = np.array([[np.cos(theta), -np.sin(theta), 0], [np.sin(theta), np.cos(theta), 0], [0, 0, 1]])
    matrix = matrix @ np.array([[1, -np.sin(s), 0], [0, np.cos(s), 0], [0, 0, 1]])
    matrix = matrix @ np.array([[zx, 0, 0], [0, zy, 0], [0, 0, 1]])
    h, w = x.shape[:2]
    o_x, o_y = h / 2 + 0.5, w / 2 + 0.5
    matrix = np.array([[1, 0, o_x], [0, 1, o_y], [0, 0, 1]]) @ matrix @ np.array([[1, 0, -o_x], [0, 1, -o_y], [0, 0, 1]])
    channels = [ndimage.affine_transform(x[..., c], matrix[:2, :2], matrix[:2, 2], order=1, mode="nearest")
                for c in range(x.shape[-1])]
    x = np.stack(channels, axis=-1)
    return x[:, ::-1] if rng.random() < 0.5 else x


# ----------------------------------------------------------------------------------------------------
# The stages' models, from their own files (the lesson is the single source)


def stage_cell(stage, marker):
    """The code cell of ``<stage>/train.py`` that contains ``marker``."""
    source = (ROOT / stage / "train.py").read_text(encoding="utf-8")
    for cell in source.split("\n# %%"):
        if marker in cell and not cell.lstrip().startswith("[markdown]"):
            return cell.split("\n", 1)[1]
    raise RuntimeError(f"{stage}/train.py: no code cell with {marker!r}")


def exec_cell(stage, marker, namespace):
    """Run the code cell of ``<stage>/train.py`` that contains ``marker`` in ``namespace``; return it."""
    exec(stage_cell(stage, marker), namespace)  # noqa: S102
    return namespace


def stage_definitions(stage):
    """The imports, functions, classes and settings of ``<stage>/train.py``, without running the stage."""
    import ast

    source = (ROOT / stage / "train.py").read_text(encoding="utf-8")
    tree = ast.parse(source)
    keep = (ast.Import, ast.ImportFrom, ast.FunctionDef, ast.ClassDef)
    tree.body = [node for node in tree.body if isinstance(node, keep)
                 or (isinstance(node, ast.Assign) and all(isinstance(t, ast.Name) and t.id.isupper() for t in node.targets))]
    namespace = {"__name__": f"{stage}_stage"}
    exec(compile(tree, str(ROOT / stage / "train.py"), "exec"), namespace)  # noqa: S102
    return namespace


def quiet(function, *args, **kwargs):
    """Call ``function`` with stdout silenced (model.summary(), progress lines)."""
    import contextlib
    import io

    with contextlib.redirect_stdout(io.StringIO()):
        return function(*args, **kwargs)


def precision_setting():
    """The stage files' MIXED_PRECISION value that keeps the dtype policy the bench has set."""
    return {"mixed_float16": "float16", "mixed_bfloat16": "bfloat16"}.get(keras.config.dtype_policy().name, False)


def compiled(model, jit="auto", lr=1e-3):
    model.compile(optimizer=keras.optimizers.Adam(lr), loss="mse", jit_compile=speed.jit_compile(jit))
    return model


class Beta:
    """What the bench needs of a stage: its network, built by the stage file's own code, and how it
    trains on uint8 RGB batches (the default) and on float (l, ab) batches."""

    name, multiple, notes = "beta", 8, ""

    def network(self):
        namespace = {"keras": keras, "layers": keras.layers}
        return exec_cell("beta", "model = keras.Sequential(", namespace)["model"]

    def trainer(self, jit="auto"):
        return compiled(training.RGBTrainer(self.network()), jit)  # ours: one compiled step for uint8 batches

    def float_model(self):
        return compiled(self.network())  # the step for float (l, ab) batches, which the 2017 reference feeds too

    def photos(self, paths, output, steps, **options):
        return data.Photos(paths, output=output, steps=steps, **options)

    def reference(self, paths):
        return Reference2017(paths, ARGS.size, ARGS.batch, seed=0)

    def colour_model(self):
        return self.network()


class Full(Beta):
    """The full stage: its fusion network, and each photo's classifier embedding computed once (timed)."""

    name = "full"

    def __init__(self):
        from colorlab import classifiers

        self.classifier_name = ARGS.classifier
        self.recipe = classifiers.CLASSIFIERS[self.classifier_name]
        policy = keras.config.dtype_policy()
        keras.config.set_dtype_policy("float32")
        self.classifier, _ = classifiers.load(self.classifier_name, None, announce=lambda *_: None)  # random weights
        self.embed = classifiers.embedder(self.classifier, self.classifier_name)
        keras.config.set_dtype_policy(policy)
        self.fingerprint = classifiers.fingerprint(self.classifier)
        self.embedded, self.embedding_seconds = {}, None
        self.notes = f"classifier {self.classifier_name} (random weights: the cost is the same)"

    def network(self):
        from colorlab import fusion

        namespace = {"keras": keras, "layers": keras.layers, "fusion": fusion, "speed": speed, "embed": self.embed,
                     "MIXED_PRECISION": precision_setting(), "JIT_COMPILE": "auto"}
        return exec_cell("full", "l_input = keras.Input(", namespace)["model"]

    def embeddings(self, paths):
        """Each photo's embedding, computed once by the classifier, the way the full stage does it (its
        cache, here in a fresh folder so that it is computed, and timed)."""
        import shutil
        import tempfile

        from colorlab import embeddings

        missing = [p for p in paths if str(p) not in self.embedded]
        if missing:
            folder = tempfile.mkdtemp(prefix="colorlab-bench-embeddings-")
            try:
                cache = embeddings.Cache(folder, self.embed.predict_on_batch, self.classifier_name, self.fingerprint)
                start = time.perf_counter()
                rows = cache.get(missing)
                seconds = time.perf_counter() - start
            finally:
                shutil.rmtree(folder, ignore_errors=True)
            self.embedded.update(zip(map(str, missing), rows))
            self.embedding_seconds = {"photos": len(missing), "seconds": round(seconds, 2),
                                      "ms_per_photo": round(1000 * seconds / len(missing), 1)}
        return np.stack([self.embedded[str(p)] for p in paths])

    def photos(self, paths, output, steps, **options):
        from colorlab import embeddings

        photos = data.Photos(paths, output=output, steps=steps, **options)
        return embeddings.EmbeddedPhotos.attach(photos, self.embeddings(photos.paths))

    def reference(self, paths):
        def embed(rgb01):  # the 2017 create_inception_embedding, after its per-photo resize
            return self.classifier.predict(self.recipe.preprocess(rgb01 * 255.0), verbose=0)

        return Reference2017(paths, ARGS.size, ARGS.batch, seed=0, embed=embed, embed_size=self.recipe.size)

    def colour_model(self):
        colouriser = self.network()
        l_only = keras.Input(shape=(None, None, 1), name="l")
        return keras.Model(l_only, colouriser([l_only, self.embed(l_only)]), name="full")


class Gan(Beta):
    """The gan stage at its default settings: its Pix2Pix model handles uint8 RGB and (l, ab) batches."""

    name = "gan"

    def __init__(self):
        self.ns = stage_definitions("gan")
        self.multiple = 2 ** self.ns["DEPTH"]
        self.notes = "the GAN phase's step (after the L1 warm-up): generator and discriminator"

    def network(self):
        ns = self.ns
        return ns["unet"](ns["DEPTH"], ns["FILTERS"], ns["DROPOUT"])

    def trainer(self, jit="auto"):
        ns = self.ns
        model = ns["Pix2Pix"](self.network(), ns["patchgan"](ns["D_FILTERS"], ns["D_LAYERS"]), l1_weight=ns["LAMBDA"],
                              color_space=ns["COLOR_SPACE"])
        adam = lambda: keras.optimizers.Adam(ns["LEARNING_RATE"], beta_1=ns["BETA_1"])  # noqa: E731
        model.compile(d_optimizer=adam(), g_optimizer=adam(), jit_compile=speed.jit_compile(jit))
        return model

    def float_model(self):
        return self.trainer()  # the same step takes (l, ab) batches as they come


STAGES = {"beta": Beta, "full": Full, "gan": Gan}


# ----------------------------------------------------------------------------------------------------
# Measurements


def fit_chunk(model, dataset, r):
    """One timed chunk: an epoch of ``dataset`` through ``model.fit``; returns (seconds, crops).
    Round ``r`` None is the warm-up: one step, to compile."""
    if hasattr(dataset, "set_epoch"):
        dataset.set_epoch(0 if r is None else r + 1)  # new crops every round
    window = Window()
    steps = 1 if r is None else len(dataset)
    model.fit(dataset, epochs=1, steps_per_epoch=steps, verbose=0, shuffle=False, callbacks=[window])
    return window.seconds, steps * dataset_batch(dataset)


def dataset_batch(dataset):
    batch = dataset[0]
    first = batch[0] if isinstance(batch, tuple) else batch
    while isinstance(first, tuple):
        first = first[0]
    return len(first)


def calibrate(model, batch):
    """Steps per timed chunk: enough for --chunk-seconds (at least --min-steps, at most 200), from the
    time of one step of ``model`` on ``batch`` (after a first, compiling one), unless --steps is given."""
    if ARGS.steps:
        return ARGS.steps
    model.train_on_batch(*batch)
    start = time.perf_counter()
    model.train_on_batch(*batch)
    seconds = time.perf_counter() - start
    return int(min(200, max(ARGS.min_steps, np.ceil(ARGS.chunk_seconds / seconds))))


def measure_training(stage, paths):
    """Training throughput of one stage's step, fed five ways, in turns."""
    size, batch = ARGS.size, ARGS.batch
    keras.config.set_dtype_policy("float32")
    keras.utils.set_random_seed(0)
    trainer = stage.trainer()  # ours: the compiled step for uint8 RGB batches
    floats = stage.float_model()  # the step for float (l, ab) batches, which the 2017 reference feeds too
    options = dict(image_size=size, batch_size=batch, zoom=1.3, seed=0, workers=ARGS.workers)
    first = stage.photos(paths, "rgb", 8, **options)
    rgb_batches = [first[i] for i in range(min(8, len(first)))]
    steps = calibrate(trainer, rgb_batches[0] if isinstance(rgb_batches[0], tuple) else (rgb_batches[0],))
    ARGS.steps_used = max(steps, getattr(ARGS, "steps_used", 0))
    disk_rgb = stage.photos(paths, "rgb", steps, **options)
    disk_lab = stage.photos(paths, "split", steps, **options)
    memory_rgb = InMemory(rgb_batches, steps)
    memory_lab = InMemory([data.split_batch(b) for b in rgb_batches], steps)
    reference = stage.reference(paths)

    def reference_chunk(r):
        start = time.perf_counter()
        count = 1 if r is None else steps
        for _ in range(count):
            floats.train_on_batch(*reference.batch())
        return time.perf_counter() - start, count * batch

    variants = {
        "disk, uint8 RGB (default)": lambda r: fit_chunk(trainer, disk_rgb, r),
        "memory, uint8 RGB": lambda r: fit_chunk(trainer, memory_rgb, r),
        "disk, float Lab": lambda r: fit_chunk(floats, disk_lab, r),
        "memory, float Lab": lambda r: fit_chunk(floats, memory_lab, r),
        "2017 reference": reference_chunk,
    }
    results = alternate(variants, ARGS.rounds)
    ratios = {
        "pipeline_efficiency": paired(results, "disk, uint8 RGB (default)", "memory, uint8 RGB"),
        "pipeline_efficiency_float_lab": paired(results, "disk, float Lab", "memory, float Lab"),
        "uint8_vs_float_lab": paired(results, "disk, uint8 RGB (default)", "disk, float Lab"),
        "speedup_vs_2017": paired(results, "disk, uint8 RGB (default)", "2017 reference"),
    }
    result = {"variants": results, "ratios": ratios, "steps": steps, "notes": stage.notes}
    if getattr(stage, "embedding_seconds", None):
        result["classifier_once_per_photo"] = stage.embedding_seconds
    return result


def measure_precision(stage):
    """The default trainer's step, fed from memory, under each precision policy and with XLA."""
    size, batch = ARGS.size, ARGS.batch
    options = dict(image_size=size, batch_size=batch, zoom=1.3, seed=0, workers=ARGS.workers)
    first = stage.photos(make_photos(ARGS.photos, 64, (640, 480), seed=0), "rgb", 2, **options)
    batches = [first[0], first[1]]
    on_gpu = speed.accelerator() is not None
    settings = {"float32": ("float32", False), "float32 + jit": ("float32", True),
                "mixed_bfloat16": ("mixed_bfloat16", "auto"), "mixed_float16": ("mixed_float16", "auto")}
    skipped = {}
    if ARGS.quick and not on_gpu:  # CPUs emulate float16, several times slower: too long for --quick
        skipped["mixed_float16"] = "skipped with --quick on a CPU (float16 is emulated, ~8x slower)"
        settings.pop("mixed_float16")
    if stage.name == "gan" and ARGS.backend == "jax" and "mixed_float16" in settings:
        skipped["mixed_float16"] = "the GAN's own step has float16 loss scaling on TensorFlow and PyTorch only"
        settings.pop("mixed_float16")
    if ARGS.quick and not on_gpu:
        skipped["float32 + jit"] = "skipped with --quick on a CPU (XLA compiles for seconds and rarely helps a CPU)"
        settings.pop("float32 + jit")
    elif ARGS.backend == "torch":  # jit_compile=True is torch.compile: minutes of compiling per model
        skipped["float32 + jit"] = "skipped on torch (torch.compile takes minutes to compile)"
        settings.pop("float32 + jit")
    models = {}
    for name, (policy, jit) in settings.items():
        keras.config.set_dtype_policy(policy)
        keras.utils.set_random_seed(0)
        models[name] = stage.trainer(jit=jit)
    keras.config.set_dtype_policy("float32")
    steps = calibrate(models["float32"], batches[0] if isinstance(batches[0], tuple) else (batches[0],))
    batches = InMemory(batches, steps)
    results = alternate({name: (lambda r, m=model: fit_chunk(m, batches, r)) for name, model in models.items()},
                        ARGS.rounds)
    for name, model in models.items():
        results[name]["jit_compile"] = bool(model.jit_compile)
    ratios = {f"{name} vs float32": paired(results, name, "float32") for name in results if name != "float32"}
    return {"variants": results, "ratios": ratios, "skipped": skipped}


def measure_colorize(stage, out):
    """colorize on one photo end to end, its parts, and on a folder."""
    keras.config.set_dtype_policy("float32")
    keras.utils.set_random_seed(0)
    model_path = out / "models" / f"{stage}.keras"
    model_path.parent.mkdir(parents=True, exist_ok=True)
    training.save_model(stage.colour_model(), model_path)
    files.write_json(model_path.with_name("settings.json"), {"MULTIPLE": stage.multiple})  # as the stages save it
    model = colorize.load_model(model_path)
    photos = make_photos(ARGS.photos, ARGS.colorize_photos, ARGS.photo_size, seed=1)
    target = out / "colorized" / "one.png"
    target.parent.mkdir(parents=True, exist_ok=True)
    size = ARGS.work_size

    def one(_r, path=photos[0]):
        times = {}
        start = time.perf_counter()
        rgb = images.load(path)
        times["read"] = time.perf_counter() - start
        result = colorize.colorize_batch(model, [rgb], size, stage.multiple)[0]
        times["colour"] = time.perf_counter() - start - times["read"]
        images.save(target, result)
        times["write"] = time.perf_counter() - start - times["read"] - times["colour"]
        one.parts.append(times)
        return time.perf_counter() - start, 1

    one.parts = []
    (h, w), padded = colorize.working_shape(ARGS.photo_size[1], ARGS.photo_size[0], size, stage.multiple)
    x = np.zeros((1, *padded, 1), np.float32)

    def model_only(_r):
        start = time.perf_counter()
        keras.ops.convert_to_numpy(model(x, training=False))
        return time.perf_counter() - start, 1

    def folder(_r):
        start = time.perf_counter()
        quiet(colorize.run, [photos[0].parent], model_path, out / "colorized" / "folder", size, colorize.BATCH,
              stage.multiple, overwrite=True)
        return time.perf_counter() - start, len(photos)

    results = alternate({"one photo, end to end": one, "model alone": model_only}, ARGS.repeats)
    one.parts = one.parts[-ARGS.repeats:]
    parts_ms = {part: round(1000 * median([p[part] for p in one.parts]), 1) for part in ("read", "colour", "write")}
    model_ms = 1000 / results["model alone"]["items_per_s"]
    parts_ms["of which model"] = round(model_ms, 1)
    results.update(alternate({"folder, photos/s": folder}, max(1, ARGS.repeats // 2), warmup=False))
    return {"photo_size": list(ARGS.photo_size), "work_size": size, "padded": list(padded),
            "latency_ms": round(1000 / results["one photo, end to end"]["items_per_s"], 1),
            "parts_ms": parts_ms, "variants": results, "photos_in_folder": len(photos)}


def measure_scaling(stage):
    """Forward (colouring) cost per photo for each photo side and batch size, and a training step's
    cost per crop at the default batch; cells predicted to take over --cell-budget are skipped."""
    keras.config.set_dtype_policy("float32")
    keras.utils.set_random_seed(0)
    model = stage.network()
    trainer = stage.trainer()
    rows, last = [], {}

    def timed(function, repeats):
        function()  # compile / warm up for this shape
        with Peak() as peak:
            seconds = []
            for _ in range(repeats):
                start = time.perf_counter()
                function()
                seconds.append(time.perf_counter() - start)
        return median(seconds), peak.result

    for kind in ("forward", "train"):
        batches = ARGS.scale_batches if kind == "forward" else [ARGS.batch]
        for size in ARGS.scale_sizes:
            for batch in batches:
                estimate = _estimate(last.get(kind), size, batch)
                row = {"kind": kind, "size": size, "batch": batch}
                if estimate is not None and estimate * (1 + ARGS.cell_repeats) > ARGS.cell_budget:
                    row.update(skipped=f"estimated {estimate:.1f} s per call, over the --cell-budget")
                    rows.append(row)
                    continue
                if kind == "forward":
                    x = np.zeros((batch, size, size, 1), np.float32)
                    seconds, memory = timed(lambda: keras.ops.convert_to_numpy(model(x, training=False)), ARGS.cell_repeats)
                else:
                    rgb = np.random.default_rng(0).integers(0, 256, (batch, size, size, 3), dtype=np.uint8)
                    seconds, memory = timed(lambda: trainer.train_on_batch(rgb), ARGS.cell_repeats)
                last[kind] = (size, batch, seconds)
                row.update(ms_per_photo=round(1000 * seconds / batch, 2), ms_per_call=round(1000 * seconds, 1), **memory)
                rows.append(row)
    return rows


def _estimate(last, size, batch):
    if last is None:
        return None
    size0, batch0, seconds0 = last
    return seconds0 * (size / size0) ** 2 * batch / batch0


# ----------------------------------------------------------------------------------------------------
# Report


def machine():
    cpu = platform.processor() or "?"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    versions = {"keras": keras.__version__, "numpy": np.__version__}
    try:
        backend_module = __import__(ARGS.backend)
        versions[ARGS.backend] = backend_module.__version__
    except Exception:
        pass
    return {"platform": platform.platform(), "python": platform.python_version(), "cpu": cpu,
            "cpu_count": os.cpu_count(), "load_average_start": list(os.getloadavg()),
            "backend": keras.backend.backend(), "device": speed.accelerator() or "cpu", "versions": versions}


def rate(value, unit=""):
    return "-" if value is None else f"{value:.3g}{unit}"


def table(report):
    lines = []
    m, s = report["machine"], report["settings"]
    lines.append(f"colorlab bench: {m['backend']} on {m['device']} ({m['cpu']}, {m['cpu_count']} cores, "
                 f"load {m['load_average_start'][0]:.1f} -> {m['load_average_end'][0]:.1f})")
    lines.append(f"crops {s['size']}x{s['size']}, batch {s['batch']}, {s['steps']} steps x {s['rounds']} rounds"
                 f"{' (--quick)' if s['quick'] else ''}; medians of alternating rounds")
    for stage, result in report.get("training", {}).items():
        lines.append("")
        lines.append(f"{stage}: training            crops/s   peak RSS MB (+extra)")
        for name, v in result["variants"].items():
            lines.append(f"  {name:<28} {rate(v['items_per_s']):>8}   {v['peak_rss_mb']:>7.0f} (+{v['extra_rss_mb']:.0f})")
        r = result["ratios"]
        lines.append(f"  pipeline efficiency (disk / memory): {rate(r['pipeline_efficiency'])}  "
                     f"(float Lab path: {rate(r['pipeline_efficiency_float_lab'])})")
        lines.append(f"  uint8 RGB vs float Lab from disk: {rate(r['uint8_vs_float_lab'], 'x')}   "
                     f"speed-up over the 2017 reference: {rate(r['speedup_vs_2017'], 'x')}")
        once = result.get("classifier_once_per_photo")
        if once:
            lines.append(f"  {result['notes']}: {once['ms_per_photo']:g} ms per photo, once (cached), "
                         f"vs 2 calls per crop per step in the 2017 reference")
        elif result.get("notes"):
            lines.append(f"  ({result['notes']})")
    for stage, result in report.get("precision", {}).items():
        lines.append("")
        lines.append(f"{stage}: precision and compilation, from memory    crops/s   vs float32")
        for name, v in result["variants"].items():
            ratio = result["ratios"].get(f"{name} vs float32")
            lines.append(f"  {name:<24} (jit {str(v['jit_compile']):<5})        {rate(v['items_per_s']):>8}   {rate(ratio, 'x')}")
        for name, why in result["skipped"].items():
            lines.append(f"  {name}: {why}")
    for stage, result in report.get("colorize", {}).items():
        lines.append("")
        w, h = result["photo_size"]
        parts = ", ".join(f"{k} {v:g}" for k, v in result["parts_ms"].items())
        lines.append(f"{stage}: colorize one {w}x{h} photo end to end: {result['latency_ms']:g} ms ({parts} ms; "
                     f"working size {result['work_size']})")
        folder = result["variants"]["folder, photos/s"]
        lines.append(f"  a folder of {result['photos_in_folder']}: {rate(folder['items_per_s'])} photos/s; "
                     f"peak RSS {folder['peak_rss_mb']:.0f} MB (one photo: "
                     f"{result['variants']['one photo, end to end']['peak_rss_mb']:.0f} MB)")
    for stage, rows in report.get("scaling", {}).items():
        lines.append("")
        lines.append(f"{stage}: cost per photo (ms) by photo side and batch size")
        for kind in ("forward", "train"):
            kind_rows = [r for r in rows if r["kind"] == kind]
            batches = sorted({r["batch"] for r in kind_rows})
            label = "colouring (model forward)" if kind == "forward" else "training step, per crop"
            lines.append(f"  {label:<28}" + "".join(f"{'batch ' + str(b):>12}" for b in batches))
            for size in sorted({r["size"] for r in kind_rows}):
                cells = []
                for b in batches:
                    row = next(r for r in kind_rows if r["size"] == size and r["batch"] == b)
                    cells.append(f"{row['ms_per_photo']:>12.1f}" if "ms_per_photo" in row else f"{'skipped':>12}")
                lines.append(f"  {str(size) + ' px':<28}" + "".join(cells))
    lines.append("")
    lines.append("targets:")
    for name, t in report["targets"].items():
        lines.append(f"  {name}: {t['summary']}")
    return "\n".join(lines)


def targets(report):
    found = {}
    beta = report.get("training", {}).get("beta")
    if beta:
        value = beta["ratios"]["pipeline_efficiency"]
        at = f"at {ARGS.size} px" + ("" if ARGS.size == 256 else " (the target is for 256 px)")
        found["beta input pipeline efficiency >= 0.9"] = {
            "value": value, "met": value is not None and value >= 0.9, "summary": f"{rate(value)} {at}"}
    full = report.get("training", {}).get("full")
    if full:
        value = full["ratios"]["speedup_vs_2017"]
        found["full training >= 5x the 2017 reference"] = {
            "value": value, "met": value is not None and value >= 5, "summary": f"{rate(value, 'x')} at {ARGS.size} px"}
    colour = report.get("colorize", {}).get("beta")
    if colour:
        on_gpu = report["machine"]["device"] == "gpu"
        value = colour["latency_ms"]
        found["beta colorize < 12 ms per 1024x768 photo on a GPU"] = {
            "value": value, "met": (value < 12) if on_gpu else None,
            "summary": f"{value:g} ms" + ("" if on_gpu else " on this CPU: not measurable here, run on a GPU")}
    return found


QUICK_SKIPS = {("full", "precision"), ("gan", "precision"), ("full", "colorize"), ("gan", "colorize")}  # to keep --quick near a minute


def main():
    out = ARGS.json.parent  # the models and colourised photos it writes go beside the JSON
    out.mkdir(parents=True, exist_ok=True)
    started = time.perf_counter()
    report = {"machine": machine(), "settings": {
        "size": ARGS.size, "batch": ARGS.batch, "steps": ARGS.steps, "rounds": ARGS.rounds, "quick": ARGS.quick,
        "work_size": ARGS.work_size, "photo_size": list(ARGS.photo_size), "scale_sizes": ARGS.scale_sizes,
        "scale_batches": ARGS.scale_batches, "parts": sorted(ARGS.parts)}}
    present = [s for s in STAGES if (ROOT / s / "train.py").exists()]
    names = present if ARGS.stages == "all" else [s for s in ARGS.stages.split(",") if s in present]
    paths = make_photos(ARGS.photos, 64, (640, 480), seed=0)
    for name in names:
        if ARGS.size % (32 if name == "gan" else 8):
            report.setdefault("skipped", {})[name] = f"--size {ARGS.size} does not divide by the stage's multiple"
            continue
        stage = quiet(STAGES[name])
        for part, function, arguments in (("train", measure_training, (stage, paths)),
                                          ("precision", measure_precision, (stage,)),
                                          ("colorize", measure_colorize, (stage, out)),
                                          ("scaling", measure_scaling, (stage,))):
            if ARGS.quick and (name, part) in QUICK_SKIPS:
                report.setdefault("skipped", {})[f"{name} {part}"] = "left out with --quick (run without it)"
                continue
            if part in ARGS.parts and (part != "scaling" or name == "beta"):
                print(f"measuring {name}: {part} ...", file=sys.stderr, flush=True)
                start = time.perf_counter()
                report.setdefault({"train": "training"}.get(part, part), {})[name] = quiet(function, *arguments)
                report.setdefault("part_seconds", {})[f"{name} {part}"] = round(time.perf_counter() - start, 1)
    report["settings"]["steps"] = getattr(ARGS, "steps_used", ARGS.steps)
    report["settings"]["workers"] = ARGS.workers
    report["machine"]["load_average_end"] = list(os.getloadavg())
    report["seconds"] = round(time.perf_counter() - started, 1)
    report["targets"] = targets(report)
    report["paired_ratios_per_round"] = PAIRED
    ARGS.json.parent.mkdir(parents=True, exist_ok=True)
    ARGS.json.write_text(json.dumps(report, indent=2, sort_keys=False) + "\n", encoding="utf-8")
    print(table(report))
    print(f"\n{report['seconds']:.0f} s in all; every number in {ARGS.json}")


if __name__ == "__main__":
    main()
