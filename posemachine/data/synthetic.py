"""Procedural human motion on the 17-joint skeleton: the embedded default dataset.

No downloads: every synthetic subject gets its own body (bone lengths), every sequence
is one motion family ('walk', 'run', ...) with random parameters, animated with joint
angles and forward kinematics, then seen by virtual cameras with the Human3.6M
intrinsics, with detector-like noise on the observed 2D pose.

Frames and units:
  World: metres, Y up, the ground is the plane y = 0.
  Body (the pelvis's local axes): X = the subject's left, Y = up, Z = forward.
  Angles: degrees in the motion families, radians in the kinematics.

`generate(config, split)` is what the trainer calls; splits have disjoint subjects,
each subject's random stream derived from (seed, split, subject index).
"""

from __future__ import annotations

import dataclasses

import ml_collections
import numpy as np

from posemachine import geometry
from posemachine import skeleton
from posemachine.data.sequences import DataError
from posemachine.data.sequences import Sequences

ACTIONS: tuple[str, ...] = ("walk", "run", "jump", "squat", "wave", "turn", "sit")
SPLITS: tuple[str, ...] = ("train", "val", "test")

# Nominal bone lengths in metres, indexed by child joint (0 for the root): the
# Human3.6M skeleton metadata (pelvis->hip 132.9 mm, thigh 442.9, shin 454.2,
# spine 233.4, thorax 257.1, neck/nose 121.1, head 115.0, shoulder 151.0,
# upper arm 278.9, forearm 251.7).
NOMINAL_BONE_LENGTHS = np.array(skeleton.MEAN_BONE_LENGTHS)
# Rest direction of each bone (joint minus parent) in the body frame: legs and arms
# hang down, the nose is in front of the thorax, the head top above and behind it.
_REST_DIRECTIONS = np.array([
    [0, 0, 0],
    [-1, -0.1, 0], [0, -1, 0], [0, -1, 0],        # right leg
    [1, -0.1, 0], [0, -1, 0], [0, -1, 0],         # left leg
    [0, 1, 0], [0, 1, 0],                         # spine, thorax
    [0, 0.93, 0.37], [0, 0.94, -0.34],            # neck/nose, head
    [1, -0.05, -0.05], [0, -1, 0], [0, -1, 0],    # left arm
    [-1, -0.05, -0.05], [0, -1, 0], [0, -1, 0],   # right arm
], dtype=np.float64)
_REST_DIRECTIONS[1:] /= np.linalg.norm(_REST_DIRECTIONS[1:], axis=-1, keepdims=True)
# Height of the ankle joint above a flat foot's sole, metres (nominal body).
ANKLE_HEIGHT = 0.09
# Left/right bone pairs (child joints) that share their per-subject jitter.
_SYMMETRIC_BONES = ((4, 1), (5, 2), (6, 3), (11, 14), (12, 15), (13, 16))
# Per-joint scale of the 2D detector noise: extremities are noisier.
JOINT_NOISE_SCALE = np.array(
    [1.0, 1.0, 1.2, 1.5, 1.0, 1.2, 1.5, 1.0, 1.0, 1.0, 1.1, 1.0, 1.2, 1.5, 1.0, 1.2, 1.5])
_GRAVITY = 9.81

# Joint-angle degrees of freedom: name -> (lower, upper) limit in degrees, and the
# amplitude (degrees) of the smooth style noise added to every sequence.
_SIDE_DOFS = {
    "hip_flex": ((-30, 125), 3.0), "hip_abd": ((-20, 45), 1.5),
    "hip_twist": ((-30, 30), 3.0), "knee": ((0, 150), 3.0),
    "sh_flex": ((-60, 180), 5.0), "sh_abd": ((-30, 180), 4.0),
    "sh_twist": ((-60, 60), 8.0), "elbow": ((0, 150), 5.0),
}
_DOFS = {
    "root_yaw": ((-np.inf, np.inf), 4.0), "root_pitch": ((-30, 70), 2.0),
    "root_roll": ((-20, 20), 1.5),
    "spine_bend": ((-30, 60), 3.0), "spine_side": ((-30, 30), 3.0),
    "spine_twist": ((-45, 45), 3.0),
    "neck_bend": ((-40, 50), 5.0), "neck_side": ((-30, 30), 4.0),
    "neck_twist": ((-60, 60), 8.0),
    **{f"{s}_{k}": v for s in ("l", "r") for k, v in _SIDE_DOFS.items()},
}
DOF_NAMES: tuple[str, ...] = tuple(_DOFS)


def default_config() -> ml_collections.ConfigDict:
  """The synthetic dataset's configuration with its defaults."""
  return ml_collections.ConfigDict(dict(
      seed=0,
      num_subjects=ml_collections.ConfigDict(dict(train=8, val=2, test=3)),
      sequences_per_action=2, frames_per_sequence=200, fps=50.0, cameras_per_sequence=2,
      noise_px=4.0, outlier_prob=0.01, outlier_px=40.0, actions=ACTIONS,
  ))


# ----------------------------------------------------------------------------- body


@dataclasses.dataclass(frozen=True)
class Body:
  """One synthetic subject.

  Attributes:
    offsets: (17, 3) rest bone vectors (joint minus parent) in the body frame, metres.
    bone_lengths: (17,) length of the bone ending at each joint (0 for the root), metres.
    ankle_height: the ankle joint's height above the ground when standing, metres.
  """
  offsets: np.ndarray
  bone_lengths: np.ndarray
  ankle_height: float

  @property
  def leg_length(self) -> float:
    """Hip to ground, metres."""
    return float(self.bone_lengths[2] + self.bone_lengths[3] + self.ankle_height)


def sample_body(rng: np.random.Generator) -> Body:
  """A random body: global scale ~N(1, 0.05) times per-bone jitter ~N(1, 0.04), clipped.

  Left and right bones share their jitter, so every body is symmetric.
  """
  scale = np.clip(rng.normal(1.0, 0.05), 0.88, 1.12)
  jitter = np.clip(rng.normal(1.0, 0.04, size=17), 0.9, 1.1)
  for left, right in _SYMMETRIC_BONES:
    jitter[right] = jitter[left]
  lengths = NOMINAL_BONE_LENGTHS * scale * jitter
  return Body(offsets=_REST_DIRECTIONS * lengths[:, None], bone_lengths=lengths,
              ankle_height=ANKLE_HEIGHT * scale)


# ----------------------------------------------------------------------- kinematics


def _rot(axis: int, angle):
  """Rotations about a body axis (0 = x, 1 = y, 2 = z): angle (T,) radians -> (T, 3, 3)."""
  return geometry.axis_rotation(axis, angle)


def _chain(*rotations):
  """Matrix product of (T, 3, 3) rotations, left to right."""
  out = rotations[0]
  for r in rotations[1:]:
    out = out @ r
  return out


def local_rotations(angles: dict) -> np.ndarray:
  """Joint angles -> each joint's rotation relative to its parent.

  Conventions (positive angle): hip/shoulder flexion moves the limb forward, abduction
  moves it outward, twist turns it outward (about its own axis); knee flexion moves the
  shin backward, elbow flexion the forearm forward; spine/neck bend forward.

  Args:
    angles: DOF name (see `DOF_NAMES`) -> (T,) radians.
  Returns:
    (T, 17, 3, 3) local rotation matrices; the root's is its world orientation.
  """
  a = angles
  num = len(a["root_yaw"])
  out = np.broadcast_to(np.eye(3), (num, 17, 3, 3)).copy()
  out[:, 0] = _chain(_rot(1, a["root_yaw"]), _rot(0, a["root_pitch"]), _rot(2, a["root_roll"]))
  spine = _chain(_rot(0, a["spine_bend"] / 2), _rot(2, a["spine_side"] / 2),
                 _rot(1, a["spine_twist"] / 2))
  out[:, 7] = spine  # the spine's bend is shared by the spine and thorax joints.
  out[:, 8] = spine
  out[:, 9] = _chain(_rot(0, a["neck_bend"]), _rot(2, a["neck_side"]), _rot(1, a["neck_twist"]))
  for s, sign, hip, knee, shoulder, elbow in (("l", 1, 4, 5, 11, 12), ("r", -1, 1, 2, 14, 15)):
    out[:, hip] = _chain(_rot(2, sign * a[f"{s}_hip_abd"]), _rot(0, -a[f"{s}_hip_flex"]),
                         _rot(1, sign * a[f"{s}_hip_twist"]))
    out[:, knee] = _rot(0, a[f"{s}_knee"])
    out[:, shoulder] = _chain(_rot(2, sign * a[f"{s}_sh_abd"]), _rot(0, -a[f"{s}_sh_flex"]),
                              _rot(1, sign * a[f"{s}_sh_twist"]))
    out[:, elbow] = _rot(0, -a[f"{s}_elbow"])
  return out


def forward_kinematics(offsets: np.ndarray, rotations: np.ndarray) -> np.ndarray:
  """Joint positions from rest bone vectors and local rotations, root at the origin.

  Args:
    offsets: (17, 3) rest bone vectors in the parent's frame, metres.
    rotations: (T, 17, 3, 3) local rotations (`local_rotations`).
  Returns:
    (T, 17, 3) joint positions, metres.
  """
  num = rotations.shape[0]
  glob = [None] * len(skeleton.PARENTS)
  pos = np.zeros((num, len(skeleton.PARENTS), 3))
  for j, p in enumerate(skeleton.PARENTS):
    if p < 0:
      glob[j] = rotations[:, j]
      continue
    pos[:, j] = pos[:, p] + glob[p] @ offsets[j]
    glob[j] = glob[p] @ rotations[:, j]
  return pos


# ---------------------------------------------------------------- signal helpers


def _smoothstep(x):
  x = np.clip(x, 0.0, 1.0)
  return x * x * (3 - 2 * x)


def _bump(phase, centre, kappa):
  """Periodic bump in [0, 1] peaking at `centre` (phase in cycles)."""
  return np.exp(kappa * (np.cos(2 * np.pi * (phase - centre)) - 1))


def _wrapped_gauss(tau, centre, width, period):
  """Gaussian bump in time within a cycle of `period` seconds, wrapped at the ends."""
  d = np.abs(tau - centre) % period
  d = np.minimum(d, period - d)
  return np.exp(-0.5 * (d / width) ** 2)


def _smooth_noise(rng, t, num, fmin=0.1, fmax=1.0, terms=3):
  """(num, T) smooth random signals with unit standard deviation (sums of sinusoids)."""
  f = rng.uniform(fmin, fmax, size=(num, terms, 1))
  phi = rng.uniform(0, 2 * np.pi, size=(num, terms, 1))
  return np.sqrt(2.0 / terms) * np.sin(2 * np.pi * f * t + phi).sum(1)


def _phase(rng, t, fps, freq, jitter=0.05):
  """Gait phase in cycles (T,) at a frequency that drifts by ~`jitter` (relative)."""
  f = freq * (1 + jitter * _smooth_noise(rng, t, 1, 0.05, 0.4)[0])
  return rng.uniform() + np.cumsum(f) / fps


def _knots(t, starts, durations, values):
  """Piecewise-constant `values` (K+1, ...) joined by smoothstep transitions.

  Transition k starts at starts[k] and lasts durations[k] seconds. Returns (T, ...).
  """
  values = np.asarray(values, np.float64)
  if len(starts) == 0:
    return np.broadcast_to(values[0], t.shape + values.shape[1:]).copy()
  u = _smoothstep((t[:, None] - np.asarray(starts)[None]) / np.asarray(durations)[None])
  return values[0] + np.tensordot(u, np.diff(values, axis=0), axes=1)


def _schedule(rng, t, sample, hold, trans):
  """Random holds of `sample()` values with smooth transitions, covering all of `t`.

  Args:
    sample: () -> value (array-like), called once per state.
    hold, trans: (low, high) uniform ranges of hold and transition durations, seconds.
  Returns:
    (T, ...) values.
  """
  starts, durations, values = [], [], [sample()]
  now = -rng.uniform(0, hold[1])
  while True:
    now += rng.uniform(*hold)
    if now >= t[-1]:
      break
    starts.append(now)
    durations.append(rng.uniform(*trans))
    now += durations[-1]
    values.append(sample())
  return _knots(t, starts, durations, values)


def _curved_path(rng, t, fps, speed, radius):
  """A smooth path of curving locomotion.

  Args:
    speed: mean speed, m/s.
    radius: (low, high) range of the typical turning radius, metres.
  Returns:
    (xz (T, 2) metres, heading (T,) degrees): positions and direction of travel.
  """
  base = rng.choice([-1.0, 1.0]) * rng.uniform(0.6, 1.0)
  n = _smooth_noise(rng, t, 2, 0.05, 0.3)
  omega = speed / rng.uniform(*radius) * (base + 0.4 * n[0])
  heading = rng.uniform(0, 2 * np.pi) + np.cumsum(omega) / fps
  v = speed * (1 + 0.05 * n[1])
  xz = np.cumsum(v[:, None] * np.stack([np.sin(heading), np.cos(heading)], -1), 0) / fps
  return xz - xz.mean(0), np.degrees(heading)


# ------------------------------------------------------------------- motion families
# Each family maps (rng, t, fps, body) -> a motion dict: DOF name -> degrees ((T,) or
# scalar, missing = 0), plus 'path' (T, 2) horizontal world position of the pelvis
# (plant False) or of the feet's midpoint (plant True), optional 'lift' (T,) metres of
# extra pelvis height and 'flight' (T,) bool frames without ground contact.


def _standing(rng, t):
  """A relaxed standing pose with slow weight shifts."""
  shift = rng.uniform(0, 3) * np.sin(2 * np.pi * rng.uniform(0.1, 0.4) * t + rng.uniform(0, 7))
  hip_abd = rng.uniform(-1, 4)
  m = {"root_pitch": rng.uniform(0, 5), "root_roll": -0.5 * shift,
       "root_yaw": rng.uniform(0, 360)}
  for s, sign in (("l", 1), ("r", -1)):
    m.update({f"{s}_hip_abd": hip_abd + sign * shift, f"{s}_knee": rng.uniform(0, 8),
              f"{s}_sh_abd": rng.uniform(5, 12), f"{s}_sh_flex": rng.uniform(-5, 10),
              f"{s}_elbow": rng.uniform(5, 25)})
    m[f"{s}_hip_flex"] = m[f"{s}_knee"] * 0.5 + m["root_pitch"]
  m["path"] = np.zeros((len(t), 2))
  m["plant"] = True
  return m


def _gait(rng, phase, hip_mean, hip_amp, knee_stance, knee_swing, swing_kappa, arm_amp, elbow,
          lean):
  """Leg and arm angles of a walking/running cycle; phase 0 = left heel strike.

  Angles in degrees; swing_kappa: sharpness of the knee's swing-phase flexion (larger
  is shorter and faster).
  """
  pelvis_yaw = rng.uniform(2, 7)
  m = {"root_pitch": lean, "root_roll": rng.uniform(1, 4) * np.sin(4 * np.pi * phase),
       "root_yaw": -pelvis_yaw * np.cos(2 * np.pi * phase),
       "spine_twist": 1.6 * pelvis_yaw * np.cos(2 * np.pi * phase),
       "spine_bend": rng.uniform(-3, 5), "neck_bend": -lean * rng.uniform(0.3, 0.8)}
  arm_mean, arm_abd, elbow_amp = rng.uniform(-5, 10), rng.uniform(5, 15), rng.uniform(0, 15)
  for s, ph in (("l", phase), ("r", phase + 0.5)):
    arm = np.cos(2 * np.pi * (ph + 0.5))  # the arm swings opposite to the same-side leg.
    knee = knee_stance * _bump(ph, 0.12, 10) + knee_swing * _bump(ph, 0.7, swing_kappa)
    m.update({
        f"{s}_hip_flex": hip_mean + lean + hip_amp * np.cos(2 * np.pi * (ph + 0.03)),
        f"{s}_knee": 3 + knee,
        f"{s}_hip_abd": 0.5 + 2 * _bump(ph, 0.7, 4),
        f"{s}_sh_flex": arm_mean + arm_amp * arm, f"{s}_sh_abd": arm_abd,
        f"{s}_elbow": elbow + elbow_amp * 0.5 * (1 + arm)})
  return m


def _walk(rng, t, fps, body):
  freq = rng.uniform(0.8, 1.05)  # strides (two steps) per second.
  phase = _phase(rng, t, fps, freq)
  speed = freq * body.leg_length * rng.uniform(1.4, 1.8)
  m = _gait(rng, phase, hip_mean=rng.uniform(2, 8), hip_amp=rng.uniform(17, 26),
            knee_stance=rng.uniform(8, 20), knee_swing=rng.uniform(50, 65), swing_kappa=3.0,
            arm_amp=rng.uniform(8, 30), elbow=rng.uniform(8, 35), lean=rng.uniform(2, 8))
  m["path"], heading = _curved_path(rng, t, fps, speed, radius=(1.5, 3.5))
  m["root_yaw"] = m["root_yaw"] + heading
  m["plant"] = False
  return m


def _run(rng, t, fps, body):
  freq = rng.uniform(1.2, 1.5)
  phase = _phase(rng, t, fps, freq)
  speed = freq * body.leg_length * rng.uniform(1.6, 2.2)
  m = _gait(rng, phase, hip_mean=rng.uniform(8, 15), hip_amp=rng.uniform(22, 32),
            knee_stance=rng.uniform(25, 40), knee_swing=rng.uniform(70, 100), swing_kappa=2.5,
            arm_amp=rng.uniform(20, 40), elbow=rng.uniform(70, 100), lean=rng.uniform(6, 15))
  m["path"], heading = _curved_path(rng, t, fps, speed, radius=(1.8, 3.0))
  m["root_yaw"] = m["root_yaw"] + heading
  # Flight between one foot's toe-off and the other's heel strike (twice per stride).
  m["lift"] = rng.uniform(0.03, 0.07) * _bump(2 * phase, 0.85, 3)
  m["plant"] = False
  return m


def _crouch_legs(m, c, thigh, shin, pitch):
  """Adds a crouch of depth c (T,) in [0, 1] to motion m, feet under the body.

  Args (angles at full depth, degrees): thigh: the thigh's forward swing from vertical;
  shin: the shin's tilt with the knee ahead of the foot; pitch: the pelvis's forward pitch.
  """
  m["root_pitch"] = m.get("root_pitch", 0) + c * pitch
  for s in ("l", "r"):
    m[f"{s}_knee"] = m.get(f"{s}_knee", 0) + c * (thigh + shin)
    m[f"{s}_hip_flex"] = m.get(f"{s}_hip_flex", 0) + c * (thigh + pitch)
  m["neck_bend"] = m.get("neck_bend", 0) - 0.5 * c * pitch  # keep looking ahead.
  return m


def _jump(rng, t, fps, body):
  del fps, body
  m = _standing(rng, t)
  height = rng.uniform(0.08, 0.35)
  flight_time = 2 * np.sqrt(2 * height / _GRAVITY)
  t_crouch = rng.uniform(0.4, 0.55)
  width = rng.uniform(0.09, 0.13)
  t_off = t_crouch + rng.uniform(0.15, 0.22)
  t_land = t_off + flight_time
  period = t_land + 0.45 + rng.uniform(0.1, 0.7)
  clock = t + rng.uniform(0, period)
  tau, cycle = clock % period, (clock // period).astype(int)
  c = (_wrapped_gauss(tau, t_crouch, width, period)
       + rng.uniform(0.4, 0.8) * _wrapped_gauss(tau, t_land + 0.1, 0.09, period))
  _crouch_legs(m, c, thigh=rng.uniform(40, 70), shin=rng.uniform(20, 35),
               pitch=rng.uniform(15, 40))
  flight = (tau > t_off) & (tau < t_land)
  u = np.clip((tau - t_off) / flight_time, 0, 1)
  dt = np.where(flight, tau - t_off, 0.0)
  m["lift"] = _GRAVITY * flight_time / 2 * dt - _GRAVITY / 2 * dt ** 2
  m["flight"] = flight
  tuck = rng.uniform(0, 40) * np.sin(np.pi * u) * flight
  swing_back, swing_up = rng.uniform(20, 60), rng.uniform(50, 140)
  arms = (-swing_back * _wrapped_gauss(tau, t_crouch, width, period)
          + swing_up * _wrapped_gauss(tau, t_off, 0.16, period))
  for s in ("l", "r"):
    m[f"{s}_knee"] = m[f"{s}_knee"] + tuck
    m[f"{s}_hip_flex"] = m[f"{s}_hip_flex"] + tuck
    m[f"{s}_sh_flex"] = m[f"{s}_sh_flex"] + arms
  # Hops forward and turns happen during the flight.
  n = cycle.max() + 1
  hop = rng.uniform(0, 0.5, n) * (rng.uniform() < 0.5)
  turn = np.where(rng.uniform(size=n) < 0.15, rng.uniform(-180, 180, n), rng.normal(0, 20, n))
  turn *= rng.uniform() < 0.6
  s = _smoothstep(u)
  yaw = m["root_yaw"] + np.concatenate([[0], np.cumsum(turn)])[cycle] + turn[cycle] * s
  progress = np.concatenate([[0], np.cumsum(hop)])[cycle] + hop[cycle] * s
  step = np.diff(progress, prepend=progress[0])
  rad = np.radians(yaw)
  m["path"] = np.cumsum(step[:, None] * np.stack([np.sin(rad), np.cos(rad)], -1), 0)
  m["root_yaw"] = yaw
  return m


def _squat(rng, t, fps, body):
  del fps, body
  m = _standing(rng, t)
  period = rng.uniform(2.0, 4.0)
  c = ((1 - np.cos(2 * np.pi * (t / period + rng.uniform()))) / 2) ** rng.uniform(0.7, 1.5)
  c = c * rng.uniform(0.6, 1.0)
  _crouch_legs(m, c, thigh=rng.uniform(60, 100), shin=rng.uniform(15, 40),
               pitch=rng.uniform(15, 45))
  m["spine_bend"] = c * rng.uniform(0, 15)
  abd, twist = rng.uniform(3, 10), rng.uniform(0, 20)
  style = rng.integers(3)  # arms: raised forward / hands together in front / hanging.
  flex = [c * rng.uniform(60, 95), rng.uniform(20, 45) + 20 * c, 0][style]
  elbow = [rng.uniform(0, 15), rng.uniform(80, 120), 0][style]
  for s in ("l", "r"):
    m[f"{s}_hip_abd"] = m[f"{s}_hip_abd"] + abd
    m[f"{s}_hip_twist"] = twist
    m[f"{s}_sh_flex"] = m[f"{s}_sh_flex"] + flex
    m[f"{s}_elbow"] = m[f"{s}_elbow"] + elbow
    if style == 1:
      m[f"{s}_sh_twist"] = -rng.uniform(20, 40)
      m[f"{s}_sh_abd"] = rng.uniform(0, 8)
  return m


def _toggle(rng, t, p_on, hold, trans):
  """(T,) in [0, 1]: alternating off/on states (on at the start with probability p_on)."""
  state = [rng.uniform() >= p_on]
  def sample():
    state[0] = not state[0]
    return float(state[0])
  return _schedule(rng, t, sample, hold, trans)


def _wave(rng, t, fps, body):
  del fps, body
  m = _standing(rng, t)
  variant = rng.integers(3)  # one arm / both arms / reaching to random targets.
  if variant < 2:
    r = _toggle(rng, t, 0.3, hold=(0.6, 2.5), trans=(0.3, 0.7))
    freq, ampl = rng.uniform(1.5, 3.0), rng.uniform(15, 35)
    sides = [rng.choice(["l", "r"])] if variant == 0 else ["l", "r"]
    anti = rng.uniform() < 0.5
    for k, s in enumerate(sides):
      osc = np.sin(2 * np.pi * freq * t + np.pi * k * anti)
      m[f"{s}_sh_abd"] = m[f"{s}_sh_abd"] * (1 - r) + r * (
          rng.uniform(100, 165) + rng.uniform(0, 15) * osc)
      m[f"{s}_sh_flex"] = m[f"{s}_sh_flex"] * (1 - r) + r * rng.uniform(0, 45)
      m[f"{s}_sh_twist"] = r * rng.uniform(-20, 30)
      m[f"{s}_elbow"] = m[f"{s}_elbow"] * (1 - r) + r * (rng.uniform(25, 70) + ampl * osc)
    m["spine_side"] = r * rng.uniform(-8, 8)
    return m
  # Reach: each arm moves between random targets (or hangs); the body bends to reach.
  for s in ("l", "r"):
    def target():
      if rng.uniform() < 0.35:
        return [rng.uniform(-5, 10), rng.uniform(5, 12), rng.uniform(5, 25), 0]
      return [rng.uniform(-20, 150), rng.uniform(0, 100), rng.uniform(0, 90),
              rng.uniform(-30, 30)]
    v = _schedule(rng, t, target, hold=(0.2, 1.0), trans=(0.4, 0.9))
    for k, dof in enumerate(("sh_flex", "sh_abd", "elbow", "sh_twist")):
      m[f"{s}_{dof}"] = v[:, k]
  torso = _schedule(rng, t, lambda: [rng.uniform(0, 1) ** 2, rng.uniform(-15, 15),
                                     rng.uniform(-15, 15)], hold=(0.3, 1.5), trans=(0.5, 1.0))
  _crouch_legs(m, torso[:, 0] * rng.uniform(0, 0.5), thigh=60, shin=30, pitch=40)
  m["spine_bend"] = torso[:, 0] * rng.uniform(0, 30)
  m["spine_twist"] = torso[:, 1]
  m["spine_side"] = torso[:, 2]
  return m


def _turn(rng, t, fps, body):
  del body
  m = _standing(rng, t)
  direction = rng.choice([-1.0, 1.0])
  speed = rng.uniform(90, 200)  # degrees per second while turning.
  starts, durations, values = [], [], [m["root_yaw"]]
  now = rng.uniform(-0.5, 0.8)
  while now < t[-1]:
    if rng.uniform() < 0.3:
      direction = -direction
    angle = direction * rng.uniform(45, 180)
    starts.append(now)
    durations.append(abs(angle) / speed)
    values.append(values[-1] + angle)
    now += durations[-1] + rng.uniform(0.2, 1.0)
  yaw = _knots(t, starts, durations, values)
  rate = np.gradient(yaw) * fps if len(t) > 1 else np.zeros_like(yaw)  # degrees/second.
  env = np.clip(np.abs(rate) / 60, 0, 1)
  phase = rng.uniform() + rng.uniform(1.0, 1.6) * t
  hip, knee = rng.uniform(8, 20), rng.uniform(20, 45)
  for s, ph in (("l", phase), ("r", phase + 0.5)):
    m[f"{s}_hip_flex"] = m[f"{s}_hip_flex"] + env * hip * _bump(ph, 0.3, 3)
    m[f"{s}_knee"] = m[f"{s}_knee"] + env * knee * _bump(ph, 0.3, 3)
    m[f"{s}_hip_twist"] = np.clip(rate, -120, 120) / 120 * rng.uniform(0, 15) * (
        1 if s == "l" else -1)
    m[f"{s}_sh_flex"] = m[f"{s}_sh_flex"] + env * rng.uniform(0, 20) * np.cos(2 * np.pi * ph)
  m["root_yaw"] = yaw
  m["neck_twist"] = np.clip(rate * 0.15, -30, 30)  # the head leads the turn.
  m["spine_twist"] = np.clip(rate * 0.05, -10, 10)
  return m


def _sit(rng, t, fps, body):
  del fps, body
  m = _standing(rng, t)
  s = _toggle(rng, t, 0.4, hold=(0.3, 1.5), trans=(0.9, 1.6))  # 1 = seated.
  lean = rng.uniform(25, 45) * 4 * s * (1 - s)  # lean forward while getting up/down.
  pitch = s * rng.uniform(-10, 10) + lean
  thigh, foot_ahead = s * rng.uniform(80, 95), s * rng.uniform(-10, 20)  # shin tilts.
  m["root_pitch"] = m["root_pitch"] * (1 - s) + pitch
  m["spine_bend"] = s * rng.uniform(-5, 15) + 0.3 * lean
  m["neck_bend"] = 0.3 * lean
  abd = s * rng.uniform(0, 12)
  arm_flex, arm_elbow = rng.uniform(15, 40), rng.uniform(30, 80)
  for side in ("l", "r"):
    m[f"{side}_knee"] = m[f"{side}_knee"] * (1 - s) + thigh - foot_ahead
    m[f"{side}_hip_flex"] = m[f"{side}_hip_flex"] * (1 - s) + thigh + pitch
    m[f"{side}_hip_abd"] = m[f"{side}_hip_abd"] + abd
    m[f"{side}_sh_flex"] = m[f"{side}_sh_flex"] + s * arm_flex
    m[f"{side}_elbow"] = m[f"{side}_elbow"] + s * arm_elbow
  return m


_FAMILIES = {"walk": _walk, "run": _run, "jump": _jump, "squat": _squat, "wave": _wave,
             "turn": _turn, "sit": _sit}
assert tuple(_FAMILIES) == ACTIONS


def _angles(rng, motion, t):
  """Motion dict (degrees) + style noise -> clipped DOF angles in radians, (T,) each."""
  num = len(t)
  noise = _smooth_noise(rng, t, len(DOF_NAMES), 0.1, 1.0)
  style = rng.uniform(0.5, 1.5)
  out = {}
  for k, name in enumerate(DOF_NAMES):
    (lo, hi), amp = _DOFS[name]
    value = np.broadcast_to(np.asarray(motion.get(name, 0.0), np.float64), (num,))
    value = value + style * amp * (noise[k] + 0.5 * rng.normal())
    out[name] = np.radians(np.clip(value, lo, hi))
  return out


def simulate_motion(action: str, body: Body, rng: np.random.Generator, num_frames: int,
                    fps: float) -> np.ndarray:
  """One sequence of a motion family in world coordinates.

  Returns:
    (num_frames, 17, 3) world joint positions, metres, Y up, feet on the ground y = 0.
  """
  if action not in _FAMILIES:
    raise DataError(f"synthetic: unknown action {action!r}; expected one of {list(ACTIONS)}.")
  t = np.arange(num_frames) / fps
  motion = _FAMILIES[action](rng, t, fps, body)
  rel = forward_kinematics(body.offsets, local_rotations(_angles(rng, motion, t)))
  ankles = rel[:, (3, 6)]
  # Pelvis height: the lower ankle on the ground, or ballistic over flight frames.
  contact = body.ankle_height - ankles[..., 1].min(-1)
  flight = np.asarray(motion.get("flight", np.zeros(num_frames, bool)))
  base = contact
  feet = ankles[..., (0, 2)].mean(1)
  if flight.any() and not flight.all():
    base = np.interp(t, t[~flight], contact[~flight])
    feet = np.stack([np.interp(t, t[~flight], feet[~flight, k]) for k in range(2)], -1)
  height = np.maximum(base + motion.get("lift", 0.0), contact)
  xz = motion["path"] - feet if motion["plant"] else motion["path"]
  root = np.stack([xz[:, 0], height, xz[:, 1]], -1)
  return rel + root[:, None]


# ----------------------------------------------------------------------------- cameras


def _project_np(points_cam, camera):
  """NumPy twin of `geometry.project_to_2d` for one camera: (..., 3) -> (..., 2) px."""
  xy = points_cam[..., :2] / points_cam[..., 2:3]
  k, p = camera.k.astype(np.float64), camera.p.astype(np.float64)
  r2 = (xy ** 2).sum(-1, keepdims=True)
  radial = 1 + k[0] * r2 + k[1] * r2 ** 2 + k[2] * r2 ** 3
  xy_d = xy * (radial + (p * xy).sum(-1, keepdims=True)) + p * r2
  return camera.f * xy_d + camera.c


def sample_camera(rng: np.random.Generator, world: np.ndarray, max_tries: int = 40):
  """A random virtual camera looking at the subject.

  3.5-6.5 m from the average torso, azimuth uniform, elevation -5..25 degrees with the
  camera 0.5-2.5 m above the ground, aimed at the torso with ~0.1 m jitter and ~2
  degrees of roll. Resampled until every joint is >= 1 m in front of the camera and
  >= 97% of joint-frames lie in the image; after 20 tries the camera moves out beyond
  the motion's extent (so the depth test always passes), and the best try is kept.

  Args:
    world: (T, 17, 3) world joints, metres.
  Returns:
    (camera id, R (3, 3) camera-to-world, centre (3,) metres).
  """
  cam_id = str(rng.choice(geometry.H36M_CAMERA_IDS))
  camera = geometry.Camera.h36m(cam_id)
  torso = world[:, (0, 7, 8)].mean((0, 1))
  reach = np.linalg.norm(world - torso, axis=-1).max()
  best, best_score = None, -np.inf
  for attempt in range(max_tries):
    dist = rng.uniform(3.5, 6.5)
    if attempt >= 20:
      dist = max(dist, reach + 1.5) + 0.25 * (attempt - 20)
    lo = max(-5.0, np.degrees(np.arcsin(np.clip((0.5 - torso[1]) / dist, -1, 1))))
    hi = min(25.0, np.degrees(np.arcsin(np.clip((2.5 - torso[1]) / dist, -1, 1))))
    el = np.radians(rng.uniform(lo, max(lo, hi)))
    az = rng.uniform(0, 2 * np.pi)
    centre = torso + dist * np.array([np.cos(el) * np.sin(az), np.sin(el),
                                      np.cos(el) * np.cos(az)])
    target = torso + rng.normal(0, 0.1, 3)
    rot = geometry.look_at_rotation(centre, target) @ _rot(2, np.radians(rng.normal(0, 2)))
    cam = (world - centre) @ rot
    depth_ok = cam[..., 2].min() >= 1.0
    inside = 0.0
    if depth_ok:
      px = _project_np(cam, camera)
      inside = np.mean((px[..., 0] >= 0) & (px[..., 0] < camera.w)
                       & (px[..., 1] >= 0) & (px[..., 1] < camera.h))
    score = inside + depth_ok
    if score > best_score:
      best, best_score = (cam_id, rot, centre), score
    if depth_ok and inside >= 0.97:
      break
  return best


# ----------------------------------------------------------------------- observations


def _observe(rng, px, noise_px, outlier_prob, outlier_px):
  """Detector-like noise on clean pixels (T, K, 2).

  Returns (noise (T, K, 2) pixels, confidence (T, K) in [0, 1]).
  """
  shape = px.shape[:-1]
  sigma = noise_px * JOINT_NOISE_SCALE
  noise = rng.normal(size=px.shape) * sigma[:, None]
  outlier = rng.uniform(size=shape) < outlier_prob
  angle = rng.uniform(0, 2 * np.pi, shape)
  size = outlier_px * rng.uniform(0.5, 1.5, shape) * outlier
  noise += size[..., None] * np.stack([np.cos(angle), np.sin(angle)], -1)
  err2 = (noise ** 2).sum(-1)
  scale = 2.5 * max(noise_px, 1.0) * JOINT_NOISE_SCALE
  conf = np.exp(-err2 / (2 * scale ** 2)) + rng.normal(0, 0.03, shape)
  return noise, np.clip(conf, 0.0, 1.0)


def _check_config(config, split):
  if split not in SPLITS:
    raise DataError(f"synthetic: unknown split {split!r}; expected one of {list(SPLITS)}.")
  actions = tuple(config.actions)
  unknown = [a for a in actions if a not in ACTIONS]
  if unknown or not actions or len(set(actions)) != len(actions):
    raise DataError(f"synthetic: config.actions {list(actions)} must be distinct names from "
                    f"{list(ACTIONS)} (unknown: {unknown}).")
  ints = {"seed": config.seed, f"num_subjects.{split}": config.num_subjects[split],
          "sequences_per_action": config.sequences_per_action,
          "frames_per_sequence": config.frames_per_sequence,
          "cameras_per_sequence": config.cameras_per_sequence}
  for name, value in ints.items():
    if int(value) != value or value < (0 if name == "seed" else 1):
      raise DataError(f"synthetic: config.{name} = {value!r}; expected an integer >= "
                      f"{0 if name == 'seed' else 1}.")
  for name in ("fps", "noise_px", "outlier_prob", "outlier_px"):
    value = getattr(config, name)
    if not np.isfinite(value) or value < 0 or (name == "fps" and value <= 0) or (
        name == "outlier_prob" and value > 1):
      raise DataError(f"synthetic: config.{name} = {value!r} is out of range.")
  return actions


def generate(config, split: str) -> Sequences:
  """Generates one split of the synthetic dataset.

  Args:
    config: fields as `default_config()`.
    split: 'train' | 'val' | 'test'; each split has its own subjects.
  Returns:
    `Sequences` (source 'synthetic:<split>'): pose_3d (N, 17, 3) root-relative camera-frame
    metres, pose_2d (N, 17, 2) noisy normalised screen coordinates, confidence (N, 17),
    extras 'pose_2d_clean' (N, 17, 2), 'root_3d' (N, 3) camera-frame pelvis in metres,
    'pose_world' (N, 17, 3) world joints in metres, 'view_group' (N,) and
    'camera_rotation' (N, 3, 3) (the cameras of one motion share a group; data/views.py).
    One sequence per (subject, action, motion, camera); labels 'synth_<split>_<ii>', the
    action, '<camera id>#<k>'.
  """
  actions = _check_config(config, split)
  code = SPLITS.index(split)
  seed, num_frames, fps = int(config.seed), int(config.frames_per_sequence), float(config.fps)
  labels, worlds, rots, centres, streams, groups = [], [], [], [], [], []
  for i in range(int(config.num_subjects[split])):
    body = sample_body(np.random.default_rng([seed, code, i]))
    for action in actions:
      a = ACTIONS.index(action)
      for j in range(int(config.sequences_per_action)):
        rng = np.random.default_rng([seed, code, i, 1 + a, j])
        world = simulate_motion(action, body, rng, num_frames, fps)
        motion = groups[-1] + 1 if groups else 0
        for c in range(int(config.cameras_per_sequence)):
          cam_id, rot, centre = sample_camera(rng, world)
          k = j * int(config.cameras_per_sequence) + c
          labels.append((f"synth_{split}_{i:02d}", action, f"{cam_id}#{k}"))
          worlds.append(world)
          rots.append(rot)
          centres.append(centre)
          streams.append([seed, code, i, 1 + a, j, 1 + c])
          groups.append(motion)  # the cameras of one motion share its id (data/views.py)
  # All sequences at once: camera frame, then the shared projection.
  world = np.stack(worlds)                                             # (S, T, 17, 3)
  cam = np.einsum("stkj,sji->stki", world - np.stack(centres)[:, None, None], np.stack(rots))
  root = cam[:, :, 0].astype(np.float32)
  pose_3d = (cam - cam[:, :, :1]).astype(np.float32)
  camera = geometry.Camera.stack([geometry.Camera.h36m(lab[2].split("#")[0]) for lab in labels])
  px = np.asarray(geometry.project_to_2d(pose_3d + root[:, :, None], camera), np.float64)
  w, h = camera.w[:, None, None], camera.h[:, None, None]
  clean = np.asarray(geometry.normalize_screen_coordinates(px.astype(np.float32), w, h))
  items = []
  for s, (subject, action, cam_label) in enumerate(labels):
    noise, conf = _observe(np.random.default_rng(streams[s]), px[s], float(config.noise_px),
                           float(config.outlier_prob), float(config.outlier_px))
    items.append({
        "pose_3d": pose_3d[s], "pose_2d": clean[s] + noise * (2.0 / camera.w[s]),
        "confidence": conf, "pose_2d_clean": clean[s], "root_3d": root[s],
        "pose_world": world[s],
        "view_group": np.full(num_frames, groups[s], np.int32),
        "camera_rotation": np.broadcast_to(rots[s].astype(np.float32), (num_frames, 3, 3)),
        "subject": subject, "action": action, "camera": cam_label,
        "has_3d": True})
  return Sequences.from_list(items, source=f"synthetic:{split}")
