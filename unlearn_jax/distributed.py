"""Multi-process start-up: explicit flags, environment variables, or ``auto``.

Every process of a multi-process run executes the same command on a shared cache
directory (see :mod:`unlearn_jax.protocol.run`); this module only gives each process
its identity through :func:`jax.distributed.initialize`. Three ways to say how:

* **explicit**: ``coordinator`` (``host:port`` of process 0), ``num_processes`` and
  ``process_id`` — the flags ``--coordinator/--num-processes/--process-id`` or the
  variables ``JAX_COORDINATOR_ADDRESS`` / ``JAX_NUM_PROCESSES`` / ``JAX_PROCESS_ID``;
* **auto** (``--distributed auto``): :func:`jax.distributed.initialize` with no
  arguments, which reads them from the cluster it runs on — a Cloud TPU pod slice,
  a SLURM job, an Open MPI ``mpirun`` (or Kubernetes) — so the same command runs
  unchanged on every host. Values given explicitly still take precedence; without
  any cluster it is a one-line error naming the explicit flags;
* **neither**: one process.

Start-up is bounded: if the processes have not all met within ``timeout_s``
(default :data:`DEFAULT_TIMEOUT_S`; ``--distributed-timeout``), the call fails with a
:class:`DistributedError` that names the coordinator address, instead of waiting
(JAX's own deadline is minutes, and at it JAX aborts the process with a native
stack trace). The rendezvous runs in a helper thread so that the wait can be cut
short; the abandoned attempt is left to the process's exit.
"""

from __future__ import annotations

import atexit
import dataclasses
import math
import os
import sys
import threading
from typing import Mapping, Optional

DEFAULT_TIMEOUT_S = 60.0
MODES = ("auto",)
EXPLICIT_FLAGS = "--coordinator HOST:PORT --num-processes P --process-id I"
ENV_VARS = "JAX_COORDINATOR_ADDRESS / JAX_NUM_PROCESSES / JAX_PROCESS_ID"
# JAX's own deadline is set far beyond ours: ours ends the wait; JAX's would abort the process.
_JAX_GRACE_S = 24 * 3600


class DistributedError(ValueError):
  """Multi-process start-up could not proceed (one-line message)."""


@dataclasses.dataclass(frozen=True)
class Spec:
  """How this process starts: ``mode`` is ``single``, ``explicit`` or ``auto``."""

  mode: str
  coordinator: Optional[str] = None
  num_processes: Optional[int] = None
  process_id: Optional[int] = None
  timeout_s: float = DEFAULT_TIMEOUT_S


def _env_int(name: str, environ: Mapping[str, str]) -> Optional[int]:
  value = environ.get(name)
  if value in (None, ""):
    return None
  try:
    return int(value)
  except ValueError:
    raise DistributedError(f"environment variable {name} must be an integer, got {value!r}") from None


def _check_timeout(timeout_s) -> float:
  if isinstance(timeout_s, bool) or not isinstance(timeout_s, (int, float)) or not math.isfinite(timeout_s) \
      or timeout_s <= 0:
    raise DistributedError(f"the distributed start-up timeout must be a positive number of seconds, "
                           f"got {timeout_s!r}")
  return float(timeout_s)


def _check_coordinator(address: str) -> str:
  host, sep, port = str(address).rpartition(":")
  if not sep or not host or not port.isdigit() or not 0 < int(port) < 65536:
    raise DistributedError(f"--coordinator must be HOST:PORT with a port in 1..65535, got {address!r}")
  return str(address)


def resolve(distributed: Optional[str] = None, coordinator: Optional[str] = None,
            num_processes: Optional[int] = None, process_id: Optional[int] = None,
            timeout_s: Optional[float] = None, environ: Optional[Mapping[str, str]] = None) -> Spec:
  """The start-up that the arguments and the environment describe (nothing is started).

  Args:
    distributed: ``None`` (explicit values or one process) or ``"auto"``.
    coordinator, num_processes, process_id: explicit values; ``None`` reads the
      ``JAX_*`` variable of the same name (only here, where it is used).
    timeout_s: seconds the processes may take to meet (default :data:`DEFAULT_TIMEOUT_S`).
    environ: the environment (default ``os.environ``).
  """
  environ = os.environ if environ is None else environ
  if distributed is not None and distributed not in MODES:
    raise DistributedError(f"--distributed must be one of {', '.join(MODES)}, got {distributed!r}")
  coordinator = coordinator or environ.get("JAX_COORDINATOR_ADDRESS") or None
  if num_processes is None:
    num_processes = _env_int("JAX_NUM_PROCESSES", environ)
  if process_id is None:
    process_id = _env_int("JAX_PROCESS_ID", environ)
  given_timeout = timeout_s is not None
  timeout_s = _check_timeout(DEFAULT_TIMEOUT_S if timeout_s is None else timeout_s)
  if coordinator is not None:
    coordinator = _check_coordinator(coordinator)
  if num_processes is not None and (isinstance(num_processes, bool) or not isinstance(num_processes, int)
                                    or num_processes < 1):
    raise DistributedError(f"--num-processes must be an integer >= 1, got {num_processes!r}")
  if process_id is not None:
    if isinstance(process_id, bool) or not isinstance(process_id, int) or process_id < 0:
      raise DistributedError(f"--process-id must be an integer >= 0, got {process_id!r}")
    if num_processes is not None and process_id >= num_processes:
      raise DistributedError(f"--process-id must be below --num-processes ({num_processes}), got {process_id}")
  if distributed == "auto":
    return Spec("auto", coordinator, num_processes, process_id, timeout_s)
  if not coordinator and not num_processes and process_id is None:
    if given_timeout:
      raise DistributedError(f"the distributed start-up timeout applies to multi-process runs: add "
                             f"--distributed auto or {EXPLICIT_FLAGS}")
    return Spec("single", timeout_s=timeout_s)
  if num_processes == 1 and not coordinator:
    return Spec("single", num_processes=1, process_id=process_id, timeout_s=timeout_s)
  if not coordinator or num_processes is None or process_id is None:
    raise DistributedError(f"multi-process runs need {EXPLICIT_FLAGS} (or the {ENV_VARS} environment "
                           f"variables), or --distributed auto on a Cloud TPU pod slice, SLURM or Open MPI")
  return Spec("explicit", coordinator, num_processes, process_id, timeout_s)


def _already(spec: Spec) -> Optional[tuple[int, int]]:
  """This process's identity if ``jax.distributed`` is already initialised and agrees with ``spec``."""
  import jax
  if not jax.distributed.is_initialized():
    return None
  index, count = jax.process_index(), jax.process_count()
  if (spec.num_processes not in (None, count)) or (spec.process_id not in (None, index)):
    raise DistributedError(f"this Python process already runs as process {index} of {count}; it cannot "
                           f"start again as process {spec.process_id} of {spec.num_processes}")
  return index, count


def initialize(spec: Spec) -> tuple[int, int]:
  """Starts ``spec`` (see :func:`resolve`) and returns ``(process_index, process_count)``.

  Raises:
    DistributedError: ``auto`` found no cluster, or the processes did not meet within
      ``spec.timeout_s`` (the message names the coordinator address).
  """
  import jax
  if spec.mode == "single":
    return 0, 1
  done = _already(spec)
  if done is not None:
    return done
  kwargs = {"initialization_timeout": int(math.ceil(spec.timeout_s)) + _JAX_GRACE_S}
  if spec.mode == "explicit":
    if spec.num_processes == 1:
      return 0, 1
    kwargs.update(coordinator_address=spec.coordinator, num_processes=spec.num_processes,
                  process_id=spec.process_id)
  else:
    kwargs.update({k: v for k, v in (("coordinator_address", spec.coordinator), ("num_processes",
                                     spec.num_processes), ("process_id", spec.process_id)) if v is not None})
  outcome: dict = {}

  def rendezvous():
    try:
      jax.distributed.initialize(**kwargs)
      outcome["ok"] = True
    except BaseException as err:  # noqa: BLE001 - handed to the calling thread
      outcome["error"] = err

  thread = threading.Thread(target=rendezvous, name="unlearn_jax-distributed-start", daemon=True)
  thread.start()
  thread.join(spec.timeout_s)
  if thread.is_alive():
    _quiet_native_logs_at_exit()
    address = spec.coordinator or _detected_address()
    where = f"the coordinator at {address}" if address else "the detected coordinator"
    raise DistributedError(
        f"distributed start-up timed out after {spec.timeout_s:g} s waiting for {where} "
        f"({spec.num_processes or 'all'} processes): check that process 0 runs there, that the port is "
        f"reachable from every host and that every process was started (--distributed-timeout sets the wait)")
  if "error" in outcome:
    err = outcome["error"]
    if spec.mode == "auto" and isinstance(err, ValueError) and not (spec.coordinator and spec.num_processes
                                                                    and spec.process_id is not None):
      raise DistributedError(
          f"--distributed auto found no cluster to join (no Cloud TPU pod slice, SLURM job, Open MPI or "
          f"Kubernetes environment detected: {' '.join(str(err).split())}); on other machines start each "
          f"process with {EXPLICIT_FLAGS} (or {ENV_VARS})") from None
    where = f" (coordinator {spec.coordinator})" if spec.coordinator else ""
    raise DistributedError(f"distributed start-up failed{where}: {type(err).__name__}: "
                           f"{' '.join(str(err).split())}") from None
  return jax.process_index(), jax.process_count()


def _detected_address() -> Optional[str]:
  """The coordinator address ``auto`` detected, where this JAX version exposes it."""
  try:
    from jax._src import distributed as jax_distributed  # pylint: disable=import-outside-toplevel
    return getattr(jax_distributed.global_state, "coordinator_address", None)
  except ImportError:
    return None


def start(distributed: Optional[str] = None, coordinator: Optional[str] = None,
          num_processes: Optional[int] = None, process_id: Optional[int] = None,
          timeout_s: Optional[float] = None) -> tuple[int, int]:
  """:func:`resolve` then :func:`initialize`: ``(process_index, process_count)`` of this process."""
  return initialize(resolve(distributed, coordinator, num_processes, process_id, timeout_s))


def requested(distributed: Optional[str] = None, num_processes: Optional[int] = None,
              timeout_s: Optional[float] = None, environ: Optional[Mapping[str, str]] = None) -> bool:
  """Whether the arguments (or ``JAX_NUM_PROCESSES``) ask for more than one process or for ``auto``."""
  environ = os.environ if environ is None else environ
  if num_processes is None:
    num_processes = _env_int("JAX_NUM_PROCESSES", environ)
  return distributed is not None or (num_processes or 1) > 1 or timeout_s is not None


def _quiet_native_logs_at_exit() -> None:
  """At exit, the abandoned rendezvous's native service logs its own shutdown on stderr; the
  error already said what happened, so stderr is closed after Python's last output."""

  def close_stderr():
    try:
      sys.stderr.flush()
      sys.stdout.flush()
      devnull = os.open(os.devnull, os.O_WRONLY)
      os.dup2(devnull, 2)
    except (OSError, ValueError):
      pass

  atexit.register(close_stderr)  # runs before JAX's exit handlers (registered earlier)
