"""A fixed-shape array in a raw file on disk, read and written a batch of rows at a time.

Each access maps the file (``numpy.memmap``), copies the rows it needs and unmaps again, so the pages
touched stay in the OS page cache but never accumulate in the process: peak RSS does not grow with the
number of rows. Rows are indexed by an int, a slice or a 1-D index tensor/array, like a tensor's first dim.
"""
from __future__ import annotations

import os
import shutil
from pathlib import Path

import numpy as np
import torch

from ..fileio import atomic_write

_TORCH = {np.dtype("int8"): torch.int8, np.dtype("uint8"): torch.uint8, np.dtype("int32"): torch.int32,
          np.dtype("int64"): torch.int64, np.dtype("float32"): torch.float32}


class DiskArray:
    def __init__(self, path: str | os.PathLike, shape: tuple[int, ...], dtype: str | np.dtype, create: bool = False):
        self.path = Path(path)
        self.shape = tuple(int(s) for s in shape)
        self.dtype = np.dtype(dtype)
        nbytes = int(np.prod(self.shape)) * self.dtype.itemsize
        if create:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            with open(self.path, "wb") as f:  # sparse zeros: no memory and (on most filesystems) no disk yet
                f.truncate(nbytes)
        elif not self.path.is_file() or self.path.stat().st_size != nbytes:
            raise ValueError(f"{self.path}: expected a {nbytes}-byte {self.dtype} array of shape {self.shape}")

    # the description that, with the file, is the array
    def meta(self) -> dict:
        return {"file": self.path.name, "shape": list(self.shape), "dtype": self.dtype.name}

    @classmethod
    def open(cls, folder: str | os.PathLike, meta: dict) -> "DiskArray":
        return cls(Path(folder) / meta["file"], tuple(meta["shape"]), meta["dtype"])

    def __len__(self) -> int:
        return self.shape[0]

    def __repr__(self) -> str:
        return f"DiskArray({self.path}, shape={self.shape}, dtype={self.dtype.name})"

    def _map(self, mode: str) -> np.memmap:
        return np.memmap(self.path, dtype=self.dtype, mode=mode, shape=self.shape)

    @staticmethod
    def _index(index):
        if isinstance(index, torch.Tensor):
            return index.cpu().numpy()
        return index

    def __getitem__(self, index) -> torch.Tensor:
        mm = self._map("r")
        try:
            rows = np.array(mm[self._index(index)])  # a copy: the mapping is closed below
        finally:
            del mm
        return torch.from_numpy(rows) if rows.dtype in _TORCH else torch.as_tensor(rows)

    def __setitem__(self, index, value) -> None:
        if isinstance(value, torch.Tensor):
            value = value.detach().cpu().numpy()
        mm = self._map("r+")
        try:  # no msync per batch: other processes on the host see the shared pages; checkpoints fsync their copy
            mm[self._index(index)] = value
        finally:
            del mm

    def copy_to(self, path: str | os.PathLike) -> "DiskArray":
        """An atomic copy at ``path`` (streamed, so memory stays flat)."""
        path = Path(path)
        def copy(tmp: Path) -> None:
            shutil.copyfile(self.path, tmp)
            with open(tmp, "rb+") as f:
                os.fsync(f.fileno())
        atomic_write(path, copy)
        return DiskArray(path, self.shape, self.dtype)
