"""A batched JAX renderer of posed bodies seen by a camera, cropped around the person.

Each body is a set of shaded capsules, one per bone of the 17-joint skeleton (limbs, torso,
neck/head), drawn over a procedural background. The joints are projected with
`geometry.project_to_2d` (intrinsics and distortion), so every joint is drawn exactly where
the camera model puts it; each capsule is the 2D segment between its projected ends, with a
radius of r * f / depth pixels, and the nearest capsule wins per pixel (depth interpolated
along the bone). Appearance: per-subject clothing colours (skin, shirt, trousers), left-side
limbs blended toward a per-subject accent colour (an asymmetric outfit: the cue that makes
left and right separable from a single frame), and a dark face patch on the front of the head
(the front/back cue). Background: two-colour gradients plus low-frequency colour waves in
image coordinates (so the background is static as the crop moves), pixel noise, and per-clip
lighting gain and tint.

Crops are square boxes around the projected joints (margin `margin`, optional jitter), as the
field crops real frames around the person; the crop is rendered directly at size x size.

Units: points in metres (camera frame, Z forward), pixels in the original camera image, crop
coordinates normalised to [-1, 1] across the crop (x right, y down). Everything is a pure
function of its inputs and PRNG keys (deterministic by seed) and vmaps over clips and frames.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np

from posemachine import geometry, skeleton

# Body parts for colours; each bone (indexed by its child joint) belongs to one.
SKIN, SHIRT, TROUSERS = 0, 1, 2
NUM_PARTS = 3
_BONE_PART = {1: TROUSERS, 2: TROUSERS, 3: TROUSERS, 4: TROUSERS, 5: TROUSERS, 6: TROUSERS,
              7: SHIRT, 8: SHIRT, 9: SKIN, 10: SKIN, 11: SHIRT, 12: SHIRT, 13: SKIN,
              14: SHIRT, 15: SHIRT, 16: SKIN}
# Capsule radius (metres) per bone, by child joint: hips, legs, trunk, neck, head, arms.
_BONE_RADIUS = {1: 0.09, 2: 0.075, 3: 0.055, 4: 0.09, 5: 0.075, 6: 0.055, 7: 0.13, 8: 0.12,
                9: 0.05, 10: 0.095, 11: 0.06, 12: 0.05, 13: 0.04, 14: 0.06, 15: 0.05, 16: 0.04}
BONE_CHILD = skeleton.BONE_CHILD
BONE_PARENT = skeleton.BONE_PARENT
BONE_PART = np.array([_BONE_PART[int(c)] for c in BONE_CHILD], np.int32)
BONE_RADIUS = np.array([_BONE_RADIUS[int(c)] for c in BONE_CHILD], np.float32)
BONE_LEFT = np.array([int(c) in skeleton.LEFT for c in BONE_CHILD], bool)
HEAD, NECK = 10, 9
FACE_RADIUS = 0.035  # metres


def sample_appearance(key, num: int) -> dict:
  """Per-subject colours: parts (num, 3 parts, 3) and accent (num, 3), RGB in [0, 1]."""
  k1, k2, k3 = jax.random.split(key, 3)
  skin = jnp.array([0.93, 0.76, 0.62]) * jax.random.uniform(k1, (num, 1), minval=0.45,
                                                             maxval=1.05)
  clothes = jax.random.uniform(k2, (num, 2, 3), minval=0.1, maxval=0.95)
  accent = jax.random.uniform(k3, (num, 3), minval=0.0, maxval=1.0)
  # Push the accent away from the shirt colour so that the left side stays visible.
  accent = jnp.where(jnp.abs(accent - clothes[:, 0]).sum(-1, keepdims=True) < 0.6,
                     1.0 - accent, accent)
  return {"parts": jnp.concatenate([jnp.clip(skin, 0, 1)[:, None], clothes], 1),
          "accent": accent}


def sample_scene(key) -> dict:
  """One clip's background and lighting parameters."""
  ks = jax.random.split(key, 6)
  return {
      "bg_colours": jax.random.uniform(ks[0], (2, 3)),
      "wave_freq": jax.random.uniform(ks[1], (3, 2), minval=-8.0, maxval=8.0),  # per image
      "wave_phase": jax.random.uniform(ks[2], (3,), maxval=2 * np.pi),
      "wave_colour": jax.random.uniform(ks[3], (3, 3), minval=-0.25, maxval=0.25),
      "gain": jax.random.uniform(ks[4], (1,), minval=0.7, maxval=1.3),
      "tint": jax.random.uniform(ks[5], (3,), minval=0.85, maxval=1.15),
  }


def crop_boxes(px, margin: float = 1.35, jitter_key=None, jitter: float = 0.0):
  """Square crop boxes around 2D joints.

  Args:
    px: (..., K, 2) joint pixels.
    margin: box side / the larger side of the joints' bounding box.
    jitter_key, jitter: optional random scale (x (1 +- jitter)) and shift (+- jitter of the
      side) of each box.
  Returns:
    (..., 3) boxes [x0, y0, side] in pixels.
  """
  lo, hi = px.min(-2), px.max(-2)
  centre = (lo + hi) / 2
  side = (hi - lo).max(-1) * margin + 1.0
  if jitter_key is not None and jitter > 0:
    k1, k2 = jax.random.split(jitter_key)
    side = side * (1 + jax.random.uniform(k1, side.shape, minval=-jitter, maxval=jitter))
    centre = centre + side[..., None] * jax.random.uniform(k2, centre.shape, minval=-jitter,
                                                           maxval=jitter)
  return jnp.concatenate([centre - side[..., None] / 2, side[..., None]], -1)


def to_crop(px, box):
  """Pixels (..., K, 2) -> crop coordinates in [-1, 1] for boxes (..., 3)."""
  return (px - box[..., None, :2]) / box[..., None, 2:3] * 2.0 - 1.0


def from_crop(uv, box):
  """Inverse of `to_crop`: crop coordinates (..., K, 2) -> pixels."""
  return (uv + 1.0) / 2.0 * box[..., None, 2:3] + box[..., None, :2]


def _face_point(points):
  """(K, 3) camera-frame joints -> a point on the front of the head and its facing z."""
  right = points[1] - points[4]                      # left hip -> right hip
  up = points[NECK] - points[0]
  forward = jnp.cross(up, right)                     # the body's facing direction
  forward = forward / (jnp.linalg.norm(forward) + 1e-6)
  centre = (points[NECK] + points[HEAD]) / 2
  return centre + forward * _BONE_RADIUS[HEAD] * 0.9, forward[2]


def _pixel_noise(key, shape):
  """Cheap zero-mean, unit-variance pixel noise (an integer hash of the pixel index seeded
  by key): threefry's normals cost more than drawing the body on CPU."""
  seed = jax.random.bits(key, (), jnp.uint32)
  h = jnp.arange(np.prod(shape), dtype=jnp.uint32).reshape(shape) * jnp.uint32(747796405) + seed
  h = (h ^ (h >> 16)) * jnp.uint32(0x45D9F3B)
  h = (h ^ (h >> 16)) * jnp.uint32(0x45D9F3B)
  h = h ^ (h >> 16)
  u = (h >> 8).astype(jnp.float32) * (1.0 / (1 << 24))               # uniform [0, 1)
  return (u - 0.5) * np.sqrt(12.0)


def render_frame(points, camera: geometry.Camera, box, appearance: dict, scene: dict, key,
                 size: int, with_coverage: bool = False):
  """Renders one frame.

  Args:
    points: (17, 3) camera-frame joints, metres (Z > 0).
    camera: unbatched intrinsics.
    box: (3,) crop box [x0, y0, side] pixels.
    appearance: {'parts': (3, 3), 'accent': (3,)} colours.
    scene: one clip's background/lighting (see `sample_scene`).
    key: PRNG key for the pixel noise.
    size: output side in pixels.
    with_coverage: also return the body's coverage (size, size) in [0, 1].
  Returns:
    image (size, size, 3) float32 in [0, 1]; joints (17, 2) crop coordinates in [-1, 1]
    (pixel (i, j) of the crop spans [j, j + 1] x [i, i + 1] in crop pixels).
  """
  px = geometry.project_to_2d(points, camera)                       # (K, 2) pixels
  scale = size / box[2]                                              # crop px per image px
  joints = (px - box[:2]) * scale                                    # crop pixels
  grid = jnp.arange(size, dtype=jnp.float32) + 0.5
  pix = jnp.stack(jnp.meshgrid(grid, grid, indexing="xy"), -1)       # (S, S, 2) x, y
  focal = camera.f.mean() * scale
  base = appearance["parts"][BONE_PART]                              # (NB, 3)
  base = jnp.where(BONE_LEFT[:, None], 0.55 * base + 0.45 * appearance["accent"], base)
  # Painter's z-buffer over the bones (a static loop: XLA fuses it into one pass over the
  # pixels), keeping the nearest capsule surface per pixel.
  x, y = pix[..., 0], pix[..., 1]
  zbuf = jnp.full((size, size), jnp.inf)
  cover = jnp.zeros((size, size))
  body = jnp.zeros((size, size, 3))
  on_head = jnp.zeros((size, size), bool)
  for b in range(len(BONE_CHILD)):
    pa, pc = int(BONE_PARENT[b]), int(BONE_CHILD[b])
    ax_, ay_ = joints[pa, 0], joints[pa, 1]
    abx, aby = joints[pc, 0] - ax_, joints[pc, 1] - ay_
    rx, ry = x - ax_, y - ay_
    t = jnp.clip((rx * abx + ry * aby) / (abx * abx + aby * aby + 1e-6), 0.0, 1.0)
    dist = jnp.sqrt((rx - t * abx) ** 2 + (ry - t * aby) ** 2)
    z = points[pa, 2] + t * (points[pc, 2] - points[pa, 2])
    radius = BONE_RADIUS[b] * focal / z                                # crop pixels
    inside = jnp.clip(radius - dist + 0.5, 0.0, 1.0)                   # anti-aliased coverage
    shade = jnp.sqrt(jnp.clip(1.0 - (dist / radius) ** 2, 0.0, 1.0))   # cylinder profile
    surface = jnp.where(inside > 0, z - BONE_RADIUS[b] * shade, jnp.inf)
    nearer = surface < zbuf
    zbuf = jnp.where(nearer, surface, zbuf)
    cover = jnp.where(nearer, inside, cover)
    body = jnp.where(nearer[..., None], base[b] * (0.45 + 0.55 * shade)[..., None], body)
    on_head = jnp.where(nearer, pc == HEAD, on_head)
  # Face patch on the front of the head, visible when the head faces the camera.
  face, facing = _face_point(points)
  face_px = (geometry.project_to_2d(face, camera) - box[:2]) * scale
  face_r = FACE_RADIUS * focal / face[2]
  on_face = jnp.clip(face_r - jnp.linalg.norm(pix - face_px, axis=-1) + 0.5, 0, 1)
  on_face = on_face * on_head * (facing < 0.2)
  body = body * (1.0 - 0.7 * on_face[..., None])
  # Background in image coordinates.
  img_xy = pix / scale + box[:2]
  nxy = img_xy / camera.w                                            # ~[0, 1]
  bg = (scene["bg_colours"][0] * (1 - nxy[..., 1:2])
        + scene["bg_colours"][1] * nxy[..., 1:2])
  waves = jnp.sin(nxy @ scene["wave_freq"].T + scene["wave_phase"])  # (S, S, 3)
  bg = bg + waves @ scene["wave_colour"]
  image = cover[..., None] * body + (1.0 - cover[..., None]) * bg
  image = image * scene["gain"] * scene["tint"]
  image = image + 0.03 * _pixel_noise(key, image.shape)
  out = jnp.clip(image, 0.0, 1.0), joints / size * 2.0 - 1.0
  return out + (cover,) if with_coverage else out


def render_clip(points, camera, appearance, key, size: int, margin: float = 1.35,
                jitter: float = 0.0):
  """One clip seen by one camera, each frame cropped around the person.

  Args:
    points: (T, 17, 3) camera-frame joints in metres.
    camera: unbatched intrinsics.
    appearance: {'parts': (3, 3), 'accent': (3,)} (one entry of `sample_appearance`).
    key: PRNG key: the clip's background and lighting, crop jitter and pixel noise.
    size: crop side in pixels; margin, jitter: see `crop_boxes`.
  Returns:
    dict: images (T, S, S, 3) in [0, 1]; joints_2d (T, 17, 2) crop coordinates in [-1, 1];
    boxes (T, 3) [x0, y0, side] pixels in the camera image.
  """
  if points.shape[-2:] != (skeleton.NUM_JOINTS, 3):
    raise ValueError(f"render: points must be (..., {skeleton.NUM_JOINTS}, 3), "
                     f"got {points.shape}.")
  k_scene, k_jit, k_noise = jax.random.split(key, 3)
  boxes = crop_boxes(geometry.project_to_2d(points, camera), margin, k_jit, jitter)
  scene = sample_scene(k_scene)
  keys = jax.random.split(k_noise, points.shape[0])
  images, joints = jax.vmap(render_frame, (0, None, 0, None, None, 0, None))(
      points, camera, boxes, appearance, scene, keys, size)
  return {"images": images, "joints_2d": joints, "boxes": boxes}


def render_batch(points, camera, appearance, keys, size: int, margin: float = 1.35,
                 jitter: float = 0.0):
  """`render_clip` over a batch: points (B, T, 17, 3), camera fields and appearance with
  leading axis B, keys (B,) -> images (B, T, S, S, 3), joints_2d (B, T, 17, 2), boxes."""
  return jax.vmap(render_clip, (0, 0, 0, 0, None, None, None))(
      points, camera, appearance, keys, size, margin, jitter)
