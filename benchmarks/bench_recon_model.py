"""Inference throughput and peak memory of the assignment network on the semi-leptonic ttbar topology.

Random detector inputs with N objects per event (default 12) go through the default
AssignmentNetwork and the greedy decoding at batch sizes 1, 256 and 1024. CPU peak memory is
the growth of the resident set (ru_maxrss) during inference, measured in a fresh process per
batch size; GPU peak memory is torch.cuda.max_memory_allocated. Published reference (SPANet
arXiv 2106.03898, semi-leptonic ttbar): 705 events/s on CPU, 4407 events/s on GPU.

The chi-square baseline (6 leading jets, b-tag rule on) runs on the same events in the same
run, and every rate is also printed as a ratio to it; training events/s (forward, loss,
backward, AdamW step at batch 256) closes the table.

    python benchmarks/bench_recon_model.py [--objects 12] [--threads 1] [--pair-bias] [--mass-prior] [--width 64] [--depth 4] [--attention-width 32] [--compile]

``--compile`` also times the network under ``torch.compile`` (inductor, static shapes; the first
call compiles and is not timed) beside eager, each batch size in its own process.

``--width 32 --depth 2 --attention-width 16`` is ``--config recon_small``.

``--pair-bias --mass-prior`` is what ``unfold train recon`` builds by default on inputs with four-momenta.

``--members 3`` times the ensemble of three such networks (``recon.ensemble.AssignmentEnsemble``, what
``unfold evaluate recon --checkpoint A --checkpoint B --checkpoint C`` runs); training stays one network's.
"""

from __future__ import annotations

import argparse
import multiprocessing
import resource
import time
from importlib.resources import files
from typing import NamedTuple

import torch

from encoders import EncoderInputs
from encoders.kinematics import to_cartesian
from recon import (
    AssignmentNetwork,
    AssignmentTargets,
    EventTopology,
    decode_assignments,
)
from recon.assignment_loss import assignment_loss
from recon.chi_square import ChiSquareBaseline, DetectorEvents
from recon.ensemble import AssignmentEnsemble

BATCH_SIZES = (1, 256, 1024)  # SPANet measured here at 256 (issue 16: 726 events/s, 2 threads)


class Measurement(NamedTuple):
    device: str
    batch: int
    events_per_second: float
    peak_memory_mb: float


def random_inputs(batch: int, objects: int, device: torch.device) -> EncoderInputs:
    """Plausible raw Momenta (mass, pt, eta, sin_phi, cos_phi, 4 flags) and Met (met, sin_phi, cos_phi)."""
    generator = torch.Generator().manual_seed(batch)

    def uniform(low: float, high: float, *shape: int) -> torch.Tensor:
        return low + (high - low) * torch.rand(shape, generator=generator)

    mass, pt = uniform(0, 20, batch, objects), uniform(20, 300, batch, objects)
    eta, phi = uniform(-2.5, 2.5, batch, objects), uniform(-3.14, 3.14, batch, objects)
    flags = (uniform(0, 1, batch, objects, 4) < 0.3).float()
    momenta = torch.cat([torch.stack([mass, pt, eta, phi.sin(), phi.cos()], -1), flags], -1)
    met_phi = uniform(-3.14, 3.14, batch)
    met = torch.stack([uniform(0, 200, batch), met_phi.sin(), met_phi.cos()], -1)
    mask = uniform(0, 1, batch, objects) < 0.85
    mask[:, :6] = True
    return EncoderInputs(
        (momenta.to(device),),
        (mask.to(device),),
        (met.to(device),),
        to_cartesian(pt, eta, phi, mass).to(device),
    )


def build_model(options: dict, device: torch.device, members: int = 1) -> AssignmentNetwork | AssignmentEnsemble:
    """The default network with ``options`` (pair_bias, mass_prior, width, depth, attention_width) on the
    semi-leptonic topology, or the ensemble of ``members`` such networks."""
    topology = EventTopology.from_yaml(files("configs") / "events" / "ttbar_semileptonic.yaml")
    networks = []
    for seed in range(members):
        torch.manual_seed(seed)
        networks.append(AssignmentNetwork(topology=topology, **options).to(device).eval())
    return networks[0] if members == 1 else AssignmentEnsemble(networks).eval()


def time_inference(
    model: AssignmentNetwork, inputs: EncoderInputs, seconds: float, device: torch.device
) -> float:
    """Events per second of forward pass plus decoding, repeated for at least ``seconds``."""
    batch = inputs.sequential_masks[0].shape[0]
    with torch.inference_mode():
        decode_assignments(model(inputs))
        if device.type == "cuda":
            torch.cuda.synchronize()
        repeats, start = 0, time.perf_counter()
        while repeats < 3 or time.perf_counter() - start < seconds:
            decode_assignments(model(inputs))
            repeats += 1
        if device.type == "cuda":
            torch.cuda.synchronize()
        return repeats * batch / (time.perf_counter() - start)


def measure_cpu(
    batch: int, objects: int, threads: int, options: dict, seconds: float, compiled: bool = False, members: int = 1
) -> Measurement:
    """Run in a fresh process, so ru_maxrss growth is this batch size's inference memory alone."""
    torch.set_num_threads(threads)
    device = torch.device("cpu")
    model = build_model(options, device, members)
    if compiled:
        model = torch.compile(model, dynamic=False)
    inputs = random_inputs(batch, objects, device)
    before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    rate = time_inference(model, inputs, seconds, device)
    after = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return Measurement("cpu+c" if compiled else "cpu", batch, rate, (after - before) / 1024)


def measure_gpu(batch: int, objects: int, options: dict, seconds: float, members: int = 1) -> Measurement:
    device = torch.device("cuda")
    model = build_model(options, device, members)
    inputs = random_inputs(batch, objects, device)
    torch.cuda.synchronize()
    torch.cuda.reset_peak_memory_stats()
    baseline = torch.cuda.memory_allocated()
    rate = time_inference(model, inputs, seconds, device)
    return Measurement("cuda", batch, rate, (torch.cuda.max_memory_allocated() - baseline) / 2**20)


def chi_square_rate(inputs: EncoderInputs, seconds: float) -> float:
    """Events per second of the chi-square baseline on the same random events (numpy, one process)."""
    momenta, mask, met = (t.cpu().numpy() for t in (inputs.sequential_features[0], inputs.sequential_masks[0], inputs.global_features[0]))
    lepton = mask & (momenta[..., 7] + momenta[..., 8] > 0)
    lepton[:, 1:] &= False
    events = DetectorEvents.from_arrays(
        pt=momenta[..., 1], eta=momenta[..., 2], phi=torch.atan2(*(torch.from_numpy(momenta[..., i]) for i in (3, 4))).numpy(),
        mass=momenta[..., 0], btag=mask & (momenta[..., 5] > 0) & ~lepton, is_jet=mask & ~lepton, is_lepton=lepton,
        met=met[:, 0], met_phi=torch.atan2(*(torch.from_numpy(met[:, i]) for i in (1, 2))).numpy(),
    )
    baseline = ChiSquareBaseline(sigma_t=20.0, sigma_W=10.0, sigma_t_lep=25.0)
    topology = EventTopology.from_yaml(files("configs") / "events" / "ttbar_semileptonic.yaml")
    repeats, start = 0, time.perf_counter()
    while repeats < 3 or time.perf_counter() - start < seconds:
        baseline.assign(events, topology)
        repeats += 1
    return repeats * events.n_events / (time.perf_counter() - start)


def training_rate(objects: int, threads: int, options: dict, seconds: float, batch: int = 256) -> float:
    """Training events/s: forward, symmetric loss, backward and an AdamW step."""
    torch.set_num_threads(threads)
    model = build_model(options, torch.device("cpu")).train()
    inputs = random_inputs(batch, objects, torch.device("cpu"))
    mask = inputs.sequential_masks[0]
    generator = torch.Generator().manual_seed(1)
    order = torch.argsort(torch.rand(batch, objects, generator=generator) + (~mask).float(), dim=1)
    targets = AssignmentTargets(indices=(order[:, :2], order[:, 2:5]), regressions=torch.randn(batch, 5))
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-3)
    repeats, start = 0, time.perf_counter()
    while repeats < 3 or time.perf_counter() - start < seconds:
        loss = assignment_loss(model(inputs), targets, topology=model.topology)
        optimizer.zero_grad()
        loss.total.backward()
        optimizer.step()
        repeats += 1
    return repeats * batch / (time.perf_counter() - start)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--objects", type=int, default=12, help="objects N per event (default 12)")
    parser.add_argument("--threads", type=int, default=1, help="CPU intra-op threads (default 1)")
    parser.add_argument(
        "--seconds", type=float, default=2.0, help="minimum timing per point (default 2)"
    )
    parser.add_argument(
        "--pair-bias", action="store_true", help="use the Lorentz-invariant pair bias"
    )
    parser.add_argument("--mass-prior", action="store_true", help="use the tuple mass prior (recon.mass_prior)")
    parser.add_argument("--width", type=int, default=64, help="encoder width D (default 64)")
    parser.add_argument("--depth", type=int, default=4, help="encoder transformer blocks (default 4)")
    parser.add_argument("--attention-width", type=int, default=32, help="D_a of the tensor attentions (default 32)")
    parser.add_argument("--compile", action="store_true", help="also time the network under torch.compile (cpu+c)")
    parser.add_argument("--members", type=int, default=1, help="time the ensemble of this many networks (default 1)")
    args = parser.parse_args()
    options = {"pair_bias": args.pair_bias, "mass_prior": args.mass_prior, "width": args.width, "depth": args.depth,
               "attention_width": args.attention_width}

    context = multiprocessing.get_context("spawn")
    measurements = []
    for compiled in (False, True) if args.compile else (False,):
        for batch in BATCH_SIZES:
            with context.Pool(1) as pool:
                measurements.append(
                    pool.apply(measure_cpu, (batch, args.objects, args.threads, options, args.seconds, compiled, args.members))
                )
    if torch.cuda.is_available():
        measurements += [
            measure_gpu(b, args.objects, options, args.seconds, args.members) for b in BATCH_SIZES
        ]

    print(
        f"AssignmentNetwork defaults, semi-leptonic ttbar, N={args.objects}, "
        f"{options}, CPU threads={args.threads}, members={args.members}; forward + decoding"
    )
    chi2 = chi_square_rate(random_inputs(1024, args.objects, torch.device("cpu")), args.seconds)
    print(f"{'device':>6} {'batch':>6} {'events/s':>12} {'x chi-square':>13} {'peak memory MB':>15}")
    for m in measurements:
        print(f"{m.device:>6} {m.batch:>6} {m.events_per_second:>12.0f} {m.events_per_second / chi2:>13.2f} {m.peak_memory_mb:>15.1f}")
    print(f"{'chi2':>6} {1024:>6} {chi2:>12.0f} {1.0:>13.2f} {'-':>15}")
    train = training_rate(args.objects, args.threads, options, args.seconds)
    print(f"training (cpu, batch 256): {train:.0f} events/s, {train / chi2:.2f} x the chi-square's inference rate")


if __name__ == "__main__":
    main()
