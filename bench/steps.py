"""The capacity search: step the call rate up until a step fails, then narrow the gap
between the last passing and the first failing rate."""

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
    # failed steps run again because the load generator stood still; not counted
    void: list[StepResult] = field(default_factory=list)

    @property
    def first_failure(self) -> float | None:
        """The lowest rate that failed."""
        return min((s.rate for s in self.steps if not s.ok), default=None)

    @property
    def best(self) -> StepResult | None:
        """The highest passing step below every failure (a pass above a failed rate is
        luck, not capacity)."""
        limit = self.first_failure
        passed = [s for s in self.steps if s.ok and (limit is None or s.rate < limit)]
        return max(passed, key=lambda s: s.rate, default=None)

    @property
    def best_rate(self) -> float:
        return self.best.rate if self.best else 0.0

    @property
    def best_concurrent(self) -> int:
        return self.best.peak_concurrent if self.best else 0


@dataclass(frozen=True)
class Plan:
    """Which rates a search tries: `rates` in order; past the last one, on by the last
    increment up to `max_rate` while every step passes; after the first failure, up to
    `refine` steps halving the gap between the best pass and the lowest failure, while the
    gap is wider than `resolution` calls/s."""

    rates: Sequence[float]
    max_rate: float
    refine: int = 2
    resolution: float = 1.0

    def __post_init__(self) -> None:
        if not self.rates or list(self.rates) != sorted(self.rates) or len(
                set(self.rates)) != len(self.rates):
            raise ValueError("rates must be strictly increasing")
        if self.max_rate < self.rates[-1]:
            raise ValueError("max_rate is below the highest of the rates")

    @property
    def increment(self) -> float:
        return self.rates[-1] - self.rates[-2] if len(self.rates) > 1 else self.rates[0]

    def next_rate(self, search: Search) -> float | None:
        """The next rate to try, or None when the search is over."""
        failed = search.first_failure
        if failed is None:
            tried = max((s.rate for s in search.steps), default=None)
            later = [r for r in self.rates if tried is None or r > tried]
            if later:
                return later[0]
            assert tried is not None  # the rates are not empty
            step = tried + self.increment
            return step if step <= self.max_rate else None
        after = search.steps.index(next(s for s in search.steps if not s.ok)) + 1
        if len(search.steps) - after >= self.refine:
            return None
        low = search.best_rate
        if failed - low <= self.resolution:
            return None
        mid = round((low + failed) / 2 * 2) / 2  # on the half call/s
        return mid if low < mid < failed else None


def search(plan: Plan, run_step: Callable[[float], StepResult]) -> Search:
    """Run `run_step` at each rate `plan` asks for."""
    result = Search()
    while (rate := plan.next_rate(result)) is not None:
        result.steps.append(run_step(rate))
    return result


def ratio(app: Search, baseline: Search) -> float | None:
    """The app's best passing rate over the baseline's; None when the baseline passed nothing
    (then there is no ceiling to compare against)."""
    if baseline.best_rate <= 0:
        return None
    return app.best_rate / baseline.best_rate


def hit_ceiling(result: Search) -> bool:
    """True when every step passed: the real ceiling is above the highest rate tried."""
    return bool(result.steps) and result.first_failure is None
