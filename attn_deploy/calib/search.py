"""Which groups to keep out of INT8: the decision, apart from how damage is measured.

Each candidate group has two measured figures, in damage units (mAP50-95 points, or
disagreement in percent): ``alone`` with only that group in INT8 (how much it hurts by
itself) and ``kept`` with everything in INT8 except that group (how much is left when it is
spared). The benefit of keeping a group is ``naive - kept``. The fewest groups: one group
when one suffices (the one that leaves the least damage); otherwise groups are added in order
of benefit, each combination measured, a group kept only when it lowers the damage, until the
damage is within the budget.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from typing import Any


@dataclass(frozen=True)
class Sensitivity:
    group: str
    layer: int
    module: str
    attention: bool
    kept: float  # damage with every other group in INT8 and this one in higher precision
    alone: float | None = None  # damage with only this group in INT8 (None: not measured)

    def benefit(self, naive: float) -> float:
        return naive - self.kept

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass
class Decision:
    kept: list[str]
    damage: float
    within: bool
    trials: list[tuple[list[str], float]] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        return {"kept": self.kept, "damage": self.damage, "within_budget": self.within,
                "trials": [{"kept": k, "damage": d} for k, d in self.trials]}


def choose(naive: float, table: list[Sensitivity], budget: float, measure: Callable[[list[str]], float],
           start: list[str] | None = None, start_damage: float | None = None) -> Decision:
    """The fewest groups to keep (after ``start``, already kept, at ``start_damage``)."""
    kept, damage = list(start or []), naive if start_damage is None else start_damage
    trials: list[tuple[list[str], float]] = []
    if damage <= budget:
        return Decision(kept, damage, True, trials)
    if not kept:
        singles = sorted((s for s in table if s.kept <= budget), key=lambda s: s.kept)
        if singles:
            return Decision([singles[0].group], singles[0].kept, True, trials)
    for s in sorted(table, key=lambda s: s.benefit(naive), reverse=True):
        if s.group in kept:
            continue
        trial = [*kept, s.group]
        d = s.kept if not kept else measure(trial)
        trials.append((trial, d))
        if d < damage:  # a group that does not help is not kept
            kept, damage = trial, d
        if damage <= budget:
            return Decision(kept, damage, True, trials)
    return Decision(kept, damage, False, trials)


def shortest_prefix(order: list[str], budget: float, measure: Callable[[list[str]], float],
                    more: Callable[[], bool] = lambda: True) -> Decision:
    """The fewest leading groups of ``order`` (most sensitive first) to keep for the damage to
    be within ``budget``: 1, 2, 4, ... groups until one is within (however long that takes),
    then halving the gap to the last that was not, while ``more()`` allows (a time budget; the
    passing set found so far stands). Assumes keeping more groups does not make the damage worse, which the measured
    trials show; each measured set is in ``trials``."""
    trials: list[tuple[list[str], float]] = []

    def trial(k: int) -> float:
        d = measure(order[:k])
        trials.append((order[:k], d))
        return d

    below, k, found = 0, 1, None  # below: most groups known not to be enough
    while k <= len(order):
        d = trial(k)
        if d <= budget:
            found = (k, d)
            break
        if k == len(order):
            break
        below, k = k, min(2 * k, len(order))  # not time-guarded: a set within the budget is found first
    if found is None:
        best_k, best = min(((len(kept), d) for kept, d in trials), key=lambda t: t[1], default=(0, float("inf")))
        return Decision(order[:best_k], best, False, trials)
    while found[0] - below > 1 and more():
        mid = (below + found[0]) // 2
        d = trial(mid)
        if d <= budget:
            found = (mid, d)
        else:
            below = mid
    return Decision(order[: found[0]], found[1], True, trials)


def prune(decision: Decision, budget: float, measure: Callable[[list[str]], float],
          more: Callable[[], bool] = lambda: True) -> Decision:
    """Fewer groups where the ranking put a harmless one early: each kept group but the last
    (which the shorter prefix was not enough without), least sensitive first, goes when the
    damage without it stays within ``budget``; while ``more()`` allows."""
    if not decision.within:
        return decision
    kept, damage, trials = list(decision.kept), decision.damage, list(decision.trials)
    for group in reversed(decision.kept[:-1]):
        if not more():
            break
        trial = [g for g in kept if g != group]
        d = measure(trial)
        trials.append((trial, d))
        if d <= budget:
            kept, damage = trial, d
    return Decision(kept, damage, True, trials)


def fewest_macs_out(decision: Decision, budget: float, cost: Callable[[list[str]], int]) -> Decision:
    """Among the measured sets within ``budget`` (``decision.trials``), the one that keeps the
    fewest multiply-accumulates out of INT8 (``cost``); on a tie, fewer groups, then the earlier
    trial. Coverage is what INT8 is for: a longer set of small layers can cost less than one
    large layer."""
    if not decision.within:
        return decision
    within = [(kept, d) for kept, d in decision.trials if d <= budget]
    if not within:
        return decision
    kept, damage = min(within, key=lambda t: (cost(t[0]), len(t[0])))
    return Decision(list(kept), damage, True, decision.trials)
