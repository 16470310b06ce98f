"""Speed of decoding parton draws to momenta, per representation, against the plain decay chain in the same run.

Each representation is fitted on the first events of a generated file (truth and, for the
lepton-anchored chain, the measured leptons of its inputs); then E events x n draws of standard-normal
features are decoded, as `unfold sample` decodes every batch. Prints draws/s and the ratio to
``decay-chain``.

    python benchmarks/bench_parton_decoding.py [--data data/ttbar_semileptonic_test.h5] [--events 1024] [--draws 33]
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import torch

from recon.event_topology import EventTopology
from unfold.data.detector_slots import measured_leptons
from unfold.data.event_tensors import encoder_inputs
from unfold.data.hdf5_schema import read_spanet, read_truth
from unfold.generation.processes import get_process
from unfold.models.parton import REPRESENTATIONS

EVENT_FILE = Path(__file__).resolve().parents[1] / "configs" / "events" / "ttbar_semileptonic.yaml"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, default=Path("data/ttbar_semileptonic_test.h5"))
    parser.add_argument("--events", type=int, default=1024)
    parser.add_argument("--draws", type=int, default=33)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    topology = EventTopology.from_yaml(EVENT_FILE)
    truth = read_truth(args.data, "PARTONS", limit=args.events)
    anchors = {"lepton": measured_leptons(encoder_inputs(read_spanet(args.data, topology, limit=args.events), topology),
                                          topology)}
    rates = {}
    for name in ("decay-chain", "lepton-anchored", "objects"):
        representation = REPRESENTATIONS[name].for_process(get_process("ttbar-semileptonic"))
        representation.fit(truth, anchors=anchors)
        draws = torch.randn(args.events, args.draws, representation.features, generator=torch.Generator().manual_seed(0))
        best = float("inf")
        for _ in range(args.repeats):
            start = time.perf_counter()
            representation.decode(draws, anchors)
            best = min(best, time.perf_counter() - start)
        rates[name] = args.events * args.draws / best
    for name, rate in rates.items():
        print(f"{name:16s} {rate:12,.0f} draws/s   {rate / rates['decay-chain']:.2f}x decay-chain")


if __name__ == "__main__":
    main()
