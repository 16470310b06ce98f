"""``unfold train recon|parton|particle``: train one of the suite's models with Lightning.

Each task's options are parsed by ``jsonargparse`` against the constructors' type hints
(EventEncoder under ``encoder:``, the task's network under ``model:``, AdamW under
``optimizer:``, :class:`~unfold.training.trainer.TrainerOptions` under ``trainer:``), starting
from the shipped ``configs/models/encoder.yaml`` and ``<task>.yaml``; ``--config`` layers a
shipped variant or a file on top, and the command line comes last.
"""

from __future__ import annotations

import argparse
import inspect
import re
import typing
from collections.abc import Callable, Collection, Sequence
from importlib import resources
from pathlib import Path
from typing import Literal

import yaml

from unfold.errors import UnfoldError

__all__ = ["TASKS", "add_parser", "build_task_parser", "parse_task", "run_task", "shipped_config"]

TASKS = {
    "recon": "jet-parton assignment (SPANet-style symmetric tensor attention)",
    "parton": "parton-level unfolding: conditional diffusion (or, with --latent, the latent VLD) conditioned on the event vector",
    "particle": "particle-level unfolding: multiplicity predictor + set denoiser for variable-length events",
}
DEFAULT_EVENT_FILE = Path(__file__).resolve().parents[2] / "configs" / "events" / "ttbar_semileptonic.yaml"

# Short flags kept from before the configuration system; each is one dotted key.
ALIASES = {
    "event_file": "--event-file", "init_from": "--init-from", "encoder_from": "--encoder-from",
    "trainer.epochs": "--epochs", "trainer.max_time": "--max-time", "trainer.batch_size": "--batch-size",
    "trainer.accelerator": "--accelerator", "trainer.devices": "--devices", "trainer.precision": "--precision",
    "trainer.strategy": "--strategy", "trainer.seed": "--seed", "optimizer.learning_rate": "--learning-rate",
    "model.representation": "--representation",
}
# Value-less switches kept from before; each stands for one key=value.
SWITCHES = {
    "--plain": "--model.latent=false",
    "--latent": "--model.latent=true",
    "--pair-bias": "--encoder.pair_bias=true",
    "--no-pair-bias": "--encoder.pair_bias=false",
    "--freeze-encoder": "--freeze_encoder=true",
}
PRINT_CONFIG = ("--print-config", "--print_config")


class ConfigError(UnfoldError):
    """A configuration a task cannot take: unknown key, wrong type, value outside its choices."""


def shipped_configs() -> list[str]:
    """Names of the configurations shipped in ``configs/models/``."""
    return sorted(p.name[:-5] for p in resources.files("configs.models").iterdir() if p.name.endswith(".yaml"))


def shipped_config(name: str) -> Path:
    """The file of a shipped configuration, e.g. ``recon`` or ``parton_small``."""
    path = resources.files("configs.models") / f"{name}.yaml"
    if not path.is_file():
        raise ConfigError(f"no shipped configuration {name!r}; expected one of {shipped_configs()} or a YAML file")
    return Path(str(path))


def resolve_config(task: str, value: str) -> Path:
    """``--config`` value: a YAML file, or a shipped name (``small`` means ``<task>_small``)."""
    if Path(value).is_file():
        return Path(value)
    for name in (f"{task}_{value}", value):
        if name in shipped_configs():
            return shipped_config(name)
    if value.endswith((".yaml", ".yml")) or "/" in value:
        raise ConfigError(f"--config {value}: file not found")
    raise ConfigError(f"--config {value}: not a file nor a shipped configuration; expected a YAML file or one of "
                      f"{[n for n in shipped_configs() if n.startswith(task)]} (or its suffix, e.g. small)")


def _docs(constructor: Callable) -> dict[str, str]:
    """Parameter descriptions from the class and ``__init__`` docstrings (Google style)."""
    from docstring_parser import parse

    docs = {}
    for text in (constructor.__doc__, getattr(constructor, "__init__", None).__doc__):
        if text:
            docs.update({p.arg_name: " ".join(p.description.split()) for p in parse(text).params if p.description})
    return docs


def _add_signature(parser, constructor: Callable, prefix: str, *, skip: Collection[str] = (),
                   only: Collection[str] | None = None, types: dict | None = None) -> None:
    """One ``--prefix.name`` option per keyword of ``constructor``, typed by its hints."""
    hints = typing.get_type_hints(constructor if inspect.isclass(constructor) and hasattr(constructor, "__dataclass_fields__")
                                  else constructor.__init__)
    docs = _docs(constructor)
    for name, parameter in inspect.signature(constructor).parameters.items():
        if name in skip or (only is not None and name not in only) or parameter.kind == parameter.VAR_KEYWORD:
            continue
        key = f"{prefix}.{name}" if prefix else name
        flags = [f"--{key}"] + ([ALIASES[key]] if key in ALIASES else [])
        default = None if parameter.default is inspect.Parameter.empty else parameter.default
        parser.add_argument(*flags, dest=key, type=(types or {}).get(name, hints[name]), default=default,
                            help=docs.get(name, ""))


def build_task_parser(task: str):
    """The jsonargparse parser of one training task, with the shipped configuration as defaults."""
    from jsonargparse import ActionConfigFile, ArgumentParser
    from jsonargparse.typing import OpenUnitInterval, PositiveInt

    from encoders import EventEncoder
    from recon.assignment_network import AssignmentNetwork
    from unfold.models.particle import SetLatentDiffusion
    from unfold.models.parton import VariationalLatentDiffusion
    from unfold.training.recon_module import ReconModule
    from unfold.training.trainer import TrainerOptions
    from unfold.training.unfolding_modules import ParticleModule, PartonModule

    if task not in TASKS:
        raise ConfigError(f"unknown task {task!r}; expected one of {list(TASKS)}")
    parser = ArgumentParser(
        prog=f"unfold train {task}", exit_on_error=False,
        default_config_files=[str(shipped_config("encoder")), str(shipped_config(task))],
        description=f"Train the {TASKS[task]}; every run writes checkpoints (best and last), its fully resolved "
        f"config.yaml, a metrics CSV and TensorBoard logs to runs/{task}/<id>/. Options come from "
        f"configs/models/encoder.yaml and {task}.yaml, then --config, then the command line; every key is "
        "also a flag (--encoder.width 128, --model.depth 2, --trainer.epochs 5). Feeding a run's config.yaml "
        "back as --config repeats the run.",
        epilog="--print-config prints the resolved configuration (the encoder of an --encoder-from run) and exits. "
        "Shorthands: " + ", ".join(f"{k} = {v}" for k, v in SWITCHES.items() if _switch_applies(task, v)),
    )
    parser.add_argument("--config", action=ActionConfigFile,
                        help="shipped configuration (small, large, " + ", ".join(n for n in shipped_configs() if n.startswith(task))
                        + ") or a YAML file, e.g. runs/" + task + "/<id>/config.yaml")
    parser.add_argument("--data", type=Path | None, default=None,
                        help="training file (null: data/ttbar_semileptonic_train.h5, generated on first use)")
    parser.add_argument("--event_file", "--event-file", dest="event_file", type=Path | None, default=None,
                        help="SPANet event file of the detector inputs (null: the packaged semi-leptonic one)")
    parser.add_argument("--out", type=Path, default=Path("runs"), help=f"root folder of runs/{task}/<id>/")
    parser.add_argument("--limit", type=PositiveInt | None, default=None, help="use only the first N events of the file")
    parser.add_argument("--validation_fraction", type=OpenUnitInterval, default=0.1, help="events held out for validation")
    parser.add_argument("--resume", type=Path | None, default=None, help="run folder or checkpoint to continue from")
    parser.add_argument("--weights", type=str | None, default=None,
                        help="dataset of per-event weights scaling every loss term, e.g. WEIGHTS/weight (null: SPANet's "
                        "WEIGHTS/weight when the file has it, else 1); negative (NLO) weights allowed")
    if task == "recon":
        parser.add_argument("--test", type=Path | None, default=None,
                            help="file for the final efficiency table (null: the default test file with the default data)")
        parser.add_argument("--init_from", "--init-from", dest="init_from", type=Path | None, default=None,
                            help="start from another run's weights (same topology), for fine-tuning")
    else:
        parser.add_argument("--encoder_from", "--encoder-from", dest="encoder_from", type=Path | None, default=None,
                            help="start the shared encoder from a recon (or parton/particle) run or checkpoint; "
                            "the encoder options then follow that run")
        parser.add_argument("--freeze_encoder", type=bool, default=False, help="keep the encoder's weights fixed")
    if task == "parton":
        from unfold.generation.processes import ProcessName

        parser.add_argument("--process", type=ProcessName | None, default=None,
                            help="process whose partons are unfolded (null: the file's 'process' attribute, else the "
                            "process whose parton names PARTONS holds, else the one whose resonances the event file names)")
    pair_bias = {"pair_bias": bool | Literal["auto"]} if task == "recon" else None
    _add_signature(parser, EventEncoder, "encoder", skip={"sources"}, types=pair_bias)
    if task == "recon":
        encoder_keys = set(inspect.signature(EventEncoder).parameters)
        _add_signature(parser, AssignmentNetwork, "model", skip={"topology", *encoder_keys},
                       types={"mass_prior": bool | Literal["auto"]})
        module = ReconModule
    elif task == "parton":
        _add_signature(parser, PartonModule, "model", only=PartonModule.MODEL_OPTIONS)
        _add_signature(parser, VariationalLatentDiffusion, "model", skip=PartonModule.SUPPLIED_MODEL_OPTIONS)
        module = PartonModule
    else:
        _add_signature(parser, ParticleModule, "model", only=ParticleModule.MODEL_OPTIONS,
                       types={"detector_anchors": bool | Literal["auto"], "paired_slots": bool | Literal["auto"]})
        _add_signature(parser, SetLatentDiffusion, "model", skip=ParticleModule.SUPPLIED_MODEL_OPTIONS)
        module = ParticleModule
    if task == "recon":
        _add_signature(parser, ReconModule, "model", only=ReconModule.MODEL_OPTIONS)
    _add_signature(parser, module, "optimizer", only=module.OPTIMIZER_OPTIONS)
    _add_signature(parser, TrainerOptions, "trainer")
    return parser


def _switch_applies(task: str, expansion: str) -> bool:
    if "model.latent" in expansion:
        return task == "parton"
    if "freeze_encoder" in expansion:
        return task != "recon"
    return True


def _expand(task: str, argv: Sequence[str]) -> list[str]:
    """Shorthand switches to their keys, and ``--config NAME`` to the shipped file's path."""
    expanded: list[str] = []
    tokens = list(argv)
    while tokens:
        token = tokens.pop(0)
        if token in SWITCHES and _switch_applies(task, SWITCHES[token]):
            expanded.append(SWITCHES[token])
        elif token == "--config" and tokens:
            expanded += [token, str(resolve_config(task, tokens.pop(0)))]
        elif token.startswith("--config="):
            expanded.append(f"--config={resolve_config(task, token.split('=', 1)[1])}")
        else:
            expanded.append(token)
    return expanded


def _unknown(key: str, keys: list[str]) -> str:
    """``key: unknown key; <group> accepts ...`` for a key that is not an option."""
    group = key.rsplit(".", 1)[0] if "." in key else ""
    allowed = [k[len(group) + 1 :] for k in keys if group and k.startswith(group + ".")]
    if allowed:
        return f"{key}: unknown key; {group} accepts {', '.join(allowed)}"
    return f"{key}: unknown key; expected one of {', '.join(sorted({k.split('.')[0] for k in keys}))}"


def _one_line(parser, error: Exception) -> str:
    """jsonargparse's message as one line that names the key and what it accepts."""
    text = str(error)
    keys = [a.dest for a in parser._actions if a.dest not in ("help", "config", "print_config", "print_shtab")]
    if match := re.search(r"Group '([^']+)' does not accept option '([^']+)'", text):
        return _unknown(".".join(match.groups()), keys)
    if match := re.search(r"(?:Option|Key) '([^']+)' is not accepted", text):
        return _unknown(match.group(1), keys)
    if match := re.search(r"unrecognized arguments: (.*)", text):
        flag = match.group(1).split()[0]
        return _unknown(flag.lstrip("-").split("=")[0], keys) if flag.startswith("--") else f"unrecognized arguments: {match.group(1)}"
    if match := re.search(r'Parser key "([^"]+)"', text):
        key = match.group(1)
        action = next((a for a in parser._actions if a.dest == key), None)
        given = re.search(r"Given value: (.*)|Got value: (.*)|Not of type \w+: (\S+) does not conform", text)
        value = next((g for g in given.groups() if g is not None), "").strip() if given else "?"
        expected = _type_name(getattr(action, "_typehint", None) or getattr(action, "type", None))
        return f"{key}: got {value!r}; expected {expected}"
    return " ".join(line.strip() for line in text.splitlines() if line.strip())


def _type_name(hint) -> str:
    """A type hint in words: ``one of 'a', 'b'``, ``int``, ``bool or 'auto'``."""
    origin, args = typing.get_origin(hint), typing.get_args(hint)
    if origin is Literal:
        return "one of " + ", ".join(repr(a) for a in args)
    if args and origin is not None:
        return " or ".join(_type_name(a) for a in args)
    if hint is type(None):
        return "null"
    if (doc := getattr(hint, "__doc__", None)) and hint.__module__ == "jsonargparse.typing":
        return doc  # a restricted type says what it allows: "int restricted to be >0"
    return getattr(hint, "__name__", str(hint))


def parse_task(task: str, argv: Sequence[str]) -> dict:
    """The fully resolved configuration of ``unfold train TASK ARGV`` as a plain mapping."""
    parser = build_task_parser(task)
    expanded = _expand(task, argv)
    try:
        namespace = parser.parse_args(expanded)
    except argparse.ArgumentError as error:
        line = _one_line(parser, error)
        if line.startswith(("Problems parsing config", "Unexpected config")):
            files = [expanded[i + 1] for i, a in enumerate(expanded[:-1]) if a == "--config"]
            files += [a.split("=", 1)[1] for a in expanded if a.startswith("--config=")]
            line = f"--config {', '.join(files)}: not a YAML mapping of options ({line})"
        raise ConfigError(line) from None
    config = namespace.as_dict()
    for key in ("config", "__default_config__"):
        config.pop(key, None)
    return _builtin_numbers(config)


def _builtin_numbers(value):
    """Restricted types (PositiveInt, OpenUnitInterval, MaxTime: int, float and str subclasses) as
    plain int, float and str, so the configuration dumps as YAML and compares equal to a reloaded one."""
    if isinstance(value, dict):
        return {k: _builtin_numbers(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_builtin_numbers(v) for v in value]
    if isinstance(value, str):
        return str(value)
    if isinstance(value, int) and not isinstance(value, bool):
        return int(value)
    return float(value) if isinstance(value, float) else value


def _plain(value):
    """Paths as strings, so the configuration dumps as plain YAML."""
    if isinstance(value, dict):
        return {k: _plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    return str(value) if isinstance(value, Path) else value


def _default_data(data: Path | None, test: Path | None) -> tuple[Path, Path | None]:
    if data is not None:
        return data, test
    from unfold.generation.pipeline import ensure_default_data

    train, default_test = ensure_default_data()
    return train, test or default_test


def _existing_file(option: str, path: Path | None) -> None:
    if path is not None and not Path(path).is_file():
        what = "a folder" if Path(path).is_dir() else "no such file"
        raise ConfigError(f"{option} {path}: {what}; expected an existing file")


def check_task(task: str, config: dict) -> None:
    """Every path and hardware option of a parsed configuration checked before data is read, a
    model built or a run folder made."""
    from unfold.outputs import check_output_root
    from unfold.training.trainer import (
        TrainerOptions,
        check_hardware,
        check_resume,
        find_checkpoint,
    )

    _existing_file("--data", config["data"])
    _existing_file("--event-file", config["event_file"])
    _existing_file("--test", config.get("test"))
    for option in ("init_from", "encoder_from"):
        if config.get(option) is not None:
            flag = ALIASES[option]
            if not Path(config[option]).exists():
                raise ConfigError(f"{flag} {config[option]}: no such run folder or checkpoint")
            try:
                find_checkpoint(config[option])
            except UnfoldError as error:
                raise ConfigError(f"{flag} {error}") from None
    if config["resume"] is not None:
        check_resume(config["resume"], task, config["trainer"].get("ema_decay"))
    else:
        check_output_root(config["out"], option="--out")
    check_hardware(TrainerOptions(**config["trainer"]))


def run_task(task: str, argv: Sequence[str]) -> int:
    """Parse, train, and (recon) print the efficiency table on the test file; with
    ``--print-config`` only print the resolved configuration."""
    try:
        config = parse_task(task, [a for a in argv if a not in PRINT_CONFIG])
    except SystemExit as done:  # --help prints and stops
        return int(done.code or 0)
    if any(a in PRINT_CONFIG for a in argv):
        if config.get("encoder_from") is not None:
            from unfold.training.trainer import find_checkpoint
            from unfold.training.unfolding_modules import encoder_options_from

            config["encoder"] = encoder_options_from(find_checkpoint(config["encoder_from"]))
        print(yaml.safe_dump(_plain(config), sort_keys=False), end="")
        return 0
    from unfold.training.trainer import TrainerOptions

    check_task(task, config)
    data, test = _default_data(config["data"], config.get("test"))
    common = {
        "data": data, "event_file": config["event_file"] or DEFAULT_EVENT_FILE, "out": config["out"],
        "encoder": config["encoder"], "model": config["model"], "optimizer": config["optimizer"],
        "trainer": TrainerOptions(**config["trainer"]), "validation_fraction": config["validation_fraction"],
        "resume": config["resume"], "limit": config["limit"], "weights": config["weights"],
    }
    if task == "recon":
        from unfold.tasks.evaluate_recon import training_table
        from unfold.tasks.train_recon import ReconConfig, train_recon

        run = train_recon(ReconConfig(**common, init_from=config["init_from"], test=test))
        print(f"run written to {run}")
        if test is not None:
            print(f"efficiency on {test}:\n{training_table(run, test, data, config['weights'])}")
        return 0
    from unfold.tasks.train_unfolding import UnfoldingConfig, train_unfolding

    run = train_unfolding(UnfoldingConfig(task=task, **common, encoder_from=config["encoder_from"],
                                          freeze_encoder=config["freeze_encoder"], process=config.get("process")))
    print(f"run written to {run}")
    return 0


def add_parser(subparsers: argparse._SubParsersAction) -> None:
    """``unfold train``: lists the tasks; ``unfold train TASK ...`` is parsed by :func:`run_task`."""
    parser = subparsers.add_parser(
        "train", help="train a model: recon (jet-parton assignment), parton or particle unfolding",
        description="Train one of the suite's models; every run writes runs/<task>/<id>/. "
        "`unfold train TASK --help` lists every option of a task and its default.",
    )
    parser.add_argument("task", choices=list(TASKS), metavar="TASK", help="; ".join(f"{k}: {v}" for k, v in TASKS.items()))
    parser.add_argument("options", nargs=argparse.REMAINDER, help="the task's options (see unfold train TASK --help)")
    parser.set_defaults(func=lambda args: run_task(args.task, args.options))
