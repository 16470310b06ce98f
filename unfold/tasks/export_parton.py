"""``unfold export parton``: the parton unfolding as three ONNX graphs, one denoising step among them.

A diffusion sampler is a loop, so the network is exported in the pieces the loop calls:

- ``<out>.condition.onnx``: the detector inputs (the names of :mod:`unfold.tasks.export_recon`) ->
  ``condition`` (E, C), the encoder's event vector (and the per-parton object summaries),
  computed once per event;
- ``<out>.denoiser.onnx``: ``state`` (B, W), ``timestep`` (B,) int64 and ``condition`` (B, C) ->
  ``prediction`` (B, W) of one denoising step: v, the noise or the clean state, as the run's
  ``prediction_type`` says;
- ``<out>.decoder.onnx`` (latent VLD only): ``latent`` (B, W) and ``condition`` -> ``partons``
  (B, F), the standardised parton features.

A deployment runs any diffusers scheduler built from the run's ``vld.scheduler.config`` (its
prediction type and timestep spacing) over the denoiser (as :func:`unfold.models.diffusion.sampler.denoise`
does), decodes, and maps the standardised features to momenta with the checkpoint's representation
(``PartonModule.representation.decode``, given ``PartonModule.anchors(inputs)`` where the
representation generates the lepton relative to its measurement).
"""

from __future__ import annotations

import warnings
from pathlib import Path

import numpy as np
import torch
from torch import Tensor, nn

from unfold.data.hdf5_schema import SpanetData
from unfold.errors import UnfoldError
from unfold.tasks.export_recon import OPSET, _hypot, onnx_inputs

__all__ = ["check_parton_onnx", "export_parton", "parton_graph_paths"]


class _Condition(nn.Module):
    def __init__(self, module) -> None:
        super().__init__()
        self.module = module
        self.sequential = len(module.topology.sequential)
        self.globals = len(module.topology.globals)
        self.pair_bias = module.encoder.pair_bias is not None

    def forward(self, *tensors: Tensor) -> Tensor:
        from encoders import EncoderInputs

        s, g = self.sequential, self.globals
        return self.module.condition(EncoderInputs(tensors[:s], tensors[s : 2 * s], tensors[2 * s : 2 * s + g],
                                                   tensors[2 * s + g] if self.pair_bias else None))


class _Denoiser(nn.Module):
    def __init__(self, vld) -> None:
        super().__init__()
        self.vld = vld

    def forward(self, state: Tensor, timestep: Tensor, condition: Tensor) -> Tensor:
        return self.vld.predict_noise(state, timestep, condition)


class _Decoder(nn.Module):
    def __init__(self, vld) -> None:
        super().__init__()
        self.vld = vld

    def forward(self, latent: Tensor, condition: Tensor) -> Tensor:
        return self.vld.decode(latent, condition)


def parton_graph_paths(out: Path) -> dict[str, Path]:
    """The files ``unfold export parton --onnx OUT.onnx`` writes: condition, denoiser, decoder."""
    stem = out.with_suffix("")
    return {part: stem.with_name(f"{stem.name}.{part}.onnx") for part in ("condition", "denoiser", "decoder")}


def _input_names(topology, pair_bias: bool) -> list[str]:
    names = [f"{s.name}_features" for s in topology.sequential] + [f"{s.name}_mask" for s in topology.sequential]
    return names + [f"{g.name}_features" for g in topology.globals] + (["four_momenta"] if pair_bias else [])


def _graphs(module, feeds: dict[str, np.ndarray]):
    """(name, wrapper, example inputs, input names, output name, dynamic axes) of each graph."""
    topology, vld = module.topology, module.vld
    condition = _Condition(module).eval()
    names = _input_names(topology, condition.pair_bias)
    if any(name not in feeds for name in names):
        raise UnfoldError(f"the inputs give none of {[n for n in names if n not in feeds]} (four_momenta needs pt, eta, "
                          "phi or sin_phi/cos_phi, and mass)")
    example = tuple(torch.as_tensor(feeds[name][:4]) for name in names)
    axes: dict[str, dict[int, str]] = {f"{g.name}_features": {0: "events"} for g in topology.globals}
    for source in topology.sequential:
        objects = "objects" if len(topology.sequential) == 1 else f"objects_{source.name}"
        axes[f"{source.name}_features"] = axes[f"{source.name}_mask"] = {0: "events", 1: objects}
    if condition.pair_bias:
        axes["four_momenta"] = {0: "events", 1: "objects"}
    with torch.no_grad():
        context = condition(*example)
    state = torch.randn(4, vld.diffused_width)
    timestep = torch.tensor([999, 500, 10, 0])
    graphs = [
        ("condition", condition, example, names, "condition", {**axes, "condition": {0: "events"}}),
        ("denoiser", _Denoiser(vld).eval(), (state, timestep, context), ["state", "timestep", "condition"], "prediction",
         {"state": {0: "rows"}, "timestep": {0: "rows"}, "condition": {0: "rows"}, "prediction": {0: "rows"}}),
    ]
    if vld.latent:
        graphs.append(("decoder", _Decoder(vld).eval(), (state, context), ["latent", "condition"], "partons",
                       {"latent": {0: "rows"}, "condition": {0: "rows"}, "partons": {0: "rows"}}))
    return graphs


def export_parton(module, out: Path, data: SpanetData) -> dict[str, Path]:
    """Write the graphs of a PartonModule (traced on events of ``data``); returns them by part."""
    paths = parton_graph_paths(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    written = {}
    with warnings.catch_warnings(), torch.no_grad():
        warnings.simplefilter("ignore", torch.jit.TracerWarning)
        torch.onnx.register_custom_op_symbolic("aten::hypot", _hypot, OPSET)
        for name, wrapper, example, inputs, output, axes in _graphs(module, onnx_inputs(data, module.topology)):
            torch.onnx.export(wrapper, example, str(paths[name]), input_names=inputs, output_names=[output],
                              dynamic_axes=axes, opset_version=OPSET, dynamo=False)
            written[name] = paths[name]
    return written


def check_parton_onnx(module, paths: dict[str, Path], data: SpanetData) -> float:
    """Largest absolute difference between onnxruntime and torch over the graphs on ``data``'s events
    (random states at several timesteps); UnfoldError beyond 1e-3."""
    try:
        import onnxruntime
    except ModuleNotFoundError:
        raise UnfoldError("checking the ONNX graphs needs onnxruntime: pip install 'unfold-suite[onnx]'") from None
    feeds = onnx_inputs(data, module.topology)
    largest = 0.0
    generator = torch.Generator().manual_seed(0)
    context = None
    for name, wrapper, _, inputs, _, _ in _graphs(module, feeds):
        if name == "condition":
            values = [feeds[n] for n in inputs]
        else:
            rows = len(context)
            state = torch.randn(rows, module.vld.diffused_width, generator=generator).numpy()
            values = [state, np.linspace(0, 999, rows).astype(np.int64), context] if name == "denoiser" else [state, context]
        session = onnxruntime.InferenceSession(str(paths[name]), providers=["CPUExecutionProvider"])
        (got,) = session.run(None, dict(zip(inputs, values, strict=True)))
        with torch.no_grad():
            expected = wrapper(*(torch.as_tensor(v) for v in values)).numpy()
        largest = max(largest, float(np.abs(got - expected).max()))
        if name == "condition":
            context = expected
    if largest > 1e-3:
        raise UnfoldError(f"{paths['condition']}: ONNX outputs differ from torch by up to {largest:.3g}; expected < 1e-3")
    return largest
