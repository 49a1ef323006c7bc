"""Where the trainer logs: a JSON-lines file, TensorBoard events, a progress line.

`MetricWriter` appends each batch of scalars to `logdir/metrics.jsonl` and to a
TensorBoard event file under `logdir/tensorboard/`. The event file writer is
written by hand (TFRecord framing with CRC32C, hand-encoded `Event` protobufs),
so neither TensorFlow nor tensorboardX is needed to write; TensorBoard reads it.
"""

from __future__ import annotations

import math
import os
import socket
import struct
import sys
import time
from collections.abc import Callable, Mapping
from typing import IO

from posemachine import io_utils

# ----------------------------------------------------------------------------
# CRC32C (Castagnoli) and TFRecord framing.


def _make_crc32c_table() -> tuple[int, ...]:
  table = []
  for byte in range(256):
    crc = byte
    for _ in range(8):
      crc = (crc >> 1) ^ 0x82F63B78 if crc & 1 else crc >> 1
    table.append(crc)
  return tuple(table)


_CRC32C_TABLE = _make_crc32c_table()


def crc32c(data: bytes) -> int:
  """CRC-32C (Castagnoli, reflected polynomial 0x82F63B78) of `data`."""
  crc = 0xFFFFFFFF
  table = _CRC32C_TABLE
  for byte in data:
    crc = table[(crc ^ byte) & 0xFF] ^ (crc >> 8)
  return crc ^ 0xFFFFFFFF


def masked_crc32c(data: bytes) -> int:
  """The masked CRC32C that TFRecord files store."""
  crc = crc32c(data)
  return (((crc >> 15) | (crc << 17)) + 0xA282EAD8) & 0xFFFFFFFF


def tfrecord(payload: bytes) -> bytes:
  """One TFRecord: length, CRC of length, payload, CRC of payload."""
  length = struct.pack("<Q", len(payload))
  return (length + struct.pack("<I", masked_crc32c(length)) + payload
          + struct.pack("<I", masked_crc32c(payload)))


# ----------------------------------------------------------------------------
# Minimal protobuf encoding of tensorflow.Event / Summary.


def _varint(value: int) -> bytes:
  value &= 0xFFFFFFFFFFFFFFFF  # int64 two's complement, as protobuf does.
  out = bytearray()
  while True:
    bits = value & 0x7F
    value >>= 7
    if value:
      out.append(bits | 0x80)
    else:
      out.append(bits)
      return bytes(out)


def _key(field: int, wire_type: int) -> bytes:
  return _varint((field << 3) | wire_type)


def _length_delimited(field: int, data: bytes) -> bytes:
  return _key(field, 2) + _varint(len(data)) + data


def encode_summary(scalars: Mapping[str, float]) -> bytes:
  """`Summary` with one `Value{tag (1), simple_value (2, float32)}` per scalar."""
  out = b""
  for tag, value in scalars.items():
    value_msg = (_length_delimited(1, tag.encode("utf-8"))
                 + _key(2, 5) + struct.pack("<f", value))
    out += _length_delimited(1, value_msg)
  return out


def encode_event(wall_time: float, step: int = 0, file_version: str | None = None,
                 summary: bytes | None = None) -> bytes:
  """`Event{wall_time (1, double), step (2, int64), file_version (3), summary (5)}`."""
  out = _key(1, 1) + struct.pack("<d", wall_time)
  if step:
    out += _key(2, 0) + _varint(step)
  if file_version is not None:
    out += _length_delimited(3, file_version.encode("utf-8"))
  if summary is not None:
    out += _length_delimited(5, summary)
  return out


class EventFileWriter:
  """Writes scalar summaries to a TensorBoard event file.

  The file is `logdir/events.out.tfevents.<unix time>.<hostname>` (".<pid>" is
  added if that name exists). The first record carries the file version.
  """

  def __init__(self, logdir: str | os.PathLike,
               clock: Callable[[], float] = time.time):
    self._clock = clock
    os.makedirs(logdir, exist_ok=True)
    now = clock()
    base = os.path.join(logdir, f"events.out.tfevents.{int(now)}.{socket.gethostname()}")
    try:
      self._file = open(base, "xb")
    except FileExistsError:
      self._file = open(f"{base}.{os.getpid()}", "ab")
    self.path = self._file.name
    self._write(encode_event(now, file_version="brain.Event:2"))
    self.flush()

  def _write(self, event: bytes) -> None:
    self._file.write(tfrecord(event))

  def write_scalars(self, step: int, scalars: Mapping[str, float]) -> None:
    """One event holding all `scalars` at `step`, then flushes."""
    self._write(encode_event(self._clock(), step=step,
                             summary=encode_summary(scalars)))
    self.flush()

  def flush(self) -> None:
    self._file.flush()

  def close(self) -> None:
    if not self._file.closed:
      self._file.flush()
      os.fsync(self._file.fileno())
      self._file.close()


# ----------------------------------------------------------------------------
# What the trainer uses.


class MetricWriter:
  """Logs scalars to `logdir/metrics.jsonl` and TensorBoard events.

  Create it with `enabled=(jax.process_index() == 0)` in multi-process runs:
  a disabled writer creates no files and every method is a no-op.

  Example:
    with MetricWriter(workdir) as writer:
      writer.write_scalars(step, {"loss": 0.1, "lr": 1e-3}, prefix="train")
  """

  def __init__(self, logdir: str | os.PathLike, enabled: bool = True):
    self.logdir = os.fspath(logdir)
    self.enabled = enabled
    self.jsonl_path = os.path.join(self.logdir, "metrics.jsonl")
    self._events = None
    if enabled:
      os.makedirs(self.logdir, exist_ok=True)
      self._events = EventFileWriter(os.path.join(self.logdir, "tensorboard"))

  def write_scalars(self, step: int, scalars: Mapping[str, float],
                    prefix: str = "") -> None:
    """Logs `scalars` at `step` under "<prefix>/<name>" (or "<name>").

    Values may be Python, NumPy or JAX scalars; they are converted to float
    (which waits for a JAX computation to finish). Appends one line
    {"step": step, "time": unix_time, "<prefix>/<name>": value, ...} to the
    jsonl file and one event to the TensorBoard file, and flushes both.
    """
    if not self.enabled:
      return
    if self._events is None:
      raise ValueError("MetricWriter is closed.")
    step = int(step)
    tagged = {f"{prefix}/{name}" if prefix else name: float(value)
              for name, value in scalars.items()}
    io_utils.append_jsonl(self.jsonl_path,
                          {"step": step, "time": time.time(), **tagged})
    self._events.write_scalars(step, tagged)

  def flush(self) -> None:
    if self._events is not None:
      self._events.flush()

  def close(self) -> None:
    if self._events is not None:
      self._events.close()
      self._events = None

  def __enter__(self) -> MetricWriter:
    return self

  def __exit__(self, *exc_info) -> None:
    self.close()


def format_duration(seconds: float) -> str:
  """4000 -> "1h06m40s", 336 -> "5m36s", 7.2 -> "7s"."""
  if not math.isfinite(seconds):
    return "?"
  s = int(round(max(seconds, 0.0)))
  h, rem = divmod(s, 3600)
  m, s = divmod(rem, 60)
  if h:
    return f"{h}h{m:02d}m{s:02d}s"
  if m:
    return f"{m}m{s:02d}s"
  return f"{s}s"


class Progress:
  """Prints a progress line at most every `every_seconds`.

  Example line:
    step 1200/5000  24%  loss 0.0123  11.3 steps/s  ETA 5m36s
  The rate is measured since the previous printed line (so it excludes earlier
  compilation once past the first line) and the ETA extrapolates it.
  """

  def __init__(self, total_steps: int, start_step: int = 0,
               every_seconds: float = 30.0, stream: IO[str] | None = None,
               clock: Callable[[], float] = time.monotonic, enabled: bool = True):
    """Args:
      total_steps: the step number at which training ends.
      start_step: the step training (re)starts from.
      every_seconds: minimum time between printed lines.
      stream: where to print; sys.stderr (looked up at print time) if None.
      clock: monotonic time in seconds (injectable for tests).
      enabled: False makes every method a no-op (non-zero JAX processes).
    """
    self.total_steps = int(total_steps)
    self.every_seconds = every_seconds
    self._stream = stream
    self._clock = clock
    self.enabled = enabled
    self._start_step = self._last_step = int(start_step)
    self._start_time = self._last_time = clock()
    self._step = int(start_step)

  def _print(self, line: str) -> None:
    stream = self._stream if self._stream is not None else sys.stderr
    print(line, file=stream, flush=True)

  def update(self, step: int, **scalars: float) -> bool:
    """Reports `step` (steps done so far); prints if due or at the last step.

    Returns:
      Whether a line was printed.
    """
    if not self.enabled:
      return False
    step = int(step)
    self._step = step
    now = self._clock()
    elapsed = now - self._last_time
    if elapsed < self.every_seconds and step < self.total_steps:
      return False
    rate = (step - self._last_step) / elapsed if elapsed > 0 else math.nan
    parts = [f"step {step}/{self.total_steps}"]
    if self.total_steps > 0:
      parts.append(f"{100 * step // self.total_steps}%")
    parts += [f"{name} {float(value):.4g}" for name, value in scalars.items()]
    parts.append(f"{rate:.3g} steps/s")
    remaining = self.total_steps - step
    if remaining > 0:
      parts.append("ETA " + format_duration(remaining / rate if rate > 0 else math.inf))
    self._print("  ".join(parts))
    self._last_time, self._last_step = now, step
    return True

  def done(self) -> None:
    """Prints the total time and the mean rate since the start."""
    if not self.enabled:
      return
    elapsed = self._clock() - self._start_time
    steps = self._step - self._start_step
    rate = steps / elapsed if elapsed > 0 else math.nan
    self._print(f"done: {steps} steps in {format_duration(elapsed)}  "
                f"({rate:.3g} steps/s)")
