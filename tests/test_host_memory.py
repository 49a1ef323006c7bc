"""host_memory: with freed memory kept, XLA's per-execution temp buffer stops page-faulting.

Each case runs in a fresh process (the settings are process-wide and must precede JAX's
backend): a jitted function whose 64 MB intermediate lives in XLA's temp buffer is called
a few times and the minor page faults per call are counted with getrusage.
"""

import json
import os
import subprocess
import sys

import pytest

from posemachine import host_memory

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

SCRIPT = r"""
import json, resource, sys
from posemachine import host_memory
case = sys.argv[1]
kept = host_memory.keep_freed_memory() if case != "system" else False
import jax, jax.numpy as jnp
line = host_memory.after_backend_start("gpu" if case == "restored" else jax.default_backend())
f = jax.jit(lambda x, w, v: ((x @ w) @ v).sum())  # x @ w: (8192, 2048) f32, 64 MB of temp
x, w, v = jnp.ones((8192, 256)), jnp.ones((256, 2048)), jnp.ones((2048, 8))
f(x, w, v).block_until_ready(); f(x, w, v).block_until_ready()
r0 = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
for _ in range(5):
  f(x, w, v).block_until_ready()
faults = (resource.getrusage(resource.RUSAGE_SELF).ru_minflt - r0) / 5
print(json.dumps({"kept": kept, "active": host_memory.active(), "faults": faults, "line": line}))
"""


def _run(case, env_mode=None):
  env = dict(os.environ, JAX_PLATFORMS="cpu",
             PYTHONPATH=REPO + os.pathsep + os.environ.get("PYTHONPATH", ""))
  env.pop("JAX_DISABLE_MOST_OPTIMIZATIONS", None)
  env.pop(host_memory.ENV, None)
  if env_mode is not None:
    env[host_memory.ENV] = env_mode
  r = subprocess.run([sys.executable, "-c", SCRIPT, case], env=env, capture_output=True,
                     text=True, timeout=300)
  assert r.returncode == 0, r.stderr[-3000:]
  return json.loads(r.stdout.strip().splitlines()[-1])


@pytest.mark.skipif(host_memory._mallopt() is None, reason="needs glibc's mallopt")  # pylint: disable=protected-access
def test_kept_memory_stops_the_per_call_page_faults():
  system, kept = _run("system"), _run("keep")
  assert not system["kept"] and kept["kept"] and kept["active"]
  # 64 MB of fresh pages per call by default: 16,384 4-KiB pages (fewer if huge pages).
  if system["faults"] <= 4000:  # jaxlib >= 0.12's CPU runtime: ~2,000, nothing to save.
    pytest.skip(f"this jaxlib does not page-fault its temp buffer per call: {system}")
  # (jaxlib 0.11.2: 0-8,864 kept vs ~20k, a ratio up to 0.43 in 7 runs; 0.10.2: about 1.)
  assert kept["faults"] < 0.5 * system["faults"], (kept, system)
  assert "kept for reuse" in kept["line"]


@pytest.mark.skipif(host_memory._mallopt() is None, reason="needs glibc's mallopt")  # pylint: disable=protected-access
def test_accelerator_backend_restores_the_defaults_and_env_turns_it_off():
  system, restored = _run("system"), _run("restored")
  assert restored["kept"] and not restored["active"] and "gpu backend" in restored["line"]
  assert restored["faults"] > 0.5 * system["faults"], (restored, system)
  off = _run("keep", env_mode="system")
  assert not off["kept"] and off["faults"] > 0.5 * system["faults"], (off, system)


def test_mode_reads_the_environment(monkeypatch):
  monkeypatch.delenv(host_memory.ENV, raising=False)
  assert host_memory.mode() == "keep"
  monkeypatch.setenv(host_memory.ENV, " System ")
  assert host_memory.mode() == "system"
  monkeypatch.setenv(host_memory.ENV, "never")
  with pytest.raises(ValueError, match="POSEMACHINE_HOST_MALLOC='never': expected one of keep"):
    host_memory.mode()


def test_accelerator_platforms_keep_the_glibc_defaults(monkeypatch):
  """Decided before JAX starts: these cases return before any mallopt call."""
  monkeypatch.delenv(host_memory.ENV, raising=False)
  for platforms in ("cuda", "tpu,cpu", "rocm"):
    monkeypatch.setenv("JAX_PLATFORMS", platforms)
    assert not host_memory.cpu_backend_expected()
    assert not host_memory.keep_freed_memory() and not host_memory.active()
  monkeypatch.setenv("JAX_PLATFORMS", "cpu,cuda")
  assert host_memory.cpu_backend_expected()
  # JAX_PLATFORMS unset: an installed PJRT plugin or libtpu may take the backend.
  monkeypatch.delenv("JAX_PLATFORMS")
  monkeypatch.setattr(host_memory.importlib.metadata, "entry_points",
                      lambda group: ["jax_cuda12_plugin"] if group == "jax_plugins" else [])
  assert not host_memory.cpu_backend_expected()
  assert not host_memory.keep_freed_memory() and not host_memory.active()
  monkeypatch.setattr(host_memory.importlib.metadata, "entry_points", lambda group: [])
  monkeypatch.setattr(host_memory.importlib.util, "find_spec",
                      lambda name: object() if name == "libtpu" else None)
  assert not host_memory.cpu_backend_expected()
  monkeypatch.setattr(host_memory.importlib.util, "find_spec", lambda name: None)
  assert host_memory.cpu_backend_expected()
