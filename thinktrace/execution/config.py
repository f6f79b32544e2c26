"""The `execution` section of a spec: where sampling, rating and guideline scoring run."""

from __future__ import annotations

from typing import Literal

from pydantic import Field, model_validator

from thinktrace.config import Section


class ExecutionConfig(Section):
    """Where the LM calls of sampling, rating and guideline scoring run. `local`: threads in the compile process
    (each model's `num_threads`). `ray`: the examples are sharded over Ray actors, each building its own LM from the
    model entry (a local llama.cpp engine, or a client of a remote endpoint); the records stream back to the
    compile process, which alone writes the journals, so resume works as with `local`. May change on resume."""

    backend: Literal["local", "ray"] = Field(
        "local", description="local: threads in this process; ray: Ray actors (install `thinktrace[ray]`).")
    address: str | None = Field(
        None, description="Ray only. The cluster to join: `auto` (one started with `ray start --head` on this "
        "machine), `ray://host:10001` (Ray Client, needs `ray[client]`), or null: Ray's default (the cluster in "
        "RAY_ADDRESS if set, else a Ray instance on this machine just for the run).")
    workers: int | None = Field(
        None, ge=1, description="Ray only. Actors (each one LM call at a time). Null: as many as the cluster's "
        "free CPUs allow at `cpus_per_worker` each.")
    cpus_per_worker: float = Field(
        1.0, gt=0, description="Ray only. CPUs each actor reserves; a local model decodes with that many threads "
        "(OMP_NUM_THREADS and llama.threads are set to it, at least 1).")
    gpus_per_worker: float = Field(
        0.0, ge=0, description="Ray only. GPUs each actor reserves (fractions share a GPU). 0: none.")

    @model_validator(mode="after")
    def _ray_fields(self) -> "ExecutionConfig":
        if self.backend == "local":
            for name in ("address", "workers"):
                if getattr(self, name) is not None:
                    raise ValueError(f"{name} is a Ray setting: it needs backend: ray (backend is local)")
        return self
