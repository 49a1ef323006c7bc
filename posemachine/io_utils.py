"""Atomic file outputs: a reader never sees a half-written file.

Each writer writes to a temporary file in the destination's directory, flushes
and fsyncs it, then renames it over the destination with `os.replace` (atomic on
POSIX and Windows within one file system). If anything fails, the temporary file
is removed and a previous version of the destination is left untouched.
"""

from __future__ import annotations

import contextlib
import json
import os
import tempfile
from collections.abc import Iterator
from typing import IO, Any

import numpy as np


def _read_umask() -> int:
  mask = os.umask(0)
  os.umask(mask)
  return mask


# New files get the permissions open() would give them (mkstemp uses 0o600).
_FILE_MODE = 0o666 & ~_read_umask()


def _fsync_dir(dirname: str) -> None:
  """Makes a rename in `dirname` durable; best effort (not on all platforms)."""
  try:
    fd = os.open(dirname, os.O_RDONLY)
  except OSError:
    return
  try:
    os.fsync(fd)
  except OSError:
    pass
  finally:
    os.close(fd)


@contextlib.contextmanager
def atomic_open(path: str | os.PathLike, mode: str = "wb",
                encoding: str | None = None) -> Iterator[IO[Any]]:
  """Opens a temporary file that replaces `path` when the block exits cleanly.

  Args:
    path: destination file; its directory must exist.
    mode: "wb" or "w" (text).
    encoding: text encoding for mode "w" (default utf-8).
  Yields:
    The open temporary file. On an exception it is deleted and `path` is left
    as it was.
  """
  if mode not in ("w", "wb"):
    raise ValueError(f"atomic_open: mode must be 'w' or 'wb', got {mode!r}.")
  path = os.fspath(path)
  dirname = os.path.dirname(os.path.abspath(path))
  fd, tmp = tempfile.mkstemp(
      dir=dirname, prefix=f".{os.path.basename(path)}.", suffix=".tmp")
  try:
    if mode == "w":
      f = os.fdopen(fd, mode, encoding=encoding or "utf-8", newline="")
    else:
      f = os.fdopen(fd, mode)
    with f:
      yield f
      f.flush()
      os.fsync(f.fileno())
    os.chmod(tmp, _FILE_MODE)
    os.replace(tmp, path)
  except BaseException:
    with contextlib.suppress(OSError):
      os.unlink(tmp)
    raise
  _fsync_dir(dirname)


def atomic_write_bytes(path: str | os.PathLike, data: bytes) -> None:
  """Atomically writes `data` (bytes-like) to `path`."""
  with atomic_open(path, "wb") as f:
    f.write(data)


def atomic_write_text(path: str | os.PathLike, text: str,
                      encoding: str = "utf-8") -> None:
  """Atomically writes the string `text` to `path`."""
  with atomic_open(path, "w", encoding=encoding) as f:
    f.write(text)


def to_jsonable(obj: Any) -> Any:
  """`json` default hook: NumPy/JAX scalars and arrays to Python values.

  Raises:
    TypeError: for any other type (as `json` expects).
  """
  if isinstance(obj, np.generic):
    return obj.item()
  if isinstance(obj, np.ndarray) or hasattr(obj, "__array__"):
    return np.asarray(obj).tolist()
  if isinstance(obj, os.PathLike):
    return os.fspath(obj)
  raise TypeError(f"Object of type {type(obj).__name__} is not JSON serialisable.")


def atomic_write_json(path: str | os.PathLike, obj: Any) -> None:
  """Atomically writes `obj` as JSON (indent=2, sorted keys, trailing newline).

  NumPy/JAX scalars and arrays are converted to Python numbers and lists.
  """
  with atomic_open(path, "w") as f:
    json.dump(obj, f, indent=2, sort_keys=True, default=to_jsonable)
    f.write("\n")


def atomic_savez(path: str | os.PathLike, /, **arrays) -> None:
  """Atomically writes `arrays` as an uncompressed .npz archive.

  Unlike `np.savez`, no ".npz" suffix is appended: the file is exactly `path`.
  """
  with atomic_open(path, "wb") as f:
    np.savez(f, **arrays)


def append_jsonl(path: str | os.PathLike, obj: Any) -> None:
  """Appends `obj` as one line of compact JSON to `path` and flushes it.

  The line is serialised first and written with a single write() on a file
  opened for appending, so a failure to serialise writes nothing and short
  lines from concurrent writers do not interleave. Keys keep their order.
  """
  line = json.dumps(obj, default=to_jsonable) + "\n"
  with open(path, "a", encoding="utf-8") as f:
    f.write(line)
    f.flush()
