"""Multi-process start-up (:mod:`unlearn_jax.distributed`): explicit, ``auto`` and the timeout.

Two processes with explicit flags giving the numbers of one process is
``test_pipeline_scale.py::test_two_processes_match_single_process`` (slow); here the
start-up itself: two local processes meet through the explicit path, ``auto`` without a
cluster is one line naming the explicit flags, and a coordinator that never answers
fails within the timeout in one line naming its address.
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
# what jax.distributed's cluster detection reads (Open MPI, SLURM, Cloud TPU, GKE, Kubernetes, mpi4py)
CLUSTER_VARS = ("JAX_COORDINATOR_ADDRESS", "JAX_NUM_PROCESSES", "JAX_PROCESS_ID", "JAX_COORDINATOR_PORT",
                "OMPI_MCA_orte_hnp_uri", "OMPI_MCA_ess_base_jobid", "PMIX_NAMESPACE", "SLURM_JOB_ID",
                "SLURM_STEP_NODELIST", "TPU_WORKER_HOSTNAMES", "TPU_WORKER_ID", "CLOUD_TPU_TASK_ID",
                "TPU_SKIP_MDS_QUERY", "KUBERNETES_SERVICE_HOST", "MEGASCALE_COORDINATOR_ADDRESS")


def _env(**extra):
  env = {k: v for k, v in os.environ.items() if k not in CLUSTER_VARS}
  env.update(JAX_PLATFORMS="cpu", PYTHONPATH=ROOT, **extra)
  env.pop("XLA_FLAGS", None)
  return env


def _free_port():
  with socket.socket() as s:
    s.bind(("127.0.0.1", 0))
    return s.getsockname()[1]


@pytest.fixture
def no_cluster(monkeypatch):
  for name in CLUSTER_VARS:
    monkeypatch.delenv(name, raising=False)


def _cli_error(capsys, argv):
  from unlearn_jax import cli
  assert cli.main(argv) == 2
  captured = capsys.readouterr()
  lines = captured.err.strip().splitlines()
  assert len(lines) == 1 and lines[0].startswith("unlearn-jax: error: "), captured.err
  assert "Traceback" not in captured.err and captured.out == ""
  return lines[0]


def _fresh(code):
  """Runs ``code`` in a new Python process (``auto`` must start before JAX is used there, as in a real run)."""
  return subprocess.run([sys.executable, "-c", code], env=_env(), cwd=ROOT, capture_output=True, text=True,
                        timeout=300)


def test_auto_without_a_cluster_is_one_line_naming_the_explicit_flags(tmp_path):
  out, cache = str(tmp_path / "o"), str(tmp_path / "c")
  proc = _fresh(f"import sys; from unlearn_jax import cli; sys.exit(cli.main(['evaluate', '--config', 'tiny', "
                f"'--distributed', 'auto', '--output-dir', {out!r}, '--cache-dir', {cache!r}]))")
  assert proc.returncode == 2, proc.stderr
  lines = proc.stderr.strip().splitlines()
  assert len(lines) == 1 and lines[0].startswith("unlearn-jax: error: "), proc.stderr
  assert "Traceback" not in proc.stderr and proc.stdout == ""
  line = lines[0]
  assert "--distributed auto found no cluster" in line
  assert "--coordinator HOST:PORT --num-processes P --process-id I" in line
  assert "JAX_COORDINATOR_ADDRESS / JAX_NUM_PROCESSES / JAX_PROCESS_ID" in line
  assert not (tmp_path / "o").exists() and not (tmp_path / "c").exists()  # refused before any work


def test_auto_from_python_gives_the_same_error(tmp_path):
  out, cache = str(tmp_path / "o"), str(tmp_path / "c")
  proc = _fresh(f"""
import jax, unlearn_jax
from unlearn_jax.distributed import DistributedError
try:
  unlearn_jax.evaluate(config="tiny", distributed="auto", output_dir={out!r}, cache_dir={cache!r}, verbose=False)
except DistributedError as err:
  print("refused:", err)
assert not jax.distributed.is_initialized()
""")
  assert proc.returncode == 0, proc.stderr
  assert "refused:" in proc.stdout and "--coordinator HOST:PORT --num-processes P --process-id I" in proc.stdout
  assert not (tmp_path / "c").exists()
  import unlearn_jax
  with pytest.raises(ValueError, match="needs output_dir"):  # checked before anything starts
    unlearn_jax.evaluate(config="tiny", distributed={"coordinator": "127.0.0.1:1", "num_processes": 2,
                                                     "process_id": 1}, verbose=False)
  with pytest.raises(ValueError, match=r"unknown distributed key\(s\) \['timeout'\]"):
    unlearn_jax.evaluate(config="tiny", distributed={"timeout": 3}, verbose=False)


@pytest.mark.parametrize("argv, message", [
    (["--coordinator", "127.0.0.1:1234"], "multi-process runs need --coordinator HOST:PORT --num-processes P"),
    (["--num-processes", "2", "--process-id", "0"], "multi-process runs need --coordinator HOST:PORT"),
    (["--coordinator", "localhost", "--num-processes", "2", "--process-id", "0"],
     "--coordinator must be HOST:PORT with a port in 1..65535, got 'localhost'"),
    (["--coordinator", "h:70000", "--num-processes", "2", "--process-id", "0"], "got 'h:70000'"),
    (["--coordinator", "h:1", "--num-processes", "2", "--process-id", "2"],
     "--process-id must be below --num-processes (2), got 2"),
    (["--coordinator", "h:1", "--num-processes", "0", "--process-id", "0"], "--num-processes must be an integer >= 1"),
    (["--distributed", "auto", "--distributed-timeout", "0"], "timeout must be a positive number of seconds, got 0.0"),
    (["--distributed", "auto", "--distributed-timeout", "nan"], "got nan"),
    (["--distributed-timeout", "5"], "timeout applies to multi-process runs: add --distributed auto or --coordinator"),
])
def test_bad_start_up_settings_are_one_line_before_any_work(tmp_path, capsys, no_cluster, argv, message):
  line = _cli_error(capsys, ["evaluate", "--config", "tiny", "--output-dir", str(tmp_path / "o"),
                             "--cache-dir", str(tmp_path / "c"), *argv])
  assert message in line
  assert not (tmp_path / "o").exists() and not (tmp_path / "c").exists()


def test_argparse_refuses_unknown_modes(capsys):
  from unlearn_jax import cli
  with pytest.raises(SystemExit) as exc:
    cli.main(["evaluate", "--distributed", "slurm"])
  assert exc.value.code == 2 and "invalid choice: 'slurm'" in capsys.readouterr().err


@pytest.mark.parametrize("argv", [["--distributed", "auto"], ["--distributed-timeout", "5"],
                                  ["--num-processes", "2"]])
def test_sweep_refuses_multi_process_flags(tmp_path, capsys, no_cluster, argv):
  line = _cli_error(capsys, ["sweep", "--config", "tiny", "--grid", "lr=0.1,0.2", "--output-dir",
                             str(tmp_path / "o"), *argv])
  assert "sweep runs in a single process; drop --distributed" in line
  assert not (tmp_path / "o").exists()


def test_resolve_reads_the_environment_only_when_flags_are_absent():
  from unlearn_jax.distributed import DEFAULT_TIMEOUT_S, Spec, resolve
  env = {"JAX_COORDINATOR_ADDRESS": "10.0.0.1:8476", "JAX_NUM_PROCESSES": "4", "JAX_PROCESS_ID": "3"}
  assert resolve(environ=env) == Spec("explicit", "10.0.0.1:8476", 4, 3, DEFAULT_TIMEOUT_S)
  assert resolve(process_id=1, timeout_s=5, environ=env) == Spec("explicit", "10.0.0.1:8476", 4, 1, 5.0)
  assert resolve(environ={}) == Spec("single")
  assert resolve("auto", environ={}) == Spec("auto")
  assert resolve("auto", coordinator="h:9", environ={}) == Spec("auto", "h:9")
  assert resolve(num_processes=1, environ={}).mode == "single"


# Rendezvous through the real jax.distributed, in fresh processes (it can run once per process).
_START = """
import sys
from unlearn_jax import distributed
print(distributed.start(None, sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), timeout_s=float(sys.argv[4])))
"""


def test_two_local_processes_meet_through_the_explicit_flags():
  port = _free_port()
  procs = [subprocess.Popen([sys.executable, "-c", _START, f"127.0.0.1:{port}", "2", str(i), "120"], cwd=ROOT,
                            env=_env(), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
           for i in range(2)]
  outs = [p.communicate(timeout=300) for p in procs]
  for p, (out, err) in zip(procs, outs):
    assert p.returncode == 0, err
  assert [out.strip() for out, _ in outs] == ["(0, 2)", "(1, 2)"]


@pytest.mark.parametrize("process_id", ["1", "0"])  # 1: nobody at the address; 0: the others never come
def test_coordinator_that_never_answers_fails_in_one_line_within_the_timeout(tmp_path, process_id):
  port = _free_port()  # nothing listens there
  t0 = time.monotonic()
  proc = subprocess.run([sys.executable, "-m", "unlearn_jax.cli", "evaluate", "--config", "tiny",
                         "--coordinator", f"127.0.0.1:{port}", "--num-processes", "2", "--process-id", process_id,
                         "--distributed-timeout", "2", "--output-dir", str(tmp_path / "o"),
                         "--cache-dir", str(tmp_path / "c")],
                        cwd=ROOT, env=_env(), capture_output=True, text=True, timeout=120)
  wall = time.monotonic() - t0
  assert proc.returncode == 2, proc.stderr
  lines = proc.stderr.strip().splitlines()
  assert len(lines) == 1, proc.stderr  # JAX's native shutdown logs of the abandoned start are not shown
  assert lines[0].startswith("unlearn-jax: error: distributed start-up timed out after 2 s")
  assert f"coordinator at 127.0.0.1:{port}" in lines[0] and "--distributed-timeout" in lines[0]
  assert proc.stdout == "" and not (tmp_path / "o").exists()
  # JAX's own deadline is 300 s by default (where it aborts the process); ours ends the wait after 2 s.
  # The rest is interpreter start-up and exit on a loaded machine.
  assert wall < 60, wall
