"""``unfold report``: distribution comparison of unfoldings against truth, as an HTML report."""

from __future__ import annotations

import argparse
from pathlib import Path

from tqdm import tqdm

from evaluation.errors import ReportError
from evaluation.report import FORMATS, write_report
from unfold.commands import comma_list

__all__ = ["add_parser", "newest_samples_file", "run"]

SEARCH_PATTERNS = ("samples/*.h5", "runs/**/samples*.h5", "samples*.h5")


def newest_samples_file(root: Path) -> Path:
    """The most recently modified samples file under ``root`` (see SEARCH_PATTERNS)."""
    found = {p for pattern in SEARCH_PATTERNS for p in root.glob(pattern) if p.is_file()}
    if not found:
        raise ReportError(
            f"no samples file given and none found under {root.resolve()} "
            f"(searched {', '.join(SEARCH_PATTERNS)}); run `unfold sample` or pass FILES"
        )
    return max(found, key=lambda p: p.stat().st_mtime)


def add_parser(subparsers: argparse._SubParsersAction) -> argparse.ArgumentParser:
    parser = subparsers.add_parser(
        "report",
        help="compare unfoldings with truth: HTML report, metrics.json and plots",
        description=(
            "Compare one or more samples files (n unfoldings per event, truth beside them) with "
            "truth and detector level (every event reconstructed without truth, and the truth-matched "
            "jets): histograms with ratio panels, Wasserstein-1, energy, Kolmogorov-Smirnov, KL and "
            "triangular distances with bootstrap errors and a noise floor (mean [min, max] over "
            "draws), rank histograms and coverage, migration matrices and correlations. Writes "
            "<out>/index.html, <out>/metrics.json and the images, and prints the headline table. "
            "Given a recon predictions file (it has a PREDICTIONS group) instead, reports its "
            "efficiency tables and the reconstructed top and W masses for correct vs wrong "
            "assignments."
        ),
    )
    parser.add_argument(
        "files",
        nargs="*",
        type=Path,
        metavar="FILES",
        help="samples files of the same events to compare side by side, or one predictions "
        f"file; none: the newest of {', '.join('./' + p for p in SEARCH_PATTERNS)}",
    )
    parser.add_argument(
        "--labels",
        type=comma_list,
        default=None,
        help="comma-separated name of each file in plots and tables, e.g. VLD,plain "
        "(default: the file stems)",
    )
    parser.add_argument(
        "--out",
        type=Path,
        default=None,
        help="report folder, new or a previous report (replaced when the new report is complete; "
        "any other folder or file is refused) (default: reports/<stem of the first file>)",
    )
    parser.add_argument(
        "--bins",
        type=int,
        default=64,
        help="histogram bins, also used by the KL and triangular distances (default: 64)",
    )
    parser.add_argument(
        "--features",
        type=comma_list,
        default=None,
        help="comma-separated observables such as parton/t_had/mass,particle/jets/multiplicity, "
        "or 'all' (default: the key observables); an unknown name lists the available ones",
    )
    parser.add_argument(
        "--bootstrap",
        type=int,
        default=50,
        help="bootstrap resamples of the events behind every distance's uncertainty and the noise "
        "floor (default: 50)",
    )
    parser.add_argument(
        "--format",
        choices=FORMATS,
        default="png",
        help="image format; with pdf the page shows PNG copies linking to the PDFs (default: png)",
    )
    parser.add_argument(
        "--luminosity",
        type=float,
        default=None,
        metavar="FB_INV",
        help="integrated luminosity of the unfolded events in fb^-1, for differential cross sections "
        "(figures, table, cross_sections.json and .root); default: the samples file's equivalent "
        "luminosity of the generated events (attribute luminosity_fb_inv); a file without it: "
        "cross sections off, one note",
    )
    parser.set_defaults(func=run)
    return parser


def run(args: argparse.Namespace) -> int:
    files = list(args.files) or [newest_samples_file(Path.cwd())]
    out = args.out or Path("reports") / files[0].stem
    result = write_report(
        files,
        out,
        labels=args.labels,
        bins=args.bins,
        features=args.features,
        image_format=args.format,
        resamples=args.bootstrap,
        progress=lambda jobs: tqdm(jobs, desc="plots", unit="plot", leave=False),
        luminosity=args.luminosity,
    )
    print(result.headline)
    print(f"\nreport written to {result.out / 'index.html'} ({result.n_plots} plots)")
    return 0
