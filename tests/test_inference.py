"""posemachine.inference: load, pure lift (jit/vmap/grad), streaming, whole clips, export."""

import functools
import os
import subprocess
import sys

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from posemachine import checkpoints, config_defaults, inference, train
from posemachine.errors import PoseMachineError
from posemachine.models import machine

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
WINDOW = 8


def tiny_config(direction="causal"):
  c = config_defaults.get_config()
  c.model.hidden = c.model.projector_hidden = 16
  c.model.direction = direction
  c.data.window = WINDOW
  return c


def save_checkpoint(workdir, config, seed=3, step=7):
  """An untrained checkpoint (random weights) written the way training writes it."""
  checkpoints.check_workdir_config(workdir, config)
  model = machine.from_config(config.model, 17)
  tx = train.make_optimizer(config.train)
  state = jax.jit(functools.partial(train.init_state, model, tx, num_joints=17,
                                    window=WINDOW))(jax.random.key(seed))
  # Non-zero regression output layer, so the whole machine is exercised.
  rng = np.random.default_rng(seed)
  params = jax.tree_util.tree_map_with_path(
      lambda p, x: np.asarray(x) + 0.05 * rng.normal(size=x.shape).astype(np.float32)
      if "regression" in str(p) else x, state.params)
  state = state.replace(params=params)
  mgr = checkpoints.make_manager(workdir, 3)
  checkpoints.save(mgr, step, state, {checkpoints.BEST_METRIC: 1.0})
  mgr.wait_until_finished()
  mgr.close()
  return state.params


@pytest.fixture(scope="module")
def ckpt(tmp_path_factory):
  workdir = str(tmp_path_factory.mktemp("ckpt"))
  params = save_checkpoint(workdir, tiny_config())
  return workdir, params


def clip(batch=2, frames=20, seed=0):
  rng = np.random.default_rng(seed)
  x = (rng.normal(size=(batch, frames, 17, 2)) * 0.2).astype(np.float32)
  x += np.cumsum(rng.normal(size=(batch, frames, 1, 2)) * 0.01, axis=1).astype(np.float32)
  c = rng.uniform(0.2, 1.0, (batch, frames, 17)).astype(np.float32)
  return x, c


def test_load_restores_params_and_config(ckpt, tmp_path):
  workdir, params = ckpt
  loaded, config = inference.load(workdir)
  jax.tree.map(np.testing.assert_array_equal, loaded, params)
  assert config.model.hidden == 16 and config.model.direction == "causal"
  assert config.data.window == WINDOW
  assert isinstance(config.data.synthetic.actions, tuple)   # JSON lists back to tuples
  assert inference.load_checkpoint(workdir, "best").step == 7
  with pytest.raises(PoseMachineError, match=r"No checkpoint of step 3 .* there are \[7\]"):
    inference.load(workdir, 3)
  with pytest.raises(PoseMachineError, match="config.json not found"):
    inference.load(str(tmp_path))


def test_lift_is_pure_and_composes_with_jit_vmap_grad(ckpt):
  workdir, _ = ckpt
  params, config = inference.load(workdir)
  x, c = clip()
  lift = inference.make_lift(config)
  y = lift(params, x, c)
  assert y.shape == (2, 20, 17, 3) and y.dtype == jnp.float32
  np.testing.assert_array_equal(y[..., 0, :], 0.0)                   # root-relative
  np.testing.assert_allclose(lift(params, x[0], c[0]), y[0], atol=1e-6)   # unbatched
  f = functools.partial(inference.lift, config=config)
  np.testing.assert_allclose(jax.vmap(f, in_axes=(None, 0, 0))(params, x, c), y, atol=1e-6)
  g = jax.grad(lambda kp: (lift(params, kp, c) ** 2).sum())(x)
  assert g.shape == x.shape and np.isfinite(g).all() and np.abs(g).max() > 0
  with pytest.raises(PoseMachineError, match=r"expected shape \(\.\.\., T, 17, 2\)"):
    lift(params, x[..., :16, :], c)


@pytest.mark.parametrize("direction", ["causal", "bidirectional"])
def test_lift_inside_shard_map_matches_and_differentiates(direction):
  """Users' data-parallel code: lift under jax.shard_map over 8 devices (the batch split,
  params replicated) gives the unsharded values and gradients (w.r.t. params and 2D)."""
  from jax.sharding import PartitionSpec as P  # pylint: disable=g-import-not-at-top
  config = tiny_config(direction)
  model = machine.from_config(config.model, 17)
  x, c = clip(batch=8, frames=WINDOW, seed=4)
  params = model.init(jax.random.key(0), x, c)["params"]
  params = jax.tree.map(lambda a: a + 0.05 * jax.random.normal(jax.random.key(1), a.shape),
                        params)
  mesh = jax.sharding.Mesh(np.array(jax.devices()[:8]), ("data",))
  lift = functools.partial(inference.lift, config=config)

  def local_loss(p, kp, conf):
    return jax.lax.pmean(jnp.mean(lift(p, kp, conf) ** 2), "data")

  sharded = jax.shard_map(local_loss, mesh=mesh, in_specs=(P(), P("data"), P("data")),
                          out_specs=P())
  plain = lambda p, kp, conf: jnp.mean(lift(p, kp, conf) ** 2)
  np.testing.assert_allclose(jax.jit(sharded)(params, x, c), plain(params, x, c), rtol=1e-5)
  for argnums in (0, 1):
    got = jax.jit(jax.grad(sharded, argnums=argnums))(params, x, c)
    want = jax.grad(plain, argnums=argnums)(params, x, c)
    jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, rtol=2e-4, atol=1e-7),
                 got, want)


def test_streaming_equals_offline_causal(ckpt):
  workdir, _ = ckpt
  params, config = inference.load(workdir)
  x, c = clip(batch=2, frames=20)
  offline = np.asarray(inference.make_lift(config)(params, x, c))
  stream = inference.make_stream(config)
  state = stream.init_state(2)
  frames = []
  for t in range(x.shape[1]):
    state, pose = stream.step(params, state, x[:, t], c[:, t])
    frames.append(pose)
  np.testing.assert_allclose(np.stack(frames, 1), offline, atol=1e-5)
  # The whole-clip helper's 'sequence' mode carries the state across chunks the same way.
  seq = inference.lift_sequence(params, config, x[0], c[0], windows="sequence")
  np.testing.assert_allclose(seq, offline[0], atol=1e-5)
  with pytest.raises(PoseMachineError, match="Streaming needs a causal model"):
    inference.make_stream(tiny_config("bidirectional"))


def test_lift_sequence_windows(ckpt):
  workdir, _ = ckpt
  params, config = inference.load(workdir)
  x, c = clip(batch=1, frames=19)
  x, c = x[0], c[0]
  lift = inference.make_lift(config)
  slide = inference.lift_sequence(params, config, x, c, windows="slide", batch_size=4)
  tile = inference.lift_sequence(params, config, x, c, windows="tile", batch_size=4)
  for t in (0, 5, 7, 8, 13, 18):
    s = max(0, t - WINDOW + 1)  # causal: the window ending at t
    ref = lift(params, x[s:s + WINDOW], c[s:s + WINDOW])
    np.testing.assert_allclose(slide[t], ref[t - s], atol=1e-5)
  for s in (0, 8, 16):          # tiles of 8 frames; the last one (16..18) padded and masked
    np.testing.assert_allclose(tile[s:s + WINDOW], lift(params, x[s:s + WINDOW],
                                                        c[s:s + WINDOW]), atol=1e-5)
  with pytest.raises(PoseMachineError, match="windows='sequence' needs a causal model"):
    inference.lift_sequence(params, tiny_config("bidirectional"), x, c, windows="sequence")


def test_repeated_clips_reuse_the_compiled_lifter(ckpt):
  """A folder of clips: lift_sequence compiles once per config and shape, not per call."""
  workdir, _ = ckpt
  params, config = inference.load(workdir)
  x, c = clip(batch=1, frames=19)

  def run_and_count():
    inference.lift_sequence(params, config, x[0], c[0], windows="slide", batch_size=4)
    inference.lift_sequence(params, config, x[0], c[0], windows="sequence")
    return [inference._cached_jit(kind, config, None)._cache_size()  # pylint: disable=protected-access
            for kind in ("lift", "carried")]

  first = run_and_count()  # (earlier tests may have compiled other shapes already)
  assert run_and_count() == first and run_and_count() == first
  # Clips of other lengths (17-32 windows) share the power-of-two batch of 32 windows.
  lift = inference.make_lift(config)
  before = lift._cache_size()  # pylint: disable=protected-access
  for frames in (24, 30, 39):  # causal slide: frames - WINDOW + 1 windows
    xx, cc = clip(batch=1, frames=frames, seed=frames)
    inference.lift_sequence(params, config, xx[0], cc[0], windows="slide", batch_size=64)
  assert lift._cache_size() <= before + 1  # pylint: disable=protected-access
  # An equal config (loaded again) maps to the same jitted function.
  assert inference.make_lift(config) is inference.make_lift(inference.load(workdir)[1])

_FRESH = r"""
import importlib.abc, sys
BLOCKED = ("flax", "optax", "orbax", "ml_collections", "tensorflow_datasets",
           "posemachine.train", "posemachine.models", "posemachine.checkpoints")
class Blocker(importlib.abc.MetaPathFinder):
  def find_spec(self, name, path=None, target=None):
    if any(name == b or name.startswith(b + ".") for b in BLOCKED):
      raise ImportError(f"{name} must not be imported to run an exported lifter")
    return None
sys.meta_path.insert(0, Blocker())
import numpy as np
from posemachine.inference import load_exported
lifter = load_exported(sys.argv[1])
data = np.load(sys.argv[2])
y = lifter(data["x"], data["c"])
assert "posemachine.train" not in sys.modules and "flax" not in sys.modules
print("MAXDIFF", float(np.abs(y - data["y"]).max()), y.shape)
"""


def test_export_runs_in_a_fresh_process_without_training_code(ckpt, tmp_path):
  workdir, _ = ckpt
  params, config = inference.load(workdir)
  x, c = clip(batch=3, frames=12, seed=1)
  expected = np.asarray(inference.make_lift(config)(params, x, c))
  path = str(tmp_path / "lifter.npz")
  meta = inference.export(params, config, path, batch=None, window=12)
  assert meta["window"] == 12 and meta["batch"] is None and "metres" in meta["output"]
  np.savez(tmp_path / "io.npz", x=x, c=c, y=expected)
  env = dict(os.environ, JAX_PLATFORMS="cpu", PYTHONPATH=REPO)
  env.pop("XLA_FLAGS", None)
  r = subprocess.run([sys.executable, "-c", _FRESH, path, str(tmp_path / "io.npz")], cwd=REPO,
                     env=env, capture_output=True, text=True, timeout=120)
  assert r.returncode == 0, r.stderr[-3000:]
  line = next(l for l in r.stdout.splitlines() if l.startswith("MAXDIFF"))
  assert float(line.split()[1]) < 1e-5, line
  # Same process: shape checks name what the export takes.
  lifter = inference.load_exported(path)
  np.testing.assert_allclose(lifter(x[:1], c[:1]), expected[:1], atol=1e-5)
  with pytest.raises(PoseMachineError, match=r"takes shape \('B', 12, 17, 2\)"):
    lifter(x[:, :8], c[:, :8])
  with pytest.raises(PoseMachineError, match="cannot load the exported lifter"):
    inference.load_exported(str(tmp_path / "io.npz"))


def test_damaged_exports_and_bad_export_arguments(ckpt, tmp_path):
  workdir, _ = ckpt
  params, config = inference.load(workdir)
  path = str(tmp_path / "lifter.npz")
  inference.export(params, config, path, batch=2)
  data = open(path, "rb").read()
  (tmp_path / "half.npz").write_bytes(data[:len(data) // 2])
  with pytest.raises(PoseMachineError, match="half.npz: cannot load the exported lifter"):
    inference.load_exported(str(tmp_path / "half.npz"))
  with np.load(path) as z:
    members = dict(z)

  def rewrite(name, **changes):
    np.savez(tmp_path / name, **{**members, **changes})
    return str(tmp_path / name)

  blob = members["exported"].copy()
  blob[len(blob) // 2] ^= 0xFF
  with pytest.raises(PoseMachineError, match="fails its CRC-32 check"):
    inference.load_exported(rewrite("flip.npz", exported=blob))
  with pytest.raises(PoseMachineError, match="'meta' is a JSON list"):
    inference.load_exported(rewrite("meta.npz", meta=np.frombuffer(b"[1]", np.uint8)))
  with pytest.raises(PoseMachineError, match=r"weight 0 \(.*\) has shape \(3,\)"):
    inference.load_exported(rewrite("w.npz", param_0000=np.zeros(3, np.float32)))
  for kwargs, message in (({"batch": 0}, "batch=0; expected an integer >= 1"),
                          ({"batch": -1}, "batch=-1"), ({"window": 0}, "window=0")):
    with pytest.raises(PoseMachineError, match=message):
      inference.export(params, config, str(tmp_path / "x.npz"), **kwargs)
  with pytest.raises(PoseMachineError, match="does not exist"):
    inference.export(params, config, str(tmp_path / "no" / "x.npz"))
