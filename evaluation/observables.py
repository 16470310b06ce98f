"""The observables a report compares: unfolded features and quantities derived from them.

Each observable carries truth, detector-level reference and draws as flat arrays, with NaN where
it is undefined (no leading jet, a parton without a detector match). Names read
``<level>/<object>/<quantity>``: ``parton/t_had/mass``, ``parton/t_had+t_lep/dphi``,
``particle/jets/pt`` (every jet), ``particle/jets1/pt`` (the leading jet), ``particle/jets2/pt`` (the second),
``particle/jets/multiplicity``, ``particle/met/met``.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass

import numpy as np

from evaluation.kinematics import (
    MomentumNumpy4D,
    delta_r,
    from_pt_eta_phi_m,
    invariant_mass,
)
from evaluation.samples_file import Collection, ParticleLevel, PartonLevel, SamplesFile

__all__ = ["Observable", "composite_momentum", "compute_observables", "correlation_pairs", "latex_name"]

KINEMATICS = ("pt", "eta", "phi", "mass")
QUANTITY_LABELS = {
    "pt": (r"p_{T}", "GeV"),
    "eta": (r"\eta", ""),
    "phi": (r"\phi", "rad"),
    "mass": (r"m", "GeV"),
    "y": (r"y", ""),
    "dphi": (r"|\Delta\phi|", "rad"),
    "cos_theta_star": (r"\cos\theta^{*}", ""),
    "dR": (r"\Delta R", ""),
    "multiplicity": (r"N", ""),
    "b_multiplicity": (r"N_{b}", ""),
    "met": (r"E_{T}^{\mathrm{miss}}", "GeV"),
    "btag": (r"b\text{-tag}", ""),
}
SPECIAL_NAMES = {"ttbar": r"t\bar{t}", "lepton": r"\ell", "neutrino": r"\nu", "met": ""}
B_TAG_THRESHOLD = 0.5


@dataclass(frozen=True)
class Observable:
    """One observable at truth level, detector level and in every draw of one unfolding.

    Attributes:
        name: ``<level>/<object>/<quantity>``.
        label: axis label in LaTeX (mathtext).
        unit: "GeV", "rad" or "".
        truth: (R,) values; R = E for per-event observables, E * M for per-object ones.
        reference: (R',) detector-level values, paired with the truth when ``per_event``; None if
            the file has no reference.
        matched: (R,) truth-matched detector-level values (NaN where unmatched), or None.
        draws: (R, n) values of the n draws (R = E * M_draws for per-object ones).
        per_event: one value per event, so truth and draws pair up (calibration, migration).
        discrete: integer valued (multiplicities): histograms use integer bins.
        key: shown by default (the rest with ``--features all``).
    """

    name: str
    label: str
    unit: str
    truth: np.ndarray
    reference: np.ndarray | None
    draws: np.ndarray
    per_event: bool
    discrete: bool
    key: bool
    matched: np.ndarray | None = None


def latex_name(name: str) -> str:
    """Object name in mathtext: t_had -> t_{had}, q1 -> q_{1}, t1_q1 -> t_{1,q1}, ttbar -> t-bar t."""
    if name in SPECIAL_NAMES:
        return SPECIAL_NAMES[name]
    base, _, rest = name.partition("_")
    letters = base.rstrip("0123456789") or base
    subscripts = [base[len(letters) :]] if len(letters) < len(base) else []
    if rest:
        subscripts.append(rf"\mathrm{{{rest.replace('_', ' ')}}}")
    head = letters if len(letters) == 1 else rf"\mathrm{{{letters}}}"
    return f"{head}_{{{','.join(subscripts)}}}" if subscripts else head


def _label(quantity: str, object_latex: str) -> tuple[str, str]:
    symbol, unit = QUANTITY_LABELS.get(quantity, (rf"\mathrm{{{quantity}}}", ""))
    return (f"${symbol}({object_latex})$" if object_latex else f"${symbol}$"), unit


def composite_momentum(
    level: Mapping[str, Mapping[str, np.ndarray]], names: tuple[str, ...]
) -> MomentumNumpy4D | None:
    """Summed four-momentum of the named partons at one level, or None if one is missing."""
    if not all(n in level and all(k in level[n] for k in KINEMATICS) for n in names):
        return None
    momenta = [from_pt_eta_phi_m(*(level[n][k] for k in KINEMATICS)) for n in names]
    total = momenta[0]
    for momentum in momenta[1:]:
        total = total + momentum
    return total


def _parton_observables(
    partons: PartonLevel, composites: Mapping[str, tuple[str, ...]]
) -> list[Observable]:
    """Parton features, composite mass / p_T / rapidity, |Delta phi| of two tops, Delta R of pairs."""
    levels = (partons.truth, partons.reference, partons.matched, partons.draws)
    out: list[Observable] = []

    def add(name: str, quantity: str, obj: str, values: Callable, key: bool) -> None:
        truth, reference, matched, draws = (values(level) if level else None for level in levels)
        if truth is None or draws is None:
            return
        label, unit = _label(quantity, obj)
        out.append(
            Observable(
                name=name,
                label=label,
                unit=unit,
                truth=truth,
                reference=reference,
                draws=draws,
                per_event=True,
                discrete=False,
                key=key,
                matched=matched,
            )
        )

    for parton, features in partons.truth.items():
        for feature in features:
            add(
                f"parton/{parton}/{feature}",
                feature,
                latex_name(parton),
                lambda level, p=parton, f=feature: level.get(p, {}).get(f),
                key=feature == "pt",
            )

    present = {
        name: parts
        for name, parts in composites.items()
        if composite_momentum(partons.truth, parts) is not None
        and composite_momentum(partons.draws, parts) is not None
    }
    tops = [name for name, parts in present.items() if len(parts) == 3]
    for name, parts in present.items():
        obj = latex_name(name)
        # Tops (three constituents) and the whole system (the most) get p_T by default.
        top_or_system = len(parts) == 3 or len(parts) == max(len(p) for p in present.values())
        quantities: dict[str, Callable[[MomentumNumpy4D], np.ndarray]] = {
            "mass": invariant_mass,
            "pt": lambda p: np.asarray(p.pt),
            "y": lambda p: np.asarray(p.rapidity),
        }
        for quantity, function in quantities.items():
            add(
                f"parton/{name}/{quantity}",
                quantity,
                obj,
                lambda level, parts=parts, f=function: _apply(composite_momentum(level, parts), f),
                key=quantity == "mass" or (quantity == "pt" and top_or_system),
            )
    if len(tops) == 2:
        first, second = tops
        add(
            f"parton/{first}+{second}/dphi",
            "dphi",
            f"{latex_name(first)}, {latex_name(second)}",
            lambda level: _top_separation(
                composite_momentum(level, present[first]), composite_momentum(level, present[second])
            ),
            key=True,
        )
    for name, parts in present.items():
        parents = [top for top in tops if set(parts) < set(present[top])]
        if len(parts) == 2 and parents:
            add(
                f"parton/{name}/cos_theta_star",
                "cos_theta_star",
                latex_name(parts[0]),
                lambda level, parts=parts, parent=present[parents[0]]: _decay_angle(level, parts, parent),
                key=True,
            )
    for parts in present.values():
        if len(parts) == 2 and all(p in partons.truth for p in parts):
            a, b = parts
            add(
                f"parton/{a}+{b}/dR",
                "dR",
                f"{latex_name(a)}, {latex_name(b)}",
                lambda level, a=a, b=b: _parton_delta_r(level, a, b),
                key=False,
            )
    return out


def _apply(
    p: MomentumNumpy4D | None, function: Callable[[MomentumNumpy4D], np.ndarray]
) -> np.ndarray | None:
    """``function(p)``, or None for a composite that cannot be built at this level."""
    return None if p is None else function(p)


def _top_separation(a: MomentumNumpy4D | None, b: MomentumNumpy4D | None) -> np.ndarray | None:
    if a is None or b is None:
        return None
    return np.abs(np.asarray(a.deltaphi(b)))


def _decay_angle(level: Mapping, parts: tuple[str, ...], parent: tuple[str, ...]) -> np.ndarray | None:
    """cos theta* of a W's first daughter: the angle, in the W's rest frame, between that daughter and the W's
    flight in its top's rest frame (the direction opposite to the top there); its distribution measures the W
    helicity fractions, (3/8)(1 -+ cos)^2 for left- and right-handed Ws and (3/4) sin^2 for longitudinal ones."""
    daughter, w, top = (composite_momentum(level, names) for names in ((parts[0],), parts, parent))
    if daughter is None or w is None or top is None:
        return None
    a, b = daughter.boostCM_of_p4(w).to_3D(), top.boostCM_of_p4(w).to_3D()
    return -np.asarray(a.dot(b) / (a.mag * b.mag))


def _parton_delta_r(level: Mapping, a: str, b: str) -> np.ndarray | None:
    if not all(p in level and "eta" in level[p] and "phi" in level[p] for p in (a, b)):
        return None
    return delta_r(level[a]["eta"], level[a]["phi"], level[b]["eta"], level[b]["phi"])


def _object_values(collection: Collection, feature: str, n_draw_axes: int) -> np.ndarray:
    """Every object's value, NaN in empty slots: (E, [n,] M) -> (E * M[, n])."""
    values = np.where(collection.mask, collection.features[feature], np.nan)
    if n_draw_axes:
        return np.moveaxis(values, 1, -1).reshape(-1, values.shape[1])
    return values.reshape(-1)


def _ranked_values(collection: Collection, feature: str, rank: int = 1) -> np.ndarray:
    """The value of the object ranked ``rank`` in pt (1: leading) per event, NaN where the event has
    fewer objects: (E[, n])."""
    pt = np.where(collection.mask, collection.features["pt"], -np.inf)
    ranked = np.argsort(-pt, axis=-1, kind="stable")[..., rank - 1 : rank]
    values = np.take_along_axis(collection.features[feature], ranked, axis=-1)[..., 0]
    return np.where(collection.mask.sum(axis=-1) >= rank, values, np.nan)


def _particle_observables(particles: ParticleLevel) -> list[Observable]:
    out: list[Observable] = []
    for name, truth in particles.truth.items():
        draws = particles.draws[name]
        reference = particles.reference.get(name)
        obj = latex_name(name)

        def add(
            quantity: str,
            suffix: str,
            obj_latex: str,
            values: Callable[[Collection, bool], np.ndarray],
            *,
            per_event: bool,
            discrete: bool = False,
            key: bool = False,
            collection_name: str = name,
            reference: Collection | None = reference,
            truth: Collection = truth,
            draws: Collection = draws,
        ) -> None:
            label, unit = _label(quantity, obj_latex)
            out.append(
                Observable(
                    name=f"particle/{collection_name}{suffix}/{quantity}",
                    label=label,
                    unit=unit,
                    truth=values(truth, False),
                    reference=None if reference is None else values(reference, False),
                    draws=values(draws, True),
                    per_event=per_event,
                    discrete=discrete,
                    key=key,
                )
            )

        if truth.mask is None:
            for feature in truth.features:
                add(
                    feature,
                    "",
                    "",
                    lambda c, _, f=feature: c.features[f],
                    per_event=True,
                    key=feature == "met",
                )
            continue
        add(
            "multiplicity",
            "",
            obj,
            lambda c, _: c.mask.sum(axis=-1).astype(np.float64),
            per_event=True,
            discrete=True,
            key=truth.mask.shape[-1] > 1,
        )
        if "btag" in truth.features:
            add(
                "b_multiplicity",
                "",
                obj,
                lambda c, _: (
                    (c.mask & (c.features["btag"] > B_TAG_THRESHOLD))
                    .sum(axis=-1)
                    .astype(np.float64)
                ),
                per_event=True,
                discrete=True,
                key=True,
            )
        kinematic = [f for f in truth.features if f != "btag"]
        for feature in kinematic:
            add(
                feature,
                "",
                obj,
                lambda c, has_draws, f=feature: _object_values(c, f, int(has_draws)),
                per_event=False,
            )
        if "pt" in truth.features:
            for feature in kinematic:
                add(
                    feature,
                    "1",
                    f"{obj}_{{1}}",
                    lambda c, _, f=feature: _ranked_values(c, f),
                    per_event=True,
                    key=feature == "pt",
                )
            if truth.mask.shape[-1] > 1:
                add("pt", "2", f"{obj}_{{2}}", lambda c, _: _ranked_values(c, "pt", rank=2), per_event=True, key=True)
    return out


def compute_observables(samples: SamplesFile) -> list[Observable]:
    """Every observable of a samples file: parton features and composites, particle collections."""
    observables = []
    if samples.partons is not None:
        observables += _parton_observables(samples.partons, samples.composites)
    if samples.particles is not None:
        observables += _particle_observables(samples.particles)
    return observables


def correlation_pairs(names: set[str]) -> list[tuple[str, str]]:
    """The (x, y) pairs shown as 2-D correlations: (m, p_T) of each top-like composite and of the
    leading jet against the jet multiplicity, where both are among ``names``."""
    pairs = []
    for name in sorted(names):
        level, obj, quantity = name.split("/")
        if level == "parton" and quantity == "mass" and f"parton/{obj}/pt" in names:
            pairs.append((name, f"parton/{obj}/pt"))
        if level == "particle" and quantity == "multiplicity" and f"particle/{obj}1/pt" in names:
            pairs.append((name, f"particle/{obj}1/pt"))
    return pairs
