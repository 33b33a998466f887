# %% [markdown]
# # Download a dataset of photos
#
# Alpha learns one photo; beta and the stages after it learn from thousands. This script fetches a
# public dataset into `data/`: by default **Imagenette** (fast.ai), 13,394 photos of 10 ImageNet
# classes (tench, springer, cassette player, chainsaw, church, French horn, garbage truck, gas pump,
# golf ball, parachute), 320 pixels on their shorter side: 9,469 in `train/` and 3,925 in `val/`.
# Imagenette is a subset of ImageNet: use it on ImageNet's terms (non-commercial research and
# education).
#
# Run it from the repository root: `python data/download.py` (326 MiB; a few minutes). It is safe to
# interrupt and run again: it resumes the download, and the dataset folder appears only once complete.
# Another archive works the same way:
# `python data/download.py --URL=https://example.org/photos.tgz --MD5=None --DEST=data/photos`

# %%
from colorlab import settings
from colorlab.commands import download

# %% tags=["parameters"]
# a .tgz, .tar.gz, .tar.bz2, .tar.xz or .tar; file:// works
URL = "https://s3.amazonaws.com/fast-ai-imageclas/imagenette2-320.tgz"
MD5 = "3df6f0d01a2c9592104656642f5e78a3"  # of the whole archive (as torchvision checks it); None: no check
# a folder of its own (not data/ or the repository): photos land in DEST/train and DEST/val; the download
# waits in data/.downloads
DEST = "data/imagenette2-320"
KEEP_ARCHIVE = False  # True keeps the downloaded archive in data/.downloads after unpacking (326 MiB)
OVERWRITE = False  # True replaces an earlier download in DEST, once the new one is complete; never your files
RETRIES = 3  # a dropped connection is resumed this many times before giving up (a later run resumes too)
TIMEOUT = 60.0  # seconds without data before a connection counts as dropped

# %%
settings.apply(globals())  # --NAME=value from the terminal
settings.check(RETRIES >= 0, f"RETRIES must be 0 or more, got {RETRIES}")
settings.check(TIMEOUT > 0, f"TIMEOUT must be a positive number of seconds, got {TIMEOUT}")
download.fetch(URL, DEST, MD5, keep_archive=KEEP_ARCHIVE, overwrite=OVERWRITE, retries=RETRIES,
               timeout=TIMEOUT)
