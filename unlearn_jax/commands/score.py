"""``unlearn-jax score``: the forgetting quality of saved unlearned vs retrained outputs.

Each ``.npz`` holds either ``confs`` ``[N, E]`` (logit-scaled confidences of E forget
examples under N models) or ``logits`` ``[N, E, C]`` with ``labels`` ``[E]``, from which
the confidences are computed. Prints the forgetting quality; ``--output`` writes JSON
with ``forgetting_quality``, ``per_example_epsilons``, ``num_models``, ``num_examples``.

``--metrics competition,ulira,klom`` adds U-LiRA (on the forget confidences) and KLOM
(on the forget confidences and, where both files hold them, on ``retain_margins`` /
``heldout_margins`` ``[N, M]``: margins of fixed retain and held-out examples, the same
examples in both files), under ``ulira`` and ``klom`` as ``evaluate`` records them.
"""

from __future__ import annotations

import argparse
import json
import os

import numpy as np

from unlearn_jax import files
from unlearn_jax import checkpoint, compile_cache
from unlearn_jax.metrics import forgetting_metric, logit_scaled_confidence


def add_parser(sub) -> None:
  p = sub.add_parser("score", help="forgetting quality of unlearned vs retrained confidences (.npz)",
                     formatter_class=argparse.ArgumentDefaultsHelpFormatter)
  p.add_argument("--unlearned", required=True, help=".npz with confs [N,E] or logits [N,E,C] + labels [E]")
  p.add_argument("--retrained", required=True, help=".npz of the retrained models, same layout")
  p.add_argument("--metrics", default="competition",
                 help="comma-separated evaluations: competition (always), ulira, klom")
  p.add_argument("--output", default=None, help="write results as JSON to this path")
  compile_cache.add_flag(p)


def _read_array(data, key: str, path: str, name: str) -> np.ndarray:
  """Array ``key`` of an open ``.npz``: real numbers only, every failure one line naming the file."""
  try:
    a = np.asarray(data[key])
  except ValueError as err:  # object arrays need pickle, which is never enabled
    if "allow_pickle" in str(err):
      raise ValueError(f"{name}: array {key!r} in {path!r} is an object array (pickled Python objects), "
                       f"which is never loaded; save it as a numeric array") from None
    raise ValueError(f"{name}: cannot read array {key!r} of {path!r}: {' '.join(str(err).split())}") from None
  except Exception as err:  # a damaged archive: zip CRC errors, truncated members, bad headers
    raise ValueError(f"{name}: cannot read array {key!r} of {path!r}: the file is damaged "
                     f"({type(err).__name__}: {' '.join(str(err).split())})") from None
  if np.issubdtype(a.dtype, np.complexfloating):
    raise ValueError(f"{name}: array {key!r} in {path!r} is complex ({a.dtype}); it must hold real numbers")
  if not (np.issubdtype(a.dtype, np.integer) or np.issubdtype(a.dtype, np.floating)):
    raise ValueError(f"{name}: array {key!r} in {path!r} must be numeric, got dtype {a.dtype}")
  return a


# The arrays of one file, as loaded plus their float copies, must fit in this share of the available memory.
MEMORY_SHARE = 0.25


def check_sizes(path: str, name: str) -> None:
  """Refuses ``path`` from its headers alone, before any array is decompressed or loaded.

  Read from the ``.npy`` headers: each array's dtype must be real (complex and object
  arrays are refused), N (the first axis of ``confs`` / ``logits`` and of the margins) at
  most :data:`unlearn_jax.metrics.privacy.MAX_NUM_MODELS`, and the bytes the arrays take
  once loaded and converted (``confs`` and margins to float64, ``logits`` to float32 with
  float64 confidences) at most :data:`MEMORY_SHARE` of the available memory.
  """
  from unlearn_jax import files
  from unlearn_jax.metrics import privacy
  try:
    members = files.npz_members(path, f"{name}: {path!r}")
  except files.BadFile as err:
    if "not a readable .npz archive" in str(err):
      return  # not a zip: load_confs says what it is (a plain .npy, garbage)
    raise
  need = 0
  for key in ("confs", "logits", "labels", *MARGIN_KEYS):
    m = members.get(key)
    if m is None:
      continue
    if m.dtype.hasobject:
      raise ValueError(f"{name}: array {key!r} in {path!r} is an object array (pickled Python objects), "
                       f"which is never loaded; save it as a numeric array")
    if np.issubdtype(m.dtype, np.complexfloating):
      raise ValueError(f"{name}: array {key!r} in {path!r} is complex ({m.dtype}); it must hold real numbers")
    if key != "labels" and m.shape and m.shape[0] > privacy.MAX_NUM_MODELS:
      raise ValueError(f"{name}: array {key!r} in {path!r} has N = {m.shape[0]} models (shape {m.shape}), over "
                       f"the bound of {privacy.MAX_NUM_MODELS}: the metric's epsilon table grows as N squared")
    convert = {"confs": 8, "logits": 4, "labels": 8}.get(key, 8)
    need += m.nbytes + m.size * convert
    if key == "logits" and len(m.shape) == 3:
      need += m.shape[0] * m.shape[1] * 8
  bound = int(files.available_memory() * MEMORY_SHARE)
  if need > bound:
    shapes = ", ".join(f"{k} {members[k].shape} {members[k].dtype}" for k in members if k in
                       ("confs", "logits", "labels", *MARGIN_KEYS))
    raise ValueError(f"{name}: {path!r} holds {shapes}, which need {files.size_text(need)} once loaded and "
                     f"converted, over the bound of {files.size_text(bound)} ({MEMORY_SHARE:g} of the available "
                     f"memory); refusing to load it")


def load_confs(path: str, name: str) -> np.ndarray:
  """``[N, E]`` float64 confidences from an ``.npz`` (``confs``, or ``logits`` + ``labels``)."""
  if not os.path.isfile(path):
    raise FileNotFoundError(f"{name}: no such file {path!r}")
  check_sizes(path, name)
  try:
    data = np.load(path, allow_pickle=False)
  except Exception as err:  # np.load raises several types for non-npz input
    raise ValueError(f"{name}: cannot read {path!r} as .npz ({type(err).__name__})") from None
  if not isinstance(data, np.lib.npyio.NpzFile):
    raise ValueError(f"{name}: {path!r} is a single .npy array, not an .npz archive; save it with "
                     f"numpy.savez(path, confs=...) or numpy.savez(path, logits=..., labels=...)")
  with data:
    keys = set(data.files)
    if "confs" in keys:
      confs = _read_array(data, "confs", path, name)
      if confs.ndim != 2:
        raise ValueError(f"{name}: array 'confs' must have shape [N, E], got {confs.shape}")
      out = confs.astype(np.float64)
      if not np.all(np.isfinite(out)):
        raise ValueError(f"{name}: array 'confs' {confs.shape} has {int(np.sum(~np.isfinite(out)))} non-finite values")
      return out
    if "logits" not in keys or "labels" not in keys:
      raise ValueError(f"{name}: {path!r} must hold 'confs' [N, E] or 'logits' [N, E, C] and 'labels' [E]; "
                       f"found {sorted(keys)}")
    logits = _read_array(data, "logits", path, name)
    labels = _read_array(data, "labels", path, name)
  if logits.ndim != 3:
    raise ValueError(f"{name}: array 'logits' must have shape [N, E, C], got {logits.shape}")
  if labels.shape != (logits.shape[1],):
    raise ValueError(f"{name}: array 'labels' must have shape [E] = ({logits.shape[1]},) to match 'logits' "
                     f"{logits.shape}, got {labels.shape}")
  if not np.issubdtype(labels.dtype, np.integer) or labels.size and (labels.min() < 0 or labels.max() >= logits.shape[2]):
    raise ValueError(f"{name}: array 'labels' must be integers in [0, {logits.shape[2]}), got dtype {labels.dtype}")
  if not np.all(np.isfinite(logits)):
    raise ValueError(f"{name}: array 'logits' {logits.shape} must be finite numbers")
  limit = float(np.finfo(np.float32).max)
  largest = float(np.max(np.abs(logits))) if logits.size else 0.0
  if largest > limit:
    raise ValueError(f"{name}: array 'logits' in {path!r} holds values up to {largest:.3g} in magnitude; the "
                     f"confidences are computed in float32, whose range ends at {limit:.3g}, so casting them "
                     f"would overflow to infinity")
  confs = logit_scaled_confidence(logits.astype(np.float32), labels[None, :])
  return np.asarray(confs, np.float64)


MARGIN_KEYS = {"retain_margins": "retain_margin", "heldout_margins": "heldout_margin"}


def load_margins(path: str, name: str, num_models: int) -> dict[str, np.ndarray]:
  """The optional ``retain_margins`` / ``heldout_margins`` ``[N, M]`` of an ``.npz`` (as ``<split>_margin``)."""
  out = {}
  with np.load(path, allow_pickle=False) as data:
    for key, field in MARGIN_KEYS.items():
      if key in data.files:
        a = _read_array(data, key, path, name)  # real numbers only: complex and object arrays are refused
        if a.ndim != 2 or a.shape[0] != num_models or not np.issubdtype(a.dtype, np.number):
          raise ValueError(f"{name}: array {key!r} must be numeric with shape [N={num_models}, M], got {a.shape}")
        if not np.all(np.isfinite(a)):
          raise ValueError(f"{name}: array {key!r} has non-finite values")
        out[field] = a.astype(np.float64)
  return out


def run(args) -> int:
  with compile_cache.for_command(args):
    return _run(args)


def _run(args) -> int:
  from unlearn_jax.analysis import evaluations
  files.refuse_special_target(args.output or "")  # before any work: outputs replace only regular files
  metrics = evaluations.parse_metrics(args.metrics)
  u = load_confs(args.unlearned, "--unlearned")
  r = load_confs(args.retrained, "--retrained")
  if u.shape != r.shape:
    raise ValueError(f"--unlearned confidences {u.shape} and --retrained confidences {r.shape} must have the "
                     f"same shape [N, E]")
  if u.shape[0] < 2:
    raise ValueError(f"need N >= 2 models per kind, got confidences of shape {u.shape}")
  unlearned, retrained = {"forget_confidence": u}, {"forget_confidence": r}
  if "klom" in metrics:
    unlearned.update(load_margins(args.unlearned, "--unlearned", u.shape[0]))
    retrained.update(load_margins(args.retrained, "--retrained", r.shape[0]))
    for field in sorted(set(unlearned) & set(retrained) - {"forget_confidence"}):
      if unlearned[field].shape != retrained[field].shape:
        raise ValueError(f"--unlearned {field} {unlearned[field].shape} and --retrained {field} "
                         f"{retrained[field].shape} must have the same shape [N, M]")
  result = forgetting_metric(u, r)
  extra = evaluations.many_model_scores(metrics, unlearned, retrained)
  print(f"forgetting quality: {result.forgetting_quality:.6f} "
        f"(N = {result.num_models} models, E = {result.num_examples} forget examples)")
  from unlearn_jax.commands.evaluate import summary_lines
  for line in summary_lines(extra):
    print(line)
  if args.output:
    payload = {
        "forgetting_quality": result.forgetting_quality,
        "per_example_epsilons": [float(e) for e in result.epsilons],
        "num_models": result.num_models,
        "num_examples": result.num_examples,
        **extra,
    }
    checkpoint.atomic_write_text(args.output, json.dumps(payload, indent=1), make_dirs=False)
    print(f"wrote {args.output}")
  return 0
