"""Particle-level unfoldings per second, compact sampler against the padded one, the denoiser in bfloat16 against
float32, and the speed-fidelity table.

One unfolding is one sampled particle-level event. Both paths run in the same process on the same
condition: ``padded`` is the sampler before the compact path (every draw repeats its event's
condition and the denoiser sees all 1 + M_max + N tokens; tests/unfold/test_particle_sampling_speed.py
holds it and checks that both give the same draws), ``compact`` is ``SetLatentDiffusion.sample``.

Without ``--run``: an untrained model of the shipped size (configs/models/particle.yaml, encoder width
64) on random detector embeddings whose object counts and sampled multiplicities follow the default
test data (data/ttbar_semileptonic_test.h5, 4,000 events: detector objects and particle-level jets +
lepton per event, counted below), so the token counts are the real ones. With ``--run RUN --data
FILE``: the trained run encodes the first ``--events`` events of FILE, and the table adds the
Wasserstein-1 distance to the particle-level truth of jet multiplicity, leading-jet pT, lepton pT
and MET, with the detector-level reference's (what not unfolding gives) in the last row.

    python benchmarks/bench_particle_sampling.py [--events 64] [--draws 16] [--steps 10 25 50]
                                                 [--repeat 3] [--width 128 --depth 4 | --run RUN --data FILE] [--json out.json]
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import time
from pathlib import Path

import numpy as np
import torch
from scipy.stats import wasserstein_distance

from unfold.models.diffusion.sampler import SAMPLERS
from unfold.models.particle import SetLatentDiffusion
from unfold.training.unfolding_modules import ParticleModule

# Events of data/ttbar_semileptonic_test.h5 with k = 0, 1, ... detector objects (INPUTS/Momenta/MASK)
# and with k particle-level jets + lepton (PARTICLES/jets/MASK + PARTICLES/lepton/MASK).
DETECTOR_OBJECTS = [0, 0, 0, 0, 0, 2170, 1166, 463, 144, 39, 11, 5, 2]
PARTICLES = [0, 0, 0, 1, 65, 1429, 1401, 705, 247, 109, 32, 6, 4, 1]
_TEST = Path(__file__).resolve().parents[1] / "tests" / "unfold" / "test_particle_sampling_speed.py"


def padded_sampler():
    """``padded_sample`` of the equivalence test: the reference path, kept in one place."""
    spec = importlib.util.spec_from_file_location("particle_sampling_reference", _TEST)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.padded_sample


def untrained_condition(events: int, generator: torch.Generator, width: int, depth: int):
    """A model of denoiser ``width`` and ``depth`` and random embeddings with the default data's token counts."""
    torch.manual_seed(0)
    model = SetLatentDiffusion(condition_width=64, width=width, depth=depth).eval()
    # p(N_lep = 1) = 1, p(N_b = 2) = 1 and p(N_light = M - 3) = the data's p(M), whatever the event
    frequencies = torch.tensor(PARTICLES[3:] + [0] * (model.max_particles + 4 - len(PARTICLES)), dtype=torch.float) + 0.5
    slots = torch.arange(model.max_particles + 1)
    with torch.no_grad():
        for head, log_probs in zip(model.multiplicity.heads, (torch.where(slots == 1, 0.0, -50.0),
                                   torch.where(slots == 2, 0.0, -50.0), (frequencies / frequencies.sum()).log()), strict=True):
            head.network[-1].weight.zero_()
            head.network[-1].bias.copy_(log_probs)
    counts = torch.multinomial(torch.tensor(DETECTOR_OBJECTS, dtype=torch.float), events, True, generator=generator)
    object_mask = torch.arange(16) < counts.unsqueeze(-1)
    objects = torch.randn(events, 16, 64, generator=generator) * object_mask.unsqueeze(-1)
    return model, None, (objects, object_mask, torch.randn(events, 64, generator=generator), None), None, None


def trained_condition(run: Path, data_path: Path, events: int):
    """A trained run's model, representation, encoded condition of the first events, the truth and reference, and
    the detector objects' classes and ranks when the run pairs its slots with them."""
    from unfold.data.event_tensors import encoder_inputs
    from unfold.data.hdf5_schema import read_spanet, read_truth
    from unfold.tasks.references import particle_reference
    from unfold.tasks.unfolding_model import UnfoldingModel

    module = UnfoldingModel.load(run).module
    data = read_spanet(data_path, module.topology, limit=events)
    inputs = encoder_inputs(data, module.topology)
    with torch.no_grad():
        encoded = module.encoder(inputs)
    truth = read_truth(data_path, "PARTICLES", limit=events)
    slots = {name: truth[name]["MASK"].shape[1] for name in ("jets", "lepton")}
    levels = {"truth": truth, "reference": particle_reference(data, module.topology, slots)}
    condition = (encoded.objects, encoded.object_mask, encoded.event, module.anchors(inputs, encoded.object_mask))
    return module.diffusion, module.representation, condition, levels, module.detector_slots(inputs)


def observables(level: dict) -> dict[str, np.ndarray]:
    """Jet multiplicity, leading-jet pT, lepton pT and MET, pooled over events (and draws)."""
    jets, lepton = level["jets"], level["lepton"]
    has_jet = jets["MASK"].any(axis=-1)
    leading = np.where(jets["MASK"], jets["pt"], -np.inf).max(axis=-1)
    has_lepton = lepton["MASK"].any(axis=-1)
    return {
        "n_jets": jets["MASK"].sum(axis=-1).ravel().astype(float),
        "jet1_pt": leading[has_jet].ravel(),
        "lepton_pt": np.where(lepton["MASK"], lepton["pt"], -np.inf).max(axis=-1)[has_lepton].ravel(),
        "met": np.asarray(level["met"]["met"]).ravel(),
    }


def w1(values: np.ndarray, truth: np.ndarray) -> float:
    """Wasserstein-1 distance, NaN where the sample is empty (e.g. a barely trained run draws no lepton)."""
    return wasserstein_distance(values, truth) if len(values) and len(truth) else float("nan")


def measure(model, condition, draws: int, sampler: str, steps: int, repeat: int,
            detector_slots=None) -> tuple[float, float, object]:
    """Unfoldings per second of the padded and the compact path (after a two-step warm-up of each), the
    best of ``repeat`` alternating calls (the least disturbed by other load), and the compact draws."""
    rates = {padded: 0.0, compact: 0.0}
    for sample in rates:
        sample(model, *condition, draws, sampler=sampler, steps=2, generator=torch.Generator().manual_seed(1),
               detector_slots=detector_slots)
    for _ in range(repeat):
        for sample in rates:
            start = time.perf_counter()
            result = sample(model, *condition, draws, sampler=sampler, steps=steps,
                            generator=torch.Generator().manual_seed(0), detector_slots=detector_slots)
            rates[sample] = max(rates[sample], condition[0].shape[0] * draws / (time.perf_counter() - start))
    return rates[padded], rates[compact], result


def precision_rates(model, condition, draws: int, sampler: str, steps: int, repeat: int,
                    detector_slots=None) -> dict[str, tuple[float, object]]:
    """Unfoldings per second of the compact path with the denoiser in float32 and in bfloat16 (after a
    two-step warm-up of each), the best of ``repeat`` alternating calls, and the draws of each."""
    out = {}
    for precision in ("float32", "bfloat16"):
        compact(model, *condition, draws, sampler=sampler, steps=2, generator=torch.Generator().manual_seed(1),
                detector_slots=detector_slots, precision=precision)
    for _ in range(repeat):
        for precision in ("float32", "bfloat16"):
            start = time.perf_counter()
            result = compact(model, *condition, draws, sampler=sampler, steps=steps, precision=precision,
                             generator=torch.Generator().manual_seed(0), detector_slots=detector_slots)
            rate = condition[0].shape[0] * draws / (time.perf_counter() - start)
            out[precision] = (max(rate, out.get(precision, (0.0,))[0]), result)
    return out


def compact(model, objects, object_mask, event, anchors, draws, **options):
    """The compact path: ``SetLatentDiffusion.sample``."""
    return model.sample(objects, object_mask, event, draws, anchors=anchors, **options)


padded = padded_sampler()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--events", type=int, default=64, help="detector events E")
    parser.add_argument("--draws", type=int, default=16, help="unfoldings per event n")
    parser.add_argument("--steps", type=int, nargs="+", default=[10, 25, 50], help="steps of the table")
    parser.add_argument("--repeat", type=int, default=3, help="timed calls per path and setting (best counts)")
    parser.add_argument("--width", type=int, default=128, help="denoiser width of the untrained model (shipped: 128)")
    parser.add_argument("--depth", type=int, default=4, help="denoiser layers of the untrained model (shipped: 4)")
    parser.add_argument("--run", type=Path, help="a trained particle run (adds the fidelity columns)")
    parser.add_argument("--data", type=Path, help="the SPANet file with PARTICLES truth the run is evaluated on")
    parser.add_argument("--json", type=Path, help="also write the results here as JSON")
    args = parser.parse_args()
    if (args.run is None) != (args.data is None):
        parser.error("--run and --data go together")
    if args.run is None:
        model, representation, condition, levels, detector_slots = untrained_condition(
            args.events, torch.Generator().manual_seed(2), args.width, args.depth
        )
    else:
        model, representation, condition, levels, detector_slots = trained_condition(args.run, args.data, args.events)
    default, default_steps = ParticleModule.DEFAULT_SAMPLING[model.objective]  # unfold sample's
    rows_total = args.events * args.draws
    about = f"run {args.run}" if args.run else f"untrained model, width {args.width}, depth {args.depth}"
    print(f"E={args.events} events x n={args.draws} draws; {about}", flush=True)
    results: dict = {"events": args.events, "draws": args.draws, "default": {}, "table": []}
    print(f"\ndefault sampler {default}, {default_steps} steps (unfoldings/s)")
    print(f"{'threads':>7} {'padded':>9} {'compact':>9} {'ratio':>6}")
    for threads in (1, 2):
        torch.set_num_threads(threads)
        old, new, _ = measure(model, condition, args.draws, default, default_steps, args.repeat, detector_slots)
        results["default"][threads] = {"padded": old, "compact": new}
        print(f"{threads:>7} {old:>9.1f} {new:>9.1f} {new / old:>6.2f}", flush=True)

    names = ["n_jets", "jet1_pt", "lepton_pt", "met"]
    if levels is not None:
        truth = observables(levels["truth"])
    print(f"\ndenoiser arithmetic, {default} {default_steps} steps, compact path (unfoldings/s"
          + ("; W1 to truth" if levels else "") + ")")
    print(f"{'threads':>7} {'float32':>9} {'bfloat16':>9} {'ratio':>6}" + ("".join(f"{n:>10}" for n in names) if levels else ""))
    results["precision"] = {}
    for threads in (1, 2):
        torch.set_num_threads(threads)
        rates = precision_rates(model, condition, args.draws, default, default_steps, args.repeat, detector_slots)
        results["precision"][threads] = {precision: rate for precision, (rate, _) in rates.items()}
        line = f"{threads:>7} {rates['float32'][0]:>9.1f} {rates['bfloat16'][0]:>9.1f} {rates['bfloat16'][0] / rates['float32'][0]:>6.2f}"
        if levels is not None and threads == 2:
            for precision, (_, draws) in rates.items():
                sampled = observables(representation.decode(draws.features, draws.types, draws.mask, draws.event_features))
                results["precision"][f"w1_{precision}"] = {name: w1(sampled[name], truth[name]) for name in names}
                line += f"\n{precision:>27}" + "".join(f"{w1(sampled[n], truth[n]):>10.3f}" for n in names)
        print(line, flush=True)
    header = f"{'sampler':<11} {'steps':>5} {'padded/s':>9} {'compact/s':>9} {'ratio':>6}"
    print("\nspeed-fidelity table, 2 threads" + (" (W1 to truth; GeV but n_jets)" if levels else ""))
    print(header + ("".join(f"{name:>10}" for name in names) if levels else ""))
    for sampler in SAMPLERS[model.objective]:
        for steps in args.steps:
            old, new, draws = measure(model, condition, args.draws, sampler, steps, args.repeat, detector_slots)
            row = {"sampler": sampler, "steps": steps, "padded": old, "compact": new}
            line = f"{sampler:<11} {steps:>5} {old:>9.1f} {new:>9.1f} {new / old:>6.2f}"
            if levels is not None:
                decoded = representation.decode(draws.features, draws.types, draws.mask, draws.event_features)
                sampled = observables(decoded)
                row["w1"] = {name: w1(sampled[name], truth[name]) for name in names}
                line += "".join(f"{row['w1'][name]:>10.3f}" for name in names)
            results["table"].append(row)
            print(line, flush=True)
    if levels is not None:
        reference = observables(levels["reference"])
        results["reference_w1"] = {name: w1(reference[name], truth[name]) for name in names}
        print(f"{'detector reference':<43}" + "".join(f"{results['reference_w1'][n]:>10.3f}" for n in names))
    print(f"(unfoldings/s over {rows_total} draws, best of {args.repeat}; ratio = compact / padded in this process)")
    if args.json:
        args.json.write_text(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
