"""Safe reading of `.npz` files whose members hold pickled dicts/lists of numeric arrays.

The VideoPose3D data files (`data_3d_h36m.npz`, `data_2d_h36m_<src>.npz`, the HumanEva-I
ones) store nested dicts as pickled NumPy object arrays. `np.load(allow_pickle=True)`
would run whatever code a pickle names. Here the zip members are read directly: numeric
`.npy` members go through `np.lib.format.read_array(allow_pickle=False)`; object members
are unpickled by `RestrictedUnpickler`, which resolves only the few NumPy callables that
rebuild arrays, dtypes and scalars, and refuses every other global (os.system, eval,
builtins, ...) before anything runs. Dicts, lists, tuples, strings and numbers need no
globals. `check_pose_dict` then checks the exact nesting the readers expect.
"""

from __future__ import annotations

import ast
import os
import pickle
import struct
import zipfile

import numpy as np

from posemachine.errors import DataError


def _numpy_attr(modules, name):
  """The first of modules.<name> that exists (NumPy 2 moved numpy.core to numpy._core)."""
  for mod in modules:
    try:
      obj = __import__(mod, fromlist=[name])
      return getattr(obj, name)
    except (ImportError, AttributeError):
      continue
  return None


_MULTIARRAY = ("numpy._core.multiarray", "numpy.core.multiarray")
_NUMERIC = ("numpy._core.numeric", "numpy.core.numeric")
_RECONSTRUCT = _numpy_attr(_MULTIARRAY, "_reconstruct")
_SCALAR = _numpy_attr(_MULTIARRAY, "scalar")
_FROMBUFFER = _numpy_attr(_NUMERIC, "_frombuffer")


def _reconstruct(subtype, shape, dtype):
  """`ndarray.__reduce__`'s constructor, limited to plain ndarrays."""
  if subtype is not np.ndarray:
    raise pickle.UnpicklingError(f"array subtype {subtype!r} is not numpy.ndarray")
  return _RECONSTRUCT(subtype, shape, dtype)


def _latin1_encode(text, encoding="latin1"):
  """`_codecs.encode` as protocol-2 pickles use it for bytes; only latin-1."""
  if not isinstance(text, str) or encoding not in ("latin1", "latin-1"):
    raise pickle.UnpicklingError("_codecs.encode is allowed only as str -> latin-1 bytes")
  return text.encode("latin-1")


def _frombuffer(buf, dtype, shape, order):
  if dtype.hasobject:
    raise pickle.UnpicklingError("object dtype in a pickled buffer")
  return _FROMBUFFER(buf, dtype, shape, order)


# (module, name) -> the object handed to the unpickler. Nothing else resolves.
_ALLOWED = {
    ("numpy", "ndarray"): np.ndarray,
    ("numpy", "dtype"): np.dtype,
    ("_codecs", "encode"): _latin1_encode,
}
for _mod in _MULTIARRAY:
  _ALLOWED[(_mod, "_reconstruct")] = _reconstruct
  if _SCALAR is not None:
    _ALLOWED[(_mod, "scalar")] = _SCALAR
for _mod in _NUMERIC:
  if _FROMBUFFER is not None:
    _ALLOWED[(_mod, "_frombuffer")] = _frombuffer


class RestrictedUnpickler(pickle.Unpickler):
  """Unpickles NumPy arrays, dtypes, scalars and plain containers; refuses any other global."""

  def __init__(self, file, what: str):
    super().__init__(file)
    self._what = what

  def find_class(self, module, name):
    obj = _ALLOWED.get((module, name))
    if obj is None:
      raise DataError(
          f"{self._what}: refusing to unpickle '{module}.{name}': only NumPy arrays, dicts, "
          "lists, strings and numbers are accepted (this file may be malicious or not a "
          "pose data file).")
    return obj

  def persistent_load(self, pid):
    raise DataError(f"{self._what}: persistent ids are not accepted in pose data files.")


def _read_header(fp, what):
  """Reads an .npy header from fp. Returns (shape, fortran_order, dtype)."""
  magic = fp.read(8)
  if len(magic) < 8 or magic[:6] != b"\x93NUMPY":
    raise DataError(f"{what}: not an .npy array (bad magic {magic[:6]!r}).")
  major = magic[6]
  fmt = "<H" if major == 1 else "<I"
  raw = fp.read(struct.calcsize(fmt))
  if len(raw) != struct.calcsize(fmt):
    raise DataError(f"{what}: truncated .npy header.")
  (length,) = struct.unpack(fmt, raw)
  header = fp.read(length)
  if len(header) != length:
    raise DataError(f"{what}: truncated .npy header.")
  try:
    d = ast.literal_eval(header.decode("utf8" if major >= 3 else "latin1"))
    dtype = np.lib.format.descr_to_dtype(d["descr"])
    shape = tuple(int(s) for s in d["shape"])
    fortran = bool(d["fortran_order"])
  except Exception as e:  # pylint: disable=broad-except
    raise DataError(f"{what}: unreadable .npy header ({e}).") from None
  return shape, fortran, dtype


def _unwrap(obj):
  """A 0-d object array (how np.savez stores a dict) -> its item."""
  if isinstance(obj, np.ndarray) and obj.dtype.hasobject and obj.shape == ():
    return obj.item()
  return obj


def load_npz(path: str | os.PathLike) -> dict:
  """Reads every member of an .npz without executing pickled code.

  Returns:
    member name -> value: numeric arrays as np.ndarray; object members unpickled with
    `RestrictedUnpickler` and, when 0-d (a pickled dict/list), unwrapped to the object.
  Raises:
    DataError naming the file (and member) if it is missing, truncated or corrupt, or if a
    pickle names anything but NumPy's array-rebuilding functions.
  """
  path = os.fspath(path)
  if not os.path.isfile(path):
    raise DataError(f"{path}: file not found.")
  out = {}
  try:
    with zipfile.ZipFile(path) as zf:
      for info in zf.infolist():
        if not info.filename.endswith(".npy"):
          continue
        key = info.filename[:-4]
        what = f"{path} (member '{key}')"
        with zf.open(info) as fp:
          shape, _, dtype = _read_header(fp, what)
          if not dtype.hasobject:
            fp2 = zf.open(info)
            with fp2:
              out[key] = np.lib.format.read_array(fp2, allow_pickle=False)
            continue
          # The rest of an object member is one pickle of the whole array.
          obj = RestrictedUnpickler(fp, what).load()
        if not isinstance(obj, np.ndarray) or obj.shape != shape:
          raise DataError(f"{what}: the pickle holds {type(obj).__name__} "
                          f"{getattr(obj, 'shape', '')}, expected an object array of shape "
                          f"{shape}.")
        out[key] = _unwrap(obj)
  except DataError:
    raise
  except (zipfile.BadZipFile, EOFError, pickle.UnpicklingError, ValueError, TypeError,
          struct.error, OSError, KeyError, IndexError, AttributeError, MemoryError) as e:
    raise DataError(f"{path}: cannot read it as an .npz file (truncated or corrupt?): "
                    f"{type(e).__name__}: {e}") from None
  except Exception as e:  # pylint: disable=broad-except  (zlib.error and the like)
    raise DataError(f"{path}: cannot read it as an .npz file: {type(e).__name__}: {e}") from None
  return out


def require(members: dict, key: str, path: str, help_text: str = ""):
  """members[key], or a DataError saying the field is missing."""
  if key not in members:
    raise DataError(f"{path}: no field '{key}' (fields: {sorted(members)}); expected a "
                    f"VideoPose3D-format file.{(chr(10) + help_text) if help_text else ''}")
  return members[key]


def _check_array(a, where: str, joints: int | None, dims: tuple[int, ...]):
  if not isinstance(a, np.ndarray):
    raise DataError(f"{where}: expected a numeric array, got {type(a).__name__}.")
  if a.dtype.kind not in "fiu":
    raise DataError(f"{where}: expected a numeric array, got dtype {a.dtype}.")
  if a.ndim != 3 or a.shape[2] not in dims:
    raise DataError(f"{where}: shape {a.shape}, expected (frames, joints, "
                    f"{' or '.join(map(str, dims))}).")
  if joints is not None and a.shape[1] != joints:
    raise DataError(f"{where}: {a.shape[1]} joints (shape {a.shape}), expected {joints}.")


def check_pose_dict(obj, path: str, field: str, *, lists: bool, joints: int | None,
                    dims: tuple[int, ...]) -> dict:
  """Checks obj is exactly dict[str -> dict[str -> leaf]] and returns it.

  Args:
    obj: the unpickled field.
    lists: leaves are lists of arrays (one per camera; None allowed for a missing camera)
      when True, single arrays when False.
    joints: required joint count (axis 1), or None for any.
    dims: allowed sizes of the last axis (e.g. (3,) for 3D, (2, 3) for 2D with scores).
  Raises:
    DataError naming the file, field, subject and action at fault.
  """
  base = f"{path}: field '{field}'"
  if not isinstance(obj, dict):
    raise DataError(f"{base}: expected a dict subject -> action -> data, got "
                    f"{type(obj).__name__}.")
  for subject, actions in obj.items():
    if not isinstance(subject, str):
      raise DataError(f"{base}: subject key {subject!r} is not a string.")
    if not isinstance(actions, dict):
      raise DataError(f"{base}, subject '{subject}': expected a dict action -> data, got "
                      f"{type(actions).__name__}.")
    for action, leaf in actions.items():
      where = f"{base}, subject '{subject}', action '{action}'"
      if not isinstance(action, str):
        raise DataError(f"{base}, subject '{subject}': action key {action!r} is not a string.")
      if lists:
        if not isinstance(leaf, (list, tuple)):
          raise DataError(f"{where}: expected a list of per-camera arrays, got "
                          f"{type(leaf).__name__}.")
        for c, a in enumerate(leaf):
          if a is not None:
            _check_array(a, f"{where}, camera {c}", joints, dims)
      else:
        _check_array(leaf, where, joints, dims)
  return obj


def check_plain(obj, where: str, depth: int = 0):
  """Checks obj is plain data (dict/list/tuple/str/number/bool/None/numeric array)."""
  if depth > 8:
    raise DataError(f"{where}: nested too deeply.")
  if isinstance(obj, dict):
    for k, v in obj.items():
      if not isinstance(k, str):
        raise DataError(f"{where}: key {k!r} is not a string.")
      check_plain(v, f"{where}['{k}']", depth + 1)
  elif isinstance(obj, (list, tuple)):
    for i, v in enumerate(obj):
      check_plain(v, f"{where}[{i}]", depth + 1)
  elif isinstance(obj, np.ndarray):
    if obj.dtype.kind not in "fiub":
      raise DataError(f"{where}: array of dtype {obj.dtype}; expected numbers.")
  elif not isinstance(obj, (str, int, float, bool, np.generic, type(None))):
    raise DataError(f"{where}: unexpected {type(obj).__name__}.")
  return obj
