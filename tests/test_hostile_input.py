"""Hostile and malformed input: no code from data, no reads outside the data folder, one-line errors.

Each test reproduces an attack or a bad input and checks the clean outcome: a one-line
``ValueError`` (``unlearn-jax: error: ...`` and exit code 2 through the CLI), nothing
executed, nothing read outside the data folder.
"""

from __future__ import annotations

import os
import pathlib
import pickle
import pickletools
import struct
import tarfile
import zlib

import numpy as np
import pytest

from tests.helpers import py2_pickle, write_cifar, write_competition, set_csv_row
from unlearn_jax.data import load_dataset
from unlearn_jax.data.cifar_tarball import ALLOWED_GLOBALS, safe_load_batch

# ---------------------------------------------------------------------------
# 1. CIFAR python batches are read with an unpickler that builds nothing but their contents.


def _real_layout_batch(n=4, seed=0):
  """A batch with the fields and types of the original ``data_batch_*`` (Python 2 ``str`` -> bytes)."""
  rng = np.random.default_rng(seed)
  return {b"batch_label": b"training batch 1 of 5", b"labels": rng.integers(0, 10, n).tolist(),
          b"data": rng.integers(0, 256, (n, 3072), dtype=np.uint8),
          b"filenames": [f"img_{i}.png".encode() for i in range(n)]}


def _globals(raw: bytes) -> set[str]:
  return {arg for op, arg, _ in pickletools.genops(raw) if op.name == "GLOBAL"}


def test_cifar_batch_layout_as_python2_wrote_it_loads_with_only_numpy_globals():
  batch = _real_layout_batch()
  raw = py2_pickle(batch)
  # The original files: protocol 2, a dict opened by EMPTY_DICT, Python 2 str as SHORT_BINSTRING,
  # and the array built by numpy.core.multiarray._reconstruct(numpy.ndarray, (0,), 'b') with
  # a numpy.dtype('u1') state: exactly three globals.
  assert raw[:3] == b"\x80\x02}" and b"U\x04data" in raw
  assert _globals(raw) == {"numpy.core.multiarray _reconstruct", "numpy ndarray", "numpy dtype"}
  loaded = safe_load_batch(raw)
  assert set(loaded) == set(batch) and loaded[b"labels"] == batch[b"labels"]
  assert loaded[b"batch_label"] == batch[b"batch_label"] and loaded[b"filenames"] == batch[b"filenames"]
  assert loaded[b"data"].dtype == np.uint8
  np.testing.assert_array_equal(loaded[b"data"], batch[b"data"])
  # NumPy 2 writes the same array with numpy._core.multiarray._reconstruct: admitted too.
  numpy2 = raw.replace(b"cnumpy.core.multiarray\n", b"cnumpy._core.multiarray\n")
  np.testing.assert_array_equal(safe_load_batch(numpy2)[b"data"], batch[b"data"])
  assert {f"{m}.{n}" for m, n in ALLOWED_GLOBALS} == {
      "numpy.core.multiarray._reconstruct", "numpy._core.multiarray._reconstruct", "numpy.ndarray", "numpy.dtype"}


class _Payload:
  """Pickles as a call of ``func(*args)``: what a doctored batch would carry."""

  def __init__(self, func, *args):
    self.func, self.args = func, args

  def __reduce__(self):
    return self.func, self.args


@pytest.mark.parametrize("payload", ["os.system", "exec"])
def test_cifar_batch_with_a_reduce_payload_is_refused_and_not_executed(tmp_path, payload):
  marker = tmp_path / "ran"
  if payload == "os.system":
    evil = _Payload(os.system, f"touch {marker}")
  else:
    evil = _Payload(exec, f"import pathlib; pathlib.Path({str(marker)!r}).write_text('ran')")
  raw = py2_pickle({b"data": evil, b"labels": [0]})
  folder, _ = write_cifar(str(tmp_path / "c"), np.random.default_rng(0), layout="dir")
  with open(os.path.join(folder, "data_batch_2"), "wb") as f:
    f.write(raw)
  with pytest.raises(ValueError) as err:
    load_dataset("cifar10_tarball", folder)
  message = str(err.value)
  assert "\n" not in message and "data_batch_2 is not a CIFAR-10 pickled batch: refusing global" in message
  assert ("'posix.system'" in message or "'nt.system'" in message) if payload == "os.system" \
      else "'__builtin__.exec'" in message
  assert not marker.exists()
  # the same bytes through plain pickle do run the payload: the refusal above is what stops it
  pickle.loads(raw, encoding="bytes")
  assert marker.exists()


def test_cifar_array_reconstruction_cannot_allocate_or_build_other_types():
  # _reconstruct with a huge shape would allocate before any data is read; ndarray.__new__ likewise.
  raw = py2_pickle(np.zeros(3, np.uint8)).replace(b"K\x00\x85", b"J\x00\x00\x00\x40\x85", 1)
  with pytest.raises(pickle.UnpicklingError, match="unexpected array reconstruction arguments"):
    safe_load_batch(raw)
  newobj = b"\x80\x02cnumpy\nndarray\nJ\x00\x00\x00\x40\x85\x81."  # NEWOBJ ndarray((2**30,))
  with pytest.raises(Exception) as err:
    safe_load_batch(newobj)
  assert not isinstance(err.value, MemoryError)


def test_cifar_oversized_batch_is_refused_before_reading(tmp_path, monkeypatch):
  from unlearn_jax.data import cifar_tarball
  archive, _ = write_cifar(str(tmp_path), np.random.default_rng(0))
  monkeypatch.setattr(cifar_tarball, "MAX_BATCH_BYTES", 1000)
  with pytest.raises(ValueError, match=r"data_batch_1 is 0 MiB, larger than any CIFAR batch"):
    load_dataset("cifar10_tarball", archive)


# ---------------------------------------------------------------------------
# 2. The competition loader reads nothing outside its data directory.


@pytest.fixture
def competition_dir(tmp_path):
  root = tmp_path / "data"
  root.mkdir()
  write_competition(str(root), np.random.default_rng(0))
  outside = tmp_path / "outside"
  outside.mkdir()
  from PIL import Image
  Image.fromarray(np.zeros((32, 32, 3), np.uint8)).save(outside / "secret.png")
  return root, outside


@pytest.mark.parametrize("image_id, person_id", [
    ("../outside/secret.png", "0"),
    ("ABSOLUTE", "0"),
    ("secret", "../../outside"),
    ("0", "../.."),
])
def test_competition_row_pointing_outside_the_data_dir_is_refused(competition_dir, image_id, person_id):
  root, outside = competition_dir
  if image_id == "ABSOLUTE":
    image_id = str(outside / "secret.png")
  set_csv_row(root / "forget.csv", 2, image_id=image_id, person_id=person_id)
  with pytest.raises(ValueError) as err:
    load_dataset("competition", str(root))
  message = str(err.value)
  assert "\n" not in message
  assert f"forget.csv line 3: image_id {image_id!r} with person_id {person_id!r} points to" in message
  assert f"outside the data directory {str(root.resolve())!r}" in message


def test_competition_symlink_out_of_the_data_dir_is_refused(competition_dir):
  root, outside = competition_dir
  os.remove(root / "images" / "7" / "1.png")
  os.symlink(outside / "secret.png", root / "images" / "7" / "1.png")
  with pytest.raises(ValueError, match=r"forget\.csv line 6: image_id '7_1' .* points to .*outside/secret\.png"):
    load_dataset("competition", str(root))
  os.remove(root / "images" / "7" / "1.png")
  os.rename(root / "images" / "7", outside / "7")
  os.symlink(outside / "7", root / "images" / "7")  # a linked folder
  with pytest.raises(ValueError, match=r"forget\.csv line 5: .*outside the data directory"):
    load_dataset("competition", str(root))
  os.remove(root / "forget.csv")
  (outside / "forget.csv").write_text("image_id,person_id,age_group\n")
  os.symlink(outside / "forget.csv", root / "forget.csv")
  with pytest.raises(ValueError, match=r"forget\.csv' is a link to .*outside the data directory"):
    load_dataset("competition", str(root))


def test_competition_links_inside_the_data_dir_still_load(competition_dir):
  root, _ = competition_dir
  os.rename(root / "images", root / "real_images")
  os.symlink(root / "real_images", root / "images")
  assert load_dataset("competition", str(root)).images.shape == (30, 32, 32, 3)


def _png_header(width: int, height: int) -> bytes:
  """A PNG whose header declares ``width x height`` (no pixel data: opening it reads only the header)."""
  def chunk(kind: bytes, body: bytes) -> bytes:
    return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body))
  return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)) + \
      chunk(b"IEND", b"")


@pytest.mark.parametrize("side", [20_000, 10_000])  # 400 MP: PIL's error; 100 MP: PIL only warns
def test_competition_decompression_bomb_is_a_one_line_error(competition_dir, side):
  root, _ = competition_dir
  (root / "images" / "3" / "2.png").write_bytes(_png_header(side, side))
  with pytest.raises(ValueError) as err:
    load_dataset("competition", str(root))
  message = str(err.value)
  assert "\n" not in message
  assert "retain.csv line 13: image" in message and "3/2.png' is too large to load" in message


# ---------------------------------------------------------------------------
# 4. A valid cache entry in the wrong place is not trusted: tests/test_checkpoint.py.


# ---------------------------------------------------------------------------
# 6. Every bad input is one line and exit code 2 (through ``cli.main``).


def _cli_error(capsys, argv) -> str:
  from unlearn_jax import cli
  code = cli.main(argv)
  err = capsys.readouterr().err
  assert code == 2, err
  assert err.startswith("unlearn-jax: error: ") and err.count("\n") == 1, err
  return err


def _confs_file(path, n=4, e=3):
  np.savez(path, confs=np.arange(n * e, dtype=np.float64).reshape(n, e))
  return str(path)


def test_score_on_npy_and_on_a_damaged_npz(tmp_path, capsys):
  good = _confs_file(tmp_path / "good.npz")
  np.save(tmp_path / "plain.npy", np.zeros((4, 3)))
  err = _cli_error(capsys, ["score", "--unlearned", str(tmp_path / "plain.npy"), "--retrained", good])
  assert "plain.npy' is a single .npy array, not an .npz archive" in err
  raw = bytearray((tmp_path / "good.npz").read_bytes())
  start = raw.index(b"\x93NUMPY") + 128  # inside the stored array's data: the zip CRC no longer matches
  raw[start] ^= 0xFF
  (tmp_path / "crc.npz").write_bytes(bytes(raw))
  err = _cli_error(capsys, ["score", "--unlearned", str(tmp_path / "crc.npz"), "--retrained", good])
  assert "cannot read array 'confs' of" in err and "crc.npz': the file is damaged (BadZipFile" in err


@pytest.mark.parametrize("setting, message", [
    ("chunk_size=abc", "key 'chunk_size' must be an integer or null, got 'abc'"),
    ("cache_dir=null", "key 'cache_dir' must be a folder path, got None"),
    ("dataset=null", "key 'dataset' must be a dataset name, got None"),
    ("hp=5", "key 'hp' must be a mapping of hyperparameters, got 5"),
    ("dataset_defaults=5", "key 'dataset_defaults' must be a mapping"),
    ("dataset_defaults.digits=5", "dataset_defaults.digits must be a mapping, got 5"),
    ("method_defaults.digits.finetune=1", "method_defaults.digits.finetune must be a mapping"),
    ("recipe_overrides=[1]", "key 'recipe_overrides' must be a mapping of recipe fields"),
    ("plots=3", "key 'plots' must be true or false, got 3"),
    ("num_models=true", "key 'num_models' must be an integer, got True"),
    ("forget_classes=[a]", "key 'forget_classes' must be a list of integer class ids"),
])
def test_evaluate_bad_set_values(tmp_path, capsys, setting, message):
  err = _cli_error(capsys, ["evaluate", "--config", "tiny", "--set", setting, "--output-dir", str(tmp_path)])
  assert f"--set {setting!r}: " in err and message in err
  assert os.listdir(tmp_path) == []


@pytest.mark.parametrize("seed", ["99999999999999999999", "4294967296", "-1"])
def test_seed_out_of_range(tmp_path, capsys, seed):
  for command in ("evaluate", "train"):
    err = _cli_error(capsys, [command, "--seed", seed, "--num-models", "2"] +
                     (["--config", "tiny", "--output-dir", str(tmp_path)] if command == "evaluate" else []))
    assert f"--seed must be an integer in [0, 4294967295] (JAX keys hold 32 bits), got {seed}" in err


def test_bad_config_modules_and_files(tmp_path, capsys):
  cases = {
      "__init__": "unknown config '__init__': not a module of unlearn_jax/configs nor a file",
      "nope": "unknown config 'nope'",
  }
  (tmp_path / "raises.py").write_text("def get_config():\n  raise RuntimeError('broken config')\n")
  (tmp_path / "int.py").write_text("def get_config():\n  return 5\n")
  (tmp_path / "syntax.py").write_text("def get_config(:\n")
  (tmp_path / "types.yaml").write_text("hp: 5\n")
  cases[str(tmp_path / "raises.py")] = "raises.py' raised RuntimeError: broken config"
  cases[str(tmp_path / "int.py")] = "int.py' must return a dict of config keys, got int"
  cases[str(tmp_path / "syntax.py")] = "syntax.py' failed to load: SyntaxError"
  cases[str(tmp_path / "types.yaml")] = "types.yaml': key 'hp' must be a mapping of hyperparameters, got 5"
  for spec, message in cases.items():
    assert message in _cli_error(capsys, ["evaluate", "--config", spec, "--output-dir", str(tmp_path / "o")])
  assert not os.path.exists(tmp_path / "o")


def test_bad_jax_num_processes_breaks_only_what_uses_it(tmp_path, capsys, monkeypatch):
  from unlearn_jax import cli
  monkeypatch.setenv("JAX_NUM_PROCESSES", "abc")
  assert cli.main(["methods"]) == 0 and "finetune" in capsys.readouterr().out
  err = _cli_error(capsys, ["evaluate", "--config", "tiny", "--output-dir", str(tmp_path / "o")])
  assert "environment variable JAX_NUM_PROCESSES must be an integer, got 'abc'" in err


def test_decompression_bomb_through_the_cli(competition_dir, tmp_path, capsys):
  root, _ = competition_dir
  (root / "images" / "0" / "0.png").write_bytes(_png_header(20_000, 20_000))
  err = _cli_error(capsys, ["evaluate", "--config", "tiny", "--dataset", "competition", "--data-dir", str(root),
                            "--model", "tiny_mlp", "--output-dir", str(tmp_path / "o"), "--cache-dir",
                            str(tmp_path / "c")])
  assert "retain.csv line 2: image" in err and "0/0.png' is too large to load" in err


@pytest.mark.parametrize("content, message", [
    ("[1, 2]", "must hold a JSON object, got list"),
    ("{not json", "cannot read results file"),
    ('{"method": "x", "final_score": null}', "lacks field 'forgetting_quality'"),
    ('{"method": 3, "final_score": 0.1, "forgetting_quality": 0.1}', "field 'method' must be a string"),
    ('{"method": "x", "final_score": "high", "forgetting_quality": 0.1}', "field 'final_score' must be a number"),
    ('{"method": "x", "final_score": 0.1, "forgetting_quality": 0.1, "unlearned": 5}',
     "field 'unlearned' must be an object"),
    ('{"method": "x", "final_score": 0.1, "forgetting_quality": 0.1, "unlearned": {"test_accuracy": 1}}',
     "field unlearned.test_accuracy must be an object with a numeric 'mean'"),
    ('{"method": "x", "final_score": 0.1, "forgetting_quality": 0.1, "cost": {"relative_to_retrain": "a"}}',
     "field cost.relative_to_retrain must be a number"),
    ("\xff\xfe", "cannot read results file"),
])
def test_leaderboard_on_malformed_results(tmp_path, capsys, content, message):
  path = tmp_path / "results.json"
  path.write_bytes(content.encode("latin-1"))
  assert message in _cli_error(capsys, ["leaderboard", str(tmp_path)])


# ---------------------------------------------------------------------------
# 7. Misleading or lossy cases.


def test_score_says_what_went_wrong(tmp_path, capsys):
  good = _confs_file(tmp_path / "good.npz")
  labels = np.zeros(3, np.int64)
  np.savez(tmp_path / "huge.npz", logits=np.full((4, 3, 2), 1e300), labels=labels)
  err = _cli_error(capsys, ["score", "--unlearned", str(tmp_path / "huge.npz"), "--retrained", good])
  assert "huge.npz' holds values up to 1e+300 in magnitude" in err and "would overflow to infinity" in err
  np.savez(tmp_path / "complex.npz", confs=np.ones((4, 3)) + 1j)
  err = _cli_error(capsys, ["score", "--unlearned", str(tmp_path / "complex.npz"), "--retrained", good])
  assert "array 'confs' in" in err and "complex.npz' is complex (complex128); it must hold real numbers" in err
  np.savez(tmp_path / "object.npz", confs=np.array([[1, "a"]] * 4, dtype=object))
  err = _cli_error(capsys, ["score", "--unlearned", str(tmp_path / "object.npz"), "--retrained", good])
  assert "array 'confs' in" in err and "object.npz' is an object array" in err


@pytest.fixture
def umask_002():
  old = os.umask(0o002)
  yield
  os.umask(old)


def test_written_files_follow_the_umask(tmp_path, umask_002):
  from unlearn_jax import checkpoint, cli
  checkpoint.atomic_write_text(str(tmp_path / "results.json"), "{}")
  checkpoint.ChunkStore(str(tmp_path / "store"), "{}").save(0, 2, {"x": np.zeros(2)})
  (tmp_path / "run").mkdir()
  (tmp_path / "run" / "results.json").write_text('{"method": "x", "final_score": 0.5, "forgetting_quality": 0.5}')
  assert cli.main(["leaderboard", str(tmp_path / "run"), "--output", str(tmp_path / "board.md")]) == 0
  for path in ("results.json", "store/chunk-000000-000002.npz", "store/key.json", "board.md"):
    assert os.stat(tmp_path / path).st_mode & 0o777 == 0o664, path


def _no_space(fd):
  import errno
  raise OSError(errno.ENOSPC, "No space left on device")


def test_full_disk_names_the_file_and_leaves_the_old_one(tmp_path, capsys, monkeypatch):
  import types
  from unlearn_jax.commands import score
  # the metric itself is tested elsewhere; a stand-in spares its compilation here
  monkeypatch.setattr(score, "forgetting_metric", lambda u, r: types.SimpleNamespace(
      forgetting_quality=0.5, epsilons=np.zeros(u.shape[1]), num_models=u.shape[0], num_examples=u.shape[1]))
  good = _confs_file(tmp_path / "good.npz")
  out = tmp_path / "s.json"
  out.write_text("previous")
  monkeypatch.setattr(os, "fsync", _no_space)
  err = _cli_error(capsys, ["score", "--unlearned", good, "--retrained", good, "--output", str(out)])
  assert f"cannot write {str(out)!r}: No space left on device" in err
  assert out.read_text() == "previous" and sorted(os.listdir(tmp_path)) == ["good.npz", "s.json"]


def test_plots_are_written_atomically(tmp_path, monkeypatch):
  from unlearn_jax.results import report
  from unlearn_jax.results.record import Populations
  rng = np.random.default_rng(0)
  results = {"method": "m", "dataset": "d", "forgetting_quality": 0.1, "num_models_scored": 4}
  pops = Populations({"forget_confidence": rng.normal(size=(4, 5))}, {"forget_confidence": rng.normal(size=(4, 5))},
                     rng.uniform(0, 3, 5))
  paths = report.write_plots(results, str(tmp_path), num_examples=1, populations=pops)
  before = {p: pathlib.Path(p).read_bytes() for p in paths}
  assert all(b.startswith(b"\x89PNG") for b in before.values())
  monkeypatch.setattr(os, "fsync", _no_space)
  with pytest.raises(OSError, match="cannot write .*epsilons.png'"):
    report.write_plots(dict(results, method="other"), str(tmp_path), num_examples=1, populations=pops)
  assert {p: pathlib.Path(p).read_bytes() for p in paths} == before
  assert sorted(os.listdir(tmp_path)) == sorted(os.path.basename(p) for p in paths)


def test_leaderboard_output_never_creates_folders(tmp_path, capsys):
  run = tmp_path / "run"
  run.mkdir()
  (run / "results.json").write_text('{"method": "x", "final_score": 0.5, "forgetting_quality": 0.5}')
  target = tmp_path / "missing" / "deeper" / "board.md"
  err = _cli_error(capsys, ["leaderboard", str(run), "--output", str(target)])
  assert f"cannot write {str(target)!r}: folder {str(target.parent)!r} does not exist" in err
  assert not (tmp_path / "missing").exists()
  from unlearn_jax import cli
  assert cli.main(["leaderboard", str(run), "--output", str(tmp_path / "board.md")]) == 0
  assert "| 1    | x" in (tmp_path / "board.md").read_text()


@pytest.mark.parametrize("strategy, chunk", [("loop", None), ("vmap", None), ("chunked", 4)])
def test_results_record_a_chunk_size_only_where_programs_have_one(strategy, chunk):
  from tests.helpers import small_digits
  from unlearn_jax.protocol.config import EvalConfig, resolve_recipe
  from unlearn_jax.protocol.context import SeedPlan, plan_seeds
  config = EvalConfig(strategy=strategy, chunk_size=4, num_models=8)
  assert plan_seeds(config, small_digits(), resolve_recipe("digits")) == SeedPlan(strategy, chunk, "given")


def test_cifar_forget_index_file_that_is_not_integers_names_the_file(tmp_path):
  archive, _ = write_cifar(str(tmp_path), np.random.default_rng(0))
  for content, message in ((np.array([1.5, 2.0]), "forget indices must be a .npy array of integers, got float64"),
                           (np.array([[1, "a"]], dtype=object), "cannot read forget indices as a .npy integer array")):
    np.save(tmp_path / "forget_idx.npy", content, allow_pickle=True)
    with pytest.raises(ValueError, match="forget_idx.npy: " + message.replace(".", r"\.")):
      load_dataset("cifar10_tarball", archive)
