"""What one run of the search loop is told (`LoopSettings`), what it answers (`LoopResult`), and the
`TrialSpec` it derives from them for each trial it submits."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from prefect_hpo.checkpoint_layout import CheckpointLayout
from prefect_hpo.options import SweepOptions
from prefect_hpo.records import TrialRecord
from prefect_hpo.resources import Inventory, Placement
from prefect_hpo.schedulers.base import Scheduler
from prefect_hpo.trial import TrialSpec


@dataclass(frozen=True)
class LoopSettings:
    """One run of the loop: the sweep's options as `sweep()` made them, and what the flow learnt opening the
    sweep (its id, the name it runs under, the scheduler and the checkpoint folders built from the options)."""

    options: SweepOptions
    sweep_id: int
    #: the name the sweep runs under (a fork's own name, where the options' name was taken)
    sweep_name: str
    pass_trial: bool
    scheduler: Scheduler | None = None
    #: where each trial's checkpoint lives (None: the sweep has no checkpoint location)
    checkpoints: CheckpointLayout | None = None
    #: Asked between events: what interrupted the sweep ("Ctrl-C (SIGINT)"), or None. Unlike a stop, an
    #: interrupt ends the running trials INTERRUPTED, to run again when the sweep continues.
    interrupted: Callable[[], str | None] | None = None
    #: what this machine lends the trials (their GPUs and cores), which the loop places each trial on before
    #: it starts it; None where trials are placed elsewhere (on a work pool's hosts, on a cluster)
    inventory: Inventory | None = None


@dataclass(frozen=True)
class LoopResult:
    """How a run of the loop ended: "finished" (budget or space spent, or stopped) or "interrupted"."""

    status: str  # "finished" | "interrupted"
    reason: str


def trial_spec(record: TrialRecord, settings: LoopSettings, placement: Placement | None = None) -> TrialSpec:
    """What trial `record` needs to run, wherever it runs: a retried attempt resumes at its last step; a
    trial with a lineage (PBT) starts at its parent's step and completes one interval on. `placement`: what it
    holds on this machine (its devices and thread count), where the loop placed it."""
    budget = settings.options.budget
    resume_step = record.last_step if record.attempt > 1 else None
    max_steps = budget.max_steps
    if record.lineage and "end_step" in record.lineage:  # PBT: from the parent's step, one interval on
        if record.attempt == 1:
            resume_step = int(record.lineage["start_step"]) or None
        end = int(record.lineage["end_step"])
        max_steps = end if max_steps is None else min(max_steps, end)
    return TrialSpec(
        trial_id=record.id,
        number=record.number,
        sweep_name=settings.sweep_name,
        config=record.config,
        objectives=settings.options.objectives,
        max_steps=max_steps,
        pass_trial=settings.pass_trial,
        sweep_id=settings.sweep_id,
        bracket=record.bracket,
        scheduler=settings.scheduler,
        min_steps=budget.min_steps,
        attempt=record.attempt,
        resume_step=resume_step,
        checkpoint_path=settings.checkpoints.path(record.number) if settings.checkpoints else None,
        max_total_steps=budget.max_total_steps,
        resources=dict(placement.requested) if placement else settings.options.requested(record.config).as_dict(),
        devices=placement.devices if placement else (),
        # threads share one process: a thread count of its own would bind every trial
        cpu_threads=placement.cpu_threads if placement and settings.options.workers == "processes" else None,
    )


__all__ = ["LoopResult", "LoopSettings", "trial_spec"]
