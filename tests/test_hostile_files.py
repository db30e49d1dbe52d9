"""Hostile files: outputs that are not ours, cache entries that are not files, sizes checked before work.

Every case goes through ``cli.main`` (or the library call a command makes) and checks the clean
outcome: exit code 2 with one line ``unlearn-jax: error: ...`` and no traceback, or a cache entry
rebuilt. Where an input would have made a process allocate gigabytes, a child process runs
``cli.main`` and reports its own peak RSS (``VmHWM``), which must stay under a fixed bound.
"""

from __future__ import annotations

import csv
import gzip
import io
import json
import lzma
import os
import pathlib
import signal
import stat
import subprocess
import sys
import tarfile
import zipfile
import zlib

import numpy as np
import pytest
from numpy.lib import format as npy

from tests.helpers import py2_pickle, write_cifar, write_competition, set_csv_row
from unlearn_jax import checkpoint, cli, files

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
RESULT = {"method": "x", "final_score": 0.5, "forgetting_quality": 0.5}


def _cli_error(capsys, argv) -> str:
  code = cli.main(argv)
  err = capsys.readouterr().err
  assert code == 2, err
  assert err.startswith("unlearn-jax: error: ") and err.count("\n") == 1 and "Traceback" not in err, err
  return err


@pytest.fixture
def alarm():
  """Fails a test that blocks (a FIFO opened for reading waits for a writer forever)."""
  def fail(*_):
    raise TimeoutError("blocked: a FIFO was opened and waited on")
  old = signal.signal(signal.SIGALRM, fail)
  signal.alarm(60)
  yield
  signal.alarm(0)
  signal.signal(signal.SIGALRM, old)


def _special(path, kind, tmp_path):
  """Makes ``path`` a FIFO, a character device (``/dev/null``'s numbers), a folder or a symbolic link."""
  if kind == "fifo":
    os.mkfifo(path)
  elif kind == "device":
    os.mknod(path, 0o666 | stat.S_IFCHR, os.makedev(1, 3))
  elif kind == "folder":
    os.mkdir(path)
  elif kind == "symlink":
    target = tmp_path / "link-target.txt"
    target.write_text("keep me")
    os.symlink(target, path)
  else:
    raise AssertionError(kind)


def _unchanged(path, kind, tmp_path):
  mode = os.lstat(path).st_mode
  assert {"fifo": stat.S_ISFIFO, "device": stat.S_ISCHR, "folder": stat.S_ISDIR, "symlink": stat.S_ISLNK}[kind](mode)
  if kind == "device":
    assert os.major(os.lstat(path).st_rdev) == 1 and os.minor(os.lstat(path).st_rdev) == 3
  if kind == "symlink":
    assert (tmp_path / "link-target.txt").read_text() == "keep me"
  assert not [n for n in os.listdir(os.path.dirname(path)) if n.startswith(".tmp-")]


# making a device node needs root; the FIFO, folder and symbolic-link cases run everywhere
DEVICE = pytest.param("device", marks=pytest.mark.skipif(os.geteuid() != 0, reason="mknod of a device needs root"))

KIND_WORDS = {"fifo": "FIFO (named pipe)", "device": "character device", "folder": "folder", "symlink": "symbolic link"}


# ---------------------------------------------------------------------------
# 1. Outputs never replace what is not a regular file.


@pytest.mark.parametrize("kind", ["fifo", DEVICE, "folder", "symlink"])
def test_command_outputs_refuse_special_files_before_any_work(tmp_path, capsys, alarm, kind):
  run = tmp_path / "run"
  run.mkdir()
  (run / "results.json").write_text(json.dumps(RESULT))
  np.savez(tmp_path / "c.npz", confs=np.zeros((4, 3)))
  target = str(tmp_path / "target")
  _special(target, kind, tmp_path)
  commands = [
      ["leaderboard", str(run), "--output", target],
      ["score", "--unlearned", str(tmp_path / "c.npz"), "--retrained", str(tmp_path / "c.npz"), "--output", target],
      ["compare", str(run), str(run), "--output", target],
      ["stability", str(run), "--table", target],
      ["stability", str(run), "--plot", target],
  ]
  for argv in commands:
    err = _cli_error(capsys, argv)
    assert f"refusing to write {target!r}: it is a {KIND_WORDS[kind]}, not a regular file" in err, argv
    _unchanged(target, kind, tmp_path)


@pytest.mark.parametrize("name", ["results.json", "populations.npz", "confidences_worst.png"])
def test_evaluate_checks_its_outputs_before_any_work(tmp_path, capsys, alarm, name):
  out = tmp_path / "o"
  out.mkdir()
  os.mkfifo(out / name)
  err = _cli_error(capsys, ["evaluate", "--config", "tiny", "--num-models", "2", "--output-dir", str(out),
                            "--cache-dir", str(tmp_path / "c")])
  assert f"refusing to write {str(out / name)!r}: it is a FIFO (named pipe), not a regular file" in err
  assert not (tmp_path / "c").exists() and os.listdir(out) == [name]  # nothing trained, nothing written
  (tmp_path / "file").write_text("x")
  err = _cli_error(capsys, ["evaluate", "--config", "tiny", "--output-dir", str(tmp_path / "file")])
  assert f"output folder {str(tmp_path / 'file')!r} exists and is not a folder" in err


@pytest.mark.parametrize("where", ["sweep.csv", "sweep.png", "epochs_2/results.json", "confirm-epochs_1/populations.npz"])
def test_sweep_checks_its_outputs_before_any_work(tmp_path, capsys, alarm, where):
  out, cache = tmp_path / "s", tmp_path / "c"
  target = out / where
  target.parent.mkdir(parents=True, exist_ok=True)
  os.mkfifo(target)
  argv = ["sweep", "--config", "tiny", "--num-models", "2", "--grid", "epochs=1,2", "--quiet", "--confirm",
          "--cache-dir", str(cache), "--output-dir", str(out)]
  err = _cli_error(capsys, argv)
  assert f"refusing to write {str(target)!r}: it is a FIFO (named pipe), not a regular file" in err
  assert not cache.exists()  # nothing loaded, trained or written
  assert sorted(os.listdir(out)) == [where.split("/")[0]]
  (tmp_path / "file").write_text("x")
  err = _cli_error(capsys, argv[:-1] + [str(tmp_path / "file")])
  assert f"output folder {str(tmp_path / 'file')!r} exists and is not a folder" in err


@pytest.mark.parametrize("kind", ["fifo", DEVICE, "folder", "symlink"])
def test_results_populations_plots_and_tables_refuse_special_files(tmp_path, alarm, kind):
  from unlearn_jax.results import populations, record, report
  rng = np.random.default_rng(0)
  pops = record.Populations(unlearned={"forget_confidence": rng.normal(size=(4, 5))},
                            retrained={"forget_confidence": rng.normal(size=(4, 5))},
                            epsilons=rng.uniform(0, 3, 5))
  evaluation = record.Evaluation({"method": "m", "dataset": "d", "forgetting_quality": 0.1,
                                  "num_models_scored": 4}, pops)
  writers = {"results.json": lambda: report.write_results(evaluation.record, str(tmp_path)),
             "populations.npz": lambda: populations.write_populations(evaluation, str(tmp_path)),
             "epsilons.png": lambda: report.write_plots(evaluation.record, str(tmp_path), num_examples=1,
                                                        populations=pops),
             "sweep.md": lambda: checkpoint.atomic_write_text(str(tmp_path / "sweep.md"), "table")}
  for name, write in writers.items():
    path = str(tmp_path / name)
    _special(path, kind, tmp_path)
    with pytest.raises(files.NotARegularFile, match=f"refusing to write '{path}': it is a "):
      write()
    _unchanged(path, kind, tmp_path)
    files_remove(path)
  checkpoint.atomic_write_text(str(tmp_path / "results.json"), "{}")  # a regular file is replaced as before
  checkpoint.atomic_write_text(str(tmp_path / "results.json"), "{\"a\": 1}")
  assert (tmp_path / "results.json").read_text() == "{\"a\": 1}"


def files_remove(path):
  if os.path.isdir(path) and not os.path.islink(path):
    os.rmdir(path)
  else:
    os.unlink(path)


# ---------------------------------------------------------------------------
# 1b. Cache entries are regular files, bounded before reading; anything else is rebuilt.


def _zip_bomb(path, member="out/x.npy", megabytes=64, dtype="<f8"):
  """An ``.npz`` whose one deflated member inflates to ``megabytes`` MiB of zeros (a few hundred KB on disk)."""
  itemsize = np.dtype(dtype).itemsize
  with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED, compresslevel=1) as z:
    with z.open(member, "w", force_zip64=True) as f:
      npy.write_array_header_1_0(f, {"descr": dtype, "fortran_order": False,
                                     "shape": ((megabytes << 20) // itemsize,)})
      for _ in range(megabytes // 16):
        f.write(bytes(16 << 20))


@pytest.mark.parametrize("kind", ["dev_zero_link", "fifo", "folder", "zip_bomb", DEVICE, "huge"])
def test_cache_entry_that_is_not_a_plain_entry_is_rebuilt(tmp_path, alarm, kind, monkeypatch):
  store = checkpoint.ChunkStore(str(tmp_path / "store"), '{"kind": "retrained"}')
  store.save(0, 4, {"out/x": np.arange(4.0)})
  path = store.path(0, 4)
  os.unlink(path)
  if kind == "dev_zero_link":
    os.symlink("/dev/zero", path)
  elif kind == "fifo":
    os.mkfifo(path)
  elif kind == "folder":
    os.makedirs(os.path.join(path, "inner"))
    (tmp_path / "store" / os.path.basename(path) / "inner" / "f").write_text("x")
  elif kind == "zip_bomb":
    _zip_bomb(path)
  elif kind == "device":
    os.mknod(path, 0o666 | stat.S_IFCHR, os.makedev(1, 5))  # /dev/zero's numbers
  elif kind == "huge":  # a regular file larger than the memory share
    with open(path, "wb") as f:
      f.truncate(64 << 20)
    monkeypatch.setattr(files, "available_memory", lambda: 32 << 20)
  assert store.exists(0, 4)
  assert store.load(0, 4) is None
  assert not os.path.lexists(path)  # removed, a folder included, so the stage rebuilds it
  assert os.path.basename(path) in store.rebuilt[0] and "\n" not in store.rebuilt[0]
  expected = {"dev_zero_link": "is a symbolic link, not a regular file", "fifo": "is a FIFO (named pipe)",
              "folder": "is a folder", "zip_bomb": "member 'out/x.npy' is compressed",
              "device": "is a character device", "huge": "is 64.0 MiB, over the bound of 16.0 MiB"}[kind]
  assert expected in store.rebuilt[0]
  monkeypatch.undo()
  store.save(0, 4, {"out/x": np.arange(4.0)})
  np.testing.assert_array_equal(store.load(0, 4)["out/x"], np.arange(4.0))
  assert os.path.exists("/dev/zero") and stat.S_ISCHR(os.stat("/dev/zero").st_mode)


@pytest.mark.parametrize("kind", ["fifo", "dev_zero_link", "folder", "huge"])
def test_results_file_that_is_not_a_bounded_regular_file_is_refused_unread(tmp_path, capsys, alarm, kind):
  from unlearn_jax.results import report
  good = tmp_path / "good"
  good.mkdir()
  (good / "results.json").write_text(json.dumps(RESULT))
  bad = tmp_path / "bad"
  bad.mkdir()
  path = bad / "results.json"
  if kind == "fifo":
    os.mkfifo(path)  # opened for reading, it would wait for a writer forever
  elif kind == "dev_zero_link":
    os.symlink("/dev/zero", path)  # followed, it would be read until memory runs out
  elif kind == "folder":
    os.mkdir(path)
  else:  # one byte over the bound (sparse: nothing is written)
    with open(path, "wb") as f:
      f.truncate(report.MAX_RESULTS_BYTES + 1)
  expected = {"fifo": "is a FIFO (named pipe), not a regular file",
              "dev_zero_link": "is a symbolic link, not a regular file", "folder": "is a folder, not a regular file",
              "huge": "is 64.0 MiB, over the bound of 64.0 MiB; refusing to read it"}[kind]
  for argv in (["compare", str(good), str(bad), "--output", ""], ["leaderboard", str(good), str(bad)],
               ["stability", str(bad), "--plot", "", "--table", ""]):
    err = _cli_error(capsys, argv)
    assert f"results file {str(path)!r} {expected}" in err, (argv, err)
  if kind == "huge":
    with open(path, "r+b") as f:
      f.truncate(report.MAX_RESULTS_BYTES)  # at the bound: read (and refused as JSON, not for its size)
    assert "cannot read results file" in _cli_error(capsys, ["leaderboard", str(bad)])


def test_save_over_a_special_entry_replaces_it_and_reports_it(tmp_path, alarm):
  store = checkpoint.ChunkStore(str(tmp_path / "store"), '{"kind": "original"}')
  os.mkfifo(os.path.join(store.directory, "model.npz"))
  store.save_entry("model", {"w": np.ones(3)})
  np.testing.assert_array_equal(store.load_entry("model")["w"], np.ones(3))
  assert "model.npz: a FIFO (named pipe), not a regular file" in store.rebuilt[0]


@pytest.mark.slow
def test_evaluate_rebuilds_fifo_folder_link_and_bomb_entries_and_scores_equal_a_clean_run(tmp_path, alarm):
  import contextlib
  from tests.helpers import load_results

  def evaluate(cache, out):
    err = io.StringIO()
    with contextlib.redirect_stderr(err), contextlib.redirect_stdout(io.StringIO()):
      rc = cli.main(["evaluate", "--config", "tiny", "--method", "none", "--num-models", "4", "--set",
                     "chunk_size=2", "--cache-dir", str(cache), "--output-dir", str(out)])
    assert rc == 0, err.getvalue()
    return err.getvalue()

  signal.alarm(0)  # training may take longer than the fixture's alarm on a loaded machine
  evaluate(tmp_path / "c", tmp_path / "o")
  clean = load_results(tmp_path / "o")
  retrained = next((tmp_path / "c").glob("retrained-*"))
  original = next((tmp_path / "c").glob("original-*"))
  unlearned = next((tmp_path / "o" / "chunks").glob("none-*"))
  os.unlink(retrained / "chunk-000000-000002.npz")
  os.mkfifo(retrained / "chunk-000000-000002.npz")
  os.unlink(retrained / "chunk-000002-000004.npz")
  os.makedirs(retrained / "chunk-000002-000004.npz" / "sub")
  os.unlink(original / "model.npz")
  os.symlink("/dev/zero", original / "model.npz")
  os.unlink(unlearned / "chunk-000000-000002.npz")
  _zip_bomb(unlearned / "chunk-000000-000002.npz")
  signal.alarm(600)  # a FIFO waited on would block forever
  stderr = evaluate(tmp_path / "c", tmp_path / "o")
  for words in ("model.npz' is a symbolic link", "chunk-000000-000002.npz' is a FIFO",
                "chunk-000002-000004.npz' is a folder", "member 'out/x.npy' is compressed"):
    assert words in stderr, stderr
  again = load_results(tmp_path / "o")
  assert again["forgetting_quality"] == clean["forgetting_quality"]
  assert again["retrained"] == clean["retrained"] and again["unlearned"] == clean["unlearned"]
  assert all(os.path.isfile(p) for p in retrained.glob("chunk-*"))


# ---------------------------------------------------------------------------
# 2. The competition loader: one image, one id; ids and labels checked, never cast.


@pytest.fixture
def competition_dir(tmp_path):
  root = tmp_path / "data"
  root.mkdir()
  write_competition(str(root), np.random.default_rng(0))
  return root


def _evaluate_competition(root, tmp_path):
  return ["evaluate", "--config", "tiny", "--dataset", "competition", "--data-dir", str(root), "--model", "tiny_mlp",
          "--output-dir", str(tmp_path / "o"), "--cache-dir", str(tmp_path / "c")]


@pytest.mark.parametrize("spelling", ["images/6/0.png", "6/0.png", "link"])
def test_competition_same_image_under_two_spellings_is_refused(competition_dir, tmp_path, capsys, spelling):
  # forget.csv line 2 is image 6_0; retain.csv line 2 names the same file another way
  if spelling == "link":
    os.symlink(competition_dir / "images" / "6" / "0.png", competition_dir / "images" / "0" / "alias.png")
    spelling = "images/0/alias.png"
  set_csv_row(competition_dir / "retain.csv", 1, image_id=spelling)
  err = _cli_error(capsys, _evaluate_competition(competition_dir, tmp_path))
  assert (f"forget.csv line 2: image_id '6_0' also appears in retain.csv (line 2, as {spelling!r}): both name the "
          f"image 'images/6/0.png'; an image cannot be both forgotten and retained") in err
  assert not (tmp_path / "o").exists()


def test_competition_other_spellings_of_distinct_images_still_load(competition_dir):
  from unlearn_jax.data import load_dataset
  before = load_dataset("competition", str(competition_dir))
  set_csv_row(competition_dir / "retain.csv", 1, image_id="images/0/0.png")  # the file 0_0 names
  set_csv_row(competition_dir / "retain.csv", 2, image_id="0/1.png")  # the file 0_1 names
  after = load_dataset("competition", str(competition_dir))
  np.testing.assert_array_equal(after.images, before.images)
  np.testing.assert_array_equal(after.groups, before.groups)


@pytest.mark.parametrize("person, words", [
    ("4294967299", "column 'person_id' must be an integer in [0, 2147483647], got 4294967299"),
    ("99999999999999999999999", "column 'person_id' must be an integer in [0, 2147483647], got 9999"),
    ("-3", "column 'person_id' must be an integer in [0, 2147483647], got -3"),
])
def test_competition_person_ids_out_of_range_are_refused_not_wrapped(competition_dir, tmp_path, capsys, person, words):
  set_csv_row(competition_dir / "retain.csv", 4, person_id=person)
  err = _cli_error(capsys, _evaluate_competition(competition_dir, tmp_path))
  assert "retain.csv line 5: " + words in err


def test_competition_person_ids_keep_their_values(competition_dir):
  from unlearn_jax.data import load_dataset
  set_csv_row(competition_dir / "retain.csv", 1, person_id="2147483647")
  ds = load_dataset("competition", str(competition_dir))
  assert ds.groups[0] == 2147483647 and ds.groups[3] == 1 and ds.groups.dtype == np.int32


@pytest.mark.parametrize("label", ["1.7", "1e0", "99999999999999999999999"])
def test_competition_labels_are_integers_in_range(competition_dir, tmp_path, capsys, label):
  set_csv_row(competition_dir / "forget.csv", 3, age_group=label)
  err = _cli_error(capsys, _evaluate_competition(competition_dir, tmp_path))
  assert "forget.csv line 4: column 'age_group' must" in err


# ---------------------------------------------------------------------------
# 5. Decoding errors of a data source: one line naming the file (and the CSV line).


def test_competition_broken_png_chunk_names_the_file_and_line(competition_dir, tmp_path, capsys):
  import struct
  png = competition_dir / "images" / "1" / "2.png"
  raw = png.read_bytes()
  i = raw.index(b"IDAT")
  n = struct.unpack(">I", raw[i - 4:i])[0]
  data = raw[i + 4:i + 4 + n]
  chunk = lambda kind, body: struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body))
  # the pixel data split over two chunks, the second with a broken chunk type: PIL raises SyntaxError
  png.write_bytes(raw[:i - 4] + chunk(b"IDAT", data[:n // 2]) + chunk(b"\0\0\0\0", data[n // 2:]) + raw[i + 8 + n:])
  err = _cli_error(capsys, _evaluate_competition(competition_dir, tmp_path))
  assert "retain.csv line 7: cannot read image" in err and "1/2.png': SyntaxError: broken PNG file" in err
  png.write_bytes(raw[:i + 40])  # truncated pixel data
  err = _cli_error(capsys, _evaluate_competition(competition_dir, tmp_path))
  assert "retain.csv line 7: cannot read image" in err and "1/2.png': OSError" in err
  png.write_bytes(raw[:20])  # truncated header
  err = _cli_error(capsys, _evaluate_competition(competition_dir, tmp_path))
  assert "retain.csv line 7: cannot read image" in err and "1/2.png'" in err


def test_competition_csv_field_over_the_csv_limit_names_the_file_and_line(competition_dir, tmp_path, capsys):
  original = (competition_dir / "retain.csv").read_bytes()
  set_csv_row(competition_dir / "retain.csv", 3, age="x" * (csv.field_size_limit() + 10))
  err = _cli_error(capsys, _evaluate_competition(competition_dir, tmp_path))
  assert "retain.csv line 4: cannot read this CSV row: field larger than field limit" in err
  (competition_dir / "retain.csv").write_bytes(original)
  (competition_dir / "forget.csv").write_bytes(b"image_id,person_id,age,age_group\n6_0,6,\xff\xfe,3\n")
  err = _cli_error(capsys, _evaluate_competition(competition_dir, tmp_path))
  assert "forget.csv" in err and "cannot read the CSV file" in err


def _cifar_with(tmp_path, batch_raw: bytes, name="data_batch_1"):
  """A folder with a CIFAR archive whose ``name`` batch is ``batch_raw``; the other batches are valid."""
  archive, _ = write_cifar(str(tmp_path / "src"), np.random.default_rng(0))
  os.makedirs(tmp_path / "cifar")
  out = str(tmp_path / "cifar" / "cifar-10-python.tar.gz")
  with tarfile.open(archive) as src, tarfile.open(out, "w:gz") as dst:
    for m in src.getmembers():
      data = src.extractfile(m).read() if m.isfile() else None
      if m.isfile() and os.path.basename(m.name) == name:
        data = batch_raw
        m.size = len(data)
      dst.addfile(m, io.BytesIO(data) if data is not None else None)
  return str(tmp_path / "cifar")


def _evaluate_cifar(archive, tmp_path):
  return ["evaluate", "--config", "tiny", "--dataset", "cifar10_tarball", "--data-dir", str(archive), "--model",
          "tiny_mlp", "--output-dir", str(tmp_path / "o"), "--cache-dir", str(tmp_path / "c")]


def test_cifar_truncated_and_corrupt_archives_are_one_line(tmp_path, capsys):
  archive, _ = write_cifar(str(tmp_path / "a"), np.random.default_rng(0))
  raw = pathlib.Path(archive).read_bytes()
  os.makedirs(tmp_path / "t")
  truncated = tmp_path / "t" / "cifar-10-python.tar.gz"
  truncated.write_bytes(raw[: len(raw) // 2])
  err = _cli_error(capsys, _evaluate_cifar(truncated.parent, tmp_path))
  assert f"{str(truncated)!r} is not a readable tar archive: it is truncated or corrupt (EOFError" in err
  with tarfile.open(archive) as src:
    tar = io.BytesIO()
    with tarfile.open(fileobj=tar, mode="w") as dst:
      for m in src.getmembers():
        dst.addfile(m, src.extractfile(m) if m.isfile() else None)
  xz = bytearray(lzma.compress(tar.getvalue()))
  xz[len(xz) // 2] ^= 0xFF
  os.makedirs(tmp_path / "x")
  corrupt = tmp_path / "x" / "cifar-10-python.tar.gz"  # an .xz stream under the usual name: tarfile detects it
  corrupt.write_bytes(bytes(xz))
  err = _cli_error(capsys, _evaluate_cifar(corrupt.parent, tmp_path))
  assert f"{str(corrupt)!r} is not a readable tar archive" in err and "LZMAError" in err


@pytest.mark.parametrize("labels, words", [
    ([1.7, 2], "label 0 is 1.7, not an integer"),
    ([2, 2**70], "label 1 is 1180591620717411303424; labels must lie in [0, 10)"),
    ([[1, 2], 3], "label 0 is [1, 2], not an integer"),
])
def test_cifar_labels_are_checked_not_cast(tmp_path, capsys, labels, words):
  batch = {b"labels": labels, b"data": np.zeros((2, 3072), np.uint8)}
  archive = _cifar_with(tmp_path, py2_pickle(batch))
  err = _cli_error(capsys, _evaluate_cifar(archive, tmp_path))
  assert "data_batch_1: " + words in err


def test_real_batches_are_far_below_the_opcode_bound():
  from unlearn_jax.data import cifar_tarball
  rng = np.random.default_rng(0)
  batch = {b"batch_label": b"training batch 1 of 5", b"labels": rng.integers(0, 10, 10_000).tolist(),
           b"data": rng.integers(0, 256, (10_000, 3072), dtype=np.uint8),
           b"filenames": [f"img_{i}.png".encode() for i in range(10_000)]}
  unpickler = cifar_tarball.CifarUnpickler(io.BytesIO(py2_pickle(batch)), encoding="bytes")
  loaded = unpickler.load()
  np.testing.assert_array_equal(loaded[b"data"], batch[b"data"])
  assert loaded[b"labels"] == batch[b"labels"]
  assert 20_000 <= unpickler.ops <= 60_000 and unpickler.ops * 16 < cifar_tarball.MAX_PICKLE_OPS


# ---------------------------------------------------------------------------
# 4. Sizes checked before the work they imply (peak memory measured in a child process).

_CHILD = """
import json, sys
from unlearn_jax import cli, files
if sys.argv[1] != "-":
  files.available_memory = lambda: int(sys.argv[1])
code = cli.main(json.loads(sys.argv[2]))
peak_kib = next(int(l.split()[1]) for l in open("/proc/self/status") if l.startswith("VmHWM:"))
print("PEAK", peak_kib)
sys.exit(code)
"""


def _child(argv, memory=None):
  """``(exit code, stderr, peak RSS MiB)`` of ``cli.main(argv)`` in a fresh process (``memory``: the
  available memory it sees, for bounds that do not depend on this machine)."""
  env = dict(os.environ, JAX_PLATFORMS="cpu", PYTHONPATH=ROOT)
  out = subprocess.run([sys.executable, "-c", _CHILD, "-" if memory is None else str(memory), json.dumps(argv)],
                       capture_output=True, text=True, env=env, timeout=300, cwd=ROOT)
  peak = [line for line in out.stdout.splitlines() if line.startswith("PEAK ")]
  assert peak, out.stderr[-3000:]
  return out.returncode, out.stderr, int(peak[-1].split()[1]) / 1024


@pytest.fixture(scope="module")
def baseline_mib(tmp_path_factory):
  """Peak RSS of the same commands stopped by a trivial error (imports, parser, JAX): what any run costs."""
  missing = str(tmp_path_factory.mktemp("b") / "missing")
  peaks = [_child(["evaluate", "--config", "tiny", "--dataset", "competition", "--data-dir", missing,
                   "--model", "tiny_mlp", "--output-dir", missing + "o"])[2],
           _child(["score", "--unlearned", missing, "--retrained", missing])[2]]
  return max(peaks)


def _one_line(code, stderr):
  assert code == 2, stderr
  assert stderr.startswith("unlearn-jax: error: ") and stderr.count("\n") == 1 and "Traceback" not in stderr, stderr
  return stderr


def _npz_bomb(path, key, shape, dtype):
  """An ``.npz`` (``savez_compressed`` layout) whose ``key`` declares ``shape`` of zeros: small on disk."""
  count = int(np.prod(shape)) * np.dtype(dtype).itemsize
  with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED, compresslevel=1) as z:
    with z.open(f"{key}.npy", "w", force_zip64=True) as f:
      npy.write_array_header_1_0(f, {"descr": np.dtype(dtype).str, "fortran_order": False, "shape": tuple(shape)})
      block = bytes(16 << 20)
      while count > 0:
        f.write(block[: min(count, len(block))])
        count -= len(block)


def test_score_many_models_is_refused_from_the_header(tmp_path, baseline_mib):
  # 32,768 models x 1 example (256 KB files) once built a 4 GiB epsilon table and died under 8 GB
  np.savez(tmp_path / "u.npz", confs=np.zeros((32_768, 1)))
  code, err, peak = _child(["score", "--unlearned", str(tmp_path / "u.npz"), "--retrained", str(tmp_path / "u.npz")])
  assert "array 'confs' in" in _one_line(code, err) and "has N = 32768 models (shape (32768, 1)), over the bound of 4096" in err
  assert peak < baseline_mib + 64, (peak, baseline_mib)


def test_score_inflating_npz_is_refused_before_loading(tmp_path, baseline_mib):
  # 2 x 10^8 float16 (400 MB inflated, 0.4 MB on disk) once went to float64 before any size check
  _npz_bomb(tmp_path / "u.npz", "confs", (8, 25_000_000), "<f2")
  assert os.path.getsize(tmp_path / "u.npz") < 2 << 20
  code, err, peak = _child(["score", "--unlearned", str(tmp_path / "u.npz"), "--retrained", str(tmp_path / "u.npz")],
                           memory=4 << 30)
  assert "confs (8, 25000000) float16, which need 1.9 GiB once loaded and converted, over the bound of 1.0 GiB" \
      in _one_line(code, err)
  assert peak < baseline_mib + 64, (peak, baseline_mib)


def test_competition_folder_of_large_images_is_refused_before_decoding(competition_dir, tmp_path, baseline_mib):
  from PIL import Image
  buf = io.BytesIO()
  Image.fromarray(np.zeros((6000, 6000, 3), np.uint8)).save(buf, format="png", compress_level=1)
  for png in competition_dir.glob("images/*/*.png"):
    png.write_bytes(buf.getvalue())  # 30 images of 108 MB decoded each: 3.2 GB from a few MB of files
  code, err, peak = _child(_evaluate_competition(competition_dir, tmp_path), memory=2 << 30)
  assert ("retain.csv line 2: image" in _one_line(code, err) and "is 6000x6000 pixels; the 30 images the CSV files "
          "list, all of that size, take 3.3 GiB decoded, over the bound of 512.0 MiB" in err)  # 30 x 108 MB + one
  # image's decoding temporaries (8 bytes a pixel)
  assert peak < baseline_mib + 64, (peak, baseline_mib)


def test_cifar_pickle_of_dup_opcodes_is_refused_with_bounded_memory(tmp_path, baseline_mib):
  # a batch of DUPs: each pushes one more reference; 10^8 of them once took gigabytes before refusal
  raw = b"\x80\x02]" + b"2" * (64 << 20) + b"."  # PROTO 2, EMPTY_LIST, DUP x 64 Mi, STOP
  archive = _cifar_with(tmp_path, raw)
  assert os.path.getsize(archive) < 1 << 20
  code, err, peak = _child(_evaluate_cifar(archive, tmp_path))
  assert "data_batch_1 is not a CIFAR-10 pickled batch: more than 1,000,000 pickle opcodes" in _one_line(code, err)
  assert peak < baseline_mib + 64 + 64 + 48, (peak, baseline_mib)  # the 64 MiB stream itself, plus ~1M refs


def test_populations_zip_bomb_is_refused_before_decompressing(tmp_path, baseline_mib):
  run = tmp_path / "run"
  run.mkdir()
  (run / "results.json").write_text(json.dumps(RESULT))
  _zip_bomb(run / "populations.npz", member="unlearned/forget_confidence.npy", megabytes=512)
  assert os.path.getsize(run / "populations.npz") < 4 << 20
  code, err, peak = _child(["stability", str(run), "--plot", ""])
  assert "cannot read populations file" in _one_line(code, err)
  assert "member 'unlearned/forget_confidence.npy' is compressed" in err
  assert peak < baseline_mib + 64, (peak, baseline_mib)


# ---------------------------------------------------------------------------
# 2b. Complex arrays are refused wherever a real one is read.


def test_complex_margins_and_populations_are_refused(tmp_path, capsys):
  confs = np.random.default_rng(0).normal(size=(4, 3))
  np.savez(tmp_path / "u.npz", confs=confs, retain_margins=np.ones((4, 5)) + 1j)
  np.savez(tmp_path / "r.npz", confs=confs, retain_margins=np.ones((4, 5)))
  err = _cli_error(capsys, ["score", "--unlearned", str(tmp_path / "u.npz"), "--retrained", str(tmp_path / "r.npz"),
                            "--metrics", "competition,klom"])
  assert "array 'retain_margins' in" in err and "u.npz' is complex (complex128); it must hold real numbers" in err
  from unlearn_jax.results import populations
  run = tmp_path / "run"
  run.mkdir()
  (run / "results.json").write_text(json.dumps(RESULT))
  arrays = {f"{k}/{n}": np.zeros(4, np.float32) for k in populations.KINDS for n in populations.PER_MODEL}
  arrays |= {f"{k}/forget_confidence": np.zeros((4, 3), np.float32) for k in populations.KINDS}
  arrays |= {"epsilons": np.zeros(3), "points": np.zeros(3)}
  arrays["unlearned/forget_confidence"] = arrays["unlearned/forget_confidence"] + 0.5j
  checkpoint.save_arrays(str(run / "populations.npz"), arrays)
  err = _cli_error(capsys, ["stability", str(run), "--plot", ""])
  assert "array 'unlearned/forget_confidence' is complex (complex64); it must hold real numbers" in err


def test_cifar_forget_index_header_declaring_more_than_the_file_is_refused_unread(tmp_path, capsys):
  archive, _ = write_cifar(str(tmp_path), np.random.default_rng(0))
  with open(tmp_path / "forget_idx.npy", "wb") as f:  # 80 GB declared, a few bytes present
    npy.write_array_header_1_0(f, {"descr": "<i8", "fortran_order": False, "shape": (10**10,)})
    f.write(np.arange(4, dtype="<i8").tobytes())
  err = _cli_error(capsys, _evaluate_cifar(tmp_path, tmp_path))
  assert "forget_idx.npy: cannot read forget indices as a .npy integer array" in err
