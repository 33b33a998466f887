"""How fast is colorlab? Training and colouring speed, side by side, on this machine.

    python bench/run.py --quick              # about 70 s on an idle 2-core CPU: small crops, few rounds
    python bench/run.py                      # the full run: 256 px crops, batch 8, 7 rounds (15 minutes)
    python bench/run.py --size 128 --batch 4 --json outputs/bench/cpu128.json
    python bench/run.py --backend jax        # any Keras backend; on a GPU, install its GPU build first

The models are the stages' own. Each stage is run once, as a learner runs it, for one step
(``python beta/train.py --EPOCHS=1 --STEPS_PER_EPOCH=1 --IMAGE_SIZE=64 --OUT_DIR=<out>/stages/beta
--OVERWRITE=True``), and the ``model.keras`` it saves is loaded: nothing here reads a stage's source.
The stages run at once, in processes of their own, before anything is timed. A stage whose run fails,
or whose model cannot be timed, gets a "skipped: <reason>" row and the others go on; only beta is
required.

Then, in this one process, the compared variants take turns (round after round, one chunk of steps
each per round, the order rotating), so that a busy machine slows them alike and the RATIOS hold even
where absolute timings do not. Each ratio is the median of the per-round ratios, printed with its
lowest and highest round and with the ratio of the medians:

- beta's training throughput (crops/s, ``model.fit``) on ``data.from_folder`` batches read from JPEG
  files on disk by its reading threads (the default path), against the same model fed the same number
  of steps from batches already in memory (disk / memory: the input pipeline's efficiency; 1 means the
  model never waits for photos), and against the 2017 tutorial's feeding;
- full's training step on ``((l, embedding), ab)`` batches (the embedding cached, as full trains;
  random values, which cost the same) against beta's step, same crops and batch, both from memory; and
  against the 2017 feeding of the same network, its classifier run twice on every batch;
- gan's generator trained alone with L1, its warm-up phase, against beta's step (not with ``--quick``);
- beta colouring one 1024x768 photo end to end (read, ``coloring.colorize``'s three steps, write PNG)
  against its network's forward pass alone at the working size colorize gives it (``coloring.forward``,
  as ``coloring.predict_ab`` calls it: compiled at that size); and the ``colorize`` command's pipeline
  (its reading, network and writing threads) on a folder of such photos, in photos/s, against 1 / that
  forward time.

The 2017 feeding, as its beta notebook wrote it: every photo in memory; each batch made by
``ImageDataGenerator.flow`` (a random rotation up to 20 degrees, shear, zoom 0.8-1.2 and flip per
photo, in float32 with SciPy's ``affine_transform``, one channel at a time, nearest-neighbour as Keras
2.0 did) and scikit-image's ``rgb2lab`` on the batch, in the one reading thread of Keras 2's
``fit_generator`` (``workers=1``, up to 10 batches read ahead), which shares the interpreter with
training. Same model, same crop size and batch. For full, that thread also runs the classifier on the
batch twice (the 2017 notebook computed the embedding once into an unused variable, then again): here
the saved model's own ``l -> embedding`` network, compiled, which is faster than the 2017 way (a
scikit-image resize per photo, then ``predict``), so full's speed-up over it is understated.

Peak resident memory is recorded for each variant (and the device's on a GPU). The photos are cut from
``data/samples`` (64 JPEGs of 640x480 and one of 1024x768, kept in ``<out>/photos``). The table comes
last; ``--json`` keeps every number, with the ratio of every round (``paired_ratios_per_round``). On a
CPU the figures are CPU figures: the GPU target says "not measurable here". ``--smoke`` checks that
everything runs (the tests use it), with tiny sizes: its figures mean nothing.
"""

import argparse
import os
import platform
import queue
import statistics
import subprocess
import sys
import threading
import time
from pathlib import Path



def busy_cpu_seconds():
    """CPU seconds the whole machine has spent busy since it started (Linux's /proc/stat), or None."""
    try:
        fields = [int(v) for v in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]]
    except (OSError, ValueError):
        return None
    return (sum(fields[:8]) - fields[3] - fields[4]) / os.sysconf("SC_CLK_TCK")  # all but idle and iowait


START, LOAD_AT_START, BUSY_AT_START = time.perf_counter(), os.getloadavg(), busy_cpu_seconds()
ROOT = Path(__file__).resolve().parent.parent
STAGES = ("beta", "full", "gan")
MODES = {  # the defaults of each mode; the command line overrides any of them
    "full": dict(size=256, batch=8, rounds=7, steps=None, stages="beta,full,gan",
                 stage_size=64, photos=64, photo_size="640x480", colorize_size="1024x768", work_size=256,
                 folder=8, classifier=None, stage_timeout=900),
    "quick": dict(size=64, batch=4, rounds=3, steps=2, stages="beta,full",
                  stage_size=32, photos=64, photo_size="640x480", colorize_size="1024x768", work_size=256,
                  folder=4, classifier="mobilenet_v3_small", stage_timeout=300),
    "smoke": dict(size=32, batch=2, rounds=1, steps=2, stages="beta",
                  stage_size=32, photos=8, photo_size="160x120", colorize_size="128x96", work_size=64,
                  folder=2, classifier="mobilenet_v3_small", stage_timeout=300),
}


def parse_args(argv=None):
    parser = argparse.ArgumentParser(prog="bench/run.py", description=__doc__.split("\n\n")[0])
    mode = parser.add_mutually_exclusive_group()
    mode.add_argument("--quick", action="store_true", help="small crops, few rounds: ~70 s on 2 idle cores")
    mode.add_argument("--smoke", action="store_true", help="tiny sizes, beta only: checks that all runs")
    parser.add_argument("--backend", choices=("tensorflow", "jax", "torch"),
                        default=os.environ.get("KERAS_BACKEND", "tensorflow"), help="Keras backend")
    parser.add_argument("--size", type=int, help="training crop side, pixels (default 256; 64 with --quick)")
    parser.add_argument("--batch", type=int, help="crops per training step (default 8; 4 with --quick)")
    parser.add_argument("--steps", type=int, help="training steps per timed chunk (default: enough for about "
                        "2 s; 2 with --quick)")
    parser.add_argument("--rounds", type=int, help="timed rounds (default 7; 3 with --quick)")
    parser.add_argument("--workers", type=int, default=min(8, os.cpu_count() or 1),
                        help="reading threads of the photo pipeline (default: the CPU cores, at most 8)")
    parser.add_argument("--work-size", type=int, help="colorize's working size, the shorter side the network "
                        "sees (default 256)")
    parser.add_argument("--colorize-size", help="the photo colorize colours, WxH (default 1024x768)")
    parser.add_argument("--folder", type=int, help="photos of that size in the folder the colorize command "
                        "colours (default 8; 4 with --quick)")
    parser.add_argument("--stages", help="stages to run and time: beta and any of full, gan (default "
                        "beta,full,gan; beta,full with --quick)")
    parser.add_argument("--stage-size", type=int, help="IMAGE_SIZE of the one-step stage runs (default 64; "
                        "32 with --quick); their networks take any size: it only sets how long the runs take")
    parser.add_argument("--classifier", help="full's CLASSIFIER for its run (default: full's own; "
                        "mobilenet_v3_small with --quick); random weights: the timed step never runs it")
    parser.add_argument("--parts", default="training,colorize", help="what to measure (default: both)")
    parser.add_argument("--out", default="outputs/bench", help="folder of the stage runs, photos and results")
    parser.add_argument("--json", help="where to write every number (default <out>/<backend>.json)")
    args = parser.parse_args(argv)
    args.mode = "smoke" if args.smoke else "quick" if args.quick else "full"
    for name, value in MODES[args.mode].items():
        if getattr(args, name, None) is None:
            setattr(args, name, value)
    args.stages = ["beta"] + [s for s in (s.strip() for s in args.stages.split(",")) if s and s != "beta"]
    for stage in args.stages:
        if stage not in STAGES:
            parser.error(f"--stages: unknown stage {stage!r}; choose among {', '.join(STAGES)}")
    for name in ("photo_size", "colorize_size"):
        try:
            width, height = (int(v) for v in getattr(args, name).lower().split("x"))
        except ValueError:
            parser.error(f"--{name.replace('_', '-')} must be WxH, like 1024x768")
        setattr(args, name, (width, height))
    args.parts = {p.strip() for p in args.parts.split(",")}
    args.out = Path(args.out).resolve()
    args.json = Path(args.json or args.out / f"{args.backend}.json")
    if args.size <= 0 or args.size % 8:
        parser.error(f"--size must be a positive multiple of 8, got {args.size}")
    if min(args.batch, args.rounds, args.workers, args.steps or 1, args.folder) < 1:
        parser.error("--batch, --rounds, --workers, --steps and --folder must be at least 1")
    return args


ARGS = parse_args()
os.environ["KERAS_BACKEND"] = ARGS.backend  # before Keras is imported, by colorlab or anyone
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
os.environ.setdefault("MPLBACKEND", "Agg")
os.environ.setdefault("TF_FORCE_GPU_ALLOW_GROWTH", "true")  # one GPU shared with the stage runs: memory as
os.environ.setdefault("XLA_PYTHON_CLIENT_PREALLOCATE", "false")  # needed, not most of it up front
sys.path.insert(0, str(ROOT))


# ----------------------------------------------------------------------------------------------------
# The stages, run as a learner runs them, in processes of their own started before Keras is imported here


def stage_command(stage):
    """The command that trains ``stage`` for one step into ``<out>/stages/<stage>``."""
    command = [sys.executable, f"{stage}/train.py", "--EPOCHS=1", "--STEPS_PER_EPOCH=1",
               f"--IMAGE_SIZE={ARGS.stage_size}", f"--OUT_DIR={ARGS.out / 'stages' / stage}",
               "--OVERWRITE=True"]
    if stage == "full":  # random weights: nothing is downloaded, and the timed step never runs the classifier
        command += [f"--CLASSIFIER={ARGS.classifier}"] if ARGS.classifier else []
        command += ["--CLASSIFIER_WEIGHTS=None"]
    if stage == "gan":
        command += ["--WARMUP_EPOCHS=0"]  # its one epoch is adversarial: every part of the stage runs
    return command


def start_stage(stage):
    """Start ``stage``'s run; returns what :func:`finish_stage` needs."""
    log = ARGS.out / "stages" / f"{stage}.log"
    log.parent.mkdir(parents=True, exist_ok=True)
    env = {**os.environ, "KERAS_BACKEND": ARGS.backend, "TF_CPP_MIN_LOG_LEVEL": "3", "MPLBACKEND": "Agg",
           "PYTHONPATH": os.pathsep.join(p for p in (str(ROOT), os.environ.get("PYTHONPATH")) if p),
           # several runs at once on one GPU: each takes memory as it needs it, not all of it up front
           "TF_FORCE_GPU_ALLOW_GROWTH": "true", "XLA_PYTHON_CLIENT_PREALLOCATE": "false"}
    command = stage_command(stage)
    with open(log, "w") as out:
        process = subprocess.Popen(command, cwd=ROOT, stdout=out, stderr=subprocess.STDOUT, env=env)
    shown = " ".join(["python", *map(str, command[1:])])
    return {"stage": stage, "process": process, "log": log, "start": time.perf_counter(), "command": shown}


def finish_stage(run):
    """Wait for a stage's run; returns its row: {"status": "ran" or "skipped", "reason", "seconds", ...}."""
    process, row = run["process"], {"command": run["command"], "log": str(run["log"])}
    try:
        process.wait(timeout=max(1.0, ARGS.stage_timeout - (time.perf_counter() - run["start"])))
    except subprocess.TimeoutExpired:
        process.kill()  # the process this bench started, by its id
        process.wait()
        return {**row, "status": "skipped", "reason": f"its run did not finish in {ARGS.stage_timeout} s"}
    row["seconds"] = round(time.perf_counter() - run["start"], 1)
    model = ARGS.out / "stages" / run["stage"] / "model.keras"
    if process.returncode != 0:
        why = f"its run failed (exit status {process.returncode}): {last_line(run['log'])}"
        return {**row, "status": "skipped", "reason": why}
    if not model.is_file():
        return {**row, "status": "skipped", "reason": f"its run wrote no {model.name}"}
    return {**row, "status": "ran", "model": str(model)}


def last_line(log):
    """Why a run failed: its one-line error, else its last line (TensorFlow's start-up noise left out)."""
    noise = ("I0000", "W0000", "E0000", "WARNING: All log messages", "oneDNN")
    lines = [line.strip() for line in Path(log).read_text(errors="replace").splitlines()
             if line.strip() and not line.startswith(noise)]
    text = ([line for line in lines if line.startswith("error:")] or lines or ["(no output)"])[-1]
    return text if len(text) <= 300 else text[:297] + "..."


RUNS = [start_stage(stage) for stage in ARGS.stages]  # they run while Keras is imported here

import keras  # noqa: E402
import numpy as np  # noqa: E402
from PIL import Image  # noqa: E402

from colorlab import coloring, data, files, images, lab  # noqa: E402  (lab registers GreySRGB for loading)
from colorlab.commands import colorize  # noqa: E402


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


def accelerator():
    """"gpu" (or "tpu") if the backend computes on one, else "cpu"."""
    backend = keras.backend.backend()
    try:
        if backend == "tensorflow":
            import tensorflow as tf

            return "gpu" if tf.config.list_physical_devices("GPU") else "cpu"
        if backend == "jax":
            import jax

            return jax.devices()[0].platform
        if backend == "torch":
            import torch

            return "gpu" if torch.cuda.is_available() else "cpu"
    except Exception:  # a backend that cannot say: count it as a CPU
        pass
    return "cpu"


DEVICE = accelerator()


def _device_peak(reset=False):
    """Peak device memory in MB on a GPU (None on a CPU), per backend."""
    if DEVICE == "cpu":
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
    (on TensorFlow it reads two batches to learn their shapes at each call). The first batch's reading
    is inside: Keras calls ``on_train_batch_begin`` before it fetches the batch."""

    def on_train_batch_begin(self, batch, logs=None):
        if batch == 0:
            self.start = time.perf_counter()

    def on_epoch_end(self, epoch, logs=None):
        self.seconds = time.perf_counter() - self.start


class InMemory(keras.utils.PyDataset):
    """``steps`` batches already in memory (cycling over those given): what a perfect input pipeline
    would hand the model."""

    def __init__(self, batches, steps):
        super().__init__()
        self.batches, self.steps = batches, steps

    def __len__(self):
        return self.steps

    def __getitem__(self, index):
        return self.batches[index % len(self.batches)]


def median(values):
    return float(statistics.median(values)) if values else None


def alternate(variants, rounds):
    """Run each variant's ``run(round) -> (seconds, items)`` once per round, in turns (the order rotates
    every round), after one untimed warm-up call each (round None: compiling, filling caches). Returns
    {name: {"items_per_s": median, "rates": [...], "seconds": [...], peak memory}}."""
    names = list(variants)
    for name in names:
        variants[name](None)
    results = {name: {"rates": [], "seconds": [], "memory": []} for name in names}
    for r in range(rounds):
        for name in names[r % len(names):] + names[: r % len(names)]:
            with Peak() as peak:
                seconds, items = variants[name](r)
            results[name]["rates"].append(items / seconds)
            results[name]["seconds"].append(round(seconds, 4))
            results[name]["memory"].append(peak.result)
    for result in results.values():
        result["items_per_s"] = median(result["rates"])
        memory = result.pop("memory")
        result.update({key: max(m[key] for m in memory) for key in memory[0]})
    return results


PAIRED = {}  # every paired ratio of every round, for the JSON


def paired(results, a, b, label):
    """rate(a) / rate(b), both measured in the same round: {"median", "low", "high"} over the rounds, and
    "of_medians"; None if either is missing. Each round's ratio goes to the JSON under ``label``."""
    if a not in results or b not in results:
        return None
    ratios = [x / y for x, y in zip(results[a]["rates"], results[b]["rates"])]
    PAIRED[label] = [round(r, 4) for r in ratios]
    return {"median": median(ratios), "low": min(ratios), "high": max(ratios),
            "of_medians": results[a]["items_per_s"] / results[b]["items_per_s"]}


# ----------------------------------------------------------------------------------------------------
# Photos


def make_photos(folder, count, size, seed):
    """``count`` JPEGs of ``size`` (w, h) cut from the sample photos (random crops, flips, colour casts)
    in ``folder/<w>x<h>``, reused if already there; returns their paths."""
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
        photo = Image.fromarray(pixels).resize((w, h), Image.Resampling.LANCZOS)
        with files.atomic_path(path) as tmp:
            photo.save(tmp, format="JPEG", quality=90)
    return paths


# ----------------------------------------------------------------------------------------------------
# The 2017 way of feeding a model


class Reference2017(keras.utils.PyDataset):
    """Batches made as the 2017 tutorial made them (see the module's docstring), served to ``model.fit``.

    A reading thread, started with each epoch as ``fit_generator`` started its own, makes the batches
    into a queue of 10. Outside an epoch (Keras reads two batches first to learn their shapes) a batch
    made in advance is served, so no work runs outside the timed epochs.
    """

    def __init__(self, paths, size, batch_size, steps, seed, embed=None):
        super().__init__()
        self.embed = embed  # full: l -> embedding, run twice on every batch
        squares = [_square(images.load(p, size, side="shorter"), size) for p in paths]
        self.photos = np.array(squares, dtype=np.float32)  # ImageDataGenerator.flow: K.floatx()
        self.batch_size, self.steps = min(batch_size, len(squares)), steps
        self.rng = np.random.default_rng(seed)
        self.spare = self.batch()
        self.thread = None

    def __len__(self):
        return self.steps

    def batch(self):
        from skimage import color

        chosen = self.rng.choice(len(self.photos), self.batch_size, replace=False)
        rgb = np.stack([_random_transform(self.photos[i], self.rng) for i in chosen])
        lab_batch = color.rgb2lab(rgb)
        l = (lab_batch[..., :1] / lab.L_SCALE).astype(np.float32)  # noqa: E741  (the original fed L unscaled)
        ab = (lab_batch[..., 1:] / lab.AB_SCALE).astype(np.float32)
        if self.embed is None:
            return l, ab
        self.embed(l)  # the 2017 notebook's first embedding, never used
        return (l, self.embed(l)), ab

    def on_epoch_begin(self):
        self.queue, self.stop = queue.Queue(maxsize=10), threading.Event()
        self.thread = threading.Thread(target=self._read, daemon=True)
        self.thread.start()

    def on_epoch_end(self):  # Keras also calls it before the first epoch
        if self.thread is None:
            return
        self.stop.set()
        while self.thread.is_alive():
            try:
                self.queue.get(timeout=0.05)  # unblock a put
            except queue.Empty:
                pass
        self.thread = None

    def _read(self):
        while not self.stop.is_set():
            try:
                item = self.batch()
            except Exception as error:  # given to the training loop, which raises it
                item = error
            while not self.stop.is_set():
                try:
                    self.queue.put(item, timeout=0.05)
                    break
                except queue.Full:
                    pass

    def __getitem__(self, index):
        while self.thread is not None:  # (a read-ahead thread of Keras's may still ask once the epoch ends)
            try:
                item = self.queue.get(timeout=0.05)
            except queue.Empty:
                continue
            if isinstance(item, Exception):
                raise item
            return item
        return self.spare


def _square(rgb, size):
    top, left = (rgb.shape[0] - size) // 2, (rgb.shape[1] - size) // 2
    return rgb[top : top + size, left : left + size]


def _random_transform(x, rng, rotation=20.0, shear=0.2, zoom=(0.8, 1.2)):
    """Keras 2.0's ImageDataGenerator(rotation_range=20, shear_range=0.2, zoom_range=0.2,
    horizontal_flip=True).random_transform: one affine_transform per channel, order 0 (nearest)."""
    from scipy import ndimage

    theta = np.deg2rad(rng.uniform(-rotation, rotation))
    s = rng.uniform(-shear, shear)
    zx, zy = rng.uniform(zoom[0], zoom[1], 2)
    matrix = np.array([[np.cos(theta), -np.sin(theta), 0], [np.sin(theta), np.cos(theta), 0], [0, 0, 1]])
    matrix = matrix @ np.array([[1, -np.sin(s), 0], [0, np.cos(s), 0], [0, 0, 1]])
    matrix = matrix @ np.array([[zx, 0, 0], [0, zy, 0], [0, 0, 1]])
    o_x, o_y = x.shape[0] / 2 + 0.5, x.shape[1] / 2 + 0.5
    matrix = np.array([[1, 0, o_x], [0, 1, o_y], [0, 0, 1]]) @ matrix @ np.array([[1, 0, -o_x], [0, 1, -o_y],
                                                                                   [0, 0, 1]])
    x = np.stack([ndimage.affine_transform(x[..., c], matrix[:2, :2], matrix[:2, 2], order=0, mode="nearest")
                  for c in range(x.shape[-1])], axis=-1)
    return x[:, ::-1] if rng.random() < 0.5 else x


# ----------------------------------------------------------------------------------------------------
# The stages' models, as their runs saved them


def load_models(rows):
    """{stage: model} for each stage whose run saved a model that loads and runs at --size; the row of a
    stage whose model does not becomes a skipped one, with the reason."""
    models = {}
    for stage, row in rows.items():
        if row["status"] != "ran":
            continue
        try:
            model = keras.saving.load_model(row["model"], compile=False)
            if stage == "full":  # the step full trains: (l, embedding) -> ab, the classifier outside it
                EMBEDDERS["full"] = embedder(model)  # l -> embedding: what the 2017 feeding runs per batch
                model = fusion_network(model)
                row["embedding_size"] = int(model.inputs[1].shape[-1])
                forward(model, [np.zeros((1, ARGS.size, ARGS.size, 1), np.float32),
                                np.zeros((1, row["embedding_size"]), np.float32)])
            else:
                multiple = row["multiple"] = find_multiple(model)
                if not multiple:
                    raise ValueError("its network does not return ab at its input's size")
                if ARGS.size % multiple:
                    raise ValueError(f"its network needs sides divisible by {multiple}, not {ARGS.size}")
        except Exception as error:  # a layer Keras cannot find, a network of another shape, ...
            row.update(status="skipped", reason=f"its model.keras cannot be timed here ({first_line(error)})")
            continue
        row["parameters"] = int(model.count_params())
        models[stage] = model
    return models


def forward(model, x):
    """The network's output for ``x``, as NumPy: the call colorize makes."""
    return keras.ops.convert_to_numpy(model(x, training=False))


def find_multiple(model, largest=256):
    """The smallest power of two ``m`` such that ``model`` returns ab of its input's size for sides that
    divide by ``m`` (tried on m x 2m and 3m x m inputs); None if there is none."""
    m = 1
    while m <= largest:
        try:
            if all(forward(model, np.full((1, h, w, 1), 0.5, np.float32)).shape == (1, h, w, 2)
                   for h, w in ((m, 2 * m), (3 * m, m))):
                return m
        except Exception:  # each backend has its own error for sizes that do not fit
            pass
        m *= 2
    return None


EMBEDDERS = {}


def embedder(model):
    """The network in full's saved model that takes l and returns the classifier's embedding, or None."""
    for network in (layer for layer in model.layers if isinstance(layer, keras.Model)):
        if [len(x.shape) for x in network.inputs] == [4] and [len(y.shape) for y in network.outputs] == [2]:
            return network
    return None


def fusion_network(model):
    """The network in full's saved model that takes (l, embedding) and returns ab."""
    for network in (model, *(layer for layer in model.layers if isinstance(layer, keras.Model))):
        if len(network.inputs) == 2 and [len(i.shape) for i in network.inputs] == [4, 2]:
            return network
    raise ValueError("it holds no (l, embedding) -> ab network")


def first_line(error):
    lines = str(error).strip().splitlines()
    return (lines[0] if lines else type(error).__name__)[:200]


def compiled(model, loss="mse"):
    """``model`` compiled as the stages compile it: Adam, and ``jit_compile="auto"`` (Keras's choice)."""
    model.compile(optimizer=keras.optimizers.Adam(1e-3), loss=loss)
    return model


# ----------------------------------------------------------------------------------------------------
# Measurements


def fit_chunk(model, dataset, r):
    """One timed chunk: an epoch of ``dataset`` through ``model.fit``; returns (seconds, crops).
    Round ``r`` None is the warm-up: one step, to compile."""
    window = Window()
    steps = 1 if r is None else len(dataset)
    model.fit(dataset, epochs=1, steps_per_epoch=steps, verbose=0, shuffle=False, callbacks=[window])
    return window.seconds, steps * ARGS.batch


def calibrate(model, batches):
    """Steps per timed chunk: --steps, else enough for about 2 s (at least 2, at most 200), from the time of
    two steps of ``model`` fed from memory (after a compiling one)."""
    if ARGS.steps:
        return ARGS.steps
    fit_chunk(model, InMemory(batches, 1), None)
    seconds, _ = fit_chunk(model, InMemory(batches, 2), 0)
    return int(min(200, max(2, np.ceil(2.0 / (seconds / 2)))))


def measure_training(models, paths, rows):
    """beta fed three ways, and the other stages' steps from memory, in turns."""
    keras.utils.set_random_seed(0)
    folder = paths[0].parent
    beta = compiled(models["beta"])
    sample, _ = data.from_folder(folder, ARGS.size, ARGS.batch, 8, 0.0, zoom=1.3, seed=1, verbose=False)
    batches = [sample[i] for i in range(len(sample))]  # read once: the batches "in memory"
    steps = calibrate(beta, batches)
    # beta's default path: ZOOM=1.3 as beta/train.py, the crops read by Keras's threads
    disk, _ = data.from_folder(folder, ARGS.size, ARGS.batch, steps, 0.0, zoom=1.3, seed=0,
                               workers=ARGS.workers, verbose=False)
    memory = InMemory(batches, steps)
    reference = Reference2017(disk.paths, ARGS.size, ARGS.batch, steps, seed=0)
    disk_name, memory_name = "beta: JPEG files on disk (default)", "beta: batches in memory"
    reference_name = "beta: the 2017 tutorial's feeding"
    variants = {disk_name: lambda r: fit_chunk(beta, disk, r),
                memory_name: lambda r: fit_chunk(beta, memory, r),
                reference_name: lambda r: fit_chunk(beta, reference, r)}
    if "full" in models:
        full = compiled(models["full"])
        rng, size = np.random.default_rng(0), rows["full"]["embedding_size"]
        embedded = InMemory([((x, rng.normal(size=(len(x), size)).astype(np.float32)), y)
                             for x, y in batches], steps)
        variants["full: cached embeddings, in memory"] = lambda r: fit_chunk(full, embedded, r)
        if EMBEDDERS.get("full") is not None and ARGS.mode == "full":  # its classifier twice per batch
            full_2017 = Reference2017(disk.paths, ARGS.size, ARGS.batch, steps, seed=0,
                                      embed=EMBEDDERS["full"].predict_on_batch)
            variants["full: the 2017 feeding, classifier per batch"] = lambda r: fit_chunk(full, full_2017, r)
    if "gan" in models:
        gan = compiled(models["gan"], loss="mae")  # gan's warm-up: the generator alone, with L1
        variants["gan: generator, L1 step, in memory"] = lambda r: fit_chunk(gan, memory, r)
    results = alternate(variants, ARGS.rounds)
    ratios = {
        "pipeline_efficiency": paired(results, disk_name, memory_name, "beta pipeline, disk / memory"),
        "beta_vs_2017": paired(results, disk_name, reference_name, "beta from disk / the 2017 feeding"),
        # a step's time relative to beta's: beta's rate over the other stage's
        "full_step_vs_beta": paired(results, memory_name, "full: cached embeddings, in memory",
                                    "full step time / beta step time"),
        "gan_step_vs_beta": paired(results, memory_name, "gan: generator, L1 step, in memory",
                                   "gan L1 step time / beta step time"),
        "full_vs_2017": paired(results, "full: cached embeddings, in memory",
                               "full: the 2017 feeding, classifier per batch",
                               "full cached / the 2017 feeding"),
    }
    return {"variants": results, "ratios": ratios, "steps": steps, "photos": len(disk.paths)}


def measure_colorize(model, multiple, path, folder, out):
    """beta colouring one photo end to end against its network's forward pass alone at the working size; and
    the colorize command's pipeline on a folder of such photos; in turns. The end to end is
    ``coloring.colorize``'s three steps called one by one, each timed, between reading and writing PNG."""
    size, parts = ARGS.work_size, []
    target = out / "colorized" / "one.png"
    target.parent.mkdir(parents=True, exist_ok=True)

    def one(_r):
        times = [time.perf_counter()]
        rgb = images.load_8bit(path)  # 8-bit, as the command reads photos
        times.append(time.perf_counter())
        work = coloring.prepare(rgb, size, multiple)
        times.append(time.perf_counter())
        ab = coloring.predict_ab(model, [work])[0]
        times.append(time.perf_counter())
        result = coloring.finish(rgb, ab)
        times.append(time.perf_counter())
        images.save(target, result)
        times.append(time.perf_counter())
        parts.append(dict(zip(PARTS, np.diff(times))))
        return times[-1] - times[0], 1

    # what colorize gives the network: the photo's l at the working size, padded (mirrored) to a multiple
    work, padded = coloring.prepare(images.load_8bit(path), size, multiple)
    x = images.pad_to_multiple(work, 1, padded)[None]

    def forward_pass(_r):
        start = time.perf_counter()
        coloring.forward(model, x)  # as coloring.predict_ab calls it: compiled at this size
        return time.perf_counter() - start, 1

    colorer = colorize.Colorer(model, "beta", size, multiple, "lab")
    jobs = [(photo, out / "colorized" / "folder" / f"{photo.stem}.png") for photo in folder]
    jobs[0][1].parent.mkdir(parents=True, exist_ok=True)
    failures = []

    def folder_run(_r):
        start = time.perf_counter()
        colorize.pipeline(colorer, jobs, lambda job: images.load_8bit(job[0]),
                          lambda job, rgb: images.save(job[1], rgb), failures.append, lambda: None)
        if failures:
            raise RuntimeError(f"the colorize pipeline failed: {failures[0]}")
        return time.perf_counter() - start, len(jobs)

    e2e, forward_name = "one photo, end to end", "network forward"
    folder_name = f"a folder of {len(jobs)}, the colorize command's pipeline"
    results = alternate({e2e: one, forward_name: forward_pass, folder_name: folder_run}, ARGS.rounds)
    parts_ms = {part: round(1000 * median([p[part] for p in parts[1:]]), 1) for part in PARTS}  # [0]: warm-up
    forward_ms = 1000 / results[forward_name]["items_per_s"]
    ratios = {"end_to_end_vs_forward": paired(results, forward_name, e2e, "colorize end to end / forward"),
              "folder_vs_forward": paired(results, folder_name, forward_name,
                                          "colorize folder photos/s / (1 / forward)")}
    latency = 1000 / results[e2e]["items_per_s"]
    return {"photo_size": list(ARGS.colorize_size), "work_size": size,
            "network_input": [x.shape[2], x.shape[1]], "latency_ms": round(latency, 1),
            "forward_ms": round(forward_ms, 1), "parts_ms": parts_ms,
            "folder_photos": len(jobs), "folder_photos_per_s": round(results[folder_name]["items_per_s"], 3),
            "variants": results, "ratios": ratios}


PARTS = ("read", "prepare", "network", "finish", "write PNG")  # of colouring one photo end to end


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
        versions[ARGS.backend] = __import__(ARGS.backend).__version__
    except Exception:  # a backend without a version: leave it out
        pass
    return {"platform": platform.platform(), "python": platform.python_version(), "cpu": cpu,
            "cpu_count": os.cpu_count(), "load_average_start": list(LOAD_AT_START),
            "backend": keras.backend.backend(), "device": DEVICE, "versions": versions}


def ratio_text(r, unit="x"):
    """A paired ratio: "median [lowest-highest round]; of the medians"."""
    if r is None:
        return "-"
    spread = f" [{r['low']:.3g}-{r['high']:.3g}]" if r["low"] != r["high"] else ""
    return f"{r['median']:.3g}{unit}{spread}; of the medians {r['of_medians']:.3g}{unit}"


def busy_text(share):
    return "other processes' share of the CPUs unknown" if share is None else \
        f"other processes took {100 * share:.0f}% of the CPUs meanwhile"


def table(report):
    m, s = report["machine"], report["settings"]
    device = "CPU (CPU figures)" if m["device"] == "cpu" else m["device"].upper()
    load = (f"load {m['load_average_start'][0]:.1f} at the start, {m['load_average_end'][0]:.1f} at the end; "
            f"{busy_text(report['cpu_seconds']['others_share'])}")
    mode = f" (--{s['mode']})" if s["mode"] != "full" else ""
    lines = [f"colorlab bench: {m['backend']} on {device}, {m['cpu']}, {m['cpu_count']} cores, {load}",
             f"crops {s['size']}x{s['size']}, batch {s['batch']}, {s['steps']} steps per chunk, "
             f"{s['rounds']} rounds{mode}; the variants take turns; medians", "",
             f"stages, each run once for one step (IMAGE_SIZE={s['stage_size']}), its model.keras loaded:"]
    for stage, row in report["stages"].items():
        if row["status"] == "ran":
            what = "its (l, embedding) -> ab network" if stage == "full" else "its network"
            lines.append(f"  {stage:<5} ran in {row['seconds']:.0f} s; {what}: {row['parameters']:,} weights")
        else:
            lines.append(f"  {stage:<5} skipped: {row['reason']}")
    training = report.get("training")
    if training:
        lines += ["", f"training with model.fit{'':<35}crops/s   peak RSS MB"]
        for name, v in training["variants"].items():
            lines.append(f"  {name:<54} {v['items_per_s']:>8.3g}   {v['peak_rss_mb']:>7.0f}")
        r = training["ratios"]
        lines += ["  ratios: median of the per-round ratios [lowest-highest round]; the ratio of the medians",
                  f"  input pipeline efficiency, disk / memory   {ratio_text(r['pipeline_efficiency'], '')}",
                  f"  beta from disk vs the 2017 feeding         {ratio_text(r['beta_vs_2017'])}"]
        for stage in ("full", "gan"):
            ratio = r.get(f"{stage}_step_vs_beta")
            if ratio:
                lines.append(f"  {stage + ' step time / beta step time':<43}{ratio_text(ratio)}")
        if "full" in report["stages"]:
            figure = ratio_text(r["full_vs_2017"]) if r.get("full_vs_2017") else "measured without --quick"
            lines.append(f"  full, cached, vs the 2017 full feeding      {figure}")
    colour = report.get("colorize")
    if colour:
        (w, h), (iw, ih), p = colour["photo_size"], colour["network_input"], colour["parts_ms"]
        lines += ["", f"colorize {w}x{h} photos at working size {colour['work_size']} (the network sees "
                      f"{iw}x{ih})",
                  f"  one photo, end to end  {colour['latency_ms']:>7g} ms  (medians, ms: "
                  + ", ".join(f"{part} {p[part]:g}" for part in PARTS) + ")",
                  f"  network forward alone  {colour['forward_ms']:>7g} ms  (coloring.forward, as colorize "
                  f"calls it)",
                  f"  end to end / forward   {ratio_text(colour['ratios']['end_to_end_vs_forward'])}",
                  f"  a folder of {colour['folder_photos']}, the colorize command's threads: "
                  f"{colour['folder_photos_per_s']:.3g} photos/s; "
                  f"/ (1 / forward) {ratio_text(colour['ratios']['folder_vs_forward'], '')}"]
    if report.get("targets"):
        lines += ["", "targets (issue 14)" + (" (CPU figures)" if m["device"] == "cpu" else "")]
        for name, t in report["targets"].items():
            verdict = {True: "met", False: "NOT met", None: "not judged here"}[t["met"]]
            why = f" ({t['why']})" if t.get("why") else ""
            lines.append(f"  {name}: {t['value_text']}: {verdict}{why}")
    return "\n".join(lines)


def targets(report):
    """The project's speed targets (issue 14), each with its measured value and, when not met, why, from the
    measured parts; "met" is None where this run cannot tell (a GPU target on a CPU, --quick's time on a busy
    machine, colorize's memory before bench/memory.py has run)."""
    found = {}

    def add(name, ratio, test, unit="x", why=None):
        if ratio is not None:
            met = test(ratio["median"])
            found[name] = {"value": ratio["median"], "met": met, "value_text": ratio_text(ratio, unit),
                           "why": None if met else why}

    r, colour = report.get("training", {}).get("ratios", {}), report.get("colorize")
    if colour:
        p, forward = colour["parts_ms"], colour["forward_ms"]
        rest = sum(p.values()) - p["network"]
        photo = "x".join(map(str, colour["photo_size"]))
        add(f"colorize one {photo} photo end to end at most 1.3x the network's forward",
            colour["ratios"]["end_to_end_vs_forward"], lambda v: v <= 1.3,
            why=f"around a {p['network']:g} ms network, reading, converting and writing took {rest:.0f} ms "
                f"({', '.join(f'{part} {p[part]:g}' for part in PARTS if part != 'network')}); "
                f"1.3x allows {0.3 * forward:.0f} ms")
        add("colorize a folder at least 0.9x of 1 / the network's time per photo",
            colour["ratios"]["folder_vs_forward"], lambda v: v >= 0.9, unit="",
            why=f"the threads overlap the network, but on {os.cpu_count()} cores the {rest:.0f} ms of "
                f"reading, converting and writing per photo take CPU from the network's own threads")
    found["colorize memory at most 400 MiB above the import on 4000x3000 photos"] = memory_target()
    add("full step with cached embeddings at most 1.15x beta's", r.get("full_step_vs_beta"),
        lambda v: v <= 1.15)
    add("beta training from disk at least as fast as the 2017 feeding", r.get("beta_vs_2017"),
        lambda v: v >= 1, why="the network's arithmetic is nearly all of a CPU step: see the rounds' spread")
    add("beta input pipeline efficiency at least 0.9", r.get("pipeline_efficiency"), lambda v: v >= 0.9, "",
        why="on a CPU, the reading threads take cores from training")
    if report["settings"]["mode"] == "quick":
        others = report["cpu_seconds"]["others_share"]
        idle = others is not None and others < 0.05 and os.cpu_count() == 2  # others: under 5% of the CPUs
        met = report["seconds"] <= 60 if idle else None
        parts = ", ".join(f"{part} {seconds:.0f} s" for part, seconds in report["part_seconds"].items())
        found["--quick within 60 s on an idle 2-core machine"] = {
            "value": report["seconds"], "met": met,
            "value_text": f"{report['seconds']:.0f} s here ({os.cpu_count()} cores, {busy_text(others)})",
            "why": None if met else parts if idle else f"judged only when others take under 5%; {parts}"}
    if colour and "x".join(map(str, colour["photo_size"])) == "1024x768":
        on_gpu = report["machine"]["device"] != "cpu"
        found["beta colorize 1024x768 end to end under 12 ms on a GPU"] = {
            "value": colour["latency_ms"], "met": colour["latency_ms"] < 12 if on_gpu else None,
            "value_text": f"{colour['latency_ms']:g} ms" + ("" if on_gpu else " on this CPU"),
            "why": None if on_gpu else "no GPU here: bench/gpu.sh measures it on a machine with one"}
    return found


def memory_target():
    """colorize's peak memory above the import, from the last ``bench/memory.py`` run (its JSON), if any."""
    path = ROOT / "outputs" / "bench" / "memory.json"
    try:
        report = files.read_json(path, limit=1 << 20) or {}
        floor = report["rows"][0]["peak_rss_mib"]
        row = max((r for r in report["rows"] if r["what"].startswith("colorize")), key=lambda r: r["photos"])
    except Exception:  # no run yet, or another layout: not judged
        return {"value": None, "met": None, "value_text": "not measured in this run",
                "why": "python bench/memory.py measures it (about 20 minutes; --count 20 for a short run)"}
    above = row["peak_rss_mib"] - floor
    when = time.strftime("%Y-%m-%d %H:%M", time.localtime(path.stat().st_mtime))
    return {"value": above, "met": above <= 400, "why": None if above <= 400 else "bench/memory.py's table",
            "value_text": f"{above:.0f} MiB on {row['photos']} photos (bench/memory.py of {when}: "
                          f"{report.get('command', '?')})"}


def cpu_seconds(wall):
    """CPU time used by this process and by the stage runs, and the share of the machine's CPUs that
    other processes took meanwhile (None where Linux's /proc/stat is missing): 0 means an idle machine."""
    import resource

    own, children = (resource.getrusage(who) for who in (resource.RUSAGE_SELF, resource.RUSAGE_CHILDREN))
    used = {"bench": own.ru_utime + own.ru_stime, "stage runs": children.ru_utime + children.ru_stime}
    busy = busy_cpu_seconds()
    others = None
    if busy is not None and BUSY_AT_START is not None:
        others = max(0.0, (busy - BUSY_AT_START - sum(used.values())) / (wall * (os.cpu_count() or 1)))
    return {**{k: round(v, 1) for k, v in used.items()},
            "others_share": None if others is None else round(others, 3)}


def main():
    started = time.perf_counter()
    report = {"machine": machine(), "settings": {
        "mode": ARGS.mode, "size": ARGS.size, "batch": ARGS.batch, "rounds": ARGS.rounds,
        "workers": ARGS.workers, "stages": ARGS.stages, "stage_size": ARGS.stage_size,
        "work_size": ARGS.work_size, "colorize_size": list(ARGS.colorize_size), "parts": sorted(ARGS.parts)}}
    seconds = report["part_seconds"] = {"start-up": round(started - START, 1)}
    paths = make_photos(ARGS.out / "photos", ARGS.photos, ARGS.photo_size, seed=0)  # while the stages run
    photo = make_photos(ARGS.out / "photos", 1, ARGS.colorize_size, seed=1)[0]
    folder = make_photos(ARGS.out / "photos" / "folder", ARGS.folder, ARGS.colorize_size, seed=2)
    print(f"running {', '.join(ARGS.stages)} for one step each ...", file=sys.stderr, flush=True)
    rows = report["stages"] = {run["stage"]: finish_stage(run) for run in RUNS}
    seconds["photos and stage runs"] = round(time.perf_counter() - started, 1)
    models = load_models(rows)
    if "beta" not in models:
        files.write_json(ARGS.json, report)
        raise SystemExit(f"error: beta, which every figure needs, was skipped: {rows['beta']['reason']} "
                         f"(its output: {rows['beta']['log']})")
    beta_multiple = rows["beta"]["multiple"]
    measures = {"training": lambda: measure_training(models, paths, rows),
                "colorize": lambda: measure_colorize(models["beta"], beta_multiple, photo, folder, ARGS.out)}
    for part, measure in measures.items():
        if part in ARGS.parts:
            print(f"measuring {part} ...", file=sys.stderr, flush=True)
            start = time.perf_counter()
            report[part] = measure()
            seconds[part] = round(time.perf_counter() - start, 1)
    report["settings"]["steps"] = report.get("training", {}).get("steps", ARGS.steps)
    report["machine"]["load_average_end"] = list(os.getloadavg())
    report["seconds"] = round(time.perf_counter() - START, 1)
    report["cpu_seconds"] = cpu_seconds(report["seconds"])
    report["targets"] = targets(report)
    report["paired_ratios_per_round"] = PAIRED
    files.write_json(ARGS.json, report)
    print(table(report))
    print(f"\n{report['seconds']:.0f} s in all, the stage runs included; every number in {ARGS.json}")


if __name__ == "__main__":
    main()
