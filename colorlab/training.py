"""Training comforts shared by the stages: progress that stays readable over thousands of epochs."""

import time

import keras


class PrintEvery(keras.callbacks.Callback):
    """Print one line every ``every`` epochs (and at the last), instead of one progress bar per epoch."""

    def __init__(self, every, epochs):
        super().__init__()
        self.every = max(1, every)
        self.epochs = epochs
        self.start = None

    def on_train_begin(self, logs=None):
        self.start = time.perf_counter()

    def on_epoch_end(self, epoch, logs=None):
        done = epoch + 1
        if done % self.every == 0 or done == self.epochs:
            values = "  ".join(f"{name} {value:.5f}" for name, value in (logs or {}).items())
            print(f"epoch {done:>5}/{self.epochs}  {values}  ({time.perf_counter() - self.start:.0f} s)", flush=True)
