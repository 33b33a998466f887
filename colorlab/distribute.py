"""Data parallelism around a stage's plain ``model.fit``: every local device (JAX's ``DataParallel``,
TensorFlow's ``MirroredStrategy``), and on JAX several processes or machines. One device: nothing changes."""

import atexit, contextlib, os, pickle, shutil, sys, tempfile, threading, time  # noqa: E401

import keras
import numpy as np

from colorlab import files, settings

SILENCE = 20  # seconds without a heartbeat after which a process is taken for dead, and all the others stop


class Devices:
    def __init__(self, devices="auto", coordinator=None, processes=1, process_id=0):
        backend, count = keras.backend.backend(), str(devices)
        wanted = 0 if devices == "auto" else int(count) if count.isdigit() and int(count) > 0 else -1
        settings.check(wanted >= 0, f'DEVICES must be "auto" or a number of devices, got {devices!r}')
        settings.check(0 <= process_id < processes, f"PROCESS_ID must be 0 to {processes - 1}: {process_id}")
        settings.check(processes == 1 or backend == "jax" and coordinator,
                       "several processes train on JAX only, each given COORDINATOR=host:port (process 0's): "
                       "start them with KERAS_BACKEND=jax (Keras 3's fit does not work with TensorFlow's "
                       "MultiWorkerMirroredStrategy: keras-team/keras#20585)")
        settings.check(backend != "torch" or wanted <= 1, "on PyTorch the stages train on one device; for "
                       "several, use KERAS_BACKEND=jax (keras.distribution) or tensorflow (MirroredStrategy)")
        self.processes, self.process_id, self.chief = processes, process_id, process_id == 0
        self.strategy, self.local = None, 1
        if backend == "jax":
            import jax

            try:  # before JAX starts: virtual CPU devices (used without accelerators only), TCP collectives
                if wanted > 1:
                    jax.config.update("jax_num_cpu_devices", wanted)
                if processes > 1:
                    jax.config.update("jax_cpu_collectives_implementation", "gloo")
            except RuntimeError:
                settings.check(False, "DEVICES and NUM_PROCESSES must be set before JAX starts: restart")
            if processes > 1:
                keras.distribution.initialize(coordinator, processes, process_id)
                self._watch()
            local = jax.local_devices()  # the accelerators, or else the CPU's devices
            accelerators = local[0].platform != "cpu"
            self.local = len(local) if processes > 1 or not wanted and accelerators else max(wanted, 1)
            settings.check(self.local <= len(local), f"DEVICES={wanted}, but there are {len(local)} here")
            if self.local * processes > 1:  # the same weights everywhere, each device a slice of every batch
                keras.distribution.set_distribution(keras.distribution.DataParallel(
                    devices=jax.devices() if processes > 1 else local[:self.local], auto_shard_dataset=False))
        elif backend == "tensorflow":
            import tensorflow as tf

            gpus, cpu = tf.config.list_physical_devices("GPU"), tf.config.list_physical_devices("CPU")[0]
            self.local = wanted or max(len(gpus), 1)
            if self.local > 1 and not gpus:  # virtual CPU devices: slower, they only prove the code path
                with contextlib.suppress(RuntimeError):  # TensorFlow started already: the check below says so
                    tf.config.set_logical_device_configuration(cpu, [tf.config.LogicalDeviceConfiguration()]
                                                               * self.local)
            names = [d.name for d in tf.config.list_logical_devices("GPU" if gpus else "CPU")]
            settings.check(self.local <= len(names), f"DEVICES={wanted}, but there are {len(names)} here (on "
                           f"a CPU, virtual ones are made before TensorFlow starts: restart Python)")
            self.strategy = tf.distribute.MirroredStrategy(names[:self.local]) if self.local > 1 else None
        self.replicas = self.local * processes
        if self.replicas > 1:
            print(f"data parallel: {self.replicas} devices, {self.local} in each of {processes} process(es)")

    def scope(self):
        """Around building and compiling: TensorFlow mirrors each weight on every device (JAX: set above)."""
        return self.strategy.scope() if self.strategy else contextlib.nullcontext()

    def shard(self, train):
        """This process's share of the training ``Photos``: every n-th photo, BATCH_SIZE / n crops a batch."""
        settings.check(train.batch_size % self.replicas == 0,
                       f"BATCH_SIZE={train.batch_size} must be a multiple of the {self.replicas} devices")
        settings.check(len(train.paths) >= self.processes, f"{self.processes} processes need as many photos")
        if self.processes > 1:  # and crops of their own: the process's number joins the seed
            train.paths = train.paths[self.process_id::self.processes]
            train.batch_size //= self.processes
            train.seed += self.process_id << 32
        return train

    def whole(self, validation):
        """Validation batches copied to every local device (JAX splits only even batches): the same val_loss
        as on one device, in every process."""
        return Copies(validation, self.local) if self.strategy is None and self.local > 1 else validation

    def prepare_out_dir(self, out_dir, stage, overwrite=False, resume=False):
        """OUT_DIR for process 0; for the others, a temporary folder (deleted at exit) that gets, to resume, a
        copy of process 0's OUT_DIR."""
        resuming = self.processes > 1 and resume
        if not self.chief:
            out_dir, resume = tempfile.mkdtemp(prefix=f"colorlab-process{self.process_id}-"), False
            atexit.register(shutil.rmtree, out_dir, True)
        out_dir = files.prepare_out_dir(out_dir, stage, overwrite, resume)
        if resuming:
            from jax.experimental.multihost_utils import broadcast_one_to_all as broadcast

            sent = pickle.dumps({p.relative_to(out_dir).as_posix(): p.read_bytes() for p in out_dir.rglob("*")
                                 if self.chief and p.is_file() and p.name != files.MARK})
            sent = broadcast(np.frombuffer(sent.ljust(int(broadcast(np.array(len(sent))))), np.uint8))
            for name, content in ({} if self.chief else pickle.loads(sent.tobytes())).items():
                (out_dir / name).parent.mkdir(parents=True, exist_ok=True)
                (out_dir / name).write_bytes(content)
        return out_dir

    def _watch(self):
        """Each process beats every second in the coordinator's key-value store. When one falls silent for
        SILENCE seconds, or a collective operation fails, the others stop at once, in one line."""
        from jax._src.distributed import global_state  # JAX's client of the coordination service

        client, heard = global_state.client, {p: (None, time.monotonic()) for p in range(self.processes)}
        ended = threading.Event()
        atexit.register(ended.set)  # a normal end: JAX's own shutdown then waits for every process

        def stop(process):
            if not ended.is_set():
                sys.stdout.flush()
                print(f"\nerror: process {process} of {self.processes} stopped or cannot be reached, so this "
                      f"one ({self.process_id}) stops too; restart them all with "
                      f"{settings.flag('RESUME', True)} to continue from the last epoch saved",
                      file=sys.stderr, flush=True)
                os._exit(1)  # now: JAX's shutdown would wait for the missing process

        def beat():
            while not ended.wait(1):
                try:
                    client.key_value_set(f"colorlab/{self.process_id}", str(time.time_ns()), True)
                except Exception:  # the coordination service, in process 0, is gone
                    stop(0)
                for p, (last, _) in heard.items():
                    with contextlib.suppress(Exception):  # no beat yet
                        if (value := client.key_value_try_get(f"colorlab/{p}")) != last:
                            heard[p] = (value, time.monotonic())
                if silent := [p for p, (_, when) in heard.items() if time.monotonic() - when > SILENCE]:
                    stop(silent[0])

        threading.Thread(target=beat, daemon=True).start()
        previous = sys.excepthook

        def hook(kind, error, traceback):  # a failed collective: which process? The only other, or the silent
            if any(word in str(error) for word in ("Gloo", "NCCL", "heartbeat", "coordination service")):
                others = [p for p in heard if p != self.process_id]
                time.sleep(0 if len(others) == 1 else SILENCE + 2)  # meanwhile, beat() stops with its name
                stop(others[0] if len(others) == 1 else "?")
            previous(kind, error, traceback)  # this process's own error (a setting, a file), in one line
            sys.stdout.flush()
            os._exit(1)  # at once, so that the others notice: JAX's shutdown would wait for them

        sys.excepthook = hook


class Copies(keras.utils.PyDataset):
    """Each batch of ``dataset``, ``count`` times over."""

    def __init__(self, dataset, count):
        super().__init__()
        self.dataset, self.count = dataset, count

    def __len__(self):
        return len(self.dataset)

    def __getitem__(self, index):
        return keras.tree.map_structure(lambda a: np.concatenate([a] * self.count), self.dataset[index])
