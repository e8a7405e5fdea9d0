"""The store's sweeps: created or reopened by name, forked, started and finished (the `hpo_sweeps` rows)."""

from __future__ import annotations

import hashlib
import json
import time
import uuid
from collections.abc import Mapping, Sequence
from typing import Any

from sqlalchemy import select, update
from sqlalchemy.engine import Connection, RowMapping
from sqlalchemy.exc import IntegrityError

from prefect_hpo.checkpoint_layout import sweep_folder
from prefect_hpo.errors import StoreError, SweepConflictError
from prefect_hpo.store import schema
from prefect_hpo.store.database import StorePart
from prefect_hpo.store.outages import guard_public_methods
from prefect_hpo.store.rows import clean, inserted_id


def fingerprint(space: Mapping[str, Any], objectives: Sequence[Mapping[str, Any]]) -> str:
    """What a reused sweep name must match: the search space and the objectives."""
    text = json.dumps({"space": space, "objectives": list(objectives)}, sort_keys=True, default=str)
    return hashlib.sha256(text.encode()).hexdigest()[:32]


@guard_public_methods
class Sweeps(StorePart):
    """One row per named sweep: what it searches, its status and timings."""

    def open_sweep(
        self,
        name: str,
        *,
        space: Mapping[str, Any],
        objectives: Sequence[Mapping[str, Any]],
        strategy: str,
        budget: Mapping[str, Any],
        spec: Mapping[str, Any] | None = None,
        fork: bool = False,
    ) -> int:
        """Create the sweep `name`, or open it if it exists with the same space and objectives.

        With a different space or objective the name is refused, unless `fork`: then the sweep runs
        as `<name>-fork-<k>`, the first fork of that name with the same space and objectives, or a
        new one; the original is left as it is. `spec`, when the sweep runs from a SweepSpec, is kept
        so that it can be run again by name."""
        fp = fingerprint(space, objectives)
        now = time.time()
        with self.database.write() as conn:
            row = conn.execute(select(schema.sweeps).where(schema.sweeps.c.name == name)).mappings().first()
            if row is not None and row["fingerprint"] != fp:
                if not fork:
                    raise SweepConflictError(
                        f"sweep {name!r} already exists in {self.database.safe_url!r} with a different search "
                        "space or objective; give the sweep another name to start afresh, or pass "
                        "fork=True to run it as a fork of that name (the existing sweep is kept)"
                    )
                name, row = _fork_of(conn, name, fp)
            if row is not None:
                kept = {"spec": clean(dict(spec))} if spec is not None else {}
                conn.execute(
                    update(schema.sweeps)
                    .where(schema.sweeps.c.id == row["id"])
                    .values(budget=clean(dict(budget)), strategy=strategy, **kept)
                )
                return int(row["id"])
            uid = uuid.uuid4().hex
            try:
                result = conn.execute(
                    schema.sweeps.insert().values(
                        name=name,
                        uid=uid,
                        checkpoint_folder=sweep_folder(name, uid),
                        space=clean(dict(space)),
                        objectives=list(objectives),
                        strategy=strategy,
                        budget=clean(dict(budget)),
                        fingerprint=fp,
                        status="created",
                        created_at=now,
                        spec=clean(dict(spec)) if spec is not None else None,
                    )
                )
            except IntegrityError:
                raise StoreError(f"sweep {name!r} was created by another process at the same moment; retry") from None
            return inserted_id(result)

    def fork_name(self, name: str, space: Mapping[str, Any], objectives: Sequence[Mapping[str, Any]]) -> str:
        """The name `open_sweep(name, ..., fork=True)` runs this space and these objectives under now."""
        fp = fingerprint(space, objectives)
        with self.database.read() as conn:
            row = conn.execute(select(schema.sweeps.c.fingerprint).where(schema.sweeps.c.name == name)).first()
            return name if row is None or row[0] == fp else _fork_of(conn, name, fp)[0]

    def sweep_id(self, name: str) -> int:
        with self.database.read() as conn:
            row = conn.execute(select(schema.sweeps.c.id).where(schema.sweeps.c.name == name)).first()
        if row is None:
            raise StoreError(
                f"no sweep named {name!r} in {self.database.safe_url!r}; list them with store.sweep_names()"
            )
        return int(row[0])

    def sweep(self, sweep_id: int) -> dict[str, Any]:
        with self.database.read() as conn:
            row = conn.execute(select(schema.sweeps).where(schema.sweeps.c.id == sweep_id)).mappings().one()
        return dict(row)

    def sweep_names(self) -> list[str]:
        with self.database.read() as conn:
            return [r[0] for r in conn.execute(select(schema.sweeps.c.name).order_by(schema.sweeps.c.id))]

    def start_sweep(self, sweep_id: int, flow_run_id: str | None) -> None:
        with self.database.write() as conn:
            conn.execute(
                update(schema.sweeps)
                .where(schema.sweeps.c.id == sweep_id)
                .values(
                    status="running",
                    started_at=time.time(),
                    finished_at=None,
                    stop_reason=None,
                    flow_run_id=flow_run_id,
                )
            )

    def finish_sweep(self, sweep_id: int, status: str, reason: str | None) -> None:
        with self.database.write() as conn:
            conn.execute(
                update(schema.sweeps)
                .where(schema.sweeps.c.id == sweep_id)
                .values(status=status, stop_reason=reason, finished_at=time.time())
            )


def _fork_of(conn: Connection, name: str, fp: str) -> tuple[str, RowMapping | None]:
    """The fork of `name` with fingerprint `fp` (name, row), or the name a new fork takes (name, None)."""
    s = schema.sweeps
    forks = conn.execute(select(s).where(s.c.name.like(f"{name}-fork-%"))).mappings().all()
    taken = set()
    for fork_row in forks:
        fork_name = str(fork_row["name"])
        suffix = fork_name[len(name) + len("-fork-") :]
        if fork_name.startswith(f"{name}-fork-") and suffix.isdigit():  # LIKE's '_' matches any character
            if fork_row["fingerprint"] == fp:
                return str(fork_row["name"]), fork_row
            taken.add(int(suffix))
    k = 1
    while k in taken:
        k += 1
    return f"{name}-fork-{k}", None
