"""Device-resident sampling: windows drawn inside the jitted step (data/device_sampler.py)."""

import functools

import jax
import numpy as np
import pytest
from jax.sharding import NamedSharding, PartitionSpec as P

from posemachine import distributed, train
from posemachine.data import augment, device_sampler, pipeline, sequences
from posemachine.models import machine
import tiny_config as tiny_config_lib

K = 17


def _seqs(lengths=(30, 5, 12, 2, 20), has_3d=None, clean=True, seed=0):
  """Sequences whose values are random but distinct per frame (some shorter than a window)."""
  rng = np.random.default_rng(seed)
  items = []
  for i, n in enumerate(lengths):
    it = {"pose_3d": rng.normal(size=(n, K, 3)), "pose_2d": rng.normal(size=(n, K, 2)),
          "confidence": rng.random((n, K)), "subject": f"S{i}", "action": "a", "camera": "c",
          "has_3d": True if has_3d is None else has_3d[i]}
    if clean:
      it["pose_2d_clean"] = rng.normal(size=(n, K, 2))
    items.append(it)
  return sequences.Sequences.from_list(items, "test").validate(K)


def _sampler(mesh, batch=16, window=8, noise_px=0.0, flip=False, seed=3):
  return jax.jit(device_sampler.make_sampler(mesh, seed, batch, window, noise_px, flip))


def test_windows_equal_a_numpy_gather_with_padding_masks():
  seqs = _seqs(has_3d=[True, False, True, True, False])
  mesh = train.create_mesh(8)
  data = device_sampler.to_device(seqs, mesh)
  window = 8
  for step in (1, 2, 3):
    key = jax.random.split(device_sampler.step_key(3, step), 3)[0]  # sample_batch's windows key
    seq, off = jax.jit(device_sampler.sample_windows, static_argnums=(2, 3))(
        data, key, 32, window)
    seq, off = np.asarray(seq), np.asarray(off)
    assert ((off >= 0) & (off <= np.maximum(seqs.lengths[seq] - window, 0))).all()
    idx, mask = sequences.window_indices(seqs.starts, seqs.lengths, seq, off, window)
    want = sequences.gather_windows(seqs, idx, mask, seq)
    got = jax.device_get(_sampler(mesh, batch=32, window=window)(data, step))
    assert set(got) == set(want)
    for k in want:
      assert got[k].dtype == np.float32, k
      np.testing.assert_array_equal(got[k], want[k], err_msg=k)
  # Short sequences (5 and 2 frames < window 8) were drawn, padded and masked.
  assert got["pose_2d"].shape == (32, window, K, 2) and got["mask"].shape == (32, window)
  short = np.flatnonzero(seqs.lengths[seq] < window)
  assert len(short)
  for b in short:
    n = seqs.lengths[seq[b]]
    np.testing.assert_array_equal(got["mask"][b], np.arange(window) < n)
    np.testing.assert_array_equal(got["pose_3d"][b, n:], np.broadcast_to(
        got["pose_3d"][b, n - 1], (window - n, K, 3)))
  np.testing.assert_array_equal(got["has_3d"], seqs.has_3d[seq])


def test_target_is_the_noise_free_2d_without_a_clean_extra():
  seqs = _seqs(clean=False)
  mesh = train.create_mesh(1)
  data = device_sampler.to_device(seqs, mesh)
  assert data.pose_2d_target is None
  plain = jax.device_get(_sampler(mesh)(data, 5))
  noisy = jax.device_get(_sampler(mesh, noise_px=5.0)(data, 5))
  np.testing.assert_array_equal(noisy["pose_2d_target"], plain["pose_2d"])
  noise = noisy["pose_2d"] - plain["pose_2d"]
  assert abs(noise.std() / (2 * 5.0 / 1000) - 1) < 0.05 and abs(noise.mean()) < 1e-3


def test_distribution_matches_the_host_sampler():
  """Sequence frequencies ~ length / total and uniform starts, on device as on the host."""
  seqs = _seqs(lengths=(40, 10, 25, 3, 70))
  mesh = train.create_mesh(1)
  data = device_sampler.to_device(seqs, mesh)
  window, n = 8, 8192
  seq, off = jax.device_get(jax.jit(device_sampler.sample_windows, static_argnums=(2, 3))(
      data, jax.random.key(0), n, window))
  rng = np.random.default_rng(0)
  host = sequences.sample_train_batch(seqs, rng, n, window)  # only for its frequencies:
  p = seqs.lengths / seqs.lengths.sum()
  for ids in (seq, None):
    if ids is None:  # the host's sequence ids, recovered from its pose_3d values.
      first = host["pose_3d"][:, 0, 0, 0]
      frame = np.array([np.flatnonzero(seqs.pose_3d[:, 0, 0] == v)[0] for v in first])
      ids = np.searchsorted(seqs.starts, frame, side="right") - 1
    freq = np.bincount(ids, minlength=len(p)) / n
    # 4.5 standard errors of a binomial proportion.
    np.testing.assert_array_less(np.abs(freq - p), 4.5 * np.sqrt(p * (1 - p) / n) + 1e-9)
  # Starts uniform over [0, length - window] for the long sequence (63 values).
  o = off[seq == 4]
  assert o.min() == 0 and o.max() == 70 - window
  counts = np.bincount(o, minlength=63)
  chi2 = ((counts - len(o) / 63) ** 2 / (len(o) / 63)).sum()
  assert chi2 < 62 + 5 * np.sqrt(2 * 62), chi2  # dof 62: mean 62, sd 11.1


def test_flip_mirrors_and_swaps_left_right_on_device_and_host():
  seqs = _seqs()
  mesh = train.create_mesh(1)
  data = device_sampler.to_device(seqs, mesh)
  plain = jax.device_get(_sampler(mesh, batch=64)(data, 9))
  flipped = jax.device_get(_sampler(mesh, batch=64, flip=True)(data, 9))
  perm = augment.flip_permutation(K)
  assert perm[1] == 4 and perm[16] == 13 and perm[0] == 0 and perm[perm].tolist() == list(range(K))
  mirrored = augment.flip_windows(plain, np.ones(64, bool), xp=np)
  is_flipped = ~np.all(flipped["pose_3d"] == plain["pose_3d"], axis=(1, 2, 3))
  assert 16 < is_flipped.sum() < 48  # about half of 64
  for k in ("pose_2d", "pose_2d_target", "pose_3d", "confidence"):
    np.testing.assert_array_equal(flipped[k][is_flipped], mirrored[k][is_flipped], err_msg=k)
    np.testing.assert_array_equal(flipped[k][~is_flipped], plain[k][~is_flipped], err_msg=k)
  np.testing.assert_array_equal(mirrored["pose_3d"][..., 4, 0], -plain["pose_3d"][..., 1, 0])
  np.testing.assert_array_equal(mirrored["pose_2d"][..., 4, 1], plain["pose_2d"][..., 1, 1])
  # 15-joint (HumanEva) layout too.
  perm15 = augment.flip_permutation(15)
  assert perm15[2] == 5 and perm15[13] == 10 and perm15[perm15].tolist() == list(range(15))
  # The host pipeline's option.
  config = tiny_config_lib.get_config()
  config.train.batch_size = 64
  host_plain = pipeline.train_batch(seqs, config, 4)
  config.train.augment_flip = True
  host_flip = pipeline.train_batch(seqs, config, 4)
  hf = ~np.all(host_flip["pose_3d"] == host_plain["pose_3d"], axis=(1, 2, 3))
  assert 16 < hf.sum() < 48
  want = augment.flip_windows(host_plain, np.ones(64, bool), xp=np)
  np.testing.assert_array_equal(host_flip["pose_2d"][hf], want["pose_2d"][hf])


def test_same_step_same_batch_other_step_other_batch():
  seqs = _seqs()
  mesh = train.create_mesh(8)
  data = device_sampler.to_device(seqs, mesh)
  f = _sampler(mesh, noise_px=2.0, flip=True)
  a, b, c = (jax.device_get(f(data, s)) for s in (7, 7, 8))
  jax.tree.map(np.testing.assert_array_equal, a, b)
  assert not np.array_equal(a["pose_2d"], c["pose_2d"])
  # Another seed gives other batches.
  d = jax.device_get(_sampler(mesh, noise_px=2.0, flip=True, seed=4)(data, 7))
  assert not np.array_equal(a["pose_2d"], d["pose_2d"])


def _setup(config, n_devices, mesh_model):
  """(jitted sampled step, device data, initial state) on a (data, model) mesh."""
  model = machine.from_config(config.model, K)
  tx = train.make_optimizer(config.train)
  mesh = distributed.create_mesh(n_devices, mesh_model)
  init = functools.partial(train.init_state, model, tx, num_joints=K, window=config.data.window)
  sharding = distributed.state_shardings(jax.eval_shape(init, jax.random.key(0)), mesh)
  state = jax.jit(init, out_shardings=sharding)(jax.random.key(0))
  fn = functools.partial(train.train_step, model=model, tx=tx, loss_config=config.loss)
  step = device_sampler.make_train_step(fn, config, mesh, sharding)
  data = device_sampler.to_device(pipeline.load_split(config, "train"), mesh)
  return step, data, state, sharding


def test_one_and_eight_devices_and_model_split_agree():
  config = tiny_config_lib.get_config()
  config.train.augment_noise_px, config.train.augment_flip = 3.0, True
  results = []
  for n, m in ((1, 1), (8, 1), (8, 2)):
    step, data, state, _ = _setup(config, n, m)
    for _ in range(2):
      state, metrics = step(state, data)
    results.append(jax.device_get((state.params, metrics["loss"])))
  close = lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6)
  for other in results[1:]:
    jax.tree.map(close, results[0], other)


def test_resume_gives_the_same_batches_and_state():
  config = tiny_config_lib.get_config()
  step, data, state, sharding = _setup(config, 8, 1)
  losses, saved = [], None
  for i in range(4):
    state, m = step(state, data)
    losses.append(float(m["loss"]))
    if i == 1:
      saved = jax.device_get(state)  # as written to a checkpoint at step 2
  full = jax.device_get(state)
  state = jax.device_put(saved, sharding)  # as restored
  assert int(state.step) == 2
  resumed = []
  for _ in range(2):
    state, m = step(state, data)
    resumed.append(float(m["loss"]))
  assert resumed == losses[2:]
  jax.tree.map(np.testing.assert_array_equal, full, jax.device_get(state))


def test_too_many_frames_is_a_data_error(monkeypatch):
  seqs = _seqs()
  monkeypatch.setattr(sequences.Sequences, "num_frames", property(lambda self: 2 ** 31))
  with pytest.raises(sequences.DataError, match="device_sampling=False"):
    device_sampler.host_arrays(seqs)
