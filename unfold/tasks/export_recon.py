"""``unfold export recon``: the assignment network as an ONNX graph with dynamic event and object axes.

Inputs, per SEQUENTIAL source ``S`` of the event file: ``S_features`` (E, N_S, F_S) float32 raw
features in the event file's order and ``S_mask`` (E, N_S) bool; per GLOBAL source ``G``:
``G_features`` (E, F_G); with the pair bias, ``four_momenta`` (E, N, 4) as (E, px, py, pz) in GeV
of the concatenated objects. Outputs: ``log_probs_<resonance>`` (E, N, ..., N), one object axis
per daughter (log-probability of each tuple given the resonance is present, -inf on forbidden
tuples); ``detection_logits`` (E, m); ``regression_mean`` and ``regression_log_scale`` (E, R);
``classification_logits_<target>`` (E, C). The input normalisation is inside the graph.
"""

from __future__ import annotations

import warnings
from pathlib import Path

import numpy as np
import torch
from torch import Tensor, nn

from encoders import EncoderInputs
from recon.assignment_network import AssignmentNetwork
from unfold.data.hdf5_schema import SpanetData
from unfold.errors import UnfoldError
from unfold.tasks.assignment_model import AssignmentModel

__all__ = ["OnnxAssignmentNetwork", "check_onnx", "export_network", "export_recon", "onnx_inputs"]

# ONNX opset: 17 has LayerNormalization as one operator (onnxruntime supports 7-21+).
OPSET = 17


class OnnxAssignmentNetwork(nn.Module):
    """The assignment network with flat tensor inputs and outputs, as ONNX needs them."""

    def __init__(self, network: AssignmentNetwork) -> None:
        super().__init__()
        self.network = network
        topology = network.topology
        self.sequential = [s.name for s in topology.sequential]
        self.globals = [s.name for s in topology.globals]
        # The pair bias and the mass prior read the objects' four-momenta.
        self.four_momenta = network.encoder.pair_bias is not None or network.mass_priors is not None
        self.input_names = [f"{s}_features" for s in self.sequential] + [f"{s}_mask" for s in self.sequential]
        self.input_names += [f"{g}_features" for g in self.globals] + (["four_momenta"] if self.four_momenta else [])
        self.output_names = [f"log_probs_{r}" for r in topology.resonance_names] + ["detection_logits"]
        self.output_names += ["regression_mean", "regression_log_scale"]
        self.output_names += [f"classification_logits_{c}" for c in topology.classifications]
        self.orders = [r.order for r in topology.resonances]

    def forward(self, *tensors: Tensor) -> tuple[Tensor, ...]:
        n_seq, n_glob = len(self.sequential), len(self.globals)
        inputs = EncoderInputs(
            sequential_features=tensors[:n_seq],
            sequential_masks=tensors[n_seq : 2 * n_seq],
            global_features=tensors[2 * n_seq : 2 * n_seq + n_glob],
            four_momenta=tensors[2 * n_seq + n_glob] if self.four_momenta else None,
        )
        output = self.network(inputs)
        return (*output.log_probs, output.detection_logits, output.regression_mean, output.regression_log_scale,
                *output.classification_logits)

    def dynamic_axes(self) -> dict[str, dict[int, str]]:
        """Event axis of every tensor; object axes (``objects``, the concatenated N; ``objects_<source>`` per
        source when there are several)."""
        axes: dict[str, dict[int, str]] = {}
        for s in self.sequential:
            objects = "objects" if len(self.sequential) == 1 else f"objects_{s}"
            axes[f"{s}_features"] = {0: "events", 1: objects}
            axes[f"{s}_mask"] = {0: "events", 1: objects}
        for g in self.globals:
            axes[f"{g}_features"] = {0: "events"}
        if self.four_momenta:
            axes["four_momenta"] = {0: "events", 1: "objects"}
        for name, order in zip(self.output_names, self.orders, strict=False):
            axes[name] = {0: "events", **dict.fromkeys(range(1, order + 1), "objects")}
        for name in self.output_names[len(self.orders) :]:
            axes[name] = {0: "events"}
        return axes


def _hypot(g, x, y):
    """aten::hypot (the pair bias's transverse momenta) as sqrt(x^2 + y^2); ONNX has no Hypot operator."""
    return g.op("Sqrt", g.op("Add", g.op("Mul", x, x), g.op("Mul", y, y)))


def onnx_inputs(data: SpanetData, topology) -> dict[str, np.ndarray]:
    """The ONNX graph's inputs (numpy) for the events of ``data``, by input name."""
    feeds: dict[str, np.ndarray] = {}
    for source in topology.sequential:
        feeds[f"{source.name}_features"] = data.sequential[source.name]
        feeds[f"{source.name}_mask"] = data.masks[source.name]
    for source in topology.globals:
        feeds[f"{source.name}_features"] = data.globals[source.name]
    if data.four_momenta is not None:
        feeds["four_momenta"] = data.four_momenta
    return feeds


def export_network(network: AssignmentNetwork, out: Path, feeds: dict[str, np.ndarray]) -> Path:
    """Trace ``network`` on the first events of ``feeds`` (:func:`onnx_inputs`) and write it to ``out`` (ONNX)."""
    wrapper = OnnxAssignmentNetwork(network).eval()
    if wrapper.four_momenta and "four_momenta" not in feeds:
        raise UnfoldError("the model uses the pair bias or the mass prior but the inputs give no four-momenta "
                          "(expected pt, eta, phi or sin_phi/cos_phi, and mass)")
    example = tuple(torch.as_tensor(feeds[name][:4]) for name in wrapper.input_names)
    out.parent.mkdir(parents=True, exist_ok=True)
    with warnings.catch_warnings(), torch.no_grad():
        # The encoder's input checks become constants of the trace; check_onnx compares on real events.
        warnings.simplefilter("ignore", torch.jit.TracerWarning)
        torch.onnx.register_custom_op_symbolic("aten::hypot", _hypot, OPSET)
        torch.onnx.export(
            wrapper, example, str(out), input_names=wrapper.input_names, output_names=wrapper.output_names,
            dynamic_axes=wrapper.dynamic_axes(), opset_version=OPSET, dynamo=False,
        )
    return out


def export_recon(checkpoint: Path, out: Path, data: SpanetData) -> Path:
    """Write the network of ``checkpoint`` to ``out`` (ONNX), traced on events of ``data``."""
    model = AssignmentModel.load(checkpoint)
    return export_network(model.module.network, out, onnx_inputs(data, model.topology))


def check_onnx(checkpoint: Path, onnx_file: Path, data: SpanetData) -> float:
    """Largest absolute difference between onnxruntime's and torch's outputs on ``data`` (finite entries;
    -inf must match); raises UnfoldError when onnxruntime is missing or they disagree beyond 1e-3."""
    try:
        import onnxruntime
    except ModuleNotFoundError:
        raise UnfoldError("checking the ONNX graph needs onnxruntime: pip install 'unfold-suite[onnx]'") from None

    model = AssignmentModel.load(checkpoint)
    wrapper = OnnxAssignmentNetwork(model.module.network).eval()
    feeds = onnx_inputs(data, model.topology)
    feeds = {name: feeds[name] for name in wrapper.input_names}
    session = onnxruntime.InferenceSession(str(onnx_file), providers=["CPUExecutionProvider"])
    got = session.run(wrapper.output_names, feeds)
    with torch.no_grad():
        expected = [t.numpy() for t in wrapper(*(torch.from_numpy(v) for v in feeds.values()))]
    largest = 0.0
    for name, a, b in zip(wrapper.output_names, got, expected, strict=True):
        if a.shape != b.shape or not np.array_equal(np.isfinite(a), np.isfinite(b)):
            raise UnfoldError(f"{onnx_file}: output {name!r} differs from torch in shape or masked entries")
        finite = np.isfinite(b)
        if finite.any():
            largest = max(largest, float(np.abs(a[finite] - b[finite]).max()))
    if largest > 1e-3:
        raise UnfoldError(f"{onnx_file}: outputs differ from torch by up to {largest:.3g}; expected < 1e-3")
    return largest
