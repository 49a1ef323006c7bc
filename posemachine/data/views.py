"""Synchronised second views for multi-view consistency (`loss.w_multiview`).

Calibrated multi-camera capture (Human3.6M's four cameras, our synthetic motion seen by
several virtual cameras) gives, for every frame of a 2D-only sequence, the same instant seen
by another camera whose rotation is known. Lifting both views and rotating one into the
other's camera frame must give the same root-relative 3D pose: depth in one view is
image-plane position in the other, which is what monocular 2D-only training cannot see.
No 3D label is used.

A source offers this through two per-frame extras:
  view_group (N,) int: frames of sequences with the same group id show the same motion
    at the same instants (same length, frame t of each is the same moment);
  camera_rotation (N, 3, 3): R with camera = (world - centre) @ R (row vectors).
`attach` turns them into what the samplers gather, after the training set is final:
  view_partner_frame (N,) int: the same instant in the next sequence of the group;
  view_rotation (N, 3, 3): M with pose_partner = pose @ M (root-relative, camera frames).
"""

from __future__ import annotations

from absl import logging
import numpy as np

from posemachine.data.sequences import DataError, Sequences

NEEDS = ("view_group", "camera_rotation")


def attach(seqs: Sequences) -> Sequences:
  """Adds view_partner_frame and view_rotation extras (see module docstring).

  A sequence whose motion no other sequence shows (a camera missing) is its own partner with
  the identity rotation, so the term is 0 on its windows. Raises DataError if the source has
  no synchronised views, no sequence has a second view, or the views of a group have
  different lengths.
  """
  missing = [k for k in NEEDS if k not in seqs.extras]
  if missing:
    raise DataError(
        f"{seqs.source}: loss.w_multiview needs synchronised calibrated views (per-frame "
        f"extras {list(NEEDS)}; missing {missing}). Human3.6M, HumanEva-I and the BVH "
        "source have them, the synthetic source with data.synthetic.cameras_per_sequence "
        ">= 2; set loss.w_multiview=0 otherwise.")
  group = np.asarray(seqs.extras["view_group"])[seqs.starts]
  rot = np.asarray(seqs.extras["camera_rotation"], np.float64)[seqs.starts]
  partner_frame = np.empty(seqs.num_frames, np.int64)
  rotation = np.empty((seqs.num_frames, 3, 3), np.float32)
  groups = [np.flatnonzero(group == g) for g in np.unique(group)]
  if all(len(m) < 2 for m in groups):
    raise DataError(f"{seqs.source}: no sequence has a second view in the training set "
                    "(loss.w_multiview needs >= 2 cameras per motion).")
  alone = [seqs.sequence_name(m[0]) for m in groups if len(m) < 2]
  if alone:  # e.g. a take with one camera's detections missing
    logging.warning("%s: %d sequence(s) without a second view (%s%s) add nothing to the "
                    "multi-view term.", seqs.source, len(alone), ", ".join(alone[:3]),
                    ", ..." if len(alone) > 3 else "")
  for members in groups:
    for i, s in enumerate(members):
      p = members[(i + 1) % len(members)]  # a sequence alone is its own partner
      if seqs.lengths[s] != seqs.lengths[p]:
        raise DataError(f"{seqs.source}: views {seqs.sequence_name(s)} and "
                        f"{seqs.sequence_name(p)} of one motion have {seqs.lengths[s]} and "
                        f"{seqs.lengths[p]} frames; synchronised views need equal lengths.")
      frames = slice(seqs.starts[s], seqs.starts[s] + seqs.lengths[s])
      partner_frame[frames] = seqs.starts[p] + np.arange(seqs.lengths[s])
      rotation[frames] = np.eye(3) if p == s else rot[s].T @ rot[p]  # alone: the term is 0
  extras = dict(seqs.extras, view_partner_frame=partner_frame, view_rotation=rotation)
  return Sequences(**{**seqs.__dict__, "extras": extras})


def partner_batch(arrays: dict, idx, take) -> dict:
  """The second view of windows with frame indices idx (B, T) (the same frames of the
  partner sequence; its mask is the window's): view_pose_2d (B, T, K, 2), view_confidence
  (B, T, K), view_pose_3d (B, T, K, 3) and view_rotation (B, 3, 3).

  arrays: name -> per-frame array (pose_2d, confidence, pose_3d, view_partner_frame,
  view_rotation); take(array, indices) gathers rows (NumPy or jnp)."""
  pidx = take(arrays["view_partner_frame"], idx)
  out = {f"view_{k}": take(arrays[k], pidx) for k in ("pose_2d", "confidence", "pose_3d")}
  out["view_rotation"] = take(arrays["view_rotation"], idx[:, 0])
  return out
