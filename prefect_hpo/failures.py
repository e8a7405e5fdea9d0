"""Failing fast: the first trials of a run that all fail with the same error stop the sweep.

A typo in the objective's metric, a training function that returns a string, a
missing data file: such a mistake fails every trial the same way, and a sweep that
runs on spends its whole budget to end with no result. `FailFast` watches how the
trials of one run end, until one of them succeeds, and trips when `limit` of them
in a row failed with the same error.

What counts, and why:
- "The same error" is the exception's own text (its last line after the traceback:
  type and message) with every number and hex address replaced, so that
  `ValueError: lr=0.0031 diverged` and `ValueError: lr=0.087 diverged`, or two
  reprs of objects at different addresses, are alike. A different error in between
  starts the count again.
- Only while no trial of this run has succeeded (COMPLETE, PRUNED or PAUSED: the
  training function ran and produced the objective): a flaky error in a sweep that
  works does not stop it. Each run of a sweep counts afresh, so a fixed training
  function is not judged by the failures recorded before the fix.
- A trial that ran to its end with a NaN or infinite objective neither counts nor
  resets the count: it failed because of its configuration (a learning rate that
  diverges), not because of a mistake that every configuration would meet.
"""

from __future__ import annotations

import re

from prefect_hpo.errors import TrialsFailAlike
from prefect_hpo.records import TrialRecord, TrialState

#: States that show the training function works: the fail-fast check stands down for the run.
_SUCCEEDED = (TrialState.COMPLETE, TrialState.PRUNED, TrialState.PAUSED)
_TRACEBACK_HEAD = "Traceback (most recent call last):"
_ADDRESS = re.compile(r"0x[0-9a-fA-F]+")
_NUMBER = re.compile(r"(?<![A-Za-z_])[-+]?(?:\d+(?:\.\d*)?|\.\d+)(?:[eE][-+]?\d+)?")
_SPACES = re.compile(r"\s+")
#: Characters of the failing trials' error quoted in the sweep's error.
_QUOTED = 800


def error_text(error: str) -> str:
    """The exception's own text in a stored error: what follows the frames of the last traceback
    (`ValueError: x=0.5 diverged`, several lines for a long message), or the whole error when it
    is no traceback (prefect_hpo's own messages about a trial's result)."""
    lines = error.strip().splitlines()
    heads = [i for i, line in enumerate(lines) if line.startswith(_TRACEBACK_HEAD)]
    if not heads:
        return error.strip()
    after = lines[heads[-1] + 1 :]
    for i, line in enumerate(after):
        if line and not line[0].isspace():
            return "\n".join(after[i:]).strip()
    return lines[-1].strip()


def failure_signature(error: str | None) -> str:
    """What makes two trials' errors 'the same': the exception's text, numbers and addresses blanked."""
    text = _ADDRESS.sub("<address>", error_text(error or ""))
    return _SPACES.sub(" ", _NUMBER.sub("#", text)).strip()


class FailFast:
    """Watches one run's trial ends; trips when `limit` in a row fail alike before any succeeds.

    `limit` None or 0: never trips.
    """

    def __init__(self, limit: int | None) -> None:
        self.limit = limit or 0
        self.armed = self.limit > 0
        self.alike: list[TrialRecord] = []
        self._signature: str | None = None

    def saw(self, trial: TrialRecord) -> None:
        """Take in one trial's end (after its retries)."""
        if not self.armed:
            return
        if trial.state in _SUCCEEDED:
            self.armed = False
            self.alike = []
            return
        if trial.state != TrialState.FAIL or trial.values is not None:
            return  # a NaN objective: the function ran to its end
        signature = failure_signature(trial.error)
        if signature != self._signature:
            self._signature, self.alike = signature, []
        self.alike.append(trial)

    @property
    def tripped(self) -> bool:
        return self.armed and len(self.alike) >= self.limit

    @property
    def reason(self) -> str:
        """One line for the store and the end of the log: what stopped the sweep."""
        return f"{len(self.alike)} trials failed with the same error before any succeeded: {_one_line(self._quote())}"

    def error(self, sweep_name: str) -> TrialsFailAlike:
        """The error the sweep raises: the failure quoted, and what to do about it."""
        numbers = ", ".join(str(n) for n in sorted(t.number for t in self.alike))
        return TrialsFailAlike(
            f"sweep {sweep_name!r} stopped early: {len(self.alike)} trials ({numbers}) failed with the same error "
            "before any trial succeeded, so every further trial would likely fail the same way:\n"
            f"    {self._quote()}\n"
            "Fix that error and run the sweep again (each trial's full error is in the store: "
            f"`prefect-hpo status {sweep_name}`, or load_result(...).trials). To run every trial whatever fails, "
            "pass Budget(fail_fast=None)."
        )

    def _quote(self) -> str:
        text = error_text(self.alike[0].error or "") if self.alike else ""
        return text if len(text) <= _QUOTED else text[: _QUOTED - 3] + "..."


def _one_line(text: str) -> str:
    return _SPACES.sub(" ", text).strip()


__all__ = ["FailFast", "error_text", "failure_signature"]
