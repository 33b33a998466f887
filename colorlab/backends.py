"""Training steps with several optimizers, on every Keras backend: the one module that names them.

``model.fit`` calls ``model.train_step`` for each batch. A model that needs its own step (a GAN trains
two networks, each with its own loss and its own optimizer) must compute gradients itself, and that is
the one thing Keras 3 leaves to the backend: TensorFlow records a ``GradientTape``, PyTorch calls
``backward``, JAX transforms a pure function (and ``fit`` passes JAX's ``train_step`` the model's
variables as explicit values). The Keras guides "Customizing what happens in fit()" show one version
per backend. This module holds that plumbing once, so that a stage writes its step as ordinary Keras
code that runs everywhere::

    class GAN(keras.Model):
        def compile(self, d_optimizer, g_optimizer):
            super().compile(optimizer=backends.Optimizers(d_optimizer, g_optimizer))
            ...

        def train_step(self, *args):  # (data) on TensorFlow and PyTorch, (state, data) on JAX
            return backends.run_step(self, self.gan_step, *args)

        def gan_step(self, data):
            losses, extras = backends.minimize(
                lambda: self.losses_on(data),  # -> ((d_loss, g_loss), extras)
                (self.d_optimizer, self.discriminator.trainable_variables),
                (self.g_optimizer, self.generator.trainable_variables),
            )
            return {"d_loss": ..., "g_loss": ...}  # the logs, from metrics updated as usual

- :func:`run_step` makes ``step(data)`` the model's ``train_step`` or ``test_step`` on every backend.
- :func:`minimize` takes one gradient step per (optimizer, variables) pair, each on its own loss.
- :class:`Optimizers` lets ``compile`` hold several optimizers, so that ``fit`` carries all their
  states (on JAX) and checkpoints save all of them.
"""

import contextlib

import keras

SUPPORTED = ("tensorflow", "jax", "torch")
_outer_scopes = []  # on JAX, the scopes run_step opened, innermost last


def check_backend():
    """Stop with a one-line error on a Keras backend this module cannot take gradients with."""
    from colorlab import UserError

    name = keras.backend.backend()
    if name not in SUPPORTED:
        raise UserError(f"the Keras backend {name!r} cannot train this model; set KERAS_BACKEND to one of "
                        f"{', '.join(SUPPORTED)}")
    return name


def run_step(model, step, *args):
    """Run ``step(data) -> logs`` as ``model``'s ``train_step`` or ``test_step``, on any backend.

    ``step`` updates variables, optimizers and metrics the ordinary way (``optimizer.apply``,
    ``metric.update_state``). On TensorFlow and PyTorch that is all there is: ``args`` is ``(data,)``.
    On JAX, ``fit`` passes ``(state, data)``, where ``state`` holds the values of the model's trainable,
    non-trainable, optimizer (training only) and metric variables; ``step`` then runs in a
    ``keras.StatelessScope`` that reads those values and records every update, and the new values are
    returned as the new state, as JAX's ``train_step`` must.
    """
    if keras.backend.backend() != "jax":
        (data,) = args
        return step(data)
    state, data = args
    groups = [model.trainable_variables, model.non_trainable_variables]
    if len(state) == 4:  # training: the optimizer's variables come third
        groups.append(model.optimizer.variables)
    groups.append(model.metrics_variables)
    if [len(g) for g in groups] != [len(values) for values in state]:
        raise RuntimeError("run_step: the JAX state does not match the model's variables")
    mapping = [(v, value) for variables, values in zip(groups, state) for v, value in zip(variables, values)]
    with keras.StatelessScope(state_mapping=mapping) as scope, _remember(scope):
        logs = step(data)
    new_state = tuple([scope.get_current_value(v) for v in variables] for variables in groups)
    return logs, new_state


def minimize(losses_fn, *updates):
    """One gradient step for each ``(optimizer, variables)`` in ``updates``, on its own loss.

    ``losses_fn()`` computes ``(losses, extras)``: a tuple with one scalar loss per pair in
    ``updates``, and anything else to return (a tensor, or a tuple of them). Every gradient is taken
    at the same point (the variables as they were before this step), then each optimizer applies its
    own: so ``optimizer_i`` moves only ``variables_i``, and only along the gradient of ``losses[i]``.
    One forward pass serves every loss. Returns ``(losses, extras)``.
    """
    backend = check_backend()
    optimizers = [optimizer for optimizer, _ in updates]
    groups = [list(variables) for _, variables in updates]
    if backend == "tensorflow":
        losses, extras, grads = _tensorflow_gradients(losses_fn, groups)
    elif backend == "torch":
        losses, extras, grads = _torch_gradients(losses_fn, groups)
    else:
        losses, extras, grads = _jax_gradients(losses_fn, groups)
    if len(losses) != len(updates):
        raise ValueError(f"losses_fn returned {len(losses)} losses for {len(updates)} (optimizer, variables) pairs")
    for optimizer, grads_i, variables in zip(optimizers, grads, groups):
        optimizer.apply(grads_i, variables)  # after every gradient is taken: no loss sees a half-updated model
    return losses, extras


def _tensorflow_gradients(losses_fn, groups):
    import tensorflow as tf

    with tf.GradientTape(persistent=True) as tape:  # persistent: one recording, one gradient per loss
        losses, extras = losses_fn()
    grads = [tape.gradient(loss, variables) for loss, variables in zip(losses, groups)]
    del tape
    return losses, extras, grads


def _torch_gradients(losses_fn, groups):
    import torch

    losses, extras = losses_fn()
    grads = []
    for i, (loss, variables) in enumerate(zip(losses, groups)):
        tensors = [v.value for v in variables]
        found = torch.autograd.grad(loss, tensors, retain_graph=i < len(groups) - 1, allow_unused=True)
        grads.append([g if g is not None else torch.zeros_like(t) for g, t in zip(found, tensors)])
    with torch.no_grad():  # the optimizers' updates are not part of any graph
        losses = tuple(loss.detach() for loss in losses)
        extras = keras.tree.map_structure(lambda x: x.detach() if hasattr(x, "detach") else x, extras)
    return losses, extras, grads


def _jax_gradients(losses_fn, groups):
    import jax

    if not _outer_scopes:
        raise RuntimeError("on JAX, minimize() must run inside backends.run_step (the model's train_step)")
    outer = _outer_scopes[-1]
    values = [[v.value for v in variables] for variables in groups]  # as they are now, in run_step's scope
    updated = []  # other variables that losses_fn assigns (batch-norm statistics, random seeds)

    def forward(*group_values):
        mapping = [(v, x) for variables, xs in zip(groups, group_values) for v, x in zip(variables, xs)]
        with _Nested(mapping, outer) as scope:
            losses, extras = losses_fn()
        updated[:] = scope.assigned
        return tuple(losses), (extras, [scope.get_current_value(v) for v in scope.assigned])

    losses, vjp, (extras, new_values) = jax.vjp(forward, *values, has_aux=True)
    grads = []
    for i in range(len(groups)):  # the gradient of losses[i] alone, with respect to group i
        cotangent = tuple(keras.ops.ones_like(loss) if j == i else keras.ops.zeros_like(loss) for j, loss in enumerate(losses))
        grads.append(vjp(cotangent)[i])
    for variable, value in zip(updated, new_values):
        variable.assign(value)  # recorded by run_step's scope
    return losses, extras, grads


class _Nested(keras.StatelessScope):
    """A stateless scope that maps some variables itself and reads the others from ``outer``,
    and lists the variables assigned inside it that it does not map."""

    def __init__(self, mapping, outer):
        super().__init__(state_mapping=mapping)
        self.outer = outer
        self.mapped = {id(v) for v, _ in mapping}
        self.assigned = []

    def add_update(self, update):
        variable, _ = update
        if id(variable) not in self.mapped and all(variable is not v for v in self.assigned):
            self.assigned.append(variable)
        super().add_update(update)

    def get_current_value(self, variable):
        value = super().get_current_value(variable)
        return self.outer.get_current_value(variable) if value is None else value


@contextlib.contextmanager
def _remember(scope):
    _outer_scopes.append(scope)
    try:
        yield
    finally:
        _outer_scopes.pop()


@keras.saving.register_keras_serializable(package="colorlab")
class Optimizers(keras.optimizers.Optimizer):
    """Several optimizers, each for its own variables, held by ``compile`` as one.

    A Keras model has one optimizer slot; a GAN has an optimizer per network. Wrapping them in one
    lets ``fit`` on JAX carry every optimizer's state through its compiled step (it carries
    ``model.optimizer.variables``, which here are all of theirs), and lets ``model.save`` and
    checkpoints save each of them. Build each optimizer with its own variables
    (``d_optimizer.build(discriminator.trainable_variables)``) before training; ``apply`` is not used
    on the wrapper itself: each optimizer applies its own gradients (see :func:`minimize`).
    """

    def __init__(self, *optimizers, name="optimizers", **kwargs):
        super().__init__(learning_rate=0.0, name=name, **kwargs)
        self.optimizers = [keras.optimizers.get(o) for o in optimizers]
        if any(o.use_ema for o in self.optimizers):
            raise ValueError("Optimizers does not support use_ema=True")

    def build(self, var_list):
        unbuilt = [o.name for o in self.optimizers if not o.built]
        if unbuilt:
            raise ValueError(f"build each optimizer with its own variables first; not built: {', '.join(unbuilt)}")
        super().build(var_list)

    @property
    def variables(self):
        return self._variables + [v for o in self.optimizers for v in o.variables]

    def apply(self, grads, trainable_variables=None):
        raise NotImplementedError("Optimizers only holds optimizers: apply each one to its own variables")

    def save_own_variables(self, store):  # each optimizer saves its own, as an attribute of this one
        for i, variable in enumerate(self._variables):
            store[str(i)] = variable.numpy()

    def load_own_variables(self, store):
        for i, variable in enumerate(self._variables):
            variable.assign(store[str(i)])

    def finalize_variable_values(self, var_list):
        pass  # only optimizers with use_ema=True, refused above, change variables at the end of fit

    def get_config(self):
        return {"name": self.name, "optimizers": [keras.optimizers.serialize(o) for o in self.optimizers]}

    @classmethod
    def from_config(cls, config, custom_objects=None):
        optimizers = [keras.optimizers.deserialize(o, custom_objects=custom_objects) for o in config.pop("optimizers")]
        return cls(*optimizers, **config)
