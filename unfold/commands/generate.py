"""``unfold generate``: simulate ttbar events into train and test files."""

from __future__ import annotations

import argparse
import os
from pathlib import Path
from typing import get_args

from unfold.commands import DefaultsHelpFormatter, positive_int
from unfold.generation.pipeline import GenerationConfig
from unfold.generation.processes import ProcessName


def add_parser(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "generate",
        help="simulate ttbar events (Pythia 8 + FastJet + detector) into train/test HDF5 files",
        description=(
            "Generate pp -> ttbar at 13 TeV with Pythia 8 (ISR/FSR, hadronisation, MPI), cluster "
            "particle-level anti-kT R=0.4 jets with FastJet, pass them through the parametrised "
            "detector card and write SPANet-layout detector inputs, assignment targets, parton and "
            "particle truth to <out>/<process>_train.h5 and <out>/<process>_test.h5. "
            "The same seed gives identical files whatever the number of workers."
        ),
        formatter_class=DefaultsHelpFormatter,
    )
    parser.add_argument("--process", choices=get_args(ProcessName), default="ttbar-semileptonic",
                        help="semi-leptonic (one W -> e/mu nu) or all-hadronic ttbar")
    parser.add_argument("--events", type=int, default=GenerationConfig.events,
                        help="events passing the detector selection to write, train and test together")
    parser.add_argument("--out", type=Path, default=Path("data"), help="folder for the train and test files")
    parser.add_argument("--seed", type=int, default=1, help="master seed of Pythia and the detector smearing")
    parser.add_argument("--workers", type=int, default=os.cpu_count() or 1, help="parallel worker processes")
    parser.add_argument("--detector", type=Path, default=None, metavar="CARD.yaml",
                        help="detector card (default: the packaged CMS-like card configs/detector/cms_like.yaml)")
    parser.add_argument("--mpi", action=argparse.BooleanOptionalAction, default=True,
                        help="multi-parton interactions in Pythia")
    parser.add_argument("--pythia", action="append", default=[], metavar="'KEY = VALUE'",
                        help="extra Pythia setting, repeatable, applied last (e.g. '6:m0 = 173.5' for a top-mass variation)")
    parser.add_argument("--test-fraction", type=float, default=0.2, help="share of events written to the test file")
    parser.add_argument("--max-particle-jets", type=positive_int, default=16, help="slots of the particle-level jet collection")
    parser.add_argument("--keep-missed", action="store_true",
                        help="also write the parton and particle truth of the events that fail the detector selection "
                             "under MISSED/PARTONS and MISSED/PARTICLES of the same files, for efficiency corrections "
                             "(reads every event in full: slower)")
    parser.add_argument("--quiet", action="store_true", help="no progress bar")
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from unfold.generation.pipeline import default_paths, generate
    from unfold.outputs import check_output_file, check_output_root

    check_output_root(args.out, option="--out")
    for path in default_paths(args.out, args.process):
        check_output_file(path, option="--out", kind="events", inputs=(args.detector,))
    config = GenerationConfig(
        process=args.process, events=args.events, out=args.out, seed=args.seed, workers=args.workers,
        detector=args.detector, mpi=args.mpi, pythia=tuple(args.pythia), test_fraction=args.test_fraction,
        max_particle_jets=args.max_particle_jets, keep_missed=args.keep_missed,
    )
    result = generate(config, progress=not args.quiet)
    print(
        f"wrote {result.train} and {result.test}: {result.events} events "
        f"({result.events / result.tried:.1%} of {result.tried} generated passed the selection) "
        f"in {result.seconds:.0f} s ({result.events / result.seconds:.1f} selected events/s)"
    )
    return 0
