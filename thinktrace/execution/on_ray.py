"""The Ray backend: units of work sharded over Ray actors with Ray's own `ActorPool`.

One set of actors serves the whole run (`RayExecutor`). Each parallel step of a stage (`pool(task, lms)`) ships
the task (cloudpickled once) and the model entries of its LMs to every actor; an actor builds each LM itself
from its entry with `thinktrace.lm.build_lm` (a llama.cpp engine in the actor, or a client of a remote endpoint)
and keeps it for later steps. Units go out one per actor at a time; each result comes back to the compile
process, which alone journals it (`thinktrace.execution.pools.drive`).

A worker that dies (its process killed, its node lost) costs only the unit it had in flight: Ray reports
`ActorDiedError` for it, the unit is submitted again to a live actor, and a replacement actor is started (at
most `workers` replacements per run). Its call never reached a journal, so nothing is lost or counted twice.

Programs named by file (`programs/rater.py:Rater`) and `provider: python` engines are imported in the actors from
the same paths, so on a multi-machine cluster those files must exist at the same paths on every node.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path
from typing import Any, Mapping

from thinktrace.errors import SpecError

#: environment variables a worker gets from the compile process (caches, test switches, offline price map)
FORWARDED_PREFIXES = ("THINKTRACE_", "DSPY_", "LITELLM_", "HF_", "OPENAI_")


def import_ray():
    try:
        import ray
    except ImportError:
        raise SpecError("execution.backend", "backend ray needs the ray package: pip install 'thinktrace[ray]'") \
            from None
    return ray


def model_entry(lm, name: str) -> tuple:
    """(ModelConfig, spec field, CallsConfig) an LM was built from (set by thinktrace.lm.build_lm)."""
    built = getattr(lm, "thinktrace_model", None)
    if built is None:
        raise SpecError("execution.backend", f"LM {name!r} ({getattr(lm, 'model', lm)}) was not built from a model "
                        "entry of the spec, so a Ray worker cannot build its own copy; use backend: local")
    return built


class _Charges:
    """A worker's budget meter: it records what each call cost, for the compile process to count and check."""

    def __init__(self):
        self.entries: list[tuple[dict, str]] = []

    def add(self, entry: dict, model: str) -> None:
        self.entries.append(({"usage": dict(entry.get("usage") or {}), "cost": entry.get("cost")}, model))

    def check(self) -> None:  # the limits are checked in the compile process, before each unit is sent
        pass

    def take(self) -> list:
        out, self.entries = self.entries, []
        return out


class Worker:
    """A Ray actor (made remote with the run's resources by `RayExecutor`)."""

    def __init__(self, env: dict, threads: int):
        os.environ.update(env)
        self.threads = threads
        self.lms: dict[str, Any] = {}
        self.step: tuple[int, Any, dict] | None = None
        from thinktrace.lm import budget

        self.charges = _Charges()
        budget._meter = self.charges  # every answered call in this process is reported back, not enforced here

    def _lm(self, entry: tuple):
        cfg, field, calls = entry
        key = f"{field}|{cfg.model_dump_json()}"
        if key not in self.lms:
            from thinktrace.lm import build_lm

            if cfg.is_local:  # a local model decodes with this worker's CPUs
                cfg = cfg.model_copy(update={"llama": cfg.llama.model_copy(update={"threads": self.threads})})
            self.lms[key] = build_lm(cfg, field, calls=calls)
        return self.lms[key]

    def load(self, step: int, payload: bytes, entries: dict, modules: dict, keys: dict) -> int:
        """Make this worker ready for one parallel step: the user's program files imported under the names the
        compile process gave them, the models' API key variables set, the task unpickled, the step's LMs built. Returns the worker's pid."""
        import cloudpickle

        from thinktrace.loader import _import_file

        os.environ.update(keys)
        for name, file in modules.items():
            if name not in sys.modules:
                _import_file(Path(file), "programs")
        self.step = (step, cloudpickle.loads(payload), {n: self._lm(e) for n, e in entries.items()})
        return os.getpid()

    def run(self, step: int, unit: Any) -> tuple[Any, list]:
        current, task, lms = self.step
        if current != step:
            raise RuntimeError(f"worker loaded for step {current}, asked to run step {step}")
        import ray

        self.charges.take()
        result = task(lms, unit)
        return ray.get_runtime_context().get_actor_id(), result, self.charges.take()

    def release(self) -> None:
        """Stop this worker's llama.cpp servers (memory back until a call needs the model again)."""
        from thinktrace.lm import release_engines

        release_engines()

    def ident(self) -> tuple[str, int]:
        """(Ray actor id, pid) of this worker."""
        import ray

        return ray.get_runtime_context().get_actor_id(), os.getpid()


class RayPool:
    """One parallel step on the run's actors (see `thinktrace.execution.pools.Pool`)."""

    def __init__(self, executor: "RayExecutor", task, lms: Mapping[str, Any]):
        import cloudpickle

        from thinktrace.loader import user_modules

        ray = self.ray = import_ray()
        self.executor = executor
        self.step = executor.next_step()
        entries = {n: model_entry(lm, n) for n, lm in lms.items()}
        keys = {cfg.api_key_env: os.environ[cfg.api_key_env] for cfg, _, _ in entries.values()
                if cfg.api_key_env and cfg.api_key_env in os.environ}  # the workers read the API keys there too
        self.args = (cloudpickle.dumps(task), entries, user_modules(), keys)
        self.replaced = 0
        self.ready(list(executor.actors))
        while len(executor.actors) < executor.target and self.replaced < executor.max_replacements:
            self.replaced += 1  # a worker died between steps: start its replacement
            self.ready(executor.start(1))
        if not executor.actors:
            raise RuntimeError("every Ray worker died; completed work is journalled, resume the run")
        self.pool = ray.util.ActorPool(list(executor.actors))
        self.capacity = len(executor.actors)
        self.inflight: dict[str, tuple[Any, Any]] = {}  #: actor id -> (object ref, unit)

    def ready(self, actors) -> list:
        """Load this step on `actors`; those that died are forgotten. Returns the live ones."""
        from ray.exceptions import ActorDiedError, ActorUnavailableError

        refs = [a.load.remote(self.step, *self.args) for a in actors]
        live = []
        for actor, ref in zip(actors, refs):
            try:
                self.ray.get(ref)
                live.append(actor)
            except (ActorDiedError, ActorUnavailableError):
                self.executor.forget(self.executor.actor_id(actor))
        return live

    def submit(self, unit: Any) -> None:
        from thinktrace.lm.budget import current_meter

        current_meter().check()  # the run's budget: no unit starts once it is spent
        self.pool.submit(self._call, unit)

    def _call(self, actor, unit):
        ref = actor.run.remote(self.step, unit)
        self.inflight[self.executor.actor_id(actor)] = (ref, unit)
        return ref

    def next(self) -> tuple[Any, Any]:
        from ray.exceptions import ActorDiedError, RayTaskError

        from thinktrace.lm.budget import current_meter

        while True:
            try:
                worker, result, charges = self.pool.get_next_unordered()
            except ActorDiedError as err:
                self._lost(err)
                continue
            except RayTaskError as err:
                cause = getattr(err, "cause", None)
                raise (cause if isinstance(cause, BaseException) else RuntimeError(str(err))) from None
            for entry, model in charges:
                current_meter().add(entry, model)
            return self.inflight.pop(worker)[1], result

    def _lost(self, err) -> None:
        """An actor died with a unit in flight: submit the unit again and start a replacement actor."""
        dead = getattr(err, "actor_id", None)
        if dead not in self.inflight:
            raise RuntimeError(f"a Ray worker died and its unit could not be found: {err}") from err
        _, unit = self.inflight.pop(dead)
        self.executor.forget(dead)
        print(f"ray: worker {dead[:8]} died ({type(err).__name__}); its unit goes to another worker", file=sys.stderr)
        if self.replaced < self.executor.max_replacements:
            self.replaced += 1
            for actor in self.ready(self.executor.start(1)):
                self.pool.push(actor)
        if not self.executor.actors:
            raise RuntimeError("every Ray worker died; completed work is journalled, resume the run")
        self.pool.submit(self._call, unit)

    def stop(self) -> list[tuple[Any, Any]]:
        """Await the units in flight (a down endpoint fails them fast) and return those that succeeded."""
        out = []
        for ref, unit in list(self.inflight.values()):
            try:
                _, result, _ = self.ray.get(ref, timeout=60)
            except Exception:
                continue
            out.append((unit, result))
        self.inflight.clear()
        return out

    def close(self) -> None:
        self.ray.get([a.release.remote() for a in self.executor.actors])


class RayExecutor:
    """The run's Ray actors (started on the first parallel step, stopped by `close`)."""

    name = "ray"

    def __init__(self, cfg):
        self.cfg = cfg
        self.actors: list = []
        self.ids: dict[int, str] = {}  #: id(actor handle) -> Ray actor id
        self.pids: dict[str, int] = {}  #: Ray actor id -> worker pid
        self.max_replacements = 0
        self.target = 0  #: workers the run asked for
        self._step = 0
        self._started_ray = False
        self._cls = None

    def next_step(self) -> int:
        self._step += 1
        return self._step

    def actor_id(self, actor) -> str:
        return self.ids[id(actor)]

    def _connect(self):
        ray = import_ray()
        if not ray.is_initialized():
            ray.init(address=self.cfg.address, include_dashboard=False, log_to_driver=True,
                     logging_level="warning")
            self._started_ray = True
        return ray

    def start(self, n: int) -> list:
        """Start n actors (with the run's resources and this process's forwarded environment)."""
        ray = self._connect()
        threads = max(1, int(self.cfg.cpus_per_worker))
        if self._cls is None:
            env = {k: v for k, v in os.environ.items() if k.startswith(FORWARDED_PREFIXES)}
            env.update(OMP_NUM_THREADS=str(threads), MKL_NUM_THREADS=str(threads), TOKENIZERS_PARALLELISM="false")
            self._cls = ray.remote(num_cpus=self.cfg.cpus_per_worker, num_gpus=self.cfg.gpus_per_worker or None,
                                   max_restarts=0)(Worker)
            self._env, self._threads = env, threads
        fresh = [self._cls.remote(self._env, self._threads) for _ in range(n)]
        for actor, (aid, pid) in zip(fresh, ray.get([a.ident.remote() for a in fresh])):
            self.ids[id(actor)] = aid
            self.pids[aid] = pid
        self.actors += fresh
        return fresh

    def forget(self, actor_id: str) -> None:
        self.actors = [a for a in self.actors if self.ids.get(id(a)) != actor_id]

    def workers(self) -> int:
        if self.cfg.workers:
            return self.cfg.workers
        ray = self._connect()
        cpus = float(ray.available_resources().get("CPU", 1))
        return max(1, int(cpus // self.cfg.cpus_per_worker))

    def pool(self, task, lms: Mapping[str, Any], threads: int) -> RayPool:
        """A parallel step on the actors (`threads`, the local setting, is not used: each actor runs one unit at a
        time, so `workers` sets the parallelism)."""
        if not self.actors:
            self.target = self.max_replacements = self.workers()
            self.start(self.target)
        return RayPool(self, task, lms)

    def close(self) -> None:
        if not self.actors and not self._started_ray:
            return
        ray = import_ray()
        for actor in self.actors:
            try:
                ray.kill(actor)
            except Exception:  # already gone
                pass
        self.actors = []
        if self._started_ray:
            ray.shutdown()
            self._started_ray = False
