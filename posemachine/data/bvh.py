"""BVH motion capture: parser, forward kinematics, mapping to the 17-joint layout, and the
'mocap' data source (virtual cameras over BVH clips).

BVH: a HIERARCHY of joints (ROOT/JOINT name { OFFSET x y z; CHANNELS n ...; children;
End Site { OFFSET } }) then MOTION (Frames: n, Frame Time: seconds, one line of channel
values per frame). Rotation channels are Euler angles in degrees applied in the order
listed: 'Zrotation Xrotation Yrotation' gives the local rotation Rz @ Rx @ Ry (the
rotation of a child's offset into the parent frame). Position channels replace the
corresponding component of the joint's OFFSET (so a root with OFFSET 0 0 0 moves to the
channel values; exporters that write the rest height into a root OFFSET also write it
into the position channels).

Public API (kept stable: the BVH writer re-imports its files through it):
  parse_bvh(text, source) -> BVH;  read_bvh(path) -> BVH
  forward_kinematics(bvh, end_sites=False) -> (F, J[+E], 3) in file units
  to_h36m17(bvh, ...) -> (F, 17, 3) metres, Y up
  load_split(config, split) -> Sequences (config.data.source = 'mocap')

Mapping to the Human3.6M 17 joints is by anatomical role, not by name alone (the CMU
conversions disagree on names: 'LeftShoulder' is the clavicle in the MotionBuilder-friendly
rig and the shoulder joint in the 3dsMax-friendly one; 'Neck' sits at the top of the
spine in one and at the neck base in the other): ankles are found by name (foot/ankle),
knee = the ankle's parent, hip = the knee's parent; elbows by name (forearm/elbow/
lowerarm), shoulder = the elbow's parent, wrists by name (hand/wrist); pelvis = the
midpoint of the hips; thorax = the first joint above the shoulders' common ancestor, on
the way to the head, that is not at the same place; neck/nose = the next such joint
(the head's base); head = the end of the head chain (its End Site); spine = the joint
between pelvis and thorax nearest their midpoint (rest pose).
"""

from __future__ import annotations

import dataclasses
import fnmatch
import os
import re
import zlib

import numpy as np

from posemachine import geometry
from posemachine.data import synthetic
from posemachine.data.sequences import DataError
from posemachine.data.sequences import Sequences

# CMU's length unit (the CMU mocap FAQ): 1 unit = 0.0254 / 0.45 m (about 5.644 cm).
CMU_UNIT = 0.0254 / 0.45
POSITION_CHANNELS = ("Xposition", "Yposition", "Zposition")
ROTATION_CHANNELS = ("Xrotation", "Yrotation", "Zrotation")
_CHANNEL_CANON = {c.lower(): c for c in POSITION_CHANNELS + ROTATION_CHANNELS}
# Names present only in the CMU conversions (for the automatic unit).
_CMU_MARKERS = ("LHipJoint", "RHipJoint")


@dataclasses.dataclass
class BVH:
  """A parsed BVH file.

  Attributes:
    joint_names: J names in file order (parents before children; End Sites excluded).
    parents: (J,) int parent index, -1 for a root.
    offsets: (J, 3) float64 rest offsets from the parent, file units.
    channels: per joint, its channel names in file order (canonical spelling, e.g.
      'Zrotation').
    frame_time: seconds per frame.
    motion: (F, C) float64 channel values, C = total channels; degrees for rotations.
    end_site_parents: (E,) int joint index of each End Site's parent.
    end_site_offsets: (E, 3) float64 End Site offsets, file units.
    source: a name for error messages.
  """
  joint_names: list[str]
  parents: np.ndarray
  offsets: np.ndarray
  channels: list[list[str]]
  frame_time: float
  motion: np.ndarray
  end_site_parents: np.ndarray = dataclasses.field(
      default_factory=lambda: np.zeros((0,), np.int64))
  end_site_offsets: np.ndarray = dataclasses.field(
      default_factory=lambda: np.zeros((0, 3)))
  source: str = "<string>"

  @property
  def num_frames(self) -> int:
    return int(self.motion.shape[0])

  @property
  def num_joints(self) -> int:
    return len(self.joint_names)

  @property
  def fps(self) -> float:
    return 1.0 / self.frame_time

  @property
  def end_site_names(self) -> list[str]:
    return [f"{self.joint_names[p]}_End" for p in self.end_site_parents]


# ------------------------------------------------------------------------------ parsing


def _tokens(lines, start, stop):
  """(token, 1-based line number) of lines[start:stop]."""
  for i in range(start, stop):
    for tok in lines[i].split():
      yield tok, i + 1


def parse_bvh(text: str, source: str = "<string>") -> BVH:
  """Parses BVH text. Raises DataError naming the source and line on malformed input.

  Lines starting with '#' are comments (Blender ignores them too); line numbers in error
  messages still count them.
  """
  lines = ["" if l.lstrip().startswith("#") else l for l in text.splitlines()]
  motion_at = next((i for i, l in enumerate(lines) if l.strip().upper() == "MOTION"), None)
  if motion_at is None:
    raise DataError(f"{source}: no MOTION section (the file is truncated or not BVH; "
                    f"{len(lines)} lines).")
  toks = list(_tokens(lines, 0, motion_at))
  pos = 0

  def take(expect=None):
    nonlocal pos
    if pos >= len(toks):
      raise DataError(f"{source}: line {motion_at + 1}: the HIERARCHY ends early"
                      + (f" (expected {expect!r})." if expect else "."))
    tok, line = toks[pos]
    pos += 1
    if expect is not None and tok.upper() != expect.upper():
      raise DataError(f"{source}: line {line}: expected {expect!r}, found {tok!r}.")
    return tok, line

  def take_floats(n, what):
    vals = []
    for _ in range(n):
      tok, line = take()
      try:
        vals.append(float(tok))
      except ValueError:
        raise DataError(f"{source}: line {line}: {what} value {tok!r} is not a number.") \
            from None
    return vals

  def rest_of_line(line):
    """Tokens after the keyword on `line` (joint names may contain spaces)."""
    nonlocal pos
    words = []
    while pos < len(toks) and toks[pos][1] == line and toks[pos][0] != "{":
      words.append(toks[pos][0])
      pos += 1
    return " ".join(words)

  take("HIERARCHY")
  names, parents, offsets, channels = [], [], [], []
  end_parents, end_offsets = [], []
  stack = []  # joint index of each open block (-2 for an End Site)
  while True:
    if pos >= len(toks):
      break
    tok, line = take()
    key = tok.upper()
    if key in ("ROOT", "JOINT"):
      if key == "ROOT" and stack:
        raise DataError(f"{source}: line {line}: ROOT inside another joint.")
      if key == "JOINT" and (not stack or stack[-1] < 0):
        raise DataError(f"{source}: line {line}: JOINT outside a joint block.")
      name = rest_of_line(line)
      if not name:
        raise DataError(f"{source}: line {line}: {tok} without a name.")
      take("{")
      take("OFFSET")
      off = take_floats(3, "OFFSET")
      _, cline = take("CHANNELS")
      ntok, nline = take()
      if re.fullmatch(r"-?\d+", ntok) is None:
        raise DataError(f"{source}: line {nline}: CHANNELS count {ntok!r} is not an integer.")
      if int(ntok) < 0:
        raise DataError(f"{source}: line {nline}: CHANNELS count {ntok} is negative.")
      n = int(ntok)
      chans = []
      for _ in range(n):
        if pos >= len(toks):
          raise DataError(f"{source}: line {cline}: CHANNELS declares {n} channels but "
                          f"the hierarchy ends after {len(chans)}.")
        ctok, cl = toks[pos]
        canon = _CHANNEL_CANON.get(ctok.lower())
        if canon is None:
          if ctok.upper() in ("JOINT", "END", "}", "{", "OFFSET", "CHANNELS"):
            raise DataError(f"{source}: line {cline}: CHANNELS declares {n} channels for "
                            f"joint {name!r} but lists {len(chans)}.")
          raise DataError(f"{source}: line {cl}: unknown channel {ctok!r} of joint {name!r}; "
                          f"expected one of {list(POSITION_CHANNELS + ROTATION_CHANNELS)}.")
        if canon in chans:
          raise DataError(f"{source}: line {cl}: channel {canon} repeated for joint {name!r} "
                          f"(rotation order {' '.join(chans + [canon])} is not valid).")
        chans.append(canon)
        pos += 1
      if pos < len(toks) and toks[pos][1] == cline and toks[pos][0].lower() in _CHANNEL_CANON:
        raise DataError(f"{source}: line {cline}: CHANNELS declares {n} channels for joint "
                        f"{name!r} but lists more.")
      names.append(name)
      parents.append(stack[-1] if stack else -1)
      offsets.append(off)
      channels.append(chans)
      stack.append(len(names) - 1)
    elif key == "END":
      take("Site")
      if not stack or stack[-1] < 0:
        raise DataError(f"{source}: line {line}: End Site outside a joint block.")
      take("{")
      take("OFFSET")
      end_offsets.append(take_floats(3, "End Site OFFSET"))
      end_parents.append(stack[-1])
      take("}")
    elif key == "}":
      if not stack:
        raise DataError(f"{source}: line {line}: unmatched '}}'.")
      stack.pop()
    else:
      raise DataError(f"{source}: line {line}: unexpected {tok!r} in HIERARCHY.")
  if stack:
    raise DataError(f"{source}: line {motion_at + 1}: MOTION before the hierarchy's "
                    f"{len(stack)} open block(s) are closed (joint {names[stack[-1]]!r}).")
  if not names:
    raise DataError(f"{source}: no joints in HIERARCHY.")

  # MOTION: 'Frames: n', 'Frame Time: t', then n lines of C numbers.
  num_channels = sum(len(c) for c in channels)
  i = motion_at + 1
  header = {}
  for key, label in (("frames", "Frames:"), ("frame_time", "Frame Time:")):
    while i < len(lines) and not lines[i].strip():
      i += 1
    if i >= len(lines) or not lines[i].strip().lower().startswith(label.lower()):
      got = lines[i].strip() if i < len(lines) else "end of file"
      raise DataError(f"{source}: line {i + 1}: expected '{label} ...', found {got!r}.")
    value = lines[i].strip()[len(label):].strip()
    try:
      header[key] = int(value) if key == "frames" else float(value)
    except ValueError:
      raise DataError(f"{source}: line {i + 1}: {label} value {value!r} is not a number.") \
          from None
    i += 1
  frames, frame_time = header["frames"], header["frame_time"]
  if frames < 0 or not frame_time > 0:
    raise DataError(f"{source}: Frames {frames} / Frame Time {frame_time}: expected a "
                    "count >= 0 and a positive time.")
  if not 1e-4 <= frame_time <= 1.0:  # 1 to 10,000 frames per second.
    raise DataError(f"{source}: Frame Time {frame_time:g} is {1 / frame_time:.4g} frames per "
                    "second; BVH frame times are seconds per frame (e.g. 0.0333333 for 30 fps, "
                    "0.00833333 for 120 fps). Was it written in milliseconds?")
  body = [(j + 1, l) for j, l in enumerate(lines[i:], start=i) if l.strip()]
  if len(body) < frames:
    last = body[-1][0] if body else i
    raise DataError(f"{source}: truncated: Frames: {frames} but only {len(body)} motion "
                    f"lines (the file ends at line {last}).")
  if len(body) > frames:
    raise DataError(f"{source}: line {body[frames][0]}: more motion lines than "
                    f"Frames: {frames}.")
  motion = np.zeros((frames, num_channels))
  for f, (line_no, l) in enumerate(body):
    parts = l.split()
    if len(parts) != num_channels:
      raise DataError(f"{source}: line {line_no}: {len(parts)} values, expected "
                      f"{num_channels} (the sum of the CHANNELS counts); truncated line?")
    try:
      motion[f] = np.asarray(parts, np.float64)
    except ValueError:
      bad = next(p for p in parts if not _is_float(p))
      raise DataError(f"{source}: line {line_no}: value {bad!r} is not a number.") from None
  if not np.isfinite(motion).all():
    f = int(np.argwhere(~np.isfinite(motion))[0, 0])
    raise DataError(f"{source}: line {body[f][0]}: non-finite channel value.")
  return BVH(joint_names=names, parents=np.asarray(parents, np.int64),
             offsets=np.asarray(offsets, np.float64), channels=channels,
             frame_time=float(frame_time), motion=motion,
             end_site_parents=np.asarray(end_parents, np.int64),
             end_site_offsets=np.asarray(end_offsets, np.float64).reshape(-1, 3),
             source=source)


def _is_float(s):
  try:
    float(s)
    return True
  except ValueError:
    return False


def read_bvh(path) -> BVH:
  """Reads and parses a BVH file (any line endings)."""
  path = os.fspath(path)
  try:
    with open(path, "r", encoding="utf-8", errors="replace") as f:
      text = f.read()
  except OSError as e:
    raise DataError(f"{path}: cannot read BVH file: {e}") from None
  return parse_bvh(text, source=path)


# --------------------------------------------------------------------------- kinematics


def axis_rotation(axis: int, degrees) -> np.ndarray:
  """Rotations about x (0), y (1) or z (2): angles (F,) degrees -> (F, 3, 3)."""
  return geometry.axis_rotation(axis, np.radians(np.asarray(degrees, np.float64)))


def forward_kinematics(bvh: BVH, end_sites: bool = False, motion=None) -> np.ndarray:
  """Joint positions of every frame, vectorised over frames.

  Args:
    bvh: the skeleton (and motion).
    end_sites: also return the End Sites, after the joints (names `bvh.end_site_names`).
    motion: (F, C) channel values to use instead of bvh.motion (e.g. zeros: rest pose).
  Returns:
    (F, J, 3) or with end_sites (F, J + E, 3) positions in file units.
  """
  motion = bvh.motion if motion is None else np.asarray(motion, np.float64)
  num = motion.shape[0]
  nj = bvh.num_joints
  pos = np.zeros((num, nj, 3))
  rot = np.zeros((num, nj, 3, 3))
  col = 0
  for j in range(nj):
    local_t = np.broadcast_to(bvh.offsets[j], (num, 3)).copy()
    local_r = None
    for name in bvh.channels[j]:
      values = motion[:, col]
      col += 1
      if name in POSITION_CHANNELS:
        local_t[:, POSITION_CHANNELS.index(name)] = values
      else:
        r = axis_rotation(ROTATION_CHANNELS.index(name), values)
        local_r = r if local_r is None else local_r @ r
    if local_r is None:
      local_r = np.broadcast_to(np.eye(3), (num, 3, 3))
    p = bvh.parents[j]
    if p < 0:
      pos[:, j] = local_t
      rot[:, j] = local_r
    else:
      pos[:, j] = pos[:, p] + np.einsum("fij,fj->fi", rot[:, p], local_t)
      rot[:, j] = rot[:, p] @ local_r
  if not end_sites or len(bvh.end_site_parents) == 0:
    return pos
  ep = bvh.end_site_parents
  ends = pos[:, ep] + np.einsum("feij,ej->fei", rot[:, ep], bvh.end_site_offsets)
  return np.concatenate([pos, ends], axis=1)


def rest_pose(bvh: BVH, end_sites: bool = True) -> np.ndarray:
  """(J[+E], 3) joint positions with all channels zero (offsets only), file units."""
  return forward_kinematics(bvh, end_sites, motion=np.zeros((1, sum(map(len, bvh.channels)))))[0]


# ------------------------------------------------------------------------------ mapping


def _side(name: str, keyword: str) -> str | None:
  """'L' / 'R' / None from what remains of a lower-cased name without its role keyword."""
  rest = name.replace(keyword, " ")
  if "left" in rest:
    return "L"
  if "right" in rest:
    return "R"
  if re.search(r"(^|[^a-z])l($|[^a-z])", rest):
    return "L"
  if re.search(r"(^|[^a-z])r($|[^a-z])", rest):
    return "R"
  return None


_LIMB_KEYWORDS = {
    "ankle": ("foot", "ankle"),
    "elbow": ("forearm", "elbow", "lowerarm"),
    "wrist": ("hand", "wrist"),
}
_EXCLUDE = ("toe", "finger", "index", "thumb", "end", "nub", "site", "pinky", "middle", "ring")


def _depths(parents):
  depth = np.zeros(len(parents), np.int64)
  for j, p in enumerate(parents):
    depth[j] = 0 if p < 0 else depth[p] + 1
  return depth


def _find_limb(bvh: BVH, role: str, side: str) -> int | None:
  """The shallowest joint whose name has a keyword of `role` and the given side."""
  depth = _depths(bvh.parents)
  best = None
  for j, raw in enumerate(bvh.joint_names):
    name = raw.lower()
    if any(x in name for x in _EXCLUDE):
      continue
    for kw in _LIMB_KEYWORDS[role]:
      if kw in name and _side(name, kw) == side:
        if role == "wrist" and "forearm" in name:
          continue
        if best is None or depth[j] < depth[best]:
          best = j
        break
  return best


def _ancestors(parents, j) -> list[int]:
  """[j, parent(j), ..., root]."""
  out = [j]
  while parents[out[-1]] >= 0:
    out.append(int(parents[out[-1]]))
  return out


def h36m_mapping(bvh: BVH) -> np.ndarray:
  """Weights (17, J + E): the 17 Human3.6M joints as weights @ (joints and End Sites).

  See the module docstring for the anatomical rules. Raises DataError naming the role
  that could not be found and the file's joint names.
  """
  nj, ne = bvh.num_joints, len(bvh.end_site_parents)
  rest = rest_pose(bvh, end_sites=True)
  parents = bvh.parents

  def need(j, what):
    if j is None or j < 0:
      raise DataError(f"{bvh.source}: cannot find the {what} joint for the 17-joint "
                      f"mapping (joints: {bvh.joint_names}).")
    return int(j)

  roles = {}
  for side in ("L", "R"):
    ankle = need(_find_limb(bvh, "ankle", side), f"{side} ankle (foot/ankle)")
    knee = need(parents[ankle], f"{side} knee (parent of the ankle)")
    hip = need(parents[knee], f"{side} hip (parent of the knee)")
    elbow = need(_find_limb(bvh, "elbow", side), f"{side} elbow (forearm/elbow/lowerarm)")
    shoulder = need(parents[elbow], f"{side} shoulder (parent of the elbow)")
    wrist = _find_limb(bvh, "wrist", side)
    if wrist is None or elbow not in _ancestors(parents, wrist):
      # No wrist by name: the first child of the elbow.
      kids = [j for j in range(nj) if parents[j] == elbow]
      wrist = kids[0] if kids else None
    wrist = need(wrist, f"{side} wrist (hand/wrist)")
    roles.update({f"{side}ankle": ankle, f"{side}knee": knee, f"{side}hip": hip,
                  f"{side}shoulder": shoulder, f"{side}elbow": elbow, f"{side}wrist": wrist})
  # Head: the shallowest joint named 'head' (not a head-top/end marker).
  depth = _depths(parents)
  heads = [j for j, n in enumerate(bvh.joint_names)
           if "head" in n.lower() and not any(x in n.lower() for x in ("top", "end", "nub"))]
  head = need(min(heads, key=lambda j: depth[j]) if heads else None, "head")
  # Thorax and neck: walk from the shoulders' common ancestor towards the head.
  left_up = _ancestors(parents, roles["Lshoulder"])
  right_up = set(_ancestors(parents, roles["Rshoulder"]))
  lca = next((j for j in left_up if j in right_up), None)
  lca = need(lca, "common ancestor of the shoulders")
  path = _ancestors(parents, head)
  if lca not in path:
    raise DataError(f"{bvh.source}: the head {bvh.joint_names[head]!r} is not above the "
                    f"shoulders' common ancestor {bvh.joint_names[lca]!r}.")
  path = path[:path.index(lca) + 1][::-1]  # lca ... head
  distinct = [path[0]]
  for j in path[1:]:
    if np.linalg.norm(rest[j] - rest[distinct[-1]]) > 1e-6:
      distinct.append(j)
  if len(distinct) >= 3:
    thorax, neck = distinct[1], distinct[2]
  elif len(distinct) == 2:
    thorax, neck = distinct[0], distinct[1]
  else:
    raise DataError(f"{bvh.source}: no neck between the shoulders' common ancestor "
                    f"{bvh.joint_names[lca]!r} and the head.")
  # Head top: follow the chain above the neck joint to its end (End Site if any).
  top_is_end, top = False, neck
  while True:
    kids = [j for j in range(nj) if parents[j] == top]
    ends = [e for e in range(ne) if bvh.end_site_parents[e] == top]
    if kids:
      top = max(kids, key=lambda j: np.linalg.norm(rest[j] - rest[thorax]))
      continue
    if ends:
      top_is_end, top = True, ends[0]
    break
  weights = np.zeros((17, nj + ne))

  def put(k, j, w=1.0):
    weights[k, j] += w

  for k, role in ((1, "Rhip"), (2, "Rknee"), (3, "Rankle"), (4, "Lhip"), (5, "Lknee"),
                  (6, "Lankle"), (11, "Lshoulder"), (12, "Lelbow"), (13, "Lwrist"),
                  (14, "Rshoulder"), (15, "Relbow"), (16, "Rwrist")):
    put(k, roles[role])
  put(0, roles["Lhip"], 0.5)
  put(0, roles["Rhip"], 0.5)
  put(8, thorax)
  if top_is_end:
    put(9, neck)
    put(10, nj + top)
  elif top != neck:
    put(9, neck)
    put(10, top)
  else:  # the neck joint is the end of the chain: nose halfway from the thorax.
    put(9, thorax, 0.5)
    put(9, neck, 0.5)
    put(10, neck)
  # Spine: the joint on the pelvis-thorax path nearest the midpoint of the two.
  pelvis = weights[0] @ rest
  mid = (pelvis + rest[thorax]) / 2
  chain = _ancestors(parents, thorax)[1:]
  spine = min(chain, key=lambda j: np.linalg.norm(rest[j] - mid)) if chain else thorax
  put(7, spine)
  return weights


def auto_scale(bvh: BVH) -> float:
  """Metres per file unit: CMU's unit for CMU rigs, else the common unit (m, cm, mm,
  inch) that makes the rest-pose body closest to 1.7 m tall."""
  if all(m in bvh.joint_names for m in _CMU_MARKERS):
    return CMU_UNIT
  rest = rest_pose(bvh)
  height = (rest.max(0) - rest.min(0)).max()  # height or arm span, whichever axis is up.
  if not height > 0:
    return 1.0
  units = np.array([1.0, 0.01, 0.001, 0.0254, CMU_UNIT])
  return float(units[np.argmin(np.abs(np.log(height * units / 1.7)))])


def to_h36m17(bvh: BVH, scale: float | None = None, up_axis: str = "y") -> np.ndarray:
  """The 17 Human3.6M joints of every frame (`skeleton.JOINT_NAMES` order).

  Args:
    scale: metres per file unit; None (or 0) = `auto_scale`.
    up_axis: the file's up axis, 'y' or 'z'; the output is Y up (Z-up input is rotated
      by -90 degrees about x).
  Returns:
    (F, 17, 3) world positions in metres, Y up.
  """
  scale = auto_scale(bvh) if not scale else float(scale)
  if up_axis not in ("y", "z"):
    raise DataError(f"{bvh.source}: up_axis {up_axis!r}; expected 'y' or 'z'.")
  out = np.einsum("kj,fjd->fkd", h36m_mapping(bvh), forward_kinematics(bvh, end_sites=True))
  out = out * scale
  if up_axis == "z":
    out = np.stack([out[..., 0], out[..., 2], -out[..., 1]], -1)
  return out


def resample(positions: np.ndarray, src_fps: float, dst_fps: float) -> np.ndarray:
  """Linear resampling over time: (F, ...) at src_fps -> (F', ...) at dst_fps, same span."""
  num = positions.shape[0]
  if num < 2 or abs(src_fps - dst_fps) < 1e-9:
    return positions.copy()
  duration = (num - 1) / src_fps
  t = np.arange(int(np.floor(duration * dst_fps + 1e-9)) + 1) / dst_fps * src_fps
  i0 = np.minimum(np.floor(t).astype(np.int64), num - 2)
  w = (t - i0).reshape((-1,) + (1,) * (positions.ndim - 1))
  return positions[i0] * (1 - w) + positions[i0 + 1] * w


# ------------------------------------------------------------------------- data source


def clip_world(path: str, cfg) -> np.ndarray:
  """A BVH file as (F, 17, 3) world metres, Y up, at cfg.fps, feet on the ground y = 0."""
  bvh = read_bvh(path)
  if bvh.num_frames <= cfg.skip_frames:
    raise DataError(f"{path}: {bvh.num_frames} frames, fewer than skip_frames + 1 = "
                    f"{cfg.skip_frames + 1}.")
  world = to_h36m17(bvh, cfg.scale or None, cfg.up_axis)[int(cfg.skip_frames):]
  # Frame times are written rounded (CMU: 0.0083333 for 1/120 s): snap to whole fps.
  src_fps = round(bvh.fps) if abs(bvh.fps - round(bvh.fps)) < 0.01 else bvh.fps
  world = resample(world, src_fps, float(cfg.fps))
  # Ground: the lower ankle at the synthetic source's ankle height in most frames.
  low = world[:, (3, 6), 1].min(-1)
  world[..., 1] += synthetic.ANKLE_HEIGHT - np.percentile(low, 5)
  return world


def list_files(directory: str, patterns: str, what: str) -> list[str]:
  """Sorted BVH files in directory matching any comma-separated glob pattern."""
  if not directory:
    raise DataError(f"config.data.mocap.{what}_dir is not set; point it at a directory of "
                    ".bvh files (e.g. the CMU mocap BVH conversions).")
  if not os.path.isdir(directory):
    raise DataError(f"config.data.mocap.{what}_dir = {directory!r} is not a directory.")
  pats = [p.strip() for p in patterns.split(",") if p.strip()] or ["*.bvh"]
  files = sorted(f for f in os.listdir(directory)
                 if any(fnmatch.fnmatch(f, p) for p in pats)
                 and os.path.isfile(os.path.join(directory, f)))
  if not files:
    raise DataError(f"No files matching {pats} in {os.path.abspath(directory)} "
                    f"(config.data.mocap.{what}_dir / {what}_glob).")
  return [os.path.join(directory, f) for f in files]


def _segments(world: np.ndarray, length: int) -> list[tuple[int, np.ndarray]]:
  if length <= 0 or len(world) <= length:
    return [(0, world)]
  starts = range(0, len(world) - length // 2, length)  # a short tail joins the last one.
  cuts = list(starts) + [len(world)]
  return [(a, world[a:b]) for a, b in zip(cuts[:-1], cuts[1:])]


def observe_clip(world: np.ndarray, rng: np.random.Generator, num_cameras: int, cfg) -> list:
  """Virtual-camera views of one clip, as the synthetic source makes them.

  Cameras from `synthetic.sample_camera` (Human3.6M intrinsics, random viewpoints), 2D
  detector-like noise from the synthetic source's noise model. Returns a list of dicts:
  pose_3d (T, 17, 3) root-relative camera metres, pose_2d (T, 17, 2) noisy normalised,
  confidence (T, 17), pose_2d_clean, root_3d (T, 3), pose_world (T, 17, 3),
  camera_rotation (T, 3, 3) (camera = (world - centre) @ R), camera label.
  """
  out = []
  for k in range(num_cameras):
    cam_id, rot, centre = synthetic.sample_camera(rng, world)
    cam = (world - centre) @ rot
    camera = geometry.Camera.h36m(cam_id)
    px = synthetic._project_np(cam, camera)  # pylint: disable=protected-access
    w, h = float(camera.w), float(camera.h)
    clean = px / w * 2 - np.array([1.0, h / w])
    noise, conf = synthetic._observe(  # pylint: disable=protected-access
        rng, px, float(cfg.noise_px), float(cfg.outlier_prob), float(cfg.outlier_px))
    out.append({"pose_3d": cam - cam[:, :1], "pose_2d": clean + noise * (2.0 / w),
                "confidence": conf, "pose_2d_clean": clean, "root_3d": cam[:, 0],
                "pose_world": world, "camera": f"{cam_id}#{k}",
                "camera_rotation": np.broadcast_to(rot.astype(np.float32), (len(world), 3, 3))})
  return out


def load_split(config, split: str) -> Sequences:
  """The 'mocap' source: BVH clips seen by virtual cameras.

  train/val: the files of mocap.train_dir (val = the last val_fraction of each clip, its
  own cameras); test: mocap.test_dir with its own camera seed. Labels: subject = the file
  name up to its first '_' (CMU '02_03.bvh' -> '02'), action = the file name without
  extension, camera '<id>#<k>' (k-th virtual camera; '@<frame>' marks segments).
  """
  d, m = config.data, config.data.mocap
  if d.num_joints != 17:
    raise DataError(f"The mocap source gives 17 joints; config.data.num_joints = "
                    f"{d.num_joints}.")
  if not 0 <= m.val_fraction < 1:
    raise DataError(f"config.data.mocap.val_fraction = {m.val_fraction}; expected [0, 1).")
  if not m.fps > 0:
    raise DataError(f"config.data.mocap.fps = {m.fps}; expected > 0.")
  is_test = split == "test"
  files = list_files(m.test_dir if is_test else m.train_dir,
                     m.test_glob if is_test else m.train_glob, "test" if is_test else "train")
  code = ("train", "val", "test").index(split)
  seed = int(m.test_camera_seed if is_test else m.camera_seed)
  cams = int(m.test_cameras_per_clip if is_test else m.cameras_per_clip)
  items = []
  for path in files:
    name = os.path.splitext(os.path.basename(path))[0]
    world = clip_world(path, m)
    if not is_test and m.val_fraction > 0:
      cut = len(world) - int(round(len(world) * m.val_fraction))
      if 1 <= cut < len(world):
        world = world[:cut] if split == "train" else world[cut:]
      elif split == "val":
        continue
    for start, seg in _segments(world, int(m.segment_frames)):
      rng = np.random.default_rng([seed, code, zlib.crc32(name.encode()), start])
      group = np.full(len(seg), len(items), np.int32)  # the cameras of one segment (views.py)
      for view in observe_clip(seg, rng, cams, m):
        if start:
          view["camera"] += f"@{start}"
        view.update(subject=name.split("_")[0], action=name, view_group=group)
        items.append(view)
  if not items:
    raise DataError(f"mocap:{split}: no sequences (files {files}).")
  return Sequences.from_list(items, source=f"mocap:{split}")
