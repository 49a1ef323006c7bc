"""The monocular rotation cycle (losses.rotate_about_vertical, virtual_view_2d; the
loss.w_rotation_cycle term of train.train_step)."""

import json

import numpy as np
import pytest

from posemachine import config_defaults, errors, losses, train

import tiny_config


def test_rotation_against_a_rotation_matrix():
  rng = np.random.default_rng(0)
  pose = rng.normal(size=(3, 4, 17, 3)).astype(np.float32)
  pose -= pose[..., :1, :]
  angle = np.array([0.0, 0.7, -2.0], np.float32)
  turned = np.asarray(losses.rotate_about_vertical(pose, angle))
  for b, a in enumerate(angle):
    # Row vectors, y (image down) fixed: x' = x cos + z sin, z' = z cos - x sin.
    r = np.array([[np.cos(a), 0, -np.sin(a)], [0, 1, 0], [np.sin(a), 0, np.cos(a)]])
    np.testing.assert_allclose(turned[b], pose[b] @ r, atol=1e-5)
  np.testing.assert_allclose(turned[0], pose[0], atol=1e-6)
  np.testing.assert_allclose(np.linalg.norm(turned, axis=-1), np.linalg.norm(pose, axis=-1),
                             rtol=1e-5)


def test_virtual_view_places_the_turned_pose_like_the_observed_one():
  rng = np.random.default_rng(1)
  pose = (rng.normal(size=(2, 3, 17, 3)) * 0.3).astype(np.float32)
  pose -= pose[..., :1, :]
  root = rng.uniform(-0.5, 0.5, size=(2, 3, 1, 2))
  scale = rng.uniform(0.1, 0.4, size=(2, 3, 1, 1))
  observed = (root + scale * pose[..., :2]).astype(np.float32)  # an exact weak perspective
  # Not turned: the observed 2D itself (the scale and root are recovered).
  np.testing.assert_allclose(losses.virtual_view_2d(pose, observed, pose), observed, atol=1e-5)
  angle = np.array([0.9, -0.4], np.float32)
  turned = np.asarray(losses.rotate_about_vertical(pose, angle))
  np.testing.assert_allclose(losses.virtual_view_2d(pose, observed, turned),
                             root + scale * turned[..., :2], atol=1e-5)


def test_training_with_the_cycle_logs_the_term(tmp_path):
  config = tiny_config.get_config(num_steps=4)
  config.loss.w_rotation_cycle = 1.0
  config.data.labelled_fraction = 0.5
  train.train_and_evaluate(config, str(tmp_path))
  rows = [json.loads(l) for l in (tmp_path / "metrics.jsonl").read_text().splitlines()]
  values = [r["train/rotation_cycle"] for r in rows if "train/rotation_cycle" in r]
  assert values and all(np.isfinite(values)) and values[0] > 0


def test_image_mode_is_refused():
  config = config_defaults.get_config()
  config.loss.w_rotation_cycle = 1.0
  config.model.input = "images"
  with pytest.raises(errors.ConfigError, match="w_rotation_cycle"):
    config_defaults.validate(config)


@pytest.mark.parametrize("key,value,match", [
    ("rotation_cycle_max_deg", 0.0, "rotation_cycle_max_deg"),
    ("rotation_cycle_max_deg", 200.0, "rotation_cycle_max_deg"),
    ("w_rotation_cycle", -1.0, "w_rotation_cycle.*>= 0"),
])
def test_bad_cycle_settings_are_refused(key, value, match):
  config = config_defaults.get_config()
  config.loss[key] = value
  with pytest.raises(errors.ConfigError, match=match):
    config_defaults.validate(config)

