"""Datasets for compiling, verifying and evaluating: images as float32 [N, C, H, W] in [0, 1].

Stage: input data (no graph). Specs understood by :func:`load_dataset` (and by ``--data`` /
``--calib`` on the command lines):

    digits          scikit-learn's bundled 8x8 digits (offline), values 0..16 scaled by 1/16,
                    shape (1, 8, 8). FIXED split: train_test_split(test_size=0.2,
                    random_state=0, stratify=y) -> 1437 train / 360 test images.
    npz:FILE        a NumPy .npz with keys ``x`` and ``y`` (or ``x_train``/``y_train`` and
                    ``x_test``/``y_test``). ``x``: uint8 0..255 (scaled by 1/255) or float in
                    [0, 1]; [N, F] -> [N, 1, 1, F], [N, H, W] -> [N, 1, H, W], [N, C, H, W] as is.
                    Loaded with allow_pickle=False.
    mnist:DIR       the four MNIST IDX files (train-images-idx3-ubyte, train-labels-idx1-ubyte,
                    t10k-images-idx3-ubyte, t10k-labels-idx1-ubyte, optionally .gz) in DIR (or
                    DIR/raw, DIR/MNIST/raw as torchvision lays them out); magic numbers checked.
    cifar10:DIR     the CIFAR-10 *binary* version: data_batch_1..5.bin and test_batch.bin in DIR
                    (or DIR/cifar-10-batches-bin); 3073-byte records (label, R, G, B planes).

Splits: 'train', 'test' or 'all' (train followed by test). A .npz with only ``x``/``y`` returns
the same arrays for every split. ``limit`` keeps the first ``limit`` samples of the split.

Event data: :func:`synthetic_events` makes a DVS-like binary event set whose classes differ only by
motion direction, :func:`binarize_events` turns an image set into Bernoulli event frames; both
return an :class:`EventDataset` with x uint8 {0, 1} of shape [N, T, C, H, W].

Every failure raises :class:`compiler.errors.DatasetError` naming the file, what was expected,
what was found and a hint.
"""

from __future__ import annotations

import gzip
import math
import os
import stat
import zipfile
import zlib
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from compiler.errors import DatasetError

SPLITS = ("train", "test", "all")
SPEC_HINT = "use 'digits', 'npz:FILE.npz', 'mnist:DIR' or 'cifar10:DIR'"

IDX_IMAGES_MAGIC = 0x00000803          # ubyte, 3 dims
IDX_LABELS_MAGIC = 0x00000801          # ubyte, 1 dim
CIFAR_RECORD = 1 + 3 * 32 * 32         # label byte + R, G, B planes
CIFAR_TRAIN = tuple(f"data_batch_{i}.bin" for i in range(1, 6))
CIFAR_TEST = ("test_batch.bin",)
#: The most bytes one dataset file (or one decompressed .gz / .npz member) may hold; checked
#: before reading or allocating, so a header declaring a huge array cannot exhaust memory.
MAX_DATA_BYTES = 1 << 32


@dataclass(frozen=True, eq=False)
class Dataset:
    """Labelled images: ``x`` float32 [N, C, H, W] in [0, 1], ``y`` int64 [N]."""

    x: np.ndarray
    y: np.ndarray
    name: str
    classes: int

    def __len__(self) -> int:
        return int(self.x.shape[0])

    @property
    def shape(self) -> tuple[int, ...]:
        """Shape of one sample (C, H, W)."""
        return tuple(int(s) for s in self.x.shape[1:])


@dataclass(frozen=True, eq=False)
class EventDataset:
    """Labelled binary event frames: ``x`` uint8 {0, 1} [N, T, C, H, W], ``y`` int64 [N]."""

    x: np.ndarray
    y: np.ndarray
    name: str
    classes: int

    def __len__(self) -> int:
        return int(self.x.shape[0])

    @property
    def timesteps(self) -> int:
        return int(self.x.shape[1])

    @property
    def shape(self) -> tuple[int, ...]:
        """Shape of one frame (C, H, W)."""
        return tuple(int(s) for s in self.x.shape[2:])


# --- public API ------------------------------------------------------------------------------
def load_dataset(spec: str, split: str = "test", limit: int | None = None, *,
                 require_labels: bool = True) -> Dataset:
    """Load a dataset by spec (see the module docstring).

    Args:
        spec: 'digits', 'npz:FILE', 'mnist:DIR' or 'cifar10:DIR'. A bare path ending in .npz
            is accepted as 'npz:PATH'.
        split: 'train', 'test' or 'all'.
        limit: keep only the first ``limit`` samples.
        require_labels: when False a .npz without ``y`` is accepted (labels become -1);
            used for calibration data.
    Returns:
        A :class:`Dataset` with x float32 [N, C, H, W] in [0, 1] and y int64 [N].
    Raises:
        DatasetError: unknown spec, missing or malformed files, values out of range.
    """
    if split not in SPLITS:
        raise DatasetError(f"dataset '{spec}': unknown split '{split}', expected one of {SPLITS}")
    if limit is not None and (int(limit) != limit or limit < 0):
        raise DatasetError(f"dataset '{spec}': limit must be a non-negative integer, got {limit}")
    kind, _, arg = str(spec).partition(":")
    if not arg and str(spec).endswith(".npz"):
        kind, arg = "npz", str(spec)
    if kind == "digits" and not arg:
        x, y, classes = _digits(split)
    elif kind == "npz" and arg:
        x, y, classes = _npz(Path(arg), split, require_labels)
    elif kind == "mnist" and arg:
        x, y, classes = _mnist(Path(arg), split, limit)
    elif kind == "cifar10" and arg:
        x, y, classes = _cifar10(Path(arg), split, limit)
    elif kind in ("mnist", "cifar10", "npz") and not arg:
        where = "FILE.npz" if kind == "npz" else "DIR"
        raise DatasetError(f"dataset '{spec}' needs a {'file' if kind == 'npz' else 'directory'}"
                           f": {kind}:{where}",
                           f"e.g. --data {kind}:{'data/mnist' if kind == 'mnist' else where}"
                           + (" (the IDX files, downloaded beforehand: snnc never downloads)"
                              if kind != "npz" else ""))
    else:
        raise DatasetError(f"unknown dataset spec '{spec}'", SPEC_HINT)
    if len(x) == 0:
        raise DatasetError(f"dataset '{spec}' ({split} split) has no samples",
                           "check the file; an empty array cannot be evaluated")
    if limit is not None:
        x, y = x[:limit], y[:limit]
    x = np.ascontiguousarray(x, dtype=np.float32)
    y = np.ascontiguousarray(y, dtype=np.int64)
    return Dataset(x=x, y=y, name=str(spec), classes=int(classes))


def calibration_arrays(spec: str, limit: int | None = None) -> np.ndarray:
    """Calibration images for ``snnc compile --calib``: float32 [N, C, H, W] in [0, 1].

    ``spec`` is 'digits' (the *train* split, never the test images), a .npz FILE (labels not
    needed; its train part when it has one) or any other :func:`load_dataset` spec (train split).
    """
    s = str(spec)
    if s.endswith(".npz") and not s.startswith("npz:"):
        s = f"npz:{s}"
    return load_dataset(s, split="train", limit=limit, require_labels=False).x


def synthetic_events(n: int, T: int, shape: tuple[int, int, int] = (2, 16, 16), classes: int = 4,
                     seed: int = 0, noise: float = 0.01) -> EventDataset:
    """A DVS-like event set: a bar sweeping across the field in one of ``classes`` directions.

    Class k moves the bar in direction k of (right, left, down, up, and the four diagonals);
    the bar is perpendicular to its motion, with a random start offset, width 1..2 and speed
    1..2 pixels per step. With 2 channels, channel 0 holds ON events (the leading edge) and
    channel 1 OFF events (the trailing edge); with 1 channel both land in channel 0. Noise
    events fire independently with probability ``noise`` per pixel and step. Labels are
    balanced (``arange(n) % classes``, shuffled). Deterministic for a given seed.

    Returns:
        EventDataset with x uint8 {0, 1} [n, T, C, H, W] and y int64 [n].
    """
    C, H, W = (int(s) for s in shape)
    if not 1 <= classes <= 8:
        raise DatasetError(f"synthetic_events: classes must be 1..8 (motion directions), "
                           f"got {classes}")
    if C not in (1, 2) or H < 4 or W < 4 or n < 0 or T < 1:
        raise DatasetError(f"synthetic_events: need n >= 0, T >= 1, shape (1|2, >=4, >=4); got "
                           f"n={n}, T={T}, shape={tuple(shape)}")
    dirs = [(0, 1), (0, -1), (1, 0), (-1, 0), (1, 1), (-1, -1), (1, -1), (-1, 1)][:classes]
    rng = np.random.default_rng(seed)
    y = rng.permutation(np.arange(n) % classes).astype(np.int64)
    x = np.zeros((n, T, C, H, W), np.uint8)
    rr, cc = np.meshgrid(np.arange(H), np.arange(W), indexing="ij")
    for i in range(n):
        dy, dx = dirs[y[i]]
        # position of every pixel along the motion axis, 0 at the starting edge
        proj = dy * rr + dx * cc
        proj = proj - proj.min()
        width = int(rng.integers(1, 3))
        speed = int(rng.integers(1, 3))
        start = int(rng.integers(-2, 3))
        prev = np.zeros((H, W), bool)
        for t in range(T):
            pos = start + speed * t
            bar = (proj >= pos) & (proj < pos + width)
            on, off = bar & ~prev, prev & ~bar
            x[i, t, 0] |= on
            x[i, t, C - 1] |= off
            prev = bar
    if noise > 0:
        x |= (rng.random(x.shape) < noise).astype(np.uint8)
    return EventDataset(x=x, y=y, name="synthetic_events", classes=int(classes))


def binarize_events(dataset: Dataset, T: int, seed: int = 0) -> EventDataset:
    """Bernoulli event frames from an image set: pixel fires at step t with probability x.

    Returns:
        EventDataset with x uint8 {0, 1} [N, T, C, H, W] (same labels and class count).
    """
    if T < 1:
        raise DatasetError(f"binarize_events: T must be >= 1, got {T}")
    x = np.asarray(dataset.x, dtype=np.float32)
    if x.ndim != 4:
        raise DatasetError(f"binarize_events: expected images [N, C, H, W], got shape {x.shape}")
    rng = np.random.default_rng(seed)
    ev = (rng.random((x.shape[0], T) + x.shape[1:], dtype=np.float32) < x[:, None]).astype(np.uint8)
    return EventDataset(x=ev, y=np.asarray(dataset.y, np.int64).copy(),
                        name=f"{dataset.name}+bernoulli(T={T})", classes=dataset.classes)


# --- digits ----------------------------------------------------------------------------------
def _digits(split: str):
    from sklearn.datasets import load_digits
    from sklearn.model_selection import train_test_split

    d = load_digits()
    x = (d.images.astype(np.float32) / 16.0)[:, None]
    y = d.target.astype(np.int64)
    if split == "all":
        return x, y, 10
    idx_tr, idx_te = train_test_split(np.arange(len(y)), test_size=0.2, random_state=0,
                                      stratify=y)
    idx = idx_tr if split == "train" else idx_te
    return x[idx], y[idx], 10


# --- npz -------------------------------------------------------------------------------------
def _normalise_images(x: np.ndarray, where: str) -> np.ndarray:
    if x.ndim == 2:
        x = x[:, None, None, :]
    elif x.ndim == 3:
        x = x[:, None]
    elif x.ndim != 4:
        raise DatasetError(f"{where}: x has shape {x.shape}, expected [N, F], [N, H, W] or "
                           f"[N, C, H, W]", "store images channel-first (N, C, H, W)")
    if x.dtype == np.bool_:
        return x.astype(np.float32)
    if x.dtype.kind in "iu":
        if x.size and (x.min() < 0 or x.max() > 255):
            raise DatasetError(f"{where}: integer x spans [{x.min()}, {x.max()}], expected "
                               "0..255", "store uint8 pixels or floats in [0, 1]")
        return x.astype(np.float32) / 255.0
    if x.dtype.kind == "f":
        x = x.astype(np.float32)
        if x.size and not np.all(np.isfinite(x)):
            raise DatasetError(f"{where}: x contains NaN or infinity")
        if x.size and (x.min() < 0.0 or x.max() > 1.0):
            raise DatasetError(f"{where}: float x spans [{x.min():.4g}, {x.max():.4g}], "
                               "expected [0, 1]", "scale the images to [0, 1] (e.g. x / 255)")
        return x
    raise DatasetError(f"{where}: x has dtype {x.dtype}, expected uint8 or float")


def _labels(y: np.ndarray, n: int, where: str) -> np.ndarray:
    y = np.asarray(y)
    if y.ndim == 2 and y.shape[1] == 1:
        y = y[:, 0]
    if y.ndim != 1 or y.shape[0] != n:
        raise DatasetError(f"{where}: y has shape {y.shape}, expected ({n},) to match x",
                           "store one integer class label per image")
    if y.dtype.kind not in "iu":
        if y.dtype.kind == "f" and y.size and np.all(y == np.round(y)):
            y = y.astype(np.int64)
        else:
            raise DatasetError(f"{where}: y has dtype {y.dtype}, expected integer labels")
    if y.size and y.min() < 0:
        raise DatasetError(f"{where}: labels must be >= 0, found {y.min()}")
    return y.astype(np.int64)


def _npz(path: Path, split: str, require_labels: bool):
    where = str(path)
    if not path.is_file():
        raise DatasetError(f"dataset file {where} not found", "check the path after 'npz:'")
    try:
        _check_npz_members(path)
        with np.load(path, allow_pickle=False) as f:
            keys = set(f.files)
            if {"x_train", "x_test"} <= keys:
                parts = {"train": ("x_train", "y_train"), "test": ("x_test", "y_test")}
                names = [parts[s] for s in (("train", "test") if split == "all" else (split,))]
            elif "x" in keys:
                names = [("x", "y")]
            else:
                raise DatasetError(f"{where}: no array 'x' (keys: {sorted(keys)})",
                                   "save with np.savez(path, x=images, y=labels)")
            xs, ys = [], []
            for kx, ky in names:
                x = _normalise_images(np.asarray(f[kx]), f"{where}[{kx}]")
                if ky in keys:
                    y = _labels(f[ky], x.shape[0], f"{where}[{ky}]")
                elif require_labels:
                    raise DatasetError(f"{where}: no array '{ky}' (keys: {sorted(keys)})",
                                       "save with np.savez(path, x=images, y=labels)")
                else:
                    y = np.full(x.shape[0], -1, np.int64)
                xs.append(x)
                ys.append(y)
            classes = int(f["classes"]) if "classes" in keys else None
    except DatasetError:
        raise
    except (zipfile.BadZipFile, OSError, EOFError) as e:
        raise DatasetError(f"{where}: not a readable .npz file ({e})",
                           "create it with numpy.savez / savez_compressed") from e
    except ValueError as e:  # object arrays (pickles) or corrupt members
        raise DatasetError(f"{where}: cannot read array ({e})",
                           "store plain numeric arrays (no object dtype; pickles are refused)"
                           ) from e
    if len({x.shape[1:] for x in xs}) != 1:
        raise DatasetError(f"{where}: train and test images have different shapes "
                           f"{[x.shape[1:] for x in xs]}")
    x, y = np.concatenate(xs), np.concatenate(ys)
    if classes is None:
        classes = int(y.max()) + 1 if y.size and y.max() >= 0 else 0
    return x, y, classes


def _check_npz_members(path: Path) -> None:
    """Read each .npy member's header (not its data): the shape it declares must match the
    member's size in the zip directory and stay within MAX_DATA_BYTES, before numpy allocates
    an array of that shape."""
    where = str(path)
    if path.stat().st_size == 0:
        raise DatasetError(f"{where}: the file is empty", "create it with numpy.savez")
    with zipfile.ZipFile(path) as z:
        total = 0
        for info in z.infolist():
            if not info.filename.endswith(".npy"):
                continue
            name = f"{where}[{info.filename[:-4]}]"
            if info.file_size > MAX_DATA_BYTES:
                raise DatasetError(f"{name}: {info.file_size} bytes uncompressed, more than "
                                   f"{MAX_DATA_BYTES}")
            with z.open(info) as m:
                try:
                    version = np.lib.format.read_magic(m)
                    if version == (1, 0):
                        shape, _, dtype = np.lib.format.read_array_header_1_0(m)
                    else:
                        shape, _, dtype = np.lib.format.read_array_header_2_0(m)
                except ValueError as e:
                    raise DatasetError(f"{name}: not a .npy array ({e})") from e
                head = m.tell()
            nbytes = math.prod(shape) * dtype.itemsize
            if dtype.hasobject:
                raise DatasetError(f"{name}: object arrays (pickles) are refused",
                                   "store plain numeric arrays (pickles are never loaded)")
            if head + nbytes != info.file_size:
                raise DatasetError(f"{name}: header declares shape {shape} of {dtype} "
                                   f"({nbytes} bytes) but the member holds "
                                   f"{info.file_size - head} bytes",
                                   "the file is corrupt or crafted; save it again with np.savez")
            total += nbytes
        if total > MAX_DATA_BYTES:
            raise DatasetError(f"{where}: arrays of {total} bytes in all, more than "
                               f"{MAX_DATA_BYTES}")


def check_labels(y: np.ndarray, n_classes: int, data: str, model: str) -> None:
    """Refuse labels outside 0..n_classes-1 of the model (accuracy would silently be 0)."""
    y = np.asarray(y)
    if y.size and (y.min() < 0 or y.max() >= n_classes):
        bad = int(y[(y < 0) | (y >= n_classes)][0])
        raise DatasetError(f"data '{data}' has label {bad}, but {model} has {n_classes} output "
                           f"classes (0..{n_classes - 1})",
                           "run the model on the dataset it was trained for")


# --- MNIST IDX -------------------------------------------------------------------------------
def _find(root: Path, names: list[str], subdirs: tuple[str, ...], what: str) -> Path:
    if not root.is_dir():
        raise DatasetError(f"{what}: directory {root} not found", "check the path after ':'")
    for sub in subdirs:
        for name in names:
            p = root / sub / name
            if p.is_file():
                return p
    raise DatasetError(f"{what}: none of {names} found in {root} (or {', '.join(subdirs[1:])})",
                       "download the files and pass the folder that contains them")


def _read_bytes(path: Path) -> bytes:
    """The file's (decompressed) bytes, never more than MAX_DATA_BYTES."""
    try:
        if path.suffix == ".gz":
            with gzip.open(path, "rb") as f:
                data = f.read(MAX_DATA_BYTES + 1)
        else:
            with open(path, "rb") as f:
                if not stat.S_ISREG(os.fstat(f.fileno()).st_mode):
                    raise DatasetError(f"{path}: not a regular file")
                data = f.read(MAX_DATA_BYTES + 1)
        if len(data) > MAX_DATA_BYTES:
            raise DatasetError(f"{path}: more than {MAX_DATA_BYTES} bytes (decompressed)",
                               "is this the right file? dataset files are at most a few GB")
        return data
    except (OSError, EOFError, zlib.error) as e:
        raise DatasetError(f"{path}: cannot read ({e})",
                           "re-download the file (a truncated .gz is a common cause)") from e


def _idx(path: Path, magic: int, ndim: int) -> np.ndarray:
    data = _read_bytes(path)
    head = 4 + 4 * ndim
    if len(data) < head:
        raise DatasetError(f"{path}: {len(data)} bytes, too short for an IDX header "
                           f"({head} bytes)", "re-download the file")
    got = int.from_bytes(data[:4], "big")
    if got != magic:
        raise DatasetError(f"{path}: IDX magic 0x{got:08x}, expected 0x{magic:08x}",
                           "is this the right file (images vs labels), or still compressed?")
    dims = tuple(int(d) for d in np.frombuffer(data, ">u4", ndim, 4))
    need = head + math.prod(dims)  # exact: dims up to 2**32 each must not wrap
    if len(data) != need:
        raise DatasetError(f"{path}: {len(data)} bytes, expected {need} for dims {dims}",
                           "the file is truncated or corrupt; re-download it")
    return np.frombuffer(data, np.uint8, offset=head).reshape(dims)


def _idx_names(prefix: str, kind: str, idx: str) -> list[str]:
    base = [f"{prefix}-{kind}-{idx}-ubyte", f"{prefix}-{kind}.{idx}-ubyte"]
    return base + [b + ".gz" for b in base]


def _mnist(root: Path, split: str, limit: int | None):
    subdirs = ("", "raw", "MNIST/raw")
    parts = {"train": "train", "test": "t10k"}
    xs, ys = [], []
    for s in (("train", "test") if split == "all" else (split,)):
        fi = _find(root, _idx_names(parts[s], "images", "idx3"), subdirs, f"mnist:{root}")
        fl = _find(root, _idx_names(parts[s], "labels", "idx1"), subdirs, f"mnist:{root}")
        x = _idx(fi, IDX_IMAGES_MAGIC, 3)
        y = _idx(fl, IDX_LABELS_MAGIC, 1)
        if x.shape[0] != y.shape[0]:
            raise DatasetError(f"{fi.name} has {x.shape[0]} images but {fl.name} has "
                               f"{y.shape[0]} labels", "use matching image and label files")
        if y.size and y.max() > 9:
            raise DatasetError(f"{fl}: label {int(y.max())} > 9, expected digits 0..9")
        xs.append(x)
        ys.append(y)
    x, y = np.concatenate(xs), np.concatenate(ys)
    if limit is not None:
        x, y = x[:limit], y[:limit]
    return x[:, None].astype(np.float32) / 255.0, y.astype(np.int64), 10


# --- CIFAR-10 binary -------------------------------------------------------------------------
def _cifar10(root: Path, split: str, limit: int | None):
    subdirs = ("", "cifar-10-batches-bin")
    files = {"train": CIFAR_TRAIN, "test": CIFAR_TEST}
    recs = []
    for s in (("train", "test") if split == "all" else (split,)):
        for name in files[s]:
            p = _find(root, [name], subdirs, f"cifar10:{root}")
            data = _read_bytes(p)
            if len(data) == 0 or len(data) % CIFAR_RECORD:
                raise DatasetError(f"{p}: {len(data)} bytes is not a multiple of the "
                                   f"{CIFAR_RECORD}-byte record", "use the CIFAR-10 *binary* "
                                   "version (cifar-10-binary.tar.gz), not the Python pickles")
            r = np.frombuffer(data, np.uint8).reshape(-1, CIFAR_RECORD)
            if r[:, 0].max() > 9:
                raise DatasetError(f"{p}: label {int(r[:, 0].max())} > 9, expected 0..9",
                                   "is this a CIFAR-100 file? only CIFAR-10 is supported")
            recs.append(r)
            if limit is not None and sum(len(a) for a in recs) >= limit:
                break
        if limit is not None and sum(len(a) for a in recs) >= limit:
            break
    r = np.concatenate(recs)
    if limit is not None:
        r = r[:limit]
    x = r[:, 1:].reshape(-1, 3, 32, 32).astype(np.float32) / 255.0
    return x, r[:, 0].astype(np.int64), 10
