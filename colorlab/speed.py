"""Settings that make training faster without changing what is learned: precision and compilation.

Every training stage has the two settings, resolved here the same way::

    MIXED_PRECISION = "auto"  # "auto": float16 on a GPU, float32 on a CPU; or True, False, "bfloat16"
    JIT_COMPILE = "auto"      # "auto": what Keras picks (XLA on JAX, and TensorFlow on a GPU); True, False

    precision = speed.mixed_precision(MIXED_PRECISION)   # call it before building the model
    model.compile(..., jit_compile=speed.jit_compile(JIT_COMPILE))

- **Mixed precision** computes the layers in 16-bit floats and keeps the weights in float32: about
  twice the speed and half the activation memory on a GPU with tensor cores. Keras then scales the loss
  so small float16 gradients do not round to zero (``compile`` wraps the optimizer in a
  ``LossScaleOptimizer``). A CPU gains nothing from float16 (it emulates it, several times slower), so
  "auto" keeps float32 there. Some CPUs do compute ``bfloat16`` natively (``avx512_bf16`` or ``amx``
  in ``/proc/cpuinfo``): "bfloat16" asks for it explicitly; ``bench/run.py`` measures whether it helps.
  The network's last layer should keep ``dtype="float32"``, so its ``tanh`` and the loss are computed
  in float32 whatever the policy.
- **Compiled execution** (XLA on TensorFlow and JAX, ``torch.compile`` on PyTorch) fuses the
  operations of a training step. Keras's own "auto" compiles on JAX, and on TensorFlow only with a GPU
  (XLA on a CPU rarely helps); on PyTorch it stays eager, since ``torch.compile`` takes minutes to
  compile a step.

Neither setting changes the result beyond rounding: ``bench/run.py`` and the stage tests compare them.
"""

import keras

from colorlab.settings import SettingsError

POLICIES = {"float16": "mixed_float16", "bfloat16": "mixed_bfloat16"}


def accelerator():
    """``"gpu"`` or ``"tpu"`` when Keras computes on one, else None (a CPU)."""
    try:
        devices = keras.distribution.list_devices()
    except (NotImplementedError, AttributeError, RuntimeError, ValueError):  # PyTorch has no list_devices
        devices = [str(getattr(keras.ops.zeros(()), "device", "cpu"))]
    for device in devices:
        name = str(device).lower()
        for kind, marks in (("gpu", ("gpu", "cuda", "rocm", "mps")), ("tpu", ("tpu",))):
            if any(mark in name for mark in marks):
                return kind
    return None


def mixed_precision(setting="auto", custom_step=False):
    """Set Keras's global dtype policy from a ``MIXED_PRECISION`` setting; returns the policy's name.

    ``setting``: "auto" (float16 on a GPU or TPU, float32 on a CPU), True (or "float16"),
    "bfloat16", or False. Call it before the model is built: each layer takes the policy in force
    when it is created. ``custom_step``: the model takes its gradients itself
    (``colorlab.backends.minimize``), whose float16 loss scaling works on TensorFlow and PyTorch; on
    JAX "auto" then picks bfloat16 (no loss scaling needed) and float16 is refused.
    """
    choice = _parse(setting, "MIXED_PRECISION", ("auto", "float16", "bfloat16"))
    jax_custom = custom_step and keras.backend.backend() == "jax"
    if choice == "auto":
        choice = ("bfloat16" if jax_custom else "float16") if accelerator() else False
    elif choice is True:
        choice = "float16"
    if choice == "float16" and jax_custom:
        raise SettingsError('MIXED_PRECISION float16 needs loss scaling, which this stage\'s own training step has on '
                            'TensorFlow and PyTorch only; on JAX use MIXED_PRECISION=bfloat16')
    policy = POLICIES[choice] if choice else "float32"
    keras.config.set_dtype_policy(policy)
    return policy


def output_dtype():
    """The dtype for a network's last layer: "float32" under a mixed precision policy (so its output
    and the loss are computed in float32), else None (the policy's own, such as float64)."""
    return "float32" if keras.config.dtype_policy().name.startswith("mixed") else None


def jit_compile(setting="auto"):
    """The ``jit_compile`` argument of ``model.compile`` for a ``JIT_COMPILE`` setting: "auto", True or False."""
    return _parse(setting, "JIT_COMPILE", ("auto",))


def describe(policy, jit):
    """One line for the log: ``mixed precision mixed_float16, compiled (XLA) auto``."""
    compiler = "torch.compile" if keras.backend.backend() == "torch" else "XLA"
    where = accelerator() or "cpu"
    return f"on {where} ({keras.backend.backend()}): dtype policy {policy}, jit_compile ({compiler}) {jit}"


def _parse(setting, name, words):
    """True, False or one of ``words`` from a bool or a string such as "True", "false", "Auto"."""
    if isinstance(setting, bool):
        return setting
    text = str(setting).strip().lower()
    if text in ("true", "1", "on", "yes"):
        return True
    if text in ("false", "0", "off", "no", "none"):
        return False
    if text in words:
        return text
    choices = ", ".join([*(f'"{w}"' for w in words), "True", "False"])
    raise SettingsError(f"{name} must be one of {choices}; got {setting!r}")
