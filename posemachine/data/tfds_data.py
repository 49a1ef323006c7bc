"""TFDS builders for the real sources: converted once to ArrayRecord, read per process.

Manual-download style: the user places the source files (VideoPose3D .npz files for
Human3.6M / HumanEva-I, BVH files for mocap) where config.data.dir (mocap: data.mocap.train_dir
and test_dir) points; `prepare(config)` (CLI: python -m posemachine.data.prepare) runs this
module's builder, which reads them with the in-memory loaders (same protocol, splits, camera
transforms) and writes one record per sequence into TFDS's ArrayRecord files under
`prepared_dir(config)`: <dir>/<builder>/<config name>/<version>/. The config name carries a
hash of the data settings that shape the sequences (the source's config section less its
directories, num_joints), so another protocol or keypoint source is another prepared
dataset, never a stale one.

Reading (`load_split`) needs neither the builder nor the source files, and no TensorFlow:
tfds.builder_from_directory + the ArrayRecord data source (random access by record). With
several processes and data.shard_by_process, each process reads only the training sequences
i with i % process_count == process_index (val/test: all of them, every process). Records
keep the loader's sequence order (shuffling disabled), so one process reads exactly what
the in-memory loader gives.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os

import numpy as np

from posemachine.data.sequences import DataError, Sequences

VERSION = "1.0.0"
SPLITS = ("train", "val", "test")
# Per-frame extra fields stored per source: name -> per-frame shape (K = num_joints). The
# multi-view extras (view_group, camera_rotation) are not: loss.w_multiview needs
# data.format='memory'.
EXTRAS = {
    "h36m": {"root_3d": (3,), "frame_index": ()},  # frame_index: data/h36m_frames.py
    "humaneva": {"root_3d": (3,)},
    "mocap": {"pose_2d_clean": ("K", 2), "root_3d": (3,), "pose_world": ("K", 3)},
}
BUILDER_NAMES = {"h36m": "posemachine_h36m", "humaneva": "posemachine_humaneva",
                 "mocap": "posemachine_mocap"}
INSTRUCTIONS = {
    "h36m": "Place data_3d_h36m.npz and data_2d_h36m_<keypoints>.npz (VideoPose3D's "
            "prepare_data_h36m.py output) in one directory and pass it as --config.data.dir.",
    "humaneva": "Place data_3d_humaneva15.npz and data_2d_humaneva15_<keypoints>.npz "
                "(VideoPose3D's prepare_data_humaneva.py output) in one directory and pass it "
                "as --config.data.dir.",
    "mocap": "Place BVH files under --config.data.mocap.train_dir (training and validation) "
             "and --config.data.mocap.test_dir (test).",
}


def _source_settings(config) -> dict:
  """The data settings that shape the loaded sequences (hashed into the config name)."""
  d = config.data
  if d.source not in EXTRAS:
    raise DataError(f"config.data.source = {d.source!r} has no prepared (tfds) format; "
                    f"expected one of {sorted(EXTRAS)} (the synthetic source is generated "
                    "in memory: use data.format='memory').")
  # Paths are left out: the prepared data moves with them (its default place is under
  # data.dir).
  section = {k: v for k, v in d[d.source].to_dict().items()
             if not k.endswith("_dir") and k != "cameras"}
  settings = {"source": d.source, "num_joints": d.num_joints, d.source: section}
  if d.source == "h36m":  # the camera-frame records depend on the calibration's contents.
    from posemachine.data import h36m_calibration  # pylint: disable=g-import-not-at-top
    path = h36m_calibration.cameras_path(config)
    if os.path.isfile(path):
      with open(path, "rb") as f:
        settings["calibration_sha256"] = hashlib.sha256(f.read()).hexdigest()
  return settings


def config_name(config) -> str:
  """e.g. 'p1_gt_1a2b3c4d5e': readable fields plus a hash of all source settings."""
  s = _source_settings(config)
  digest = hashlib.sha256(json.dumps(s, sort_keys=True, default=str).encode()).hexdigest()[:10]
  section = s[s["source"]]
  label = "_".join(str(section[k]) for k in ("protocol", "keypoints") if k in section)
  return f"{label}_{digest}" if label else digest


def prepared_dir(config) -> str:
  """Root of the prepared datasets: data.prepared_dir, else <data.dir> (mocap: <train_dir>)
  /prepared."""
  d = config.data
  if d.prepared_dir:
    return d.prepared_dir
  base = d.mocap.train_dir if d.source == "mocap" else d.dir
  if not base:
    raise DataError("config.data.prepared_dir is not set and there is no data directory to "
                    "put it under (config.data.dir, or data.mocap.train_dir for mocap).")
  return os.path.join(base, "prepared")


def dataset_path(config) -> str:
  """The directory of this config's prepared dataset."""
  return os.path.join(prepared_dir(config), BUILDER_NAMES[config.data.source],
                      config_name(config), VERSION)


def _prepare_command(config) -> str:
  d = config.data
  where = (f"--config.data.mocap.train_dir={d.mocap.train_dir} "
           f"--config.data.mocap.test_dir={d.mocap.test_dir}" if d.source == "mocap"
           else f"--config.data.dir={d.dir}")
  return (f"python -m posemachine.data.prepare --config=<the same config file> {where} "
          f"[the same --config.data.* overrides]" + (
              f" --config.data.prepared_dir={d.prepared_dir}" if d.prepared_dir else ""))


def make_builder(config):
  """The TFDS builder (GeneratorBasedBuilder) of config.data.source for this config."""
  from etils import epath  # pylint: disable=g-import-not-at-top
  import tensorflow_datasets as tfds  # pylint: disable=g-import-not-at-top
  from tensorflow_datasets.core import utils as tfds_utils  # pylint: disable=g-import-not-at-top
  from posemachine.data import pipeline  # pylint: disable=g-import-not-at-top

  source, k = config.data.source, config.data.num_joints
  _source_settings(config)  # checks the source
  extras = {n: tuple(k if v == "K" else v for v in shape)
            for n, shape in EXTRAS[source].items()}

  class Builder(tfds.core.GeneratorBasedBuilder, skip_registration=True):
    """One record per sequence: its frames and labels, in the loader's order."""
    name = BUILDER_NAMES[source]
    VERSION = tfds.core.Version(VERSION)
    MANUAL_DOWNLOAD_INSTRUCTIONS = INSTRUCTIONS[source]

    # TFDS 4.9's own lookup of this file needs the importlib_resources backport on Python
    # >= 3.9 for modules of a package; the answer is simply this module's file.
    @tfds_utils.classproperty
    @classmethod
    def code_path(cls):
      return epath.Path(__file__)

    def _info(self):
      f = tfds.features
      frames = {"pose_3d": f.Tensor(shape=(None, k, 3), dtype=np.float32),
                "pose_2d": f.Tensor(shape=(None, k, 2), dtype=np.float32),
                "confidence": f.Tensor(shape=(None, k), dtype=np.float32)}
      frames.update({n: f.Tensor(shape=(None,) + s, dtype=np.float32) for n, s in extras.items()})
      return self.dataset_info_from_configs(
          description=f"posemachine {source} sequences ({INSTRUCTIONS[source]})",
          disable_shuffling=True,  # keep the in-memory loader's sequence order.
          features=f.FeaturesDict(dict(
              frames, index=f.Scalar(dtype=np.int64), has_3d=f.Scalar(dtype=np.bool_),
              subject=f.Text(), action=f.Text(), camera=f.Text())),
          metadata=tfds.core.MetadataDict(settings=json.loads(json.dumps(
              _source_settings(config), default=str)), num_joints=k))

    def _split_generators(self, dl_manager):
      del dl_manager  # the files are where the config says (the loaders check them).
      splits = {split: pipeline.load_split(config, split, "memory") for split in SPLITS}
      # Every record's subject, per split (metadata.json, written after the records): a
      # process reading only its shard still knows the whole split's subjects.
      self.info.metadata["split_subjects"] = {n: list(v.subject) for n, v in splits.items()}
      return {split: self._generate_examples(seqs) for split, seqs in splits.items()}

    def _generate_examples(self, seqs: Sequences):
      missing = set(extras) - set(seqs.extras)
      if missing:
        raise DataError(f"{seqs.source}: the loader gave no {sorted(missing)} field(s).")
      for i in range(seqs.num_sequences):
        frames = seqs.sequence(i)
        yield i, dict({n: frames[n] for n in ("pose_3d", "pose_2d", "confidence", *extras)},
                      index=i, has_3d=bool(seqs.has_3d[i]), subject=seqs.subject[i],
                      action=seqs.action[i], camera=seqs.camera[i])

  return Builder(config=tfds.core.BuilderConfig(name=config_name(config)),
                 data_dir=prepared_dir(config), file_format="array_record")


def prepare(config, overwrite: bool = False) -> str:
  """Converts config's source files into ArrayRecord files once; returns the dataset path.

  An existing complete dataset is kept (overwrite=True rebuilds it). TFDS writes into an
  'incomplete.*' directory and renames it when done, so a crash leaves no half dataset.
  """
  import shutil  # pylint: disable=g-import-not-at-top
  path = dataset_path(config)
  if overwrite and os.path.isdir(path):
    shutil.rmtree(path)
  builder = make_builder(config)
  builder.download_and_prepare()
  return path


def _decode(record: dict, name: str):
  v = record[name]
  return v.decode() if isinstance(v, bytes) else v


def load_split(config, split: str, process_index: int = 0, process_count: int = 1) -> Sequences:
  """One split of the prepared dataset as Sequences (train: this process's shard when
  data.shard_by_process and process_count > 1: sequences i % process_count ==
  process_index). Raises DataError when it is missing or unreadable."""
  _source_settings(config)  # checks the source
  path = dataset_path(config)
  help_text = (f"Prepare it once with:\n  {_prepare_command(config)}\n(or set "
               "data.format='memory' to read the source files directly).")
  if not os.path.isfile(os.path.join(path, "dataset_info.json")):
    raise DataError(f"No prepared {config.data.source} dataset for these data settings at "
                    f"{path}. {help_text}")
  import tensorflow_datasets as tfds  # pylint: disable=g-import-not-at-top
  try:
    builder = tfds.builder_from_directory(path)
    info_split = builder.info.splits[split]
    files = [os.path.join(path, f) for f in info_split.filenames]
    for f in files:
      if not os.path.isfile(f):
        raise DataError(f"{f}: missing file of the prepared {split} split. {help_text}")
    source = builder.as_data_source(split=split)
    n = len(source)
    if n != info_split.num_examples:
      raise DataError(f"{path}: the {split} split holds {n} records, dataset_info.json says "
                      f"{info_split.num_examples}. {help_text}")
    ids = list(range(n))
    if split == "train" and config.data.shard_by_process and process_count > 1:
      ids = ids[process_index::process_count]
      if not ids:
        raise DataError(f"{path}: {n} training sequences cannot give each of "
                        f"{process_count} processes one; set data.shard_by_process=False.")
    records = source.__getitems__(ids) if ids else []
    split_subjects = None
    if len(ids) != n:
      split_subjects = (builder.info.metadata or {}).get("split_subjects", {}).get(split)
      if split_subjects is None:  # prepared by an older version: read every record's subject.
        split_subjects = [_decode(r, "subject") for r in source.__getitems__(list(range(n)))]
      if len(split_subjects) != n:
        raise DataError(f"{path}: metadata.json lists {len(split_subjects)} {split} subjects "
                        f"for {n} records. {help_text}")
  except DataError:
    raise
  except Exception as e:  # pylint: disable=broad-except  (any reader failure -> DataError)
    raise DataError(f"{path}: cannot read the prepared {split} split ({type(e).__name__}: "
                    f"{str(e)[:300]}). The files are corrupt or incomplete; delete {path} "
                    f"and prepare again. {help_text}") from None
  k = config.data.num_joints
  extras = list(EXTRAS[config.data.source])
  items = []
  for i, r in zip(ids, records):
    if not isinstance(r, dict) or r.get("index") is None:
      raise DataError(f"{path}: record {i} of the {split} split is unreadable ({r!r:.80}); "
                      f"the files are corrupt. Delete {path} and prepare again. {help_text}")
    if int(r["index"]) != i:
      raise DataError(f"{path}: record {i} of the {split} split holds sequence "
                      f"{int(r['index'])}; the files are corrupt. {help_text}")
    item = {n: np.asarray(r[n], np.float32) for n in ("pose_3d", "pose_2d", "confidence", *extras)}
    item.update(has_3d=bool(r["has_3d"]), subject=_decode(r, "subject"),
                action=_decode(r, "action"), camera=_decode(r, "camera"))
    items.append(item)
  where = "" if len(ids) == n else f", process {process_index} of {process_count}"
  seqs = Sequences.from_list(items, source=f"{config.data.source}:{split} (prepared {path}{where})")
  if split_subjects is not None:
    seqs = dataclasses.replace(seqs, split_index=np.asarray(ids, np.int64),
                               split_subjects=tuple(split_subjects))
  if seqs.num_joints != k:
    raise DataError(f"{path}: {seqs.num_joints} joints, config.data.num_joints = {k}.")
  return seqs
