"""Host memory reuse for XLA's CPU runtime: glibc malloc settings for the command-line tools.

XLA's CPU runtime allocates each execution's temporary buffer (about 164 MB for the
paper-sized lifter's train step at batch 64 x 16 frames, gigabytes at 1024 x 16) with malloc
from its worker threads. glibc serves an allocation that large with a fresh mmap and unmaps
it on free, so every 4 KiB page faults and is zeroed by the kernel again on every step:
about 40,000 faults and 80 ms of kernel time per 64 x 16 step on the development CPU,
about 600,000 faults and 1.2 s per 1024 x 16 step.

`keep_freed_memory()` makes glibc serve all threads from one arena, never mmap and never
trim the heap, so the buffer freed after one step is the next step's buffer: about 5,000
and 300 faults per step. The cost: the process keeps its peak heap for reuse instead of
returning it to the system. It must run before JAX starts its backend (a worker thread
keeps the malloc arena it took on its first allocation; afterwards it has no effect).

posemachine's command-line entry points call it first; importing posemachine changes
nothing. POSEMACHINE_HOST_MALLOC=system leaves glibc's defaults. It also leaves them where
the backend may be an accelerator (device memory is not malloc): $JAX_PLATFORMS names
another platform first, or, with $JAX_PLATFORMS unset, a JAX PJRT plugin (CUDA, ROCm, ...)
or libtpu is installed, found the way JAX discovers them. `after_backend_start()` restores
mmap and trimming should the backend still turn out not to be the CPU.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import importlib.metadata
import importlib.util
import os

ENV = "POSEMACHINE_HOST_MALLOC"
MODES = ("keep", "system")

# glibc's mallopt parameters (malloc.h) and its defaults for restore_defaults().
_M_TRIM_THRESHOLD, _M_MMAP_MAX, _M_ARENA_MAX = -1, -4, -8
_DEFAULT_TRIM_THRESHOLD, _DEFAULT_MMAP_MAX = 128 * 1024, 65536

_state = {"kept": False}


def mode() -> str:
  """The requested mode from $POSEMACHINE_HOST_MALLOC: 'keep' (default) or 'system'."""
  value = os.environ.get(ENV, "keep").strip().lower() or "keep"
  if value not in MODES:
    raise ValueError(f"{ENV}={os.environ[ENV]!r}: expected one of {', '.join(MODES)}")
  return value


def _mallopt():
  """glibc's mallopt, or None (another C library, or not Linux)."""
  try:
    libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
    fn = libc.mallopt
  except (OSError, AttributeError):
    return None
  fn.argtypes, fn.restype = (ctypes.c_int, ctypes.c_int), ctypes.c_int
  return fn


def cpu_backend_expected() -> bool:
  """Whether JAX will run on the CPU, judged before its backend starts (see above)."""
  platforms = os.environ.get("JAX_PLATFORMS", "").strip()
  if platforms:
    return platforms.split(",")[0].strip().lower() == "cpu"
  plugins = importlib.metadata.entry_points(group="jax_plugins")
  return not plugins and not any(importlib.util.find_spec(name) is not None
                                 for name in ("jax_plugins", "libtpu"))


def keep_freed_memory() -> bool:
  """Applies the settings above unless POSEMACHINE_HOST_MALLOC=system or the backend may be
  an accelerator; returns whether they are in force (False also without glibc)."""
  if mode() == "system" or not cpu_backend_expected():
    return False
  mallopt = _mallopt()
  if mallopt is None:
    return False
  # M_TRIM_THRESHOLD = -1 turns trimming off (mallopt(3)).
  ok = all(mallopt(param, value) == 1 for param, value in
           ((_M_ARENA_MAX, 1), (_M_MMAP_MAX, 0), (_M_TRIM_THRESHOLD, -1)))
  _state["kept"] = ok
  return ok


def restore_defaults() -> None:
  """mmap for large blocks and heap trimming as glibc's defaults (the arena limit stays)."""
  mallopt = _mallopt()
  if mallopt is not None and _state["kept"]:
    mallopt(_M_MMAP_MAX, _DEFAULT_MMAP_MAX)
    mallopt(_M_TRIM_THRESHOLD, _DEFAULT_TRIM_THRESHOLD)
  _state["kept"] = False


def after_backend_start(backend: str) -> str:
  """Call once the backend runs; on GPU/TPU undoes keep_freed_memory. Returns a log line."""
  if not _state["kept"]:
    return "host malloc: glibc defaults"
  if backend != "cpu":
    restore_defaults()
    return f"host malloc: glibc defaults ({backend} backend)"
  return "host malloc: freed memory kept for reuse (POSEMACHINE_HOST_MALLOC=system to turn off)"


def active() -> bool:
  return _state["kept"]
