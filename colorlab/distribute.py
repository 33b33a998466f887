"""Data parallelism around a stage's plain ``model.fit``: every local device (JAX's ``DataParallel``,
TensorFlow's ``MirroredStrategy``), and on JAX every device of several processes or machines, each started
by ``python -m colorlab.commands.launch``. One device: nothing changes."""

import contextlib

import keras
import numpy as np

from colorlab import settings


class Devices:
    def __init__(self, devices="auto", several_machines=False):
        backend, count = keras.backend.backend(), str(devices)
        wanted = 0 if devices == "auto" else int(count) if count.isdigit() and int(count) > 0 else -1
        settings.check(wanted >= 0, f'DEVICES must be "auto" or a number of devices, got {devices!r}')
        settings.check(backend != "torch" or wanted <= 1, "on PyTorch the stages train on one device; for "
                       "several, use KERAS_BACKEND=jax (keras.distribution) or tensorflow (MirroredStrategy)")
        self.processes, self.process_id, self.strategy, self.local = 1, 0, None, 1
        if backend == "jax":
            import jax

            if wanted > 1:  # before JAX starts: virtual CPU devices (used without accelerators only)
                try:
                    jax.config.update("jax_num_cpu_devices", wanted)
                except RuntimeError:
                    settings.check(False, "DEVICES must be set before JAX starts: restart")
            self.processes, self.process_id = jax.process_count(), jax.process_index()  # several: launch
            settings.check(self.processes == 1 or several_machines, "this stage trains on one machine; beta "
                           "trains on several (README: \"Several devices and machines\")")
            local = jax.local_devices()  # the accelerators, or else the CPU's devices
            accelerators = local[0].platform != "cpu"
            self.local = len(local) if self.processes > 1 or not wanted and accelerators else max(wanted, 1)
            settings.check(self.local <= len(local), f"DEVICES={wanted}, but there are {len(local)} here")
            if self.local * self.processes > 1:  # the same weights everywhere, each device a slice of a batch
                keras.distribution.set_distribution(keras.distribution.DataParallel(
                    devices=jax.devices() if self.processes > 1 else local[:self.local],
                    auto_shard_dataset=False))
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
        self.replicas = self.local * self.processes
        if self.replicas > 1:
            print(f"data parallel: {self.replicas} devices, {self.local} in each of {self.processes} "
                  f"process(es)")

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


class Copies(keras.utils.PyDataset):
    """Each batch of ``dataset``, ``count`` times over."""

    def __init__(self, dataset, count):
        super().__init__()
        self.dataset, self.count = dataset, count

    def __len__(self):
        return len(self.dataset)

    def __getitem__(self, index):
        return keras.tree.map_structure(lambda a: np.concatenate([a] * self.count), self.dataset[index])
