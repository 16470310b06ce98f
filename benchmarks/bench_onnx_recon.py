"""ONNX (onnxruntime) against torch inference throughput of the assignment network, same events and threads.

The default AssignmentNetwork (semi-leptonic ttbar event file, random initialisation: the speed
does not depend on the weights) is exported with ``unfold.tasks.export_recon.export_network`` and
run on the same random detector events (:func:`bench_recon_model.random_inputs`, N objects) at
batch 1024, network forward only (decoding excluded), with the same number of intra-op threads
in torch and onnxruntime.

    python benchmarks/bench_onnx_recon.py [--objects 12] [--threads 1] [--pair-bias] [--mass-prior] [--events 4096]
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from bench_recon_model import build_model, random_inputs

from unfold.tasks.export_recon import OnnxAssignmentNetwork, export_network


def rate(run, events: int, seconds: float = 3.0) -> float:
    """Events per second of ``run()`` (one batch of ``events``), repeated for at least ``seconds``."""
    run()
    start, done = time.perf_counter(), 0
    while time.perf_counter() - start < seconds:
        run()
        done += events
    return done / (time.perf_counter() - start)


def main() -> None:
    import onnxruntime

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--objects", type=int, default=12, help="objects N per event (default 12)")
    parser.add_argument("--threads", type=int, default=1, help="intra-op threads of both (default 1)")
    parser.add_argument("--events", type=int, default=1024, help="events per batch (default 1024)")
    parser.add_argument("--pair-bias", action="store_true", help="with the Lorentz-invariant pair bias")
    parser.add_argument("--mass-prior", action="store_true", help="with the tuple mass prior (the default network has both)")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    network = build_model({"pair_bias": args.pair_bias, "mass_prior": args.mass_prior}, torch.device("cpu"))
    inputs = random_inputs(args.events, args.objects, torch.device("cpu"))
    wrapper = OnnxAssignmentNetwork(network).eval()
    tensors = [*inputs.sequential_features, *inputs.sequential_masks, *inputs.global_features]
    tensors += [inputs.four_momenta] if wrapper.four_momenta else []
    feeds = {name: t.numpy() for name, t in zip(wrapper.input_names, tensors, strict=True)}
    options = onnxruntime.SessionOptions()
    options.intra_op_num_threads = args.threads
    options.inter_op_num_threads = 1
    with tempfile.TemporaryDirectory() as folder:
        path = export_network(network, Path(folder) / "recon.onnx", feeds)
        session = onnxruntime.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
    with torch.no_grad():
        expected = wrapper(*tensors)[0].numpy()
    got = session.run(None, feeds)[0]
    finite = np.isfinite(expected)
    print(f"largest |onnx - torch| of log_probs_{network.topology.resonance_names[0]}: "
          f"{np.abs(got[finite] - expected[finite]).max():.2g}")
    with torch.no_grad():
        torch_rate = rate(lambda: wrapper(*tensors), args.events)
    onnx_rate = rate(lambda: session.run(None, feeds), args.events)
    print(f"{args.events} events x {args.objects} objects, {args.threads} thread(s), pair bias {args.pair_bias}:")
    print(f"  torch       {torch_rate:9.0f} events/s")
    print(f"  onnxruntime {onnx_rate:9.0f} events/s  ({onnx_rate / torch_rate:.2f} x torch)")


if __name__ == "__main__":
    main()
