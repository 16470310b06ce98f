"""``unfold train recon|parton|particle``: train one of the suite's models with Lightning."""

from __future__ import annotations

import argparse
from pathlib import Path

import yaml

from unfold.errors import UnfoldError

DEFAULT_EVENT_FILE = Path(__file__).resolve().parents[2] / "configs" / "events" / "ttbar_semileptonic.yaml"


def add_trainer_options(parser: argparse.ArgumentParser) -> None:
    """Options every task shares, named as Lightning users expect."""
    parser.add_argument("--data", type=Path, default=None,
                        help="training file (default: data/ttbar_semileptonic_train.h5, generated on first use)")
    parser.add_argument("--config", type=Path, default=None,
                        help="YAML of constructor keywords: model: {...}, encoder: {...} (unfoldings) and module options")
    parser.add_argument("--out", type=Path, default=Path("runs"), help="root folder of runs/<task>/<id>/")
    parser.add_argument("--epochs", type=int, default=None, help="maximum epochs")
    parser.add_argument("--max-time", default=None, help="wall-clock limit, Lightning's DD:HH:MM:SS (e.g. 00:00:10:00)")
    parser.add_argument("--batch-size", type=int, default=256, help="events per batch (per device)")
    parser.add_argument("--accelerator", default="auto", help="cpu, gpu or auto")
    parser.add_argument("--devices", default="auto", help="number of devices (several use DDP) or auto")
    parser.add_argument("--precision", default=None, help="Lightning precision (default: bf16-mixed on GPU, 32-true on CPU)")
    parser.add_argument("--strategy", default="auto", help="Lightning strategy (default: ddp with several devices)")
    parser.add_argument("--seed", type=int, default=0, help="seed of initialisation, split and shuffling")
    parser.add_argument("--resume", type=Path, default=None, help="run folder or checkpoint to continue from")
    parser.add_argument("--limit", type=int, default=None, help="use only the first N events of the file")


def add_parser(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser("train", help="train a model: recon (jet-parton assignment), parton or particle unfolding",
                                   description="Train one of the suite's models; every run writes runs/<task>/<id>/.")
    tasks = parser.add_subparsers(dest="task", metavar="TASK", required=True)
    recon = tasks.add_parser(
        "recon", help="jet-parton assignment (SPANet-style symmetric tensor attention)",
        description="Train the shared encoder with jet-parton assignment heads; writes checkpoints (best by validation "
        "event efficiency, and last), the resolved config, metrics CSV and TensorBoard logs to runs/recon/<id>/, then "
        "prints the efficiency table on the test file beside the chi-square baseline.",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    add_trainer_options(recon)
    recon.add_argument("--event-file", type=Path, default=None,
                       help="SPANet event file (default: the packaged semi-leptonic ttbar one)")
    recon.add_argument("--test", type=Path, default=None, help="file for the final efficiency table (default: the default test file)")
    recon.add_argument("--init-from", type=Path, default=None, help="start from another run's weights (same topology), for fine-tuning")
    recon.add_argument("--pair-bias", action=argparse.BooleanOptionalAction, default=None,
                       help="Lorentz-invariant pairwise attention bias (ParT features: pair mass, Delta, kT, z); "
                       "default: on whenever the inputs give four-momenta (pt, eta, phi, mass)")
    recon.set_defaults(func=run_recon)
    for task, summary in (
        ("parton", "parton-level unfolding: latent variational diffusion (VLD) conditioned on the event vector"),
        ("particle", "particle-level unfolding: multiplicity predictor + set denoiser for variable-length events"),
    ):
        unfolding = tasks.add_parser(
            task, help=summary, formatter_class=argparse.ArgumentDefaultsHelpFormatter,
            description=f"Train the {summary}; writes checkpoints (best by validation loss, and last), the resolved "
            f"config, metrics CSV and TensorBoard logs to runs/{task}/<id>/.",
        )
        add_trainer_options(unfolding)
        unfolding.add_argument("--event-file", type=Path, default=None,
                               help="SPANet event file of the detector inputs (default: the packaged semi-leptonic one)")
        unfolding.add_argument("--encoder-from", type=Path, default=None,
                               help="start the shared encoder from a recon (or parton/particle) run or checkpoint")
        unfolding.add_argument("--freeze-encoder", action="store_true", help="keep the encoder's weights fixed")
        unfolding.add_argument("--learning-rate", type=float, default=1e-3, help="AdamW learning rate")
        if task == "parton":
            unfolding.add_argument("--plain", action="store_true",
                                   help="the non-latent conditional diffusion baseline instead of the VLD")
            unfolding.add_argument("--representation", choices=("decay-chain", "objects"), default=None,
                                   help="parton features: masses and rest-frame decay directions (decay-chain, the "
                                   "default) or every object's (px, py, pz, log(E+1), m) as the VLD code (objects)")
        unfolding.set_defaults(func=run_unfolding)


def model_options(path: Path | None) -> dict:
    if path is None:
        return {}
    if not path.is_file():
        raise UnfoldError(f"{path}: config file not found")
    options = yaml.safe_load(path.read_text()) or {}
    if not isinstance(options, dict):
        raise UnfoldError(f"{path}: expected a mapping of model options")
    return options


def default_data(data: Path | None, test: Path | None) -> tuple[Path, Path | None]:
    if data is not None:
        return data, test
    from unfold.generation.pipeline import ensure_default_data

    train, default_test = ensure_default_data()
    return train, test or default_test


def trainer_options(args: argparse.Namespace, default_epochs: int):
    from unfold.training.trainer import TrainerOptions

    return TrainerOptions(
        epochs=args.epochs or default_epochs, max_time=args.max_time, accelerator=args.accelerator, devices=args.devices,
        precision=args.precision, strategy=args.strategy, batch_size=args.batch_size, seed=args.seed,
    )


def run_recon(args: argparse.Namespace) -> int:
    from unfold.tasks.evaluate_recon import evaluate_recon
    from unfold.tasks.train_recon import ReconConfig, train_recon

    data, test = default_data(args.data, args.test)
    options = model_options(args.config)
    model = dict(options.get("model", options))
    if args.pair_bias is not None:
        model["pair_bias"] = args.pair_bias
    config = ReconConfig(
        data=data, event_file=args.event_file or DEFAULT_EVENT_FILE, out=args.out, model=model,
        trainer=trainer_options(args, default_epochs=20), init_from=args.init_from, resume=args.resume, limit=args.limit,
    )
    run = train_recon(config)
    print(f"run written to {run}")
    if test is not None and test.is_file():
        _, text = evaluate_recon(run, test, data)
        print(f"efficiency on {test}:\n{text}")
    return 0


def run_unfolding(args: argparse.Namespace) -> int:
    from unfold.tasks.train_unfolding import UnfoldingConfig, train_unfolding

    data, _ = default_data(args.data, None)
    options = model_options(args.config)
    model, encoder = dict(options.get("model", {})), dict(options.get("encoder", {}))
    module = {k: v for k, v in options.items() if k not in ("model", "encoder")}
    if getattr(args, "plain", False):
        model["latent"] = False
    if getattr(args, "representation", None) is not None:
        module["representation"] = args.representation
    config = UnfoldingConfig(
        task=args.task, data=data, event_file=args.event_file or DEFAULT_EVENT_FILE, out=args.out, encoder=encoder,
        model=model, module=module, trainer=trainer_options(args, default_epochs=20), learning_rate=args.learning_rate,
        encoder_from=args.encoder_from, freeze_encoder=args.freeze_encoder, resume=args.resume, limit=args.limit,
    )
    print(f"run written to {train_unfolding(config)}")
    return 0
