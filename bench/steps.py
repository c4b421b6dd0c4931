"""The coarse capacity search: step the call rate up, stop at the first step that fails."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field


@dataclass(frozen=True)
class StepResult:
    rate: float  # calls per second offered
    offered: int  # calls placed
    completed: int  # calls the SIPp caller finished as scripted
    archived: int  # calls found complete in the archive (row + recording file)
    peak_concurrent: int  # most calls up at once during the step
    notes: str = ""

    @property
    def ok(self) -> bool:
        """Every call completed and archived: nothing failed, nothing lost."""
        return self.offered > 0 and self.completed == self.offered == self.archived


@dataclass
class Search:
    steps: list[StepResult] = field(default_factory=list)

    @property
    def best(self) -> StepResult | None:
        """The highest passing step below the first failure."""
        best = None
        for step in self.steps:
            if not step.ok:
                break
            best = step
        return best

    @property
    def best_rate(self) -> float:
        return self.best.rate if self.best else 0.0

    @property
    def best_concurrent(self) -> int:
        return self.best.peak_concurrent if self.best else 0


def search(rates: Sequence[float], run_step: Callable[[float], StepResult]) -> Search:
    """Run `run_step` for each rate in increasing order; stop after the first failing step."""
    if list(rates) != sorted(rates) or len(set(rates)) != len(rates):
        raise ValueError("rates must be strictly increasing")
    result = Search()
    for rate in rates:
        step = run_step(rate)
        result.steps.append(step)
        if not step.ok:
            break
    return result


def ratio(app: Search, baseline: Search) -> float | None:
    """The app's best passing rate over the baseline's; None when the baseline passed nothing
    (then there is no ceiling to compare against)."""
    if baseline.best_rate <= 0:
        return None
    return app.best_rate / baseline.best_rate


def hit_ceiling(result: Search, rates: Sequence[float]) -> bool:
    """True when every step passed: the real ceiling is above the highest rate tried."""
    return bool(result.steps) and len(result.steps) == len(rates) and result.steps[-1].ok
