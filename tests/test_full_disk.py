"""A full disk at the OS level during a checkpoint save (not patched Python writes).

Two mechanisms, each skipped where unavailable:
- a tiny tmpfs (needs CAP_SYS_ADMIN, e.g. root in a container): the workdir holds steps 2
  and 4 and has room for the logs but not for another checkpoint -> ENOSPC;
- RLIMIT_FSIZE in a subprocess running the CLI, SIGXFSZ ignored, so that writing the
  checkpoint's larger files fails with EFBIG.
Each time: an error naming the step and the cause, the complete steps 2 and 4 unchanged
(digest and bytes), and a rerun with space resumes from step 4 and ends with the
parameters of an uninterrupted run.
"""

import logging
import os
import re
import resource
import shutil
import signal
import subprocess
import sys
import types

import jax
import numpy as np
import pytest

from posemachine import checkpoints, errors, train
import tiny_config as tiny_config_lib

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
RUN = dict(log_every=1, eval_every=2, schedule="constant", checkpoint_keep=2)
COPIED = ("checkpoints", "config.json", "metrics.jsonl", "tensorboard")


def _config(num_steps):
  return tiny_config_lib.get_config(num_steps=num_steps, **RUN)


def _params(workdir):
  return tiny_config_lib.restore_state(workdir, _config(8))


def _files(workdir, steps=(2, 4)):
  """relative path -> bytes of the given checkpoint steps (each checked against its digest)."""
  root = os.path.join(workdir, "checkpoints")
  out = {}
  for s in steps:
    checkpoints._verify(types.SimpleNamespace(directory=root), s)  # pylint: disable=protected-access
    for dirpath, _, names in os.walk(os.path.join(root, str(s))):
      for n in names:
        p = os.path.join(dirpath, n)
        with open(p, "rb") as f:
          out[os.path.relpath(p, root)] = f.read()
  return out


@pytest.fixture(scope="module")
def base(tmp_path_factory):
  """(workdir with complete steps 2 and 4, params of the same run continued to step 8)."""
  root = tmp_path_factory.mktemp("disk")
  workdir, ref = str(root / "base"), str(root / "ref")
  train.train_and_evaluate(_config(4), workdir)
  assert sorted(int(n) for n in os.listdir(os.path.join(workdir, "checkpoints"))
                if n.isdigit()) == [2, 4]
  _copy(workdir, ref)
  train.train_and_evaluate(_config(8), ref)
  return workdir, _params(ref)


def _copy(src, dst):
  os.makedirs(dst, exist_ok=True)
  for n in COPIED:
    s = os.path.join(src, n)
    (shutil.copytree if os.path.isdir(s) else shutil.copy2)(s, os.path.join(dst, n))


def _resume_and_compare(workdir, reference, caplog):
  with caplog.at_level(logging.INFO):
    train.train_and_evaluate(_config(8), workdir)
  assert "Resumed from checkpoint step 4." in caplog.text
  # Only the failed write's partial files were moved aside; no complete step was corrupt.
  aside = os.path.join(workdir, "corrupt_checkpoints")
  # The failed step 6, as Orbax's temporary directory or (when the disk filled during the
  # commit, after Orbax's rename; checkpoints._write_error) as "6" itself.
  assert os.listdir(aside) and all(n.split(".")[0] == "6" for n in os.listdir(aside)), aside
  got = _params(workdir)
  assert int(got.step) == 8
  jax.tree.map(np.testing.assert_array_equal, reference.params, got.params)
  jax.tree.map(np.testing.assert_array_equal, reference.opt_state, got.opt_state)


def _used_kib(path):
  st = os.statvfs(path)
  return (st.f_blocks - st.f_bfree) * st.f_frsize // 1024


def test_tmpfs_full_during_checkpoint(base, tmp_path, caplog):
  workdir, reference = base
  mnt = str(tmp_path / "tmpfs")
  os.makedirs(mnt)
  step_kib = sum(os.path.getsize(os.path.join(d, f)) for d, _, fs in
                 os.walk(os.path.join(workdir, "checkpoints", "4")) for f in fs) // 1024
  try:
    subprocess.run(["mount", "-t", "tmpfs", "-o", "size=64m", "tmpfs", mnt], check=True,
                   capture_output=True, timeout=30)
  except (OSError, subprocess.SubprocessError) as e:
    pytest.skip(f"cannot mount a tmpfs here ({e}); test_rlimit_fsize covers the OS-level "
                "write failure")
  try:
    w = os.path.join(mnt, "w")
    _copy(workdir, w)
    before = _files(w)
    # Room for the logs of steps 5-6 but not for checkpoint 6 (about step_kib KiB).
    size = _used_kib(mnt) + step_kib // 2
    subprocess.run(["mount", "-o", f"remount,size={size}k", mnt], check=True, timeout=30)
    with pytest.raises(errors.CheckpointError) as e:
      train.train_and_evaluate(_config(8), w)
    msg = str(e.value)
    print(f"tmpfs of {size} KiB (a step: {step_kib} KiB): {msg}")
    assert "checkpoint step 6" in msg and "No space left on device" in msg, msg
    assert "The disk is full." in msg, msg
    assert "[2, 4] are unchanged" in msg and "partial files were moved" in msg, msg
    assert _files(w) == before
    assert not os.path.exists(os.path.join(w, "checkpoints", "6"))
    subprocess.run(["mount", "-o", "remount,size=64m", mnt], check=True, timeout=30)
    _resume_and_compare(w, reference, caplog)
  finally:
    subprocess.run(["umount", "-l", mnt], check=False, timeout=30)


# Sets the limit, then execs the CLI (no preexec_fn: forking a threaded JAX process to run
# Python in the child could deadlock). SIG_IGN survives exec: writes fail with EFBIG.
_LIMITED = ("import os, resource, signal, sys; signal.signal(signal.SIGXFSZ, signal.SIG_IGN); "
            "resource.setrlimit(resource.RLIMIT_FSIZE, (int(sys.argv[1]),) * 2); "
            "os.execv(sys.executable, [sys.executable, '-m', 'posemachine.main'] + sys.argv[2:])")


@pytest.mark.skipif(not hasattr(resource, "RLIMIT_FSIZE") or not hasattr(signal, "SIGXFSZ"),
                    reason="needs RLIMIT_FSIZE and SIGXFSZ (POSIX)")
def test_rlimit_fsize_during_checkpoint(base, tmp_path, caplog):
  workdir, reference = base
  w = str(tmp_path / "w")
  _copy(workdir, w)
  before = _files(w)
  # Larger than the logs and config.json, smaller than a checkpoint's array data file.
  limit = 32 * 1024
  largest = max(len(v) for v in before.values())
  assert largest > limit, largest
  env = dict(os.environ, JAX_PLATFORMS="cpu", JAX_DISABLE_MOST_OPTIMIZATIONS="1",
             XLA_FLAGS="--xla_force_host_platform_device_count=8")
  env.pop("JAX_COMPILATION_CACHE_DIR", None)  # its entries could exceed the limit.
  r = subprocess.run(
      [sys.executable, "-c", _LIMITED, str(limit), f"--config={tiny_config_lib.PATH}",
       *tiny_config_lib.overrides(num_steps=8, **RUN), f"--workdir={w}"],
      cwd=REPO, env=env, capture_output=True, text=True, timeout=300)
  err = r.stderr
  assert r.returncode == 1, err[-3000:]
  # (Orbax's pending writes may print tracebacks at exit around the message.)
  found = re.search(r"posemachine: error: (Writing checkpoint step 6 .*?the latest\.)", err)
  assert found, err[-3000:]
  last = found.group(1)
  print(f"RLIMIT_FSIZE {limit} B: exit {r.returncode}: {last}")
  assert "File too large" in last and "[2, 4] are unchanged" in last, last
  assert "file size limit (ulimit -f)" in last, last
  assert "partial files were moved" in last, last
  assert _files(w) == before
  assert not os.path.exists(os.path.join(w, "checkpoints", "6"))
  _resume_and_compare(w, reference, caplog)
