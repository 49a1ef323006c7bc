"""Property-based fuzzing of every parser of user files and of the config.

Each input either loads or raises the project's own error (errors.PoseMachineError and its
subclasses) with a message; no other exception escapes, and nothing hangs (deadline).
Parsers only: nothing here compiles JAX code.
"""

import contextlib
import io
import json
import os
import shutil
import signal
import tempfile

from hypothesis import HealthCheck, given, settings, strategies as st
from hypothesis.extra import numpy as hnp
import ml_collections
import numpy as np
import pytest

from posemachine import config_defaults, errors, inference, keypoints, predict
from posemachine.data import bvh, h36m, pipeline, safe_npz
import test_bvh
import test_humaneva
import test_keypoints

# FUZZ_RANDOM=1: fresh random examples (CI default: a fixed, reproducible set).
FUZZ = settings(max_examples=500, deadline=2000,
                derandomize=not os.environ.get("FUZZ_RANDOM"),
                suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
_DIR = tempfile.mkdtemp(prefix="posemachine_fuzz_")  # hypothesis reuses it per example.


@pytest.fixture(scope="module", autouse=True)
def _cleanup():
  yield
  shutil.rmtree(_DIR, ignore_errors=True)


def _file(name: str, data: bytes) -> str:
  path = os.path.join(_DIR, name)
  with open(path, "wb") as f:
    f.write(data)
  return path


def _hung(signum, frame):
  raise TimeoutError(f"parser still running after {HANG_S} s")


HANG_S = 10  # hypothesis' deadline reports slow examples; this stops a real hang.


def _loads_or_own_error(fn, *args, **kwargs):
  """fn(...) or None on a PoseMachineError (which must say something)."""
  old = signal.signal(signal.SIGALRM, _hung)
  signal.alarm(HANG_S)
  try:
    return fn(*args, **kwargs)
  except errors.PoseMachineError as e:
    assert str(e).strip()
    return None
  finally:
    signal.alarm(0)
    signal.signal(signal.SIGALRM, old)


def _mutate(data, cut, flips):
  """data[:cut] with (position, xor byte) pairs applied."""
  out = bytearray(data[:cut])
  for pos, byte in flips:
    if out:
      out[pos % len(out)] ^= byte
  return bytes(out)


# -------------------------------------------------------------------------- npz / h36m


def _valid_npz(compressed):
  buf = io.BytesIO()
  save = np.savez_compressed if compressed else np.savez
  save(buf, positions_3d={"S1": {"Walking": np.random.default_rng(0).random((3, 32, 3))}},
       positions_2d={"S1": {"Walking": [np.ones((3, 17, 2), np.float32)] * 4}},
       metadata={"num_joints": 17, "layout_name": "h36m"})
  return buf.getvalue()


NPZ = {False: _valid_npz(False), True: _valid_npz(True)}


def _read_all(path):
  members = _loads_or_own_error(safe_npz.load_npz, path)
  _loads_or_own_error(h36m.read_3d, path)
  _loads_or_own_error(h36m.read_2d, path)
  return members


@FUZZ
@given(st.binary(max_size=2048))
def test_npz_random_bytes(data):
  _read_all(_file("random.npz", data))


@FUZZ
@given(st.booleans(), st.none() | st.integers(0, 10**6),
       st.lists(st.tuples(st.integers(0, 10**6), st.integers(1, 255)), max_size=4))
def test_npz_truncated_and_bit_flipped(compressed, cut, flips):
  data = NPZ[compressed]  # cut None: whole file (bit flips only, or intact).
  cut = len(data) if cut is None else cut % (len(data) + 1)
  _read_all(_file("mutated.npz", _mutate(data, cut, flips)))


_leaf = st.one_of(
    st.none(), st.integers(-2**70, 2**70), st.floats(), st.text(max_size=8),
    hnp.arrays(st.sampled_from([np.float32, np.float64, np.int8, np.uint16, np.bool_,
                                np.complex64, "U3"]),
               hnp.array_shapes(min_dims=0, max_dims=4, min_side=0, max_side=4)))
_nested = st.recursive(_leaf, lambda kids: st.one_of(
    st.lists(kids, max_size=3), st.dictionaries(st.one_of(st.text(max_size=6), st.integers()),
                                                kids, max_size=3)), max_leaves=12)


@FUZZ
@given(_nested, _nested, _nested)
def test_npz_wrong_nesting_dtypes_shapes(pos3d, pos2d, meta):
  buf = io.BytesIO()
  np.savez(buf, positions_3d=np.asarray([pos3d, None], dtype=object)[:1].reshape(()),
           positions_2d=np.asarray([pos2d, None], dtype=object)[:1].reshape(()),
           metadata=np.asarray([meta, None], dtype=object)[:1].reshape(()))
  _read_all(_file("nested.npz", buf.getvalue()))


# -------------------------------------------------------------------------------- BVH


BVH_TEXT = test_bvh.mixamo_like_bvh(frames=3)


def _parse_and_map(text):
  b = _loads_or_own_error(bvh.parse_bvh, text, "fuzz.bvh")
  if b is not None:
    with np.errstate(all="ignore"):
      _loads_or_own_error(bvh.to_h36m17, b)
  return b


@FUZZ
@given(st.none() | st.integers(0, len(BVH_TEXT)), st.data())
def test_bvh_truncated_and_mutated(cut, data):
  text = BVH_TEXT[:cut]  # cut None: the whole text (mutations only).
  for _ in range(data.draw(st.integers(0, 3))):
    if not text:
      break
    i = data.draw(st.integers(0, len(text) - 1))
    repl = data.draw(st.sampled_from(["", " ", "\n", "{", "}", "-", "1e999", "nan", "ÿ",
                                      "JOINT x", "End Site", "CHANNELS 9", "MOTION", "#",
                                      "Frames: -1", "0" * 400, "名前", "\x00"]))
    text = text[:i] + repl + text[i + data.draw(st.integers(0, 5)):]
  _parse_and_map(text)


@FUZZ
@given(st.text(min_size=1, max_size=12).filter(lambda s: s.strip() and "{" not in s),
       st.floats(allow_nan=True, allow_infinity=True) | st.sampled_from([1e308, -1e308, 0.0]),
       st.integers(0, 2))
def test_bvh_unicode_names_and_huge_values(name, value, where):
  text = BVH_TEXT
  if where == 0:  # a joint renamed (names may hold spaces and any script).
    text = text.replace("mixamorig:Spine1", name.replace("\n", " ").replace("\r", " "))
  else:  # a huge or non-finite number in an OFFSET or a motion value.
    lines = text.splitlines()
    idx = [i for i, l in enumerate(lines) if l.strip().startswith("OFFSET")] if where == 1 \
        else [len(lines) - 1]
    i = idx[len(idx) // 2]
    parts = lines[i].split()
    parts[-1] = repr(value)
    lines[i] = " ".join(parts)
    text = "\n".join(lines) + "\n"
  _parse_and_map(text)


@FUZZ
@given(st.text(max_size=300))
def test_bvh_random_text(text):
  _parse_and_map("HIERARCHY\n" + text if len(text) % 2 else text)


# -------------------------------------------------------------------------- keypoints


def _prepare(kp):
  with np.errstate(all="ignore"):
    for fmt in ("coco", "h36m"):
      kp.fmt = fmt
      _loads_or_own_error(keypoints.prepare,
                          keypoints.Keypoints(kp.xy.copy(), kp.score.copy(), kp.frame_ids,
                                              kp.source, fmt))


_json = st.recursive(
    st.none() | st.booleans() | st.integers(-2**64, 2**64) | st.floats() | st.text(max_size=6),
    lambda kids: st.lists(kids, max_size=4) | st.dictionaries(st.text(max_size=6), kids,
                                                              max_size=4), max_leaves=20)
_number = (st.floats() | st.integers(-2**64, 2**64) | st.none() | st.sampled_from([1e308, -0.0])
           | st.text(max_size=2) | st.booleans())
_detection = st.fixed_dictionaries(
    {"image_id": st.integers(-5, 40) | st.text(max_size=8) | st.floats() | st.none(),
     "keypoints": st.lists(_number, min_size=0, max_size=60)
     | st.lists(_number, min_size=51, max_size=51)},
    optional={"score": _number, "category_id": _number})


@FUZZ
@given(st.one_of(_json, st.lists(_detection, max_size=6),
                 st.fixed_dictionaries({"annotations": st.lists(_detection, max_size=4)})))
def test_coco_json_structures(obj):
  path = _file("kp.json", json.dumps(obj, allow_nan=True).encode())
  kp = _loads_or_own_error(keypoints.read_keypoints, path, "coco", "highest")
  if kp is not None:
    _prepare(kp)


@FUZZ
@given(st.integers(1, 8), st.floats(allow_nan=True, allow_infinity=True), st.data())
def test_coco_json_values(frames, value, data):
  xy = test_keypoints.coco_pose(frames)
  dets = test_keypoints.detections(xy)
  for _ in range(data.draw(st.integers(0, 5))):
    d = dets[data.draw(st.integers(0, frames - 1))]
    d["keypoints"][data.draw(st.integers(0, 50))] = value
  if data.draw(st.booleans()):
    dets[0]["image_id"] = data.draw(st.sampled_from([10**9, -10**9, "frame_", "x99", 2**70]))
  path = _file("kpv.json", json.dumps(dets, allow_nan=True).encode())
  kp = _loads_or_own_error(keypoints.read_keypoints, path, "coco",
                           data.draw(st.sampled_from(["highest", "error"])))
  if kp is not None:
    _prepare(kp)


_kp_dtypes = st.sampled_from([np.float32, np.float64, np.float16, np.int32, np.uint8,
                              np.bool_, np.complex64, "U2", "M8[s]"])


@FUZZ
@given(hnp.arrays(_kp_dtypes, st.one_of(
    hnp.array_shapes(min_dims=0, max_dims=4, min_side=0, max_side=5),
    st.tuples(st.integers(0, 4), st.just(17), st.sampled_from([2, 3])))),
       st.sampled_from(["npy", "npz", "npz_extra"]), st.data())
def test_keypoint_arrays(arr, kind, data):
  buf = io.BytesIO()
  if kind == "npy":
    np.save(buf, arr)
  else:
    extra = {}
    if kind == "npz_extra":
      extra["scores"] = data.draw(hnp.arrays(_kp_dtypes, hnp.array_shapes(
          min_dims=0, max_dims=3, min_side=0, max_side=17)))
      extra["frame_ids"] = data.draw(hnp.arrays(_kp_dtypes, hnp.array_shapes(
          min_dims=0, max_dims=2, min_side=0, max_side=5)))
    np.savez(buf, keypoints=arr, **extra)
  path = _file(f"kp.{kind[:3]}", buf.getvalue())
  kp = _loads_or_own_error(keypoints.read_keypoints, path, "coco")
  if kp is not None:
    _prepare(kp)


@FUZZ
@given(st.none() | st.integers(0, 10**5),
       st.lists(st.tuples(st.integers(0, 10**5), st.integers(1, 255)), max_size=3))
def test_keypoint_npz_truncated(cut, flips):
  buf = io.BytesIO()
  np.savez(buf, keypoints=np.concatenate([test_keypoints.coco_pose(3),
                                          np.full((3, 17, 1), 0.9)], -1))
  data = buf.getvalue()
  cut = len(data) if cut is None else cut % (len(data) + 1)
  path = _file("kpt.npz", _mutate(data, cut, flips))
  kp = _loads_or_own_error(keypoints.read_keypoints, path, "coco")
  if kp is not None:
    _prepare(kp)


# ----------------------------------------------------------------------------- config


_SCHEMA = config_defaults.get_config()
_PATHS = []


def _collect(c, prefix=""):
  for k, v in c.items():
    if isinstance(v, ml_collections.ConfigDict):
      _collect(v, f"{prefix}{k}.")
    else:
      _PATHS.append(f"{prefix}{k}")


_collect(_SCHEMA)
_value = (st.none() | st.booleans() | st.integers(-2**70, 2**70) | st.floats()
          | st.text(max_size=10) | st.lists(st.integers(), max_size=3)
          | st.tuples(st.text(max_size=3)) | st.dictionaries(st.text(max_size=4),
                                                             st.integers(), max_size=2))


@FUZZ
@given(st.lists(st.tuples(st.sampled_from(_PATHS) | st.text(min_size=1, max_size=12)
                          .filter(lambda s: "." not in s), _value), max_size=4))
def test_config_random_keys_and_values(changes):
  config = config_defaults.get_config()
  for key, value in changes:
    *groups, key = key.split(".")
    target = config
    for part in groups:
      target = target[part]
    try:
      target[key] = value
    except (TypeError, ValueError, KeyError, AttributeError):
      continue  # ConfigDict's own type check refuses some before validation; fine.
  _loads_or_own_error(config_defaults.validate, config)


def _nested(changes):
  """[(dotted path, value)] -> the nested dict a config.json holds."""
  out = {}
  for path, value in changes:
    *groups, key = path.split(".")
    d = out
    for g in groups:
      if not isinstance(d.get(g), dict):
        d[g] = {}
      d = d[g]
    d[key] = value
  return out


@FUZZ
@given(st.one_of(_json, st.lists(st.tuples(st.sampled_from(_PATHS), _json | _value),
                                 max_size=5).map(_nested)))
def test_workdir_config_json(obj):
  """A workdir's config.json (untrusted: any JSON) as inference.load_config reads it."""
  os.makedirs(os.path.join(_DIR, "wd"), exist_ok=True)
  _file(os.path.join("wd", "config.json"), json.dumps(obj, allow_nan=True).encode())
  _loads_or_own_error(inference.load_config, os.path.join(_DIR, "wd"))


# ---------------------------------------------------------------------------- HumanEva-I


_HE_TEMPLATE = os.path.join(_DIR, "humaneva_template")
_HE_SUBJECTS = ("Train/S1", "Validate/S1")
test_humaneva.write_tiny_humaneva(_HE_TEMPLATE, subjects=_HE_SUBJECTS, frames=6)
_HE_FILES = ("data_3d_humaneva15.npz", "data_2d_humaneva15_gt.npz")
_he_count = [0]


def _he_dir():
  """A fresh directory per example (the reader caches by path and mtime)."""
  _he_count[0] += 1
  d = os.path.join(_DIR, f"he{_he_count[0]}")
  os.makedirs(d)
  return d


def _he_load_all(directory):
  """Every split through the real config path; each loads or raises the project's error."""
  c = test_humaneva.config_for(directory)
  c.data.humaneva.train_subjects, c.data.humaneva.test_subjects = _HE_SUBJECTS
  c.data.humaneva.val_fraction = 0.3
  for split in ("train", "val", "test"):
    _loads_or_own_error(pipeline.load_split, c, split)
  shutil.rmtree(directory, ignore_errors=True)


_he_array = hnp.arrays(
    st.sampled_from([np.float32, np.float64, np.int16, np.bool_, np.complex64, "U2"]),
    st.one_of(hnp.array_shapes(min_dims=0, max_dims=4, min_side=0, max_side=7),
              st.tuples(st.integers(0, 8), st.sampled_from([14, 15, 17]),
                        st.sampled_from([2, 3]))),
)
_he_value = st.one_of(_he_array, st.none(), st.floats(), st.text(max_size=4),
                      st.lists(st.none() | _he_array, max_size=4))
_he_subject = st.sampled_from(_HE_SUBJECTS + ("Train/S4", "S1", "")) | st.text(max_size=8)
_he_action = (st.sampled_from(test_humaneva.ACTIONS + ("Walking", "Box", "")) |
              st.text(max_size=10))


@FUZZ
@given(st.dictionaries(_he_subject, st.dictionaries(_he_action, _he_value, max_size=3),
                       max_size=3),
       st.dictionaries(_he_subject, st.dictionaries(_he_action, _he_value, max_size=3),
                       max_size=3),
       st.booleans())
def test_humaneva_structures_dtypes_shapes(pos3d, pos2d, keep_3d):
  """Random subject/action keys (unicode, unknown), views, dtypes, shapes, NaN/huge values."""
  d = _he_dir()
  if keep_3d:  # a valid 3D file beside a fuzzed 2D one, and the other way round.
    shutil.copy(os.path.join(_HE_TEMPLATE, _HE_FILES[0]), d)
  else:
    np.savez(os.path.join(d, _HE_FILES[0]), positions_3d=np.array(pos3d, dtype=object))
  if not keep_3d and pos2d:
    shutil.copy(os.path.join(_HE_TEMPLATE, _HE_FILES[1]), d)
  else:
    np.savez(os.path.join(d, _HE_FILES[1]), positions_2d=np.array(pos2d, dtype=object),
             metadata={"layout_name": "humaneva15", "num_joints": 15})
  _he_load_all(d)


@FUZZ
@given(st.sampled_from(_HE_FILES), st.none() | st.integers(0, 10**6),
       st.lists(st.tuples(st.integers(0, 10**6), st.integers(1, 255)), max_size=3),
       st.sampled_from([None, np.nan, np.inf, -1e300, 1e30]))
def test_humaneva_truncated_flipped_and_nonfinite(name, cut, flips, value):
  d = _he_dir()
  for n in _HE_FILES:
    shutil.copy(os.path.join(_HE_TEMPLATE, n), d)
  if value is not None:  # a non-finite or huge coordinate in an otherwise valid file.
    key = "positions_3d" if name == _HE_FILES[0] else "positions_2d"
    with np.load(os.path.join(d, name), allow_pickle=True) as f:
      members = {k: f[k] for k in f.keys()}
    tree = members[key].item()
    arr = tree["Train/S1"]["Walking 1 chunk0"]
    arr = arr[0] if isinstance(arr, list) else arr
    with np.errstate(over="ignore"):  # -1e300 -> -inf in float32: non-finite too.
      arr.reshape(-1)[(cut or 0) % arr.size] = value
    np.savez(os.path.join(d, name), **members)
  path = os.path.join(d, name)
  with open(path, "rb") as f:
    data = f.read()
  cut = len(data) if cut is None else cut % (len(data) + 1)
  with open(path, "wb") as f:
    f.write(_mutate(data, cut, flips))
  _he_load_all(d)


# ----------------------------------------------------------------- predict: file paths


_PREDICT_DIR = os.path.join(_DIR, "predict")
os.makedirs(_PREDICT_DIR, exist_ok=True)
_PREDICT_CWD = os.path.join(_DIR, "predict_cwd")
os.makedirs(_PREDICT_CWD, exist_ok=True)
_name = st.text(st.characters(blacklist_characters="/\x00", blacklist_categories=("Cs",)),
                min_size=1, max_size=40).filter(lambda s: s not in (".", ".."))
_raw_path = st.one_of(
    st.text(max_size=60), st.text(min_size=300, max_size=5000),
    st.sampled_from(["", "/", ".", "..", "/dev/null", "/proc/self/mem", "-", "--input",
                     "nul\x00byte.json", "~/x.json", "C:\\x.npz", "a" * 5000 + ".npz"]))
_content = st.one_of(
    st.binary(max_size=300),
    st.sampled_from([b"", b"[]", b"{}", b"null", b"[{\"image_id\": 0}]"]),
    st.just(json.dumps(test_keypoints.detections(test_keypoints.coco_pose(3))).encode()))


@FUZZ
@given(st.sampled_from(["raw", "missing", "file", "dir"]), _raw_path, _name,
       st.sampled_from([".json", ".npz", ".npy", ".JSON", ".txt", "", ".json/"]), _content,
       _raw_path | _name)
def test_predict_input_and_output_paths(kind, raw, name, ext, content, output):
  """predict's CLI with odd --input/--output paths: exit status 1 or 2 with a message that
  names the problem; never a traceback. The workdir has no checkpoint, so nothing is written.
  """
  if kind == "raw":
    path = raw
  else:
    path = os.path.join(_PREDICT_DIR, name + ext)
    if kind == "file" and not ext.endswith("/"):
      with contextlib.suppress(OSError):  # e.g. a name too long for the filesystem.
        with open(path, "wb") as f:
          f.write(content)
    elif kind == "dir":
      with contextlib.suppress(OSError):
        os.makedirs(path, exist_ok=True)
  workdir = os.path.join(_PREDICT_DIR, "no_such_workdir")
  err = io.StringIO()
  cwd = os.getcwd()
  os.chdir(_PREDICT_CWD)  # relative --output paths land here, not in the repository
  try:
    with contextlib.redirect_stderr(err):
      rc = _loads_or_own_error(predict.main, [
          "predict", f"--workdir={workdir}", f"--input={path}", f"--output={output}",
          "--image_size=640,480", "--animation=none"])
  finally:
    os.chdir(cwd)
  assert not os.listdir(_PREDICT_CWD), "a failed run created output folders"
  msg = err.getvalue()
  assert rc in (1, 2), (rc, msg)
  assert msg.strip().startswith("posemachine.predict:") and len(msg.strip()) > 25, msg
  assert "Traceback" not in msg, msg
  assert not os.path.exists(workdir)
  with contextlib.suppress(OSError):
    if kind == "file":
      os.remove(path)
