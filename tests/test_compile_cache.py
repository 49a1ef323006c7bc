"""The persistent compilation cache: on by default in main's helper, off with an empty path."""

import os
import subprocess
import sys

from posemachine import compile_cache

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def test_default_dir_and_off(monkeypatch, tmp_path):
  monkeypatch.setenv(compile_cache.ENV, str(tmp_path / "c"))
  assert compile_cache.default_dir() == str(tmp_path / "c")
  monkeypatch.delenv(compile_cache.ENV)
  assert compile_cache.default_dir().endswith(os.path.join(".cache", "posemachine",
                                                           "jax_compilation_cache"))
  assert compile_cache.enable("") is None and compile_cache.enable(None) is None


def test_enable_writes_compiled_programs(tmp_path):
  code = ("import sys, jax, jax.numpy as jnp\n"
          "from posemachine import compile_cache\n"
          "compile_cache.enable(sys.argv[1], min_compile_time_s=0)\n"
          "jax.jit(lambda x: jnp.sin(x) @ x)(jnp.ones((8, 8))).block_until_ready()\n")
  cache = tmp_path / "cache"
  env = dict(os.environ, JAX_PLATFORMS="cpu", PYTHONPATH=REPO)
  r = subprocess.run([sys.executable, "-c", code, str(cache)], env=env, capture_output=True,
                     text=True, timeout=120)
  assert r.returncode == 0, r.stderr[-2000:]
  assert cache.is_dir() and any(cache.iterdir())
