"""Jet-parton assignment efficiencies as SPANet tabulates them (pure numpy).

A predicted resonance is correct when its daughters equal the truth up to the resonance's
daughter group G_P (q1 <-> q2 of a W); the event-level group G_E (t1 <-> t2 of all-hadronic
ttbar) is resolved per event by the permutation of the predictions that gets the most
reconstructable resonances right (SPANet arXiv 2106.03898, its ``SymmetricEvaluator``).

The table (:func:`efficiency_table`), for "all" events (at least one reconstructable resonance)
and "complete" events (every resonance reconstructable), inclusive and per jet-multiplicity bin:

- ``fraction``: the events of that category and bin as a share of the WHOLE sample (SPANet's
  "event fraction"; the inclusive "all" fraction is below 1 when some events have no
  reconstructable resonance);
- ``event``: the share of those events whose every reconstructable resonance is correct;
- ``<resonance>``: the share of that resonance's reconstructable instances that are correct.

Shares are weighted by optional per-event weights (negative ones, from NLO generators, count
negatively); a share of no events, or of a non-positive total weight, is ``None``. The
result is a plain dict, ready for JSON::

    {"all": {"event": f, "fraction": f, "<resonance>": f, ..., "by_jets": {"==4": {...}, ...}},
     "complete": {...}}
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from typing import Any, NamedTuple

import numpy as np
from numpy.typing import ArrayLike

from recon.errors import ReconError
from recon.event_topology import EventTopology

__all__ = [
    "ALLHADRONIC_JET_BINS",
    "CATEGORIES",
    "SEMILEPTONIC_JET_BINS",
    "EfficiencyTable",
    "EventCorrectness",
    "efficiency_table",
    "event_correctness",
    "format_efficiency_tables",
    "jet_bin_mask",
]

EfficiencyTable = dict[str, Any]

# The jet-multiplicity bins of SPANet's published tables (arXiv 2106.03898, 2309.01886).
SEMILEPTONIC_JET_BINS = ("==4", "==5", ">=6")
ALLHADRONIC_JET_BINS = ("==6", "==7", ">=8")
CATEGORIES = ("all", "complete")

_RESERVED_KEYS = ("event", "fraction", "by_jets")
_BIN_PATTERN = re.compile(r"^(==|>=|<=|>|<)\s*(\d+)$")
_COMPARISONS = {
    "==": np.equal,
    ">=": np.greater_equal,
    "<=": np.less_equal,
    ">": np.greater,
    "<": np.less,
}


class EventCorrectness(NamedTuple):
    """Per-event, per-resonance outcome of an assignment, resonances in topology order.

    Attributes:
        correct: (E, m) bool, truth resonance i is reconstructable and the prediction matched
            to it (under the event's best G_E permutation) equals it up to G_P.
        reconstructable: (E, m) bool, every daughter of truth resonance i is matched (>= 0).
    """

    correct: np.ndarray
    reconstructable: np.ndarray


def event_correctness(
    predicted: Mapping[str, ArrayLike], truth: Mapping[str, ArrayLike], topology: EventTopology
) -> EventCorrectness:
    """Compare predicted and true assignments up to the daughter and event groups.

    Args:
        predicted, truth: resonance name -> (E, K) int slot indices, -1 unassigned; exactly the
            topology's resonances.
        topology: gives the resonances, their daughter groups G_P and the event group G_E.
    """
    predicted_arrays = _assignment_arrays(predicted, topology, "predicted")
    truth_arrays = _assignment_arrays(truth, topology, "truth")
    n_events = {a.shape[0] for a in (*predicted_arrays, *truth_arrays)}
    if len(n_events) != 1:
        raise ReconError(
            f"predicted and truth assignments disagree on the number of events: {sorted(n_events)}"
        )
    reconstructable = np.stack([(t >= 0).all(axis=1) for t in truth_arrays], axis=1)
    matches: dict[tuple[int, int], np.ndarray] = {}
    best_correct = np.zeros_like(reconstructable)
    best_score = np.full(reconstructable.shape[0], -1)
    for permutation in topology.event_group:
        correct = np.stack(
            [
                _matches(matches, predicted_arrays, truth_arrays, topology, i, j)
                & reconstructable[:, i]
                for i, j in enumerate(permutation)
            ],
            axis=1,
        )
        score = correct.sum(axis=1)
        better = score > best_score
        best_correct[better], best_score[better] = correct[better], score[better]
    return EventCorrectness(best_correct, reconstructable)


def efficiency_table(
    predicted: Mapping[str, ArrayLike],
    truth: Mapping[str, ArrayLike],
    topology: EventTopology,
    n_jets: ArrayLike,
    bins: Sequence[str],
    weights: ArrayLike | None = None,
) -> EfficiencyTable:
    """SPANet's efficiency table for "all" and "complete" events, inclusive and by jet count.

    Args:
        predicted, truth: resonance name -> (E, K) int slot indices, -1 unassigned.
        topology: the event topology (any: resonances, G_P and G_E are read from it).
        n_jets: (E,) jet multiplicity of each event.
        bins: jet-multiplicity bins such as ``("==4", "==5", ">=6")`` (see :func:`jet_bin_mask`).
        weights: (E,) event weights with a positive sum (NLO negative weights allowed); unweighted when ``None``.

    Returns:
        ``{"all": {...}, "complete": {...}}`` as described in the module docstring.
    """
    for name in topology.resonance_names:
        if name in _RESERVED_KEYS:
            raise ReconError(
                f"{topology.path}: resonance name {name!r} clashes with the table keys {_RESERVED_KEYS}"
            )
    outcome = event_correctness(predicted, truth, topology)
    n_events = outcome.correct.shape[0]
    n_jets = np.asarray(n_jets)
    if n_jets.shape != (n_events,):
        raise ReconError(f"n_jets has shape {n_jets.shape}; expected ({n_events},)")
    weights = _event_weights(weights, n_events)
    bin_masks = {spec: jet_bin_mask(n_jets, spec) for spec in bins}
    categories = {
        "all": np.logical_or.reduce(outcome.reconstructable, axis=1),
        "complete": np.logical_and.reduce(outcome.reconstructable, axis=1),
    }
    table: EfficiencyTable = {}
    for category, selected in categories.items():
        summary = _summary(outcome, selected, weights, topology)
        summary["by_jets"] = {
            spec: _summary(outcome, selected & mask, weights, topology)
            for spec, mask in bin_masks.items()
        }
        table[category] = summary
    return table


def jet_bin_mask(n_jets: ArrayLike, spec: str) -> np.ndarray:
    """(E,) bool: which events fall in the jet-multiplicity bin ``spec``.

    Args:
        n_jets: (E,) jet multiplicity.
        spec: a comparison and a count: ``==k``, ``>=k``, ``<=k``, ``>k`` or ``<k``.
    """
    match = _BIN_PATTERN.match(spec.strip()) if isinstance(spec, str) else None
    if match is None:
        raise ReconError(
            f"jet bin {spec!r}: expected a comparison {tuple(_COMPARISONS)} followed by a count, e.g. '>=6'"
        )
    return np.asarray(
        _COMPARISONS[match.group(1)](np.asarray(n_jets), int(match.group(2))), dtype=bool
    )


def format_efficiency_tables(tables: Mapping[str, EfficiencyTable], digits: int = 3) -> str:
    """Side-by-side text table of one or more efficiency tables (e.g. model vs baseline).

    Rows are the categories, inclusive then each jet bin; for every quantity (fraction, event,
    each resonance) there is one column per table, headed by its label.

    Args:
        tables: label -> table from :func:`efficiency_table`, all with the same keys and bins.
        digits: decimals shown; a share of no events prints as ``-``.
    """
    if not tables:
        raise ReconError("format_efficiency_tables: no tables given")
    labels = list(tables)
    quantities, bins = _layout(tables[labels[0]])
    for label in labels[1:]:
        if _layout(tables[label]) != (quantities, bins):
            raise ReconError(
                f"format_efficiency_tables: table {label!r} has other keys or bins than {labels[0]!r}"
            )
    cell = max(digits + 2, *(len(label) for label in labels))
    group = max(len(labels) * (cell + 1) - 1, *(len(q) for q in quantities))
    row_names = {row: row if row == "inclusive" else f"{row} jets" for row in ("inclusive", *bins)}
    last_row = bins[-1] if bins else "inclusive"
    head = (
        max(len(category) for category in CATEGORIES)
        + 1
        + max(len(name) for name in row_names.values())
    )

    def number(value: float | None) -> str:
        return "-".rjust(cell) if value is None else f"{value:.{digits}f}".rjust(cell)

    def line(first: str, groups: list[str]) -> str:
        return first.ljust(head) + " | " + " | ".join(groups)

    title = line("", [q.center(group) for q in quantities])
    rule = "-" * len(title)
    subtitle = " ".join(label.rjust(cell) for label in labels).rjust(group)
    lines = [rule, title, line("", [subtitle] * len(quantities)), rule]
    for category in CATEGORIES:
        for row, row_name in row_names.items():
            values = [
                tables[label][category]
                if row == "inclusive"
                else tables[label][category]["by_jets"][row]
                for label in labels
            ]
            first = f"{category if row == 'inclusive' else '':<{head - len(row_name)}}{row_name}"
            lines.append(
                line(
                    first, [" ".join(number(v[q]) for v in values).rjust(group) for q in quantities]
                )
            )
            if row == last_row:
                lines.append(rule)
    return "\n".join(lines)


def _layout(table: EfficiencyTable) -> tuple[tuple[str, ...], tuple[str, ...]]:
    """The quantity columns and jet bins of a table, checking it has both categories."""
    if set(table) != set(CATEGORIES):
        raise ReconError(f"efficiency table has keys {sorted(table)}; expected {list(CATEGORIES)}")
    quantities = ("fraction", "event", *(k for k in table["all"] if k not in _RESERVED_KEYS))
    return quantities, tuple(table["all"]["by_jets"])


def _summary(
    outcome: EventCorrectness, selected: np.ndarray, weights: np.ndarray, topology: EventTopology
) -> dict[str, Any]:
    """Fraction, event efficiency and per-resonance efficiencies of the ``selected`` (E,) events."""
    correct, reconstructable = outcome
    event_correct = (correct == reconstructable).all(axis=1)
    summary: dict[str, Any] = {
        "event": _weighted_share(event_correct, selected, weights),
        "fraction": float(weights[selected].sum() / weights.sum()),
    }
    for i, name in enumerate(topology.resonance_names):
        summary[name] = _weighted_share(correct[:, i], selected & reconstructable[:, i], weights)
    return summary


def _weighted_share(passed: np.ndarray, selected: np.ndarray, weights: np.ndarray) -> float | None:
    total = weights[selected].sum()
    if total <= 0:
        return None
    return float(weights[selected & passed].sum() / total)


def _matches(
    cache: dict[tuple[int, int], np.ndarray],
    predicted: list[np.ndarray],
    truth: list[np.ndarray],
    topology: EventTopology,
    truth_index: int,
    predicted_index: int,
) -> np.ndarray:
    """(E,) bool: prediction ``predicted_index`` equals truth ``truth_index`` up to its G_P."""
    key = (truth_index, predicted_index)
    if key not in cache:
        target = truth[truth_index]
        guess = predicted[predicted_index]
        cache[key] = np.any(
            [
                (guess[:, list(g)] == target).all(axis=1)
                for g in topology.resonances[truth_index].group
            ],
            axis=0,
        )
    return cache[key]


def _assignment_arrays(
    assignments: Mapping[str, ArrayLike], topology: EventTopology, what: str
) -> list[np.ndarray]:
    """The (E, K) integer arrays of every resonance in topology order, validated."""
    names = topology.resonance_names
    missing = [n for n in names if n not in assignments]
    extra = [n for n in assignments if n not in names]
    if missing or extra:
        raise ReconError(
            f"{what} assignments have resonances {sorted(assignments)}; expected {list(names)} ({topology.path})"
        )
    arrays = []
    for resonance in topology.resonances:
        array = np.asarray(assignments[resonance.name])
        if array.ndim != 2 or array.shape[1] != resonance.order:
            raise ReconError(
                f"{what}[{resonance.name!r}] has shape {array.shape}; expected (E, {resonance.order}) for daughters {resonance.daughters}"
            )
        if not np.issubdtype(array.dtype, np.integer):
            raise ReconError(
                f"{what}[{resonance.name!r}] has dtype {array.dtype}; expected integer slot indices"
            )
        arrays.append(array)
    if len({a.shape[0] for a in arrays}) != 1:
        raise ReconError(
            f"{what} assignments disagree on the number of events: {[a.shape[0] for a in arrays]}"
        )
    return arrays


def _event_weights(weights: ArrayLike | None, n_events: int) -> np.ndarray:
    if weights is None:
        return np.ones(n_events)
    weights = np.asarray(weights, dtype=np.float64)
    if weights.shape != (n_events,):
        raise ReconError(f"weights have shape {weights.shape}; expected ({n_events},)")
    if not np.all(np.isfinite(weights)):
        raise ReconError("weights must be finite")
    if weights.sum() <= 0:
        raise ReconError(f"weights sum to zero or less ({weights.sum():.3g}); expected a positive total "
                         "(single negative weights, as from NLO generators, are allowed)")
    return weights
