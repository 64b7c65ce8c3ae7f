"""RayJuliaPool: juliapool past one machine, on Ray's own actors. `pip install 'juliapool[ray]'`.

Data flow::

    driver (your process)                        Ray actor (one process, on some node)
    ---------------------                        -------------------------------------
    RayJuliaPool.execute / map / session  --->  JuliaPoolActor (threaded, `workers_per_actor`
      picks the least busy live actor             calls at once) -> its own JuliaProcessPool
      (sessions: one actor for life)              -> Julia workers on that node
      <--- item 1: the actor's incarnation  ---   (a ReaperGuard kills them if the actor dies)
      <--- item 2: the CodeExecResult       ---

Each call is a Ray streaming generator held after its first item until the driver has it (see
juliapool/ray_actor.py), which tells the two ways an actor death can meet a call: before the first
item, the code did not run and the call is retried on another actor; after it, the call gets a
result that says its actor died (`ACTOR_DIED_EXIT_CODE`). A session notices a new incarnation and
says in its next result that its state is gone (`worker_restarted`), as a local Session does.

The call logic is written once, as generators of "steps" (the Ray generator to advance next), and
driven either by blocking `ray.get` (execute, map) or by `await` (execute_async).

This is the only module of juliapool that imports Ray.
"""

from __future__ import annotations

import asyncio
import atexit
import contextlib
import logging
import threading
import weakref
from concurrent.futures import ThreadPoolExecutor
from typing import Any, Dict, Generator, Iterable, Iterator, List, NamedTuple, Optional

try:
    import ray
    from ray.exceptions import ActorUnavailableError, GetTimeoutError, RayActorError
    from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy
except ImportError as e:  # pragma: no cover - depends on the installation
    raise ImportError("juliapool.ray needs Ray: pip install 'juliapool[ray]'") from e

from .errors import ActorsLostError, PoolShutDownError, WorkerStartError
from .ray_actor import JuliaPoolActor
from .result import CodeExecResult

log = logging.getLogger(__name__)

ACTOR_DIED_EXIT_CODE = -9  # the call's actor process died (Ray ends actors with SIGKILL)
# Ray holds a call's generator after each item until the driver has taken it (ray_actor.py).
STREAM = {"_generator_backpressure_num_objects": 1}
CONTROL = "control"  # the actors' concurrency group for stats, session closing and shutdown
Steps = Generator[Any, Any, Any]  # yields a Ray generator to advance (or a Wait), gets the value

_live_pools: "weakref.WeakSet[RayJuliaPool]" = weakref.WeakSet()


@atexit.register
def _shutdown_live_pools() -> None:  # registered after Ray's own hook, so it runs before it
    for pool in list(_live_pools):
        pool.shutdown()


class RayJuliaPool:
    """`actors` Ray actors (None: one per node), each owning a JuliaProcessPool of `workers_per_actor`
    Julia workers. `num_cpus` (default `workers_per_actor`) is what each actor asks Ray for, so Ray
    places actors where CPUs are free; `max_restarts` is how often Ray recreates a dead actor;
    `actor_options` goes to Ray's `.options()` (e.g. `runtime_env`, `memory`, `resources`). The other
    keyword arguments are JuliaProcessPool's (`timeout`, `julia_path`, `preload`, ...), and
    `start_timeout` also bounds the wait for Ray to place and start the actors."""

    def __init__(self, actors: Optional[int] = None, workers_per_actor: int = 4, *,
                 num_cpus: Optional[float] = None, max_restarts: int = 3,
                 actor_options: Optional[Dict[str, Any]] = None, **pool_kwargs: Any) -> None:
        if actors is not None and actors < 1:
            raise ValueError("actors must be at least 1 (or None: one per node)")
        if workers_per_actor < 1:
            raise ValueError("workers_per_actor must be at least 1")
        if "size" in pool_kwargs:
            raise TypeError("RayJuliaPool takes workers_per_actor (Julia workers per actor), not size")
        if not ray.is_initialized():
            ray.init()
        self.workers_per_actor = workers_per_actor
        self.num_cpus = workers_per_actor if num_cpus is None else num_cpus
        self.max_restarts = max_restarts
        self.start_timeout = float(pool_kwargs.get("start_timeout", 120.0))
        self._lock = threading.Lock()
        self._closed = False
        self._actors = self._create_actors(actors, dict(actor_options or {}), pool_kwargs)
        self._inflight = [0] * len(self._actors)
        self._sessions = [0] * len(self._actors)
        self._dead: Dict[int, str] = {}  # actor index -> why it is dead for good
        self._restarting: set = set()  # actor indices that died and that Ray restarts
        _live_pools.add(self)
        self._wait_until_ready()

    # ---- creating the actors ---------------------------------------------------------------

    def _create_actors(self, actors: Optional[int], options: Dict[str, Any], pool_kwargs: Dict[str, Any]) -> list:
        cls = ray.remote(concurrency_groups={CONTROL: 2})(JuliaPoolActor)
        options = {"num_cpus": self.num_cpus, "max_restarts": self.max_restarts, "max_task_retries": 0,
                   "max_concurrency": self.workers_per_actor, **options}
        if actors is None:  # one per node: pinned there, unless the node is gone when Ray restarts it
            places = [NodeAffinitySchedulingStrategy(node, soft=True) for node in self._nodes_with_room()]
        else:
            places = ["SPREAD"] * actors
        return [cls.options(**{"scheduling_strategy": place, **options}).remote(self.workers_per_actor, pool_kwargs)
                for place in places]

    def _nodes_with_room(self) -> List[str]:
        nodes = [n for n in ray.nodes() if n.get("Alive") and n.get("Resources", {}).get("CPU", 0) >= self.num_cpus]
        if not nodes:
            raise ValueError(f"no live Ray node has {self.num_cpus} CPUs for one actor (ray.nodes() lists "
                             f"{len(ray.nodes())} node(s)); lower num_cpus or workers_per_actor")
        return [n["NodeID"] for n in nodes]

    def _wait_until_ready(self) -> None:
        refs = [a.ready.options(concurrency_group=CONTROL).remote() for a in self._actors]
        try:
            ray.get(refs, timeout=self.start_timeout)
        except GetTimeoutError:
            self.shutdown(timeout=0)  # unplaced actors would never answer; started ones' guards reap
            raise WorkerStartError(
                f"Ray did not start {len(refs)} actor(s) of {self.num_cpus} CPU(s) each within {self.start_timeout:g} s; "
                f"the cluster has {ray.cluster_resources().get('CPU', 0):g} CPU(s) in all: lower actors, "
                f"workers_per_actor or num_cpus, add nodes, or raise start_timeout") from None
        except RayActorError as e:
            self.shutdown(timeout=0)
            raise WorkerStartError(f"a Ray actor could not start its Julia workers: {e}") from e

    # ---- public API ------------------------------------------------------------------------

    @property
    def actors(self) -> list:
        """The Ray actor handles, one per JuliaProcessPool."""
        return list(self._actors)

    def execute(self, code: str, timeout: Optional[float] = None) -> CodeExecResult:
        """Run `code` in a fresh module on the least busy actor."""
        return _drive(self._call_steps(code, timeout))

    async def execute_async(self, code: str, timeout: Optional[float] = None) -> CodeExecResult:
        """`execute` for async code: awaits Ray's object refs, blocks no thread."""
        return await _drive_async(self._call_steps(code, timeout))

    def map(self, codes: Iterable[str], timeout: Optional[float] = None) -> List[CodeExecResult]:
        """Run every snippet (each in a fresh module) over all actors; results in the order of `codes`."""
        codes = list(codes)
        # One call queued behind each running one, so that no worker waits for the driver between calls.
        slots = 2 * self.workers_per_actor * max(1, len(self._actors) - len(self._dead))
        with ThreadPoolExecutor(max(1, min(slots, len(codes))), thread_name_prefix="juliapool-ray-map") as ex:
            return list(ex.map(lambda code: self.execute(code, timeout), codes))

    def session(self, key: str) -> "RaySession":
        """A session: all its calls reach one actor and one worker there, and share one module."""
        self._check_open()
        return RaySession(self, key)

    def get_stats(self) -> Dict[str, Any]:
        """Counters summed over live actors, and each actor's own stats (None if it did not answer)."""
        refs = [None if i in self._dead else a.stats.options(concurrency_group=CONTROL).remote()
                for i, a in enumerate(self._actors)]
        per_actor = [_get_or_none(ref) for ref in refs]
        totals = {k: sum(s[k] for s in per_actor if s) for k in ("workers", "idle", "busy", "sessions", "calls",
                                                                  "errors", "timeouts", "restarts", "recycled")}
        return {"actors": len(self._actors), "dead_actors": len(self._dead), "inflight": sum(self._inflight),
                **totals, "per_actor": per_actor, "closed": self._closed}

    def shutdown(self, timeout: float = 10.0) -> None:
        """Stop every actor's Julia workers, then the actors. Idempotent."""
        with self._lock:
            if self._closed:
                return
            self._closed = True
        if not ray.is_initialized():  # Ray was shut down first: the actors died with it, their guards reaped
            return
        refs = [a.shutdown.options(concurrency_group=CONTROL).remote() for i, a in enumerate(self._actors)
                if i not in self._dead] if timeout > 0 else []
        if refs:
            ray.wait(refs, num_returns=len(refs), timeout=timeout)
        for actor in self._actors:  # whatever did not stop cleanly, its guard process reaps
            ray.kill(actor, no_restart=True)
        log.info("RayJuliaPool shut down (%d actors)", len(self._actors))

    def __enter__(self) -> "RayJuliaPool":
        return self

    def __exit__(self, *exc: object) -> None:
        self.shutdown()

    # ---- choosing actors, counting, deaths -------------------------------------------------

    def _check_open(self) -> None:
        if self._closed:
            raise PoolShutDownError("this RayJuliaPool was shut down; create a new one")

    def _live(self) -> List[int]:
        live = [i for i in range(len(self._actors)) if i not in self._dead]
        if not live:
            raise ActorsLostError(f"every Ray actor of this RayJuliaPool is dead ({'; '.join(self._dead.values())}); "
                                  "create a new RayJuliaPool")
        return live

    def _attempts(self) -> Iterator[int]:
        """Actor indices to try a call on: the least busy live one, then others not tried yet, then any
        live one (a restarting actor takes calls again once it is back)."""
        tried: set = set()
        for _ in range(len(self._actors) + 2):
            self._check_open()
            with self._lock:
                live = self._live()
                fresh = [i for i in live if i not in tried] or live
                pick = min(fresh, key=lambda i: (self._inflight[i], self._sessions[i]))
            tried.add(pick)
            yield pick

    @contextlib.contextmanager
    def _busy_on(self, index: int) -> Iterator[Any]:
        with self._lock:
            self._inflight[index] += 1
        try:
            yield self._actors[index]
        finally:
            with self._lock:
                self._inflight[index] -= 1

    def _failed(self, index: int, error: BaseException) -> None:
        """A call met its actor's death. ActorUnavailableError: Ray restarts the actor; anything else
        (ActorDiedError: restarts used up, killed for good, its node gone) means dead for good."""
        dead = not isinstance(error, ActorUnavailableError)
        log.warning("Ray actor %d %s: %s", index, "is dead for good" if dead else "died (Ray restarts it)", _why(error))
        with self._lock:
            if dead:
                self._dead[index] = f"actor {index}: {_why(error)}"
            else:
                self._restarting.add(index)

    def _back(self, index: int) -> Steps:
        """Steps: if the actor is restarting, wait until it is back (Ray fails calls sent to it
        meanwhile, but retries this one). Returns whether it is usable."""
        if index not in self._restarting:
            return True
        ready = self._actors[index].ready.options(concurrency_group=CONTROL, max_task_retries=-1).remote()
        try:
            yield Wait(ready, self.start_timeout)
        except RayActorError as e:
            self._failed(index, e)
            return False
        except GetTimeoutError:
            self._failed(index, ActorsLostError(f"not back {self.start_timeout:g} s after it died"))
            return False
        with self._lock:
            self._restarting.discard(index)
        return True

    def _call_steps(self, code: str, timeout: Optional[float]) -> Steps:
        error: Optional[RayActorError] = None
        for index in self._attempts():
            if not (yield from self._back(index)):
                continue
            with self._busy_on(index) as actor:
                gen = actor.execute.options(**STREAM).remote(code, timeout)
                try:
                    yield gen  # the incarnation: the code may run from now on
                except RayActorError as e:  # died before the call began: safe to run it elsewhere
                    self._failed(index, e)
                    error = e
                    continue
                try:
                    return (yield gen)
                except RayActorError as e:
                    self._failed(index, e)
                    return actor_died_result(e)
        raise ActorsLostError(f"no Ray actor could take this call; the last one failed with: {error}")


class RaySession:
    """A RayJuliaPool session: one actor for its life, and one worker and module in that actor.

    If the actor dies, the session moves to a fresh worker (on the restarted actor, or on another one
    if Ray will not restart it), and its next result says that earlier state is gone."""

    def __init__(self, pool: RayJuliaPool, key: str) -> None:
        self.pool = pool
        self.key = key
        self._index: Optional[int] = None
        self._seen: Optional[str] = None  # the incarnation of the actor that holds our state
        self._lost = ""  # why that state is gone, told with the next result
        self._lock = threading.Lock()
        self._async_lock: Optional[asyncio.Lock] = None  # for the event loop it was made in
        self._async_loop: Optional[asyncio.AbstractEventLoop] = None

    def execute(self, code: str, timeout: Optional[float] = None) -> CodeExecResult:
        with self._lock:
            return _drive(self._steps(code, timeout))

    async def execute_async(self, code: str, timeout: Optional[float] = None) -> CodeExecResult:
        if self._async_loop is not asyncio.get_running_loop():  # an asyncio.Lock serves one loop
            self._async_lock, self._async_loop = asyncio.Lock(), asyncio.get_running_loop()
        assert self._async_lock is not None
        async with self._async_lock:
            return await _drive_async(self._steps(code, timeout))

    @property
    def actor(self) -> Any:
        """The handle of the actor that holds the session (None before its first call)."""
        return None if self._index is None else self.pool._actors[self._index]

    def _actor_index(self) -> int:
        """The session's actor; a new one (fewest sessions) at first, or when the old one is dead."""
        pool = self.pool
        with pool._lock:
            if self._index is None or self._index in pool._dead:
                if self._index is not None:
                    pool._sessions[self._index] -= 1
                self._index = min(pool._live(), key=lambda i: (pool._sessions[i], pool._inflight[i]))
                pool._sessions[self._index] += 1
            return self._index

    def _steps(self, code: str, timeout: Optional[float]) -> Steps:
        error: Optional[RayActorError] = None
        for _ in self.pool._attempts():  # as many tries as a plain call, always on the session's actor
            index = self._actor_index()
            if not (yield from self.pool._back(index)):
                continue
            with self.pool._busy_on(index) as actor:
                gen = actor.session_execute.options(**STREAM).remote(self.key, code, timeout)
                try:
                    incarnation = yield gen
                except RayActorError as e:  # died before this call began; the state is gone all the same
                    self._actor_died(index, e)
                    error = e
                    continue
                lost = self._moved_to(incarnation)
                try:
                    result = yield gen
                except RayActorError as e:
                    self._actor_died(index, e)
                    return actor_died_result(e, session=True)
            return _tell_lost(result, lost)
        raise ActorsLostError(f"no Ray actor could take this session's call; the last one failed with: {error}")

    def _actor_died(self, index: int, error: RayActorError) -> None:
        self.pool._failed(index, error)
        self._lost = self._lost or f"the session's Ray actor died ({_why(error)})"

    def _moved_to(self, incarnation: str) -> str:
        """Why earlier state is gone if this call runs on another actor (incarnation) than the last one."""
        lost = ""
        if self._seen is not None and incarnation != self._seen:
            lost = self._lost or "the session's Ray actor was restarted"
        self._seen, self._lost = incarnation, ""
        return lost

    def close(self) -> None:
        """Forget the session's state on its actor."""
        with self._lock:
            index, self._index = self._index, None
            if index is None:
                return
            with self.pool._lock:
                self.pool._sessions[index] -= 1
            if self.pool._closed or index in self.pool._dead:
                return
            ref = self.pool._actors[index].close_session.options(concurrency_group=CONTROL).remote(self.key)
            _get_or_none(ref)

    def __enter__(self) -> "RaySession":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


# ---- results made here, and the two drivers of the steps -----------------------------------------

def actor_died_result(error: BaseException, session: bool = False) -> CodeExecResult:
    """The result of a call that was running when its actor died: its output died with the actor."""
    note = "the Ray actor running this call died"
    if session:
        note += "; the session's state (variables, functions) is lost, the next call runs on a new worker"
    return CodeExecResult("", f"juliapool: {note} ({_why(error)})\n", ACTOR_DIED_EXIT_CODE)


def _tell_lost(result: CodeExecResult, lost: str) -> CodeExecResult:
    if lost:
        result.worker_restarted = True
        result.stderr = f"juliapool: {lost}; this call ran on a new worker, earlier state is gone\n" + result.stderr
    return result


class Wait(NamedTuple):
    """A step: wait for a plain object ref, at most `timeout` seconds."""
    ref: Any
    timeout: float


def _drive(steps: Steps) -> Any:
    """Run steps with blocking gets: a yielded Ray generator is advanced, a Wait waited for, and the
    value (or the error) is sent back into the steps."""
    value: Any = None
    error: Optional[BaseException] = None
    with contextlib.closing(steps):  # an interrupted caller still releases the steps' counts
        while True:
            try:
                step = steps.throw(error) if error is not None else steps.send(value)
            except StopIteration as stop:
                return stop.value
            try:
                value = ray.get(step.ref, timeout=step.timeout) if isinstance(step, Wait) else ray.get(next(step))
                error = None
            except Exception as e:  # handed to the steps, which decide (most re-raise)
                value, error = None, e


async def _drive_async(steps: Steps) -> Any:
    """`_drive` with awaits instead of blocking gets (a cancelled caller closes the steps)."""
    value: Any = None
    error: Optional[BaseException] = None
    with contextlib.closing(steps):
        while True:
            try:
                step = steps.throw(error) if error is not None else steps.send(value)
            except StopIteration as stop:
                return stop.value
            try:
                value = await _next_async(step)
                error = None
            except Exception as e:
                value, error = None, e


async def _next_async(step: Any) -> Any:
    if not isinstance(step, Wait):
        return await (await step.__anext__())
    try:
        return await asyncio.wait_for(step.ref, step.timeout)
    except asyncio.TimeoutError:
        raise GetTimeoutError(f"not ready within {step.timeout:g} s") from None


def _get_or_none(ref: Any, timeout: float = 30.0) -> Any:
    if ref is None:
        return None
    try:
        return ray.get(ref, timeout=timeout)
    except (RayActorError, GetTimeoutError) as e:
        log.warning("a Ray actor did not answer: %s", _why(e))
        return None


def _why(error: BaseException) -> str:
    """Ray's own words, short: its actor errors put the cause on their last line."""
    lines = [line.strip() for line in str(error).splitlines() if line.strip()]
    text = lines[-1] if lines else ""
    text = text.replace(" The task may or may not have been executed on the actor.", "")
    return f"{type(error).__name__}: {text[:300]}" if text else type(error).__name__
