"""``unfold export recon|parton``: trained networks as ONNX, for deployment outside Python/torch."""

from __future__ import annotations

import argparse
from pathlib import Path

from unfold.commands import DefaultsHelpFormatter


def add_parser(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser("export", help="export a trained recon or parton run as ONNX graphs")
    tasks = parser.add_subparsers(dest="task", metavar="TASK", required=True)
    recon = tasks.add_parser(
        "recon", help="the assignment network in ONNX with dynamic event and object axes",
        description="Write the assignment network of RUN as ONNX (opset 17; needs `pip install onnx onnxruntime`, "
        "the `onnx` extra). Inputs: <source>_features (events, objects, features) raw features in the event file's "
        "order, <source>_mask (events, objects) bool, <global>_features (events, features) and, with the pair bias, "
        "four_momenta (events, objects, 4) as (E, px, py, pz) in GeV. Outputs: log_probs_<resonance> "
        "(events, objects, ..., objects), detection_logits, regression_mean, regression_log_scale, "
        "classification_logits_<target>. The graph is checked in onnxruntime against torch on --data events.",
        formatter_class=DefaultsHelpFormatter,
    )
    recon.add_argument("run", type=Path, help="recon run folder or .ckpt")
    recon.add_argument("--onnx", type=Path, required=True, metavar="OUT.onnx", help="output ONNX file")
    recon.add_argument("--data", type=Path, default=None,
                       help="SPANet-layout file whose first events trace and check the graph (default: the default test file)")
    recon.set_defaults(func=run)
    parton = tasks.add_parser(
        "parton", help="the parton unfolding as ONNX graphs: condition, one denoising step, decoder",
        description="Write OUT.condition.onnx (detector inputs, named as for `export recon` -> condition), "
        "OUT.denoiser.onnx (state, timestep, condition -> predicted noise: one denoising step) and, for the latent "
        "VLD, OUT.decoder.onnx (latent, condition -> standardised partons), with dynamic event axes; each is checked "
        "in onnxruntime against torch. A deployment runs a diffusers scheduler loop over the denoiser and maps the "
        "standardised partons to momenta with the checkpoint's representation.",
        formatter_class=DefaultsHelpFormatter,
    )
    parton.add_argument("run", type=Path, help="parton run folder or .ckpt")
    parton.add_argument("--onnx", type=Path, required=True, metavar="OUT.onnx", help="stem of the output ONNX files")
    parton.add_argument("--data", type=Path, default=None,
                        help="SPANet-layout file whose first events trace and check the graphs (default: the default test file)")
    parton.set_defaults(func=run_parton)


def run(args: argparse.Namespace) -> int:
    from unfold.data.hdf5_schema import read_spanet
    from unfold.generation.pipeline import ensure_default_data
    from unfold.tasks.assignment_model import AssignmentModel
    from unfold.tasks.export_recon import check_onnx, export_recon

    data_path = args.data or ensure_default_data()[1]
    topology = AssignmentModel.load(args.run).topology
    data = read_spanet(data_path, topology, limit=64)
    out = export_recon(args.run, args.onnx, data)
    difference = check_onnx(args.run, out, data)
    print(f"ONNX graph written to {out} (largest difference to torch on {data.n_events} events: {difference:.2g})")
    return 0


def run_parton(args: argparse.Namespace) -> int:
    from unfold.data.hdf5_schema import read_spanet
    from unfold.generation.pipeline import ensure_default_data
    from unfold.tasks.export_parton import check_parton_onnx, export_parton
    from unfold.tasks.unfolding_model import UnfoldingModel

    model = UnfoldingModel.load(args.run)
    if model.task != "parton":
        from unfold.errors import UnfoldError

        raise UnfoldError(f"{args.run}: a {model.task} run; `unfold export parton` needs a parton run")
    data = read_spanet(args.data or ensure_default_data()[1], model.topology, limit=64)
    paths = export_parton(model.module, args.onnx, data)
    difference = check_parton_onnx(model.module, paths, data)
    print(f"ONNX graphs written to {', '.join(map(str, paths.values()))} (largest difference to torch: {difference:.2g})")
    return 0
