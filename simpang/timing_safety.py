"""The safety check every plan passes before it is recommended or applied, whatever made it.

It re-derives each constraint from the site, trusting nothing the recommender computed:

- **yellow** at least the ITE kinematic change interval ``t + v / (2a + 2gG)`` for the fastest
  approach the phase serves (``t`` = 1 s perception-reaction, ``a`` = 3.05 m/s², ``v`` the
  approach speed limit, ``G`` its grade), and at least 3 s;
- **all-red** at least ``(W + L) / v``: the time to clear the intersection width ``W`` plus a
  6 m vehicle at the approach speed;
- **pedestrians**: the green covers walk + clearance, and the clearance covers the crosswalk
  at the site's walking speed (1.0–1.2 m/s);
- **greens** within each phase's min/max, **cycle** within the site's min/max and equal to
  greens + yellows + all-reds, every phase present.

>>> from simpang.site import Intersection
>>> x = Intersection.model_validate({
...     "id": "x", "name": "X", "lat": 0, "lon": 0, "width_m": 16,
...     "approaches": [{"id": "north", "speed_limit_kmh": 60,
...                     "lanes": [{"id": "n1", "movements": ["through"]}]}],
...     "phases": [{"id": "a", "movements": ["north:through"], "min_green_s": 10,
...                 "max_green_s": 90, "yellow_s": 3, "all_red_s": 1}],
...     "plan": {"cycle_s": 44, "greens_s": {"a": 40}}})
>>> [v.rule for v in check_plan(x, x.plan)]
['yellow', 'all_red']
"""

from __future__ import annotations

from dataclasses import dataclass

from simpang.site import Intersection, Phase, Plan

PERCEPTION_REACTION_S = 1.0
DECELERATION_MPS2 = 3.05
GRAVITY_MPS2 = 9.81
VEHICLE_LENGTH_M = 6.0
MIN_YELLOW_S = 3.0
TOLERANCE_S = 0.05


@dataclass(frozen=True)
class Violation:
    rule: str
    phase_id: str | None
    message: str


class UnsafePlan(ValueError):
    """A plan that breaks a safety constraint; ``violations`` says which and why."""

    def __init__(self, violations: list[Violation]) -> None:
        self.violations = violations
        super().__init__("; ".join(v.message for v in violations))


def required_yellow_s(speed_kmh: float, grade_pct: float = 0.0) -> float:
    """ITE change interval.

    >>> round(required_yellow_s(40), 2), round(required_yellow_s(60, grade_pct=-4), 2)
    (2.82, 4.14)
    """
    speed_mps = speed_kmh / 3.6
    return PERCEPTION_REACTION_S + speed_mps / (
        2 * DECELERATION_MPS2 + 2 * GRAVITY_MPS2 * grade_pct / 100)


def required_all_red_s(width_m: float, speed_kmh: float) -> float:
    """ITE red clearance: the intersection plus one vehicle length at the approach speed.

    >>> round(required_all_red_s(16, 40), 2)
    1.98
    """
    return (width_m + VEHICLE_LENGTH_M) / (speed_kmh / 3.6)


def _served_approaches(intersection: Intersection, phase: Phase) -> list[str]:
    return sorted({ref.split(":", 1)[0] for ref in phase.movements})


def check_plan(intersection: Intersection, plan: Plan) -> list[Violation]:
    """Every safety constraint ``plan`` (with the site's phases) breaks; empty when safe."""
    violations: list[Violation] = []
    limits = intersection.timing
    phase_ids = [p.id for p in intersection.phases]
    if set(plan.greens_s) != set(phase_ids):
        missing = sorted(set(phase_ids) - set(plan.greens_s))
        extra = sorted(set(plan.greens_s) - set(phase_ids))
        violations.append(Violation("phases", None, f"plan phases differ from the site's: "
                                    f"missing {missing}, unknown {extra}"))
        return violations
    width_m = intersection.estimated_width_m()
    for phase in intersection.phases:
        green = plan.greens_s[phase.id]
        approaches = [intersection.approach(a) for a in _served_approaches(intersection, phase)]
        yellow_needed = max(MIN_YELLOW_S, *(required_yellow_s(a.speed_limit_kmh, a.grade_pct)
                                             for a in approaches))
        if phase.yellow_s < yellow_needed - TOLERANCE_S:
            violations.append(Violation("yellow", phase.id, (
                f"phase {phase.id}: yellow {phase.yellow_s:g} s is below the "
                f"{yellow_needed:.1f} s the ITE formula needs at "
                f"{max(a.speed_limit_kmh for a in approaches):g} km/h")))
        all_red_needed = max(required_all_red_s(width_m, a.speed_limit_kmh) for a in approaches)
        if phase.all_red_s < all_red_needed - TOLERANCE_S:
            violations.append(Violation("all_red", phase.id, (
                f"phase {phase.id}: all-red {phase.all_red_s:g} s is below the "
                f"{all_red_needed:.1f} s needed to clear {width_m:g} m + one vehicle")))
        if green < phase.min_green_s - TOLERANCE_S or green > phase.max_green_s + TOLERANCE_S:
            violations.append(Violation("green_bounds", phase.id, (
                f"phase {phase.id}: green {green:g} s is outside "
                f"[{phase.min_green_s:g}, {phase.max_green_s:g}] s")))
        pedestrian_s = phase.pedestrian_walk_s + phase.pedestrian_clearance_s
        if green < pedestrian_s - TOLERANCE_S:
            violations.append(Violation("pedestrian_green", phase.id, (
                f"phase {phase.id}: green {green:g} s is shorter than pedestrian walk + "
                f"clearance {pedestrian_s:g} s")))
        if phase.pedestrian_crossing_m is not None:
            clearance_needed = phase.pedestrian_crossing_m / limits.pedestrian_speed_mps
            if phase.pedestrian_clearance_s < clearance_needed - TOLERANCE_S:
                violations.append(Violation("pedestrian_clearance", phase.id, (
                    f"phase {phase.id}: pedestrian clearance {phase.pedestrian_clearance_s:g} s "
                    f"does not cover {phase.pedestrian_crossing_m:g} m at "
                    f"{limits.pedestrian_speed_mps:g} m/s ({clearance_needed:.1f} s)")))
    expected_cycle = sum(plan.greens_s.values()) + sum(
        p.yellow_s + p.all_red_s for p in intersection.phases)
    if abs(expected_cycle - plan.cycle_s) > 0.5:
        violations.append(Violation("cycle_sum", None, (
            f"cycle {plan.cycle_s:g} s differs from greens + yellows + all-reds "
            f"{expected_cycle:g} s")))
    if plan.cycle_s > limits.max_cycle_s + TOLERANCE_S:
        violations.append(Violation("max_cycle", None, (
            f"cycle {plan.cycle_s:g} s is above the maximum {limits.max_cycle_s:g} s")))
    if plan.cycle_s < limits.min_cycle_s - TOLERANCE_S:
        violations.append(Violation("min_cycle", None, (
            f"cycle {plan.cycle_s:g} s is below the minimum {limits.min_cycle_s:g} s")))
    return violations


def ensure_safe(intersection: Intersection, plan: Plan) -> Plan:
    """``plan`` if it is safe, else :class:`UnsafePlan` with every violation."""
    violations = check_plan(intersection, plan)
    if violations:
        raise UnsafePlan(violations)
    return plan
