"""``unfold sample``: draw n unfoldings per event with trained parton and/or particle runs."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import get_args

from unfold.commands import DefaultsHelpFormatter, non_negative_int, positive_int


def add_parser(subparsers: argparse._SubParsersAction) -> None:
    from unfold.models.diffusion.sampler import DEFAULT_SAMPLER, PRECISIONS, SamplerName

    parser = subparsers.add_parser(
        "sample", help="draw n unfoldings per event into samples.h5 (truth kept beside them)",
        description="Draw n unfoldings of every event with the newest parton run (and the newest particle run, when "
        "there is one) or the given checkpoint; writes SAMPLES/PARTONS/<parton>/<feature> (E, n) and "
        "SAMPLES/PARTICLES/<collection>/<feature> (E, n, M) with MASK, the truth, detector-level references and the "
        "inputs beside them. Streams over the input in chunks and in batches over the --devices; nothing is written "
        "unless the whole file is.",
        formatter_class=DefaultsHelpFormatter,
    )
    parser.add_argument("task", nargs="?", choices=("parton", "particle"), default=None,
                        help="unfold only this level (default: every level with a trained run)")
    parser.add_argument("--n", type=int, default=33, help="unfoldings per event")
    parser.add_argument("--checkpoint", type=Path, default=None, help="run folder or .ckpt of a parton or particle run (the task is read from it)")
    parser.add_argument("--data", type=Path, default=None, help="detector-level file (default: the default test file)")
    parser.add_argument("--out", type=Path, default=Path("samples.h5"), help="output samples file")
    parser.add_argument("--steps", type=positive_int, default=None,
                        help="denoising steps (default: the run's, 25 for parton runs, 10 for particle diffusion runs)")
    parser.add_argument("--sampler", choices=get_args(SamplerName), default=DEFAULT_SAMPLER,
                        help="diffusers sampler: ddpm, ddim or dpm-solver for a diffusion run (default: the run's own, "
                        "each measured closest to the truth at its default steps: dpm-solver for runs predicting v, "
                        "as parton and particle runs do by default, ddpm for parton runs predicting the noise); "
                        "euler for a flow-matching run (its only one and default)")
    parser.add_argument("--precision", choices=PRECISIONS, default="float32",
                        help="arithmetic of the denoising network: bfloat16 is faster where the hardware has it "
                        "(CPUs with AVX512-BF16 or AMX, recent GPUs) and slower elsewhere; the states, multiplicities "
                        "and decoding stay float32")
    parser.add_argument("--batch-size", type=positive_int, default=256, help="events per batch")
    parser.add_argument("--seed", type=non_negative_int, default=0,
                        help="seed of the draws (same seed and batch size, same samples on any devices)")
    parser.add_argument("--devices", default="auto",
                        help="auto (cuda:0 if there is a GPU, else cpu), N (the first N GPUs) or comma-separated "
                        "torch devices (cpu, cuda:1, cuda:0,cuda:1); batches go round-robin, one thread per device")
    parser.add_argument("--limit", type=positive_int, default=None, help="unfold only the first N events (only they are read)")
    parser.add_argument("--chunk-size", type=positive_int, default=4096,
                        help="events read, sampled and written at a time (rounded up to a multiple of --batch-size; "
                        "memory holds one chunk whatever the file's length, and the draws do not depend on it)")
    parser.add_argument("--recon", type=Path, action="append", default=None,
                        help="recon run (folder or .ckpt) whose jet-parton assignment reconstructs every event for "
                        "the parton-level detector reference (default: the chi-square baseline); repeat it for the ensemble of several runs")
    parser.add_argument("--fit-data", type=Path, default=None,
                        help="training file on whose truth-matched events the chi-square reference fits its mass "
                        "resolutions (default: the *_train.h5 beside a *_test.h5 --data)")
    parser.add_argument("--weights", default=None, metavar="DATASET",
                        help="per-event weights copied to WEIGHTS/weight beside EVENT_INDEX (default: SPANet's "
                        "WEIGHTS/weight when the file has it, else 1)")
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from unfold.errors import UnfoldError
    from unfold.generation.pipeline import ensure_default_data
    from unfold.outputs import check_output_file
    from unfold.tasks.sample import checkpoint_task, sample_unfoldings
    from unfold.training.trainer import newest_run

    given = (args.data, args.checkpoint, *(args.recon or ()), args.fit_data)
    check_output_file(args.out, option="--out", kind="samples", inputs=given)
    if args.checkpoint is not None:
        task = checkpoint_task(args.checkpoint)
        if args.task not in (None, task):
            raise UnfoldError(f"{args.checkpoint}: a {task} run, but `unfold sample {args.task}` was asked for")
        checkpoints = {task: args.checkpoint}
    elif args.task is not None:
        checkpoints = {args.task: newest_run(Path("runs"), args.task)}
    else:
        checkpoints = {"parton": newest_run(Path("runs"), "parton")}
        if any((Path("runs") / "particle").glob("*/checkpoints")):
            checkpoints["particle"] = newest_run(Path("runs"), "particle")
    data = args.data or ensure_default_data()[1]
    check_output_file(args.out, option="--out", kind="samples", inputs=(*given, data, *checkpoints.values()))
    out = sample_unfoldings(checkpoints, data, args.out, n=args.n, sampler=args.sampler, steps=args.steps,
                            batch_size=args.batch_size, seed=args.seed, devices=args.devices, limit=args.limit,
                            recon=args.recon, fit_data=args.fit_data, weights=args.weights,
                            chunk_size=args.chunk_size, precision=args.precision)
    print(f"{args.n} unfoldings per event ({', '.join(checkpoints)}) written to {out}")
    return 0
