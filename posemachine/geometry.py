"""Camera model and coordinate transforms (Human3.6M conventions).

Units: 3D points in metres, image points in pixels, "normalised" screen coordinates
as the field uses them: u / w * 2 - [1, h / w] (x in [-1, 1]).
World/camera convention (as `h36m/cameras.json`): x_world = R @ x_cam + T, with R the
3x3 camera-to-world rotation and T the camera centre in world coordinates (metres).
"""

from __future__ import annotations

import dataclasses

import jax
import jax.numpy as jnp
import numpy as np

# Human3.6M intrinsics (the published calibration): f, c, k, p, (w, h).
H36M_INTRINSICS = {
    "54138969": ((1145.0494, 1143.7811), (512.5415, 515.4515),
                 (-0.207099, 0.247775, -0.003075), (-0.000976, -0.001424), (1000, 1002)),
    "55011271": ((1149.6757, 1147.5916), (508.8486, 508.0649),
                 (-0.194214, 0.240409, 0.006820), (-0.001619, -0.002741), (1000, 1000)),
    "58860488": ((1149.1407, 1148.7990), (519.8158, 501.4027),
                 (-0.208338, 0.255488, -0.002460), (0.001484, -0.000760), (1000, 1000)),
    "60457274": ((1145.5113, 1144.7739), (514.9682, 501.8820),
                 (-0.198384, 0.218324, -0.008948), (-0.000587, -0.001813), (1000, 1002)),
}
H36M_CAMERA_IDS: tuple[str, ...] = tuple(H36M_INTRINSICS)


@jax.tree_util.register_dataclass
@dataclasses.dataclass(frozen=True)
class Camera:
  """Pinhole camera with Brown-Conrady distortion.

  Fields may carry leading batch axes (e.g. f of shape (B, 2)); they broadcast
  against the points' leading axes in `project_to_2d`.

  Attributes:
    f: (..., 2) focal lengths fx, fy in pixels.
    c: (..., 2) principal point cx, cy in pixels.
    k: (..., 3) radial distortion k1, k2, k3.
    p: (..., 2) tangential distortion p1, p2.
    w: (...,) image width in pixels.
    h: (...,) image height in pixels.
  """
  f: jax.Array
  c: jax.Array
  k: jax.Array
  p: jax.Array
  w: jax.Array
  h: jax.Array

  @classmethod
  def h36m(cls, camera_id: str | int) -> "Camera":
    """The intrinsics of one of the four Human3.6M cameras (id as str or int)."""
    key = str(camera_id)
    if key not in H36M_INTRINSICS:
      raise ValueError(f"Unknown Human3.6M camera id {camera_id!r}; "
                       f"expected one of {list(H36M_INTRINSICS)}.")
    f, c, k, p, (w, h) = H36M_INTRINSICS[key]
    return cls(f=np.asarray(f, np.float32), c=np.asarray(c, np.float32),
               k=np.asarray(k, np.float32), p=np.asarray(p, np.float32),
               w=np.float32(w), h=np.float32(h))

  @classmethod
  def stack(cls, cameras) -> "Camera":
    """Stacks cameras along a new leading axis."""
    return jax.tree.map(lambda *xs: np.stack(xs), *cameras)


def project_to_2d(points_cam, camera: Camera):
  """Projects camera-space points to distorted pixel coordinates.

  Args:
    points_cam: (..., 3) points in camera coordinates, metres, Z forward (Z > 0).
    camera: intrinsics. Its fields' leading (batch) axes must be a prefix of the
      points' leading axes: points (B, T, K, 3) take f of shape (2,), (B, 2) or
      (B, T, 2).
  Returns:
    (..., 2) pixel coordinates.
  """
  xy = points_cam[..., :2] / points_cam[..., 2:3]
  def bc(a):  # camera field (*batch, n) -> (*batch, 1, ..., 1, n).
    a = jnp.asarray(a, xy.dtype)
    extra = xy.ndim - a.ndim
    return a.reshape(a.shape[:-1] + (1,) * extra + a.shape[-1:])
  k, p, f, c = bc(camera.k), bc(camera.p), bc(camera.f), bc(camera.c)
  r2 = (xy ** 2).sum(-1, keepdims=True)
  radial = 1 + k[..., 0:1] * r2 + k[..., 1:2] * r2 ** 2 + k[..., 2:3] * r2 ** 3
  tan = (p * xy).sum(-1, keepdims=True)
  xy_d = xy * (radial + tan) + p * r2
  return f * xy_d + c


def world_to_camera(points_world, rotation, translation):
  """x_cam = R^T (x_world - T). points (..., 3), R (3, 3) cam-to-world, T (3,) metres."""
  return jnp.einsum("...j,jk->...k", points_world - translation, rotation)


def camera_to_world(points_cam, rotation, translation):
  """x_world = R x_cam + T; inverse of `world_to_camera`."""
  return jnp.einsum("...k,jk->...j", points_cam, rotation) + translation


def normalize_screen_coordinates(pixels, w, h):
  """Pixels (..., 2) -> normalised: u / w * 2 - [1, h / w] (w, h broadcast)."""
  w = jnp.asarray(w, pixels.dtype)[..., None]
  h = jnp.asarray(h, pixels.dtype)[..., None]
  offset = jnp.concatenate([jnp.ones_like(h), h / w], -1)
  return pixels / w * 2 - offset


def image_coordinates(normalized, w, h):
  """Inverse of `normalize_screen_coordinates`: normalised (..., 2) -> pixels."""
  w = jnp.asarray(w, normalized.dtype)[..., None]
  h = jnp.asarray(h, normalized.dtype)[..., None]
  offset = jnp.concatenate([jnp.ones_like(h), h / w], -1)
  return (normalized + offset) * w / 2


def axis_rotation(axis: int, angle) -> np.ndarray:
  """Rotation matrices about x (0), y (1) or z (2): angles (...,) radians -> (..., 3, 3).

  NumPy, float64; right-handed (a positive angle turns y towards z about x, and so on).
  """
  angle = np.asarray(angle, np.float64)
  c, s = np.cos(angle), np.sin(angle)
  i, j = [(1, 2), (2, 0), (0, 1)][axis]
  r = np.zeros(angle.shape + (3, 3))
  r[..., axis, axis] = 1.0
  r[..., i, i] = c
  r[..., j, j] = c
  r[..., i, j] = -s
  r[..., j, i] = s
  return r


def look_at_rotation(camera_centre, target, up=(0.0, 1.0, 0.0)):
  """Camera-to-world rotation R (3, 3) for a camera at `camera_centre` looking at `target`.

  Camera axes: x right, y down, z forward (image convention). World `up` is +Y by default.
  Works on NumPy arrays of shape (3,).
  """
  centre = np.asarray(camera_centre, np.float64)
  z = np.asarray(target, np.float64) - centre
  z /= np.linalg.norm(z)
  x = np.cross(z, np.asarray(up, np.float64))
  x /= np.linalg.norm(x)
  y = np.cross(z, x)
  return np.stack([x, y, z], axis=1)  # columns are camera axes in world coordinates.
