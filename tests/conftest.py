"""Test setup: 8 fake CPU devices (multi-device tests), fast compiles, float32."""

import os

os.environ["XLA_FLAGS"] = (os.environ.get("XLA_FLAGS", "")
                           + " --xla_force_host_platform_device_count=8").strip()
os.environ.setdefault("JAX_PLATFORMS", "cpu")
# The CLI's persistent compilation cache (compile_cache.py): one fresh folder per test
# session, shared by the subprocesses, never the user's ~/.cache.
import atexit  # pylint: disable=g-import-not-at-top
import shutil  # pylint: disable=g-import-not-at-top
import tempfile  # pylint: disable=g-import-not-at-top
if "POSEMACHINE_COMPILATION_CACHE" not in os.environ:
  _cache = tempfile.mkdtemp(prefix="posemachine-test-jax-cache-")
  os.environ["POSEMACHINE_COMPILATION_CACHE"] = _cache
  atexit.register(shutil.rmtree, _cache, ignore_errors=True)

import jax  # pylint: disable=g-import-not-at-top

# Compile time dominates these tiny models; XLA's optimisation passes are not under test.
jax.config.update("jax_disable_most_optimizations", True)
