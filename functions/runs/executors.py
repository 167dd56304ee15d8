"""Where a sweep's units of work run: in this process (the default), or as tasks on a Ray cluster.

A unit is what the engine already trains as one batch (the repeats of one cell).  Either way the
driver alone writes results: an executor hands back ``(unit, records)`` in completion order and
the driver saves them.  On Ray, large shared inputs go to the object store once (``ray.put``) and
tasks receive references; a task whose worker dies is retried (``max_retries``), and a task that
raises comes back as a :class:`Failure` naming its unit while the others go on.

Whoever reaches a cluster's ports and holds its token can run code on it (a Ray 2.60 head started
with ``RAY_AUTH_MODE=token`` requires one; other clusters have none).  A local instance (``address="local"``) is started
with the dashboard and its job-submission API off; clusters belong on a private network behind a
firewall (the Ray how-to of the documentation).
"""
from __future__ import annotations

import os
import socket
from dataclasses import dataclass
from typing import Any, Callable, Iterator

from ..core.errors import DataError

EXECUTORS = ("in-process", "ray")
CONNECT_TIMEOUT_S = 5.0


@dataclass
class Failure:
    """A unit whose task raised: what it was, and the error."""

    unit: Any
    error: str


class InProcess:
    """Today's behaviour: units run one after another in this process; an error stops the sweep."""

    name = "in-process"

    def __init__(self):
        self._done: list = []

    def submit(self, work: Callable, unit, *args) -> None:
        self._done.append((unit, work(unit, *args)))

    def completed(self, wait: bool = False) -> Iterator[tuple]:
        done, self._done = self._done, []
        yield from done

    def share(self, value):
        return value

    def close(self) -> None:
        pass


def _check_reachable(address: str) -> None:
    """Fail within seconds, naming the address, when nothing listens at ``host:port``."""
    target = address.removeprefix("ray://")
    host, _, port = target.rpartition(":")
    if not host or not port.isdigit():
        raise DataError(f"--address {address!r} is not host:port, ray://host:port, 'auto' or 'local'")
    try:
        socket.create_connection((host, int(port)), timeout=CONNECT_TIMEOUT_S).close()
    except OSError as err:
        raise DataError(f"no Ray cluster answers at {address} ({err}); start one with `ray start --head` "
                        f"there, or use --address local for an instance on this machine") from err


def _on_worker(work: Callable, unit, *args):
    """Run ``work`` in a Ray worker with as many torch threads as CPUs Ray assigned it."""
    import ray
    import torch

    cpus = ray.get_runtime_context().get_assigned_resources().get("CPU", 1)
    torch.set_num_threads(max(1, int(cpus)))
    return work(unit, *args)


class RayExecutor:
    """Units as Ray tasks of ``task_cpus`` CPUs and ``task_gpus`` GPUs (0.25: four share one)."""

    name = "ray"

    def __init__(self, address: str = "local", task_cpus: float = 1, task_gpus: float = 0, max_retries: int = 3,
                 local_cpus: int | None = None):
        if task_cpus <= 0 or task_gpus < 0 or max_retries < 0:
            raise DataError("task CPUs must be positive, task GPUs and retries not negative")
        os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
        # Ray starts its workers at nice 15, so any other busy process on a node (a second sweep,
        # a notebook) starves them (measured: cells 10x slower than in this process); sweep tasks
        # are the work itself, so they get a normal priority.  A local instance takes it from here,
        # a cluster from the environment of `ray start` (the Ray how-to of the documentation)
        os.environ.setdefault("RAY_worker_niceness", "0")
        if address not in ("local", "auto"):
            _check_reachable(address)
            # a head started with RAY_AUTH_MODE=token requires its token (RAY_AUTH_TOKEN or ~/.ray/auth_token);
            # `auto` finds that out by itself, an explicit address does not (Ray reads this on import)
            os.environ.setdefault("RAY_AUTH_MODE", "token")
        import ray

        options = dict(include_dashboard=False, log_to_driver=False, logging_level="ERROR")
        try:
            if address == "local":  # local_cpus: how many of this machine's CPUs it may use (default all)
                ray.init(num_cpus=local_cpus, **options)
            else:
                ray.init(address=address, **options)
        except ConnectionError as err:
            cause = f"{err}: {err.__cause__}" if err.__cause__ else str(err)
            hint = ("; the cluster's token is missing here: copy ~/.ray/auth_token from the head node, or set "
                    "RAY_AUTH_TOKEN" if "InvalidAuthToken" in cause else "")
            raise DataError(f"cannot join the Ray cluster at --address {address} ({str(err)}){hint}; start one with "
                            f"`ray start --head`, or use --address local") from err
        gpus = ray.cluster_resources().get("GPU", 0)
        if task_gpus > 0 and gpus == 0:
            ray.shutdown()
            raise DataError(f"--task-gpus {task_gpus} asked for, but the Ray cluster at {address} has no GPUs; "
                            f"leave --task-gpus at 0")
        self._ray = ray
        self._task = ray.remote(_on_worker).options(num_cpus=task_cpus, num_gpus=task_gpus, max_retries=max_retries,
                                                    retry_exceptions=False)
        self._pending: dict = {}

    def share(self, value):
        """``value`` in the object store once; tasks get a reference."""
        return self._ray.put(value)

    def submit(self, work: Callable, unit, *args) -> None:
        self._pending[self._task.remote(work, unit, *args)] = unit

    def completed(self, wait: bool = False) -> Iterator[tuple]:
        """Finished units in completion order: all of them when ``wait``, else those done now."""
        from ray.exceptions import RayError, RayTaskError

        while self._pending:
            ready, _ = self._ray.wait(list(self._pending), num_returns=1, timeout=None if wait else 0)
            if not ready:
                return
            unit = self._pending.pop(ready[0])
            try:
                yield unit, self._ray.get(ready[0])
            except RayTaskError as err:
                cause = err.cause if getattr(err, "cause", None) is not None else err
                yield unit, Failure(unit, f"{type(cause).__name__}: {cause}")
            except RayError as err:  # the worker died more often than max_retries allows
                yield unit, Failure(unit, f"{type(err).__name__}: {str(err).splitlines()[0]}")

    def close(self) -> None:
        self._ray.shutdown()


def make_executor(name: str = "in-process", address: str = "local", task_cpus: float = 1, task_gpus: float = 0,
                  max_retries: int = 3):
    if name == "in-process":
        return InProcess()
    if name == "ray":
        return RayExecutor(address, task_cpus, task_gpus, max_retries)
    raise DataError(f"unknown executor {name!r}; choose one of {list(EXECUTORS)}")
