"""JAX's persistent compilation cache: compiled steps are reused across processes.

The first run compiles and writes the XLA executables under the cache directory; later
runs with the same program, shapes, JAX version and device load them instead of compiling
(the default train step here: about 6-10 s cold, about 1 s warm; see README,
"Performance"). Default location: $POSEMACHINE_COMPILATION_CACHE, else
~/.cache/posemachine/jax_compilation_cache. `python -m posemachine.main
--compilation_cache=` (empty) turns it off. Safe to delete at any time.
"""

from __future__ import annotations

import os

import jax

ENV = "POSEMACHINE_COMPILATION_CACHE"


def default_dir() -> str:
  return os.environ.get(ENV) or os.path.join(
      os.path.expanduser("~"), ".cache", "posemachine", "jax_compilation_cache")


def enable(path: str | None, min_compile_time_s: float = 0.5) -> str | None:
  """Turns the cache on at `path` (created if missing); None or '' leaves it off.

  Call before the first compilation of the process. Programs compiling in under
  `min_compile_time_s` seconds are not written (cheaper to recompile than to load).
  Returns the directory in use, or None.
  """
  if not path:
    return None
  path = os.path.abspath(os.path.expanduser(path))
  os.makedirs(path, exist_ok=True)
  jax.config.update("jax_compilation_cache_dir", path)
  jax.config.update("jax_persistent_cache_min_compile_time_secs", min_compile_time_s)
  jax.config.update("jax_persistent_cache_min_entry_size_bytes", 0)
  return path
