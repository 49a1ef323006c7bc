"""The launchers in launch/: valid bash, shellcheck-clean, and their dry runs' commands."""

import os
import shlex
import shutil
import subprocess

import pytest

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SCRIPTS = ["launch/local.sh", "launch/local_multiprocess.sh", "launch/tpu_pod.sh",
           "launch/slurm.sbatch", "launch/gpu_bench.sh"]


def _env(**extra):
  env = {k: v for k, v in os.environ.items()
         if k not in ("XLA_FLAGS", "PORT", "NUM_PROCESSES", "DRY_RUN", "PROJECT", "ZONE",
                      "SHAPES", "QUICK", "WHEELS", "OUT", "PYTHON")}
  return dict(env, **extra)


def _lines(args, **env):
  r = subprocess.run(["bash", *args], cwd=REPO, env=_env(**env), capture_output=True,
                     text=True, timeout=60)
  assert r.returncode == 0, r.stderr
  return [shlex.split(l) for l in r.stdout.splitlines()]


@pytest.mark.parametrize("script", SCRIPTS)
def test_bash_syntax_and_shellcheck(script):
  path = os.path.join(REPO, script)
  assert os.access(path, os.X_OK), f"{script} is not executable"
  r = subprocess.run(["bash", "-n", path], capture_output=True, text=True, timeout=30)
  assert r.returncode == 0, r.stderr
  if shutil.which("shellcheck") is None:
    pytest.skip("shellcheck is not installed")
  # -x follows `source launch/common.sh`, so the shared helpers are checked too.
  r = subprocess.run(["shellcheck", "-x", path], cwd=REPO, capture_output=True, text=True,
                     timeout=60)
  assert r.returncode == 0, r.stdout


def test_tpu_pod_dry_run():
  lines = _lines(["launch/tpu_pod.sh", "--dry-run", "--", "--config.train.batch_size=256"],
                 PROJECT="proj", ZONE="us-east5-a", TPU_NAME="pm", ACCELERATOR="v5p-32",
                 SPOT="1", WORKDIR="/mnt/nfs/run1", SHARED_FS_SETUP="sudo mount nfs:/x /mnt/nfs")
  where = ["--project=proj", "--zone=us-east5-a"]
  assert lines[0] == ["gcloud", "compute", "tpus", "tpu-vm", "create", "pm", *where,
                      "--accelerator-type=v5p-32", "--version=tpu-ubuntu2204-base", "--spot"]
  assert lines[1][0] == "tar"
  assert lines[2][:5] == ["gcloud", "compute", "tpus", "tpu-vm", "scp"]
  assert "--worker=all" in lines[2]
  setup, run = lines[3], lines[4]
  assert setup[:6] == ["gcloud", "compute", "tpus", "tpu-vm", "ssh", "pm"]
  assert "--worker=all" in setup and setup[-1].endswith("&& sudo mount nfs:/x /mnt/nfs")
  assert run[:6] == ["gcloud", "compute", "tpus", "tpu-vm", "ssh", "pm"]
  assert "--worker=all" in run
  remote = shlex.split(run[-1].removeprefix("--command="))
  assert remote[:3] == ["cd", "posemachine", "&&"]
  assert remote[3:] == [".venv/bin/python", "-m", "posemachine.main",
                        "--config=configs/synthetic.py", "--workdir=/mnt/nfs/run1",
                        "--distributed=on", "--config.train.batch_size=256"]
  assert lines[5] == ["gcloud", "compute", "tpus", "tpu-vm", "delete", "pm", *where, "--quiet"]
  assert len(lines) == 6
  # One step alone; a bad argument is refused.
  assert [l[4] for l in _lines(["launch/tpu_pod.sh", "--dry-run", "delete"])] == ["delete"]
  r = subprocess.run(["bash", "launch/tpu_pod.sh", "--dry-run", "destroy"], cwd=REPO,
                     capture_output=True, text=True, timeout=60)
  assert r.returncode == 2 and "unknown argument 'destroy'" in r.stderr


def test_slurm_dry_run():
  (line,) = _lines(["launch/slurm.sbatch", "--config.train.batch_size=512"], DRY_RUN="1",
                   CONFIG="configs/h36m.py", WORKDIR="/shared/h36m")
  assert line == ["srun", "--kill-on-bad-exit=1", ".venv/bin/python", "-m", "posemachine.main",
                  "--config=configs/h36m.py", "--workdir=/shared/h36m", "--distributed=on",
                  "--config.train.batch_size=512"]
  with open(os.path.join(REPO, "launch/slurm.sbatch")) as f:
    text = f.read()
  for directive in ("--nodes=", "--gpus-per-node=", "--ntasks-per-node=", "--signal=TERM@",
                    "--requeue"):
    assert f"#SBATCH {directive}" in text


def test_local_multiprocess_dry_run():
  lines = _lines(["launch/local_multiprocess.sh", "--dry-run", "configs/synthetic.py",
                  "runs/x", "--config.train.num_steps=10"],
                 NUM_PROCESSES="3", DEVICES_PER_PROCESS="2", PORT="12345", PYTHON="python3")
  assert len(lines) == 3
  for i, line in enumerate(lines):
    assert line == ["JAX_PLATFORMS=cpu", "XLA_FLAGS=--xla_force_host_platform_device_count=2",
                    "python3", "-m", "posemachine.main", "--config=configs/synthetic.py",
                    "--workdir=runs/x", "--coordinator_address=127.0.0.1:12345",
                    "--num_processes=3", f"--process_id={i}", "--config.train.num_steps=10"]


def test_gpu_bench_dry_run():
  lines = _lines(["launch/gpu_bench.sh", "/x/out"], DRY_RUN="1", PYTHON="py")
  shapes = "--shapes=64x16,1024x16"
  assert lines[0] == ["py", "-m", "posemachine.bench", "--quick", "--dtype=float32", shapes,
                      "--hidden=1024", "--steps=20", "--out=/x/out/float32"]
  assert lines[1][:5] == ["py", "-m", "posemachine.bench", "--quick", "--dtype=bfloat16"]
  assert lines[2][:3] == ["py", "-m", "posemachine.bench_refine"]
  assert "--hidden=1024" in lines[2] and "--json_out=/x/out/refine.json" in lines[2]
  assert lines[3][:3] == ["py", "-m", "posemachine.bench_streaming"] and len(lines) == 4
