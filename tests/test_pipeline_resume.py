"""Resuming: a run killed by SIGKILL after its first saved chunk, restarted with the same
command, produces the same results.json numbers as an uninterrupted run."""

from __future__ import annotations

import glob
import json
import os
import signal
import subprocess
import sys
import time

import numpy as np

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
NUMBERS = ("forgetting_quality", "final_score", "per_example_epsilons", "unlearned", "retrained", "original",
           "mia", "num_models_scored", "dropped_seeds")


def _command(cache, out):
  return [sys.executable, "-m", "unlearn_jax.cli", "evaluate", "--config", "tiny", "--method", "finetune",
          "--num-models", "12", "--chunk-size", "4", "--cache-dir", cache, "--output-dir", out]


def _env(tmp_path):
  # a shared persistent compilation cache makes the second and third runs cheaper; it changes no numbers
  return dict(os.environ, JAX_PLATFORMS="cpu", JAX_COMPILATION_CACHE_DIR=str(tmp_path / "xla_cache"),
              JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS="0", PYTHONPATH=ROOT)


def test_sigkill_after_first_chunk_then_resume_equals_uninterrupted(tmp_path):
  env = _env(tmp_path)
  cache, out = str(tmp_path / "cache"), str(tmp_path / "out")
  proc = subprocess.Popen(_command(cache, out), cwd=ROOT, env=env, stdout=subprocess.DEVNULL,
                          stderr=subprocess.PIPE, text=True)
  deadline = time.monotonic() + 240
  chunks = []
  while time.monotonic() < deadline and proc.poll() is None:
    chunks = glob.glob(os.path.join(cache, "retrained-*", "chunk-*.npz"))
    if chunks:
      break
    time.sleep(0.05)
  assert proc.poll() is None, f"run ended before it could be killed: {proc.stderr.read()}"
  assert chunks, "no chunk was saved in time"
  proc.send_signal(signal.SIGKILL)
  proc.wait()
  proc.stderr.close()
  saved = sorted(os.path.basename(p) for p in glob.glob(os.path.join(cache, "retrained-*", "chunk-*.npz")))
  assert 1 <= len(saved) < 3, saved  # killed part-way through the retrained stage
  assert not os.path.exists(os.path.join(out, "results.json"))

  resumed = subprocess.run(_command(cache, out), cwd=ROOT, env=env, capture_output=True, text=True, timeout=600)
  assert resumed.returncode == 0, resumed.stderr
  # the resumed run computed only the chunks that were missing
  computed = [line for line in resumed.stderr.splitlines() if line.startswith("[retrained] models")]
  assert len(computed) == 3 - len(saved), resumed.stderr
  assert "[original] from cache" in resumed.stderr

  fresh_out = str(tmp_path / "fresh")
  fresh = subprocess.run(_command(str(tmp_path / "fresh_cache"), fresh_out), cwd=ROOT, env=env,
                         capture_output=True, text=True, timeout=600)
  assert fresh.returncode == 0, fresh.stderr
  with open(os.path.join(out, "results.json")) as f:
    a = json.load(f)
  with open(os.path.join(fresh_out, "results.json")) as f:
    b = json.load(f)
  for key in NUMBERS:
    assert a[key] == b[key], key
  assert np.isfinite(a["forgetting_quality"]) and len(a["per_example_epsilons"]) == 144
