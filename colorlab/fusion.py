"""The one layer the full stage's fusion needs that Keras does not have: repeat a vector over a grid.

    grid = fusion.RepeatOverGrid()([embedding, features])  # (N, D) and (N, h, w, C) -> (N, h, w, D)

Each of the ``h * w`` places of the encoder's feature map gets a copy of the photo's embedding, so that
a 1x1 convolution can then mix "what is in the photo" with "what is at this place". The grid size is
read from ``features`` when the model runs, so one model takes photos of any size. It is a layer (not
a ``Lambda``) so that a saved model loads anywhere, with ``import colorlab.fusion``.
"""

import keras
from keras import ops


@keras.saving.register_keras_serializable(package="colorlab")
class RepeatOverGrid(keras.layers.Layer):
    """``[vector (N, D), features (N, h, w, C)]`` -> the vector repeated at every place: (N, h, w, D)."""

    def call(self, inputs):
        vector, features = inputs
        shape = ops.shape(features)  # the grid size of this batch, known only when the model runs
        vector = ops.cast(vector, self.compute_dtype)[:, None, None, :]  # (N, 1, 1, D)
        return ops.broadcast_to(vector, (shape[0], shape[1], shape[2], ops.shape(vector)[-1]))

    def compute_output_shape(self, input_shapes):
        vector, features = input_shapes
        return (features[0], features[1], features[2], vector[-1])
