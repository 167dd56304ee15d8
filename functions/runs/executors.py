"""Where a sweep's units of work run: in this process (the default), or on the actors of a Ray cluster.

A unit is what the engine already trains as one batch (the repeats of one cell).  Either way the
driver alone writes results: an executor hands back ``(unit, records)`` in completion order and
the driver saves them.  On Ray, one long-lived actor per slot imports torch once; large shared
inputs go to the object store once (``ray.put``) and each actor reads them once and keeps them;
each actor holds its next unit while it runs one, so it never waits for the driver between
units; a unit whose actor dies goes to another (``max_retries``), and a unit that raises comes
back as a :class:`Failure` naming it while the others go on.

Whoever reaches a cluster's ports and holds its token can run code on it (a Ray 2.60 head started
with ``RAY_AUTH_MODE=token`` requires one; other clusters have none).  A local instance (``address="local"``) is started
with the dashboard and its job-submission API off; clusters belong on a private network behind a
firewall (the Ray how-to of the documentation).
"""
from __future__ import annotations

import os
import socket
import time
from collections import OrderedDict, deque
from dataclasses import dataclass, fields, is_dataclass
from typing import Any, Callable, Iterator

from ..core.errors import DataError

EXECUTORS = ("in-process", "ray")
CONNECT_TIMEOUT_S = 5.0
# shared values an actor keeps: a sweep's task, source model and the current cut point's
# validation and test inputs per kind (results, baselines) are six
KEPT_PER_ACTOR = 6
STARTUP_POLL_S = 1.0
JOIN_ATTEMPTS, JOIN_BACKOFF_S = 3, 2.0
ACTOR_START_TIMEOUT_S = 300.0
# units an actor holds at once: the one it runs and the next, whose arguments the driver ships
# while the first trains (measured: 0.15-0.25 s per unit of the actor waiting for the driver
# otherwise)
UNITS_PER_ACTOR = 2


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


@dataclass(frozen=True)
class Shared:
    """A value put in Ray's object store by :meth:`RayExecutor.share`, as units receive it: an
    actor reads it on first use and keeps it (a few at a time, the most recently used)."""

    ref: Any


def tensor_bytes(value) -> int:
    """Bytes of the tensors and arrays in ``value`` (through tuples, lists, dicts and dataclasses):
    what a unit's arguments weigh in the object store."""
    if hasattr(value, "nbytes") and not isinstance(value, type):
        return int(value.nbytes)
    if isinstance(value, (tuple, list)):
        return sum(tensor_bytes(v) for v in value)
    if isinstance(value, dict):
        return sum(tensor_bytes(v) for v in value.values())
    if is_dataclass(value) and not isinstance(value, type):
        return sum(tensor_bytes(getattr(value, f.name)) for f in fields(value))
    return 0


class _Worker:
    """One Ray actor: a process that imports torch once, runs units one after another with as
    many torch threads as CPUs Ray assigned it, and keeps the shared values it has read."""

    def __init__(self):
        import ray
        import torch

        cpus = ray.get_runtime_context().get_assigned_resources().get("CPU", 1)
        torch.set_num_threads(max(1, int(cpus)))
        _ship_tensors_as_arrays(ray)  # what it sends back
        self._kept: OrderedDict = OrderedDict()

    def ready(self) -> int:
        return os.getpid()

    def run(self, work: Callable, unit, *args):
        return work(unit, *(self._resolved(a) for a in args))

    def _resolved(self, value):
        if isinstance(value, tuple):
            return tuple(self._resolved(v) for v in value)
        if not isinstance(value, Shared):
            return value
        import ray

        key = value.ref.hex()
        if key not in self._kept:
            self._kept[key] = ray.get(value.ref)
            while len(self._kept) > KEPT_PER_ACTOR:
                self._kept.popitem(last=False)
        self._kept.move_to_end(key)
        return self._kept[key]


def tensor_state(tensor) -> tuple:
    """A tensor as Ray ships it: its bytes as a numpy array (which the object store passes out of
    band, without pickling; torch's own pickling saves each tensor through ``torch.save``, copying
    a cell's training rows several times on each side), with its dtype, shape, device,
    ``requires_grad`` and whether it is laid out channels-last (the staged inputs are: a worker
    given them in the default layout trains on them measurably slower).  Tensors numpy cannot hold
    as bytes (sparse, quantized) keep torch's way."""
    import io

    import torch

    requires_grad, tensor = tensor.requires_grad, tensor.detach()
    if tensor.layout != torch.strided or tensor.is_quantized:
        buffer = io.BytesIO()
        torch.save(tensor, buffer)
        return (buffer.getvalue(), requires_grad)
    tensor = tensor.resolve_conj().resolve_neg().cpu()
    channels_last = tensor.dim() == 4 and not tensor.is_contiguous() \
        and tensor.is_contiguous(memory_format=torch.channels_last)
    in_memory_order = tensor.permute(0, 2, 3, 1) if channels_last else tensor.contiguous()
    raw = in_memory_order.reshape(-1).view(torch.uint8).numpy()
    return raw, tensor.dtype, tuple(tensor.shape), str(tensor.device), requires_grad, channels_last


def tensor_from_state(state: tuple):
    """The tensor :func:`tensor_state` shipped, in the same layout, in memory of its own (the
    object store's buffer is read-only and lives only as long as its reference), on its device
    when this process has it."""
    import io

    import torch

    if len(state) == 2:
        tensor, requires_grad = torch.load(io.BytesIO(state[0]), weights_only=False), state[1]
        return tensor.requires_grad_(requires_grad) if requires_grad else tensor
    raw, dtype, shape, device, requires_grad, channels_last = state
    if not raw.size:
        tensor = torch.empty(shape, dtype=dtype)
    else:
        tensor = torch.from_numpy(raw.copy()).view(dtype)
        if channels_last:
            n, c, h, w = shape
            tensor = tensor.reshape(n, h, w, c).permute(0, 3, 1, 2)
        else:
            tensor = tensor.reshape(shape)
    if device != "cpu" and torch.device(device).type == "cuda" and torch.cuda.is_available():
        tensor = tensor.to(device)
    return tensor.requires_grad_(requires_grad) if requires_grad else tensor


def _ship_tensors_as_arrays(ray) -> None:
    import torch

    ray.util.register_serializer(torch.Tensor, serializer=tensor_state, deserializer=tensor_from_state)


def _join(ray, address: str, local_cpus: int | None) -> None:
    """``ray.init`` on ``address``; a cluster that answers on its port but whose node lookup times
    out (a head busy with a driver that just died) is asked again, ``JOIN_ATTEMPTS`` times in all."""
    options = dict(include_dashboard=False, log_to_driver=False, logging_level="ERROR")
    if address == "local":  # local_cpus: how many of this machine's CPUs it may use (default all)
        ray.init(num_cpus=local_cpus, **options)
        return
    for attempt in range(1, JOIN_ATTEMPTS + 1):
        try:
            ray.init(address=address, **options)
            return
        except ConnectionError as err:
            if attempt == JOIN_ATTEMPTS or "InvalidAuthToken" in f"{err} {err.__cause__}":
                raise
            time.sleep(JOIN_BACKOFF_S * attempt)


class RayExecutor:
    """Units on long-lived Ray actors, one per slot of ``task_cpus`` CPUs and ``task_gpus`` GPUs
    (0.25: four share one GPU) that the cluster has room for.

    An actor imports torch once and keeps what it was given through :meth:`share` (the task's
    data, a source model, a cut point's validation and test inputs), so each unit ships only its
    own arguments.  Units wait here and go to the least busy actor; an actor takes a second unit
    behind the one it runs only while enough units wait for every actor to get one, so the last
    units of a sweep do not queue behind a busy actor while another is free.  A unit whose actor
    dies (its process or its node killed) goes to another actor, up to ``max_retries`` times, and
    one replacement actor is started where the cluster has room; a unit that raises comes back as
    a :class:`Failure`."""

    name = "ray"

    def __init__(self, address: str = "local", task_cpus: float = 1, task_gpus: float = 0, max_retries: int = 3,
                 local_cpus: int | None = None):
        if task_cpus <= 0 or task_gpus < 0 or max_retries < 0:
            raise DataError("task CPUs must be positive, task GPUs and retries not negative")
        os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
        # Ray starts its workers at nice 15, so any other busy process on a node (a second sweep,
        # a notebook) starves them (measured: cells 10x slower than in this process); sweep units
        # are the work itself, so they get a normal priority.  A local instance takes it from here,
        # a cluster from the environment of `ray start` (the Ray how-to of the documentation)
        os.environ.setdefault("RAY_worker_niceness", "0")
        if address not in ("local", "auto"):
            _check_reachable(address)
            # a head started with RAY_AUTH_MODE=token requires its token (RAY_AUTH_TOKEN or ~/.ray/auth_token);
            # `auto` finds that out by itself, an explicit address does not (Ray reads this on import)
            os.environ.setdefault("RAY_AUTH_MODE", "token")
        import ray

        try:
            _join(ray, address, local_cpus)
            _ship_tensors_as_arrays(ray)
        except ConnectionError as err:
            cause = f"{err}: {err.__cause__}" if err.__cause__ else str(err)
            hint = ("; the cluster's token is missing here: copy ~/.ray/auth_token from the head node, or set "
                    "RAY_AUTH_TOKEN" if "InvalidAuthToken" in cause else "")
            raise DataError(f"cannot join the Ray cluster at --address {address} ({str(err)}){hint}; start one with "
                            f"`ray start --head`, or use --address local") from err
        resources = ray.cluster_resources()
        if task_gpus > 0 and resources.get("GPU", 0) == 0:
            ray.shutdown()
            raise DataError(f"--task-gpus {task_gpus} asked for, but the Ray cluster at {address} has no GPUs; "
                            f"leave --task-gpus at 0")
        slots = int(resources.get("CPU", 0) // task_cpus)
        if task_gpus > 0:
            slots = min(slots, int(resources["GPU"] // task_gpus))
        if slots < 1:
            ray.shutdown()
            raise DataError(f"--task-cpus {task_cpus} is more than the Ray cluster at {address} has "
                            f"({resources.get('CPU', 0):g} CPUs); lower --task-cpus")
        self._ray, self.slots, self.max_retries = ray, slots, max_retries
        self._actor_class = ray.remote(_Worker).options(num_cpus=task_cpus, num_gpus=task_gpus, max_restarts=0,
                                                        max_task_retries=0)
        self._waiting: deque = deque()  # units not yet sent: [unit, work, args, attempts]
        self._starting: dict = {}  # an actor's ready() reference -> the actor
        self._held: dict = {}  # each live actor -> how many units it holds
        self._running: dict = {}  # a run() reference -> (actor, entry)
        self._unplaced_since: float | None = None
        self.bytes_shared = self.bytes_sent = self.retried = 0
        for _ in range(slots):
            self._start_actor()

    def _start_actor(self) -> None:
        actor = self._actor_class.remote()
        self._starting[actor.ready.remote()] = actor

    def share(self, value) -> Shared:
        """``value`` in the object store once; each actor reads it once and keeps it."""
        self.bytes_shared += tensor_bytes(value)
        return Shared(self._ray.put(value))

    def submit(self, work: Callable, unit, *args) -> None:
        self.bytes_sent += tensor_bytes(args)
        self._waiting.append([unit, work, args, 0])
        self._dispatch()

    def _dispatch(self) -> None:
        while self._waiting and self._held:
            actor = min(self._held, key=self._held.get)
            held = self._held[actor]
            if held >= UNITS_PER_ACTOR or (held and len(self._waiting) < len(self._held)):
                return
            entry = self._waiting.popleft()
            unit, work, args, _ = entry
            self._held[actor] += 1
            self._running[actor.run.remote(work, unit, *args)] = (actor, entry)

    def completed(self, wait: bool = False) -> Iterator[tuple]:
        """Finished units in completion order: all of them when ``wait``, else those done now."""
        from ray.exceptions import RayError, RayTaskError

        while self._running or self._waiting:
            self._dispatch()
            pending = [*self._running, *self._starting]
            ready, _ = self._ray.wait(pending, num_returns=1, timeout=STARTUP_POLL_S if wait else 0) \
                if pending else ([], [])
            if not ready:
                if wait and self._no_actor_can_start():
                    yield from self._fail_waiting()
                if not wait or not (self._running or self._waiting):
                    return
                continue
            if ready[0] in self._starting:
                actor = self._starting.pop(ready[0])
                try:
                    self._ray.get(ready[0])
                    self._held[actor] = 0
                except RayError:  # it could not start (its node went away): another is asked for
                    self._start_actor()
                continue
            actor, entry = self._running.pop(ready[0])
            unit = entry[0]
            try:
                value = self._ray.get(ready[0])
            except RayTaskError as err:
                self._release(actor)
                cause = err.cause if getattr(err, "cause", None) is not None else err
                yield unit, Failure(unit, f"{type(cause).__name__}: {cause}")
                continue
            except RayError as err:  # the actor died: its process or its node was killed
                if self._held.pop(actor, None) is not None:  # once per actor, whatever it held
                    self._start_actor()
                entry[3] += 1
                if entry[3] > self.max_retries:
                    yield unit, Failure(unit, f"{type(err).__name__}: its worker died {entry[3]} times "
                                              f"({str(err).splitlines()[0]})")
                else:
                    self.retried += 1
                    self._waiting.appendleft(entry)
                continue
            self._release(actor)
            yield unit, value

    def _release(self, actor) -> None:
        if actor in self._held:  # not when it died after finishing this unit
            self._held[actor] -= 1

    def _no_actor_can_start(self) -> bool:
        """True once no actor has been alive for ``ACTOR_START_TIMEOUT_S`` while units wait."""
        if self._running or self._held or not self._waiting:
            self._unplaced_since = None
            return False
        self._unplaced_since = self._unplaced_since or time.monotonic()
        return time.monotonic() - self._unplaced_since > ACTOR_START_TIMEOUT_S

    def _fail_waiting(self) -> Iterator[tuple]:
        while self._waiting:
            unit = self._waiting.popleft()[0]
            yield unit, Failure(unit, f"no Ray worker could start in {ACTOR_START_TIMEOUT_S:g} s: the cluster has no "
                                      f"free slot of the CPUs and GPUs asked per worker")

    def close(self) -> None:
        self._ray.shutdown()


def make_executor(name: str = "in-process", address: str = "local", task_cpus: float = 1, task_gpus: float = 0,
                  max_retries: int = 3):
    if name == "in-process":
        return InProcess()
    if name == "ray":
        return RayExecutor(address, task_cpus, task_gpus, max_retries)
    raise DataError(f"unknown executor {name!r}; choose one of {list(EXECUTORS)}")
