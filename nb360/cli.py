"""``train.py``: LightningCLI with ``--task`` and ``--method`` shortcuts.

How a command is resolved:

1. ``--task`` and ``--method`` (from the command line or a ``--config`` file) pick a
   TaskSpec and a Method; unknown names and inapplicable pairs stop here with one line.
   With neither given, ``configs/quickstart.yaml`` is used: WRN on a small Darcy Flow
   set generated locally.
2. Defaults are layered, each overriding the previous: the task's reference
   hyperparameters, the method's defaults for the task, ``configs/tasks/<task>.yaml``,
   ``configs/methods/<method>.yaml``, ``configs/methods/<method>/<task>.yaml``, then
   ``--config`` files and command-line options (``--model.lr``, ``--trainer.max_epochs``, ...).
3. The method runs its stages in ``<output_dir>/<task>/<method>/seed<N>``.
"""

from __future__ import annotations

import argparse
import importlib
import os
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any, Literal

import yaml

from nb360.errors import NB360Error, UsageError, one_line

__all__ = ["main"]

_HERE = Path(__file__).resolve().parent
DEFAULT_CONFIG_DIR = _HERE.parent / "configs"
_MIXED = {"16", "16-mixed", "bf16", "bf16-mixed", "16-true", "bf16-true", "transformer-engine", "transformer-engine-float16"}


def _option(argv: Sequence[str], *names: str) -> str | None:
    """The last value of ``--name value`` / ``--name=value`` in ``argv``."""
    value = None
    for i, arg in enumerate(argv):
        for name in names:
            if arg == name and i + 1 < len(argv):
                value = argv[i + 1]
            elif arg.startswith(name + "="):
                value = arg.split("=", 1)[1]
    return value


def _config_files(argv: Sequence[str]) -> list[Path]:
    files = []
    for i, arg in enumerate(argv):
        if arg in ("--config", "-c") and i + 1 < len(argv):
            files.append(Path(argv[i + 1]))
        elif arg.startswith("--config="):
            files.append(Path(arg.split("=", 1)[1]))
    return [f for f in files if f.is_file()]


def _from_configs(files: Sequence[Path], key: str) -> str | None:
    value = None
    for path in files:
        try:
            content = yaml.safe_load(path.read_text(encoding="utf-8"))
        except (OSError, yaml.YAMLError) as err:
            raise UsageError(f"cannot read config file {path}: {err}".splitlines()[0]) from None
        if isinstance(content, dict) and content.get(key) is not None:
            value = str(content[key])
    return value


def _seed_alias(arg: str) -> str:
    """``--seed N`` is LightningCLI's ``--seed_everything N``."""
    if arg == "--seed" or arg.startswith("--seed="):
        return "--seed_everything" + arg[len("--seed") :]
    return arg


def _import_plugins(argv: Sequence[str]) -> None:
    """Import modules that register their own tasks, networks or methods (``--plugins a,b`` or ``$NB360_PLUGINS``)."""
    names = [n for src in (os.environ.get("NB360_PLUGINS"), _option(argv, "--plugins")) if src for n in src.split(",")]
    for name in filter(None, (n.strip() for n in names)):
        try:
            importlib.import_module(name)
        except ImportError as err:
            raise UsageError(f"cannot import plugin {name!r}: {err}") from None


def _resolve(argv: list[str], config_dir: Path) -> tuple[Any, Any, list[str]]:
    """Pick the TaskSpec and Method of a command line; return them and the arguments LightningCLI will parse."""
    from nb360.datamodules.arrays import load_task_file
    from nb360.methods import get_method
    from nb360.tasks import get_task

    _import_plugins(argv)
    argv = [_seed_alias(a) for a in argv]
    configs = _config_files(argv)
    task_name = _option(argv, "--task") or _from_configs(configs, "task")
    method_name = _option(argv, "--method") or _from_configs(configs, "method")
    if task_name is None and method_name is None:
        quickstart = config_dir / "quickstart.yaml"
        if not quickstart.is_file():
            raise UsageError(f"no --task given and the quickstart config {quickstart} is missing")
        argv = ["--config", str(quickstart), *argv]
        configs.insert(0, quickstart)
        task_name, method_name = _from_configs(configs, "task"), _from_configs(configs, "method")
    task_name, method_name = task_name or "darcy", method_name or "wrn"
    if task_name.endswith((".yaml", ".yml")):
        spec = load_task_file(task_name)
    else:
        spec = get_task(task_name)
    method = get_method(method_name)
    method.check(spec)
    spec.require_datamodule()
    return spec, method, argv


def _build_cli_class() -> type:
    from lightning.pytorch.cli import LightningArgumentParser, LightningCLI

    from nb360.accelerators import (
        COMPILE_MODES,
        ChannelsLast,
        Compile,
        benchmark_default,
        count_devices,
        per_device_batch_size,
        precision_default,
    )
    from nb360.run import LOGGERS, RunContext, run_directory

    class NB360CLI(LightningCLI):
        """LightningCLI that builds one module and one DataModule, then hands them to a method's stages."""

        def __init__(self, spec: Any, method: Any, args: list[str], config_dir: Path) -> None:
            self.spec, self.method = spec, method
            defaults = [config_dir / "tasks" / f"{spec.name}.yaml", config_dir / "methods" / f"{method.name}.yaml"]
            defaults.append(config_dir / "methods" / method.name / f"{spec.name}.yaml")
            super().__init__(
                model_class=method.module,
                datamodule_class=spec.require_datamodule(),
                save_config_callback=None,
                trainer_defaults={"max_epochs": spec.reference.epochs, "precision": precision_default()},
                seed_everything_default=0,
                parser_kwargs={
                    "prog": "train.py",
                    "description": f"nb360: {method.name} on {spec.title}. {method.description}.",
                    "default_config_files": [str(p) for p in defaults if p.is_file()],
                    "exit_on_error": False,
                },
                run=False,
                auto_configure_optimizers=False,
                args=args,
            )

        def add_arguments_to_parser(self, parser: LightningArgumentParser) -> None:
            parser.add_argument("--task", type=str, default=self.spec.name, help="task name, alias or task YAML file")
            parser.add_argument("--method", type=str, default=self.method.name, help="method name")
            parser.add_argument("--output_dir", type=str, default="runs", help="root of the run directories")
            parser.add_argument("--logger", type=Literal[LOGGERS], default="csv", help="extra logger; metrics.csv is always written")
            parser.add_argument("--wandb_project", type=str, default="nb360", help="W&B project (with --logger wandb)")
            parser.add_argument("--ckpt_path", type=str | None, default=None, help="'last' or a checkpoint file to resume from")
            parser.add_argument("--plugins", type=str | None, default=None, help="comma-separated modules to import first")
            parser.add_argument("--channels_last", type=bool, default=True, help="2-D convnets in channels-last format (CUDA)")
            parser.add_argument("--compile", type=bool, default=False, help="torch.compile the network (eager if it fails)")
            parser.add_argument("--compile_mode", type=Literal[COMPILE_MODES], default="default", help="torch.compile mode")
            parser.add_argument(
                "--global_batch_size",
                type=int | None,
                default=None,
                help="batch size summed over devices, nodes and accumulated batches: sets --data.batch_size per device",
            )
            if self.method.add_arguments is not None:
                self.method.add_arguments(parser)
            ref = self.spec.reference
            defaults = {
                "model.task": self.spec.name,
                "model.lr": ref.lr,
                "model.momentum": ref.momentum,
                "model.weight_decay": ref.weight_decay,
                "model.nesterov": ref.nesterov,
                "data.batch_size": ref.batch_size,
                "data.eval_batch_size": ref.eval_batch_size,
                **self.method.defaults(self.spec),
            }
            parser.set_defaults({k: v for k, v in defaults.items() if _has_key(parser, k)})

        def before_instantiate_classes(self) -> None:
            config = self.config
            config.model.task = self.spec.name
            trainer = config.trainer
            on_cpu = trainer.accelerator == "cpu" or not _cuda_available()
            if on_cpu and str(trainer.precision) in _MIXED:
                print(f"nb360: no CUDA device: training in fp32 instead of {trainer.precision}", file=sys.stderr)
                trainer.precision = "32-true"
            if on_cpu and trainer.sync_batchnorm:  # torch's SyncBatchNorm runs on CUDA only
                print("nb360: no CUDA device: batch norm statistics stay per process (sync_batchnorm off)", file=sys.stderr)
                trainer.sync_batchnorm = False
            if trainer.benchmark is None:  # Lightning's flag for torch.backends.cudnn.benchmark: on for CUDA runs
                trainer.benchmark = benchmark_default(cuda=not on_cpu, deterministic=trainer.deterministic)
            if config.global_batch_size is not None:
                devices = count_devices(trainer.devices, "cpu" if on_cpu else trainer.accelerator)
                accumulate = int(trainer.accumulate_grad_batches or 1)
                try:
                    config.data.batch_size = per_device_batch_size(
                        config.global_batch_size, devices, int(trainer.num_nodes), accumulate
                    )
                except ValueError as err:
                    raise UsageError(str(err)) from None
            self.run_dir = run_directory(config.output_dir, self.spec.name, self.method.name, config.seed_everything)

        def instantiate_classes(self) -> None:
            self.config_init = self.parser.instantiate_classes(self.config)
            self.datamodule = self.config_init.data
            self.model = self.config_init.model

        def context(self) -> RunContext:
            config_yaml = self.parser.dump(self.config, skip_none=False)
            trainer_kwargs = dict(vars(self.config_init.trainer))
            accelerators = [ChannelsLast(self.config.channels_last)]
            if self.config.compile:
                accelerators.append(Compile(self.config.compile_mode))
            trainer_kwargs["callbacks"] = [*(trainer_kwargs.get("callbacks") or []), *accelerators]
            return RunContext(
                task=self.spec,
                method=self.method.name,
                seed=int(self.config.seed_everything),
                run_dir=self.run_dir,
                model=self.model,
                datamodule=self.datamodule,
                trainer_kwargs=trainer_kwargs,
                config_yaml=config_yaml,
                config=yaml.safe_load(config_yaml),
                logger=self.config.logger,
                wandb_project=self.config.wandb_project,
                ckpt_path=self.config.ckpt_path,
                args=self.config_init,
                data_options=self.config.data.as_dict(),
            )

    return NB360CLI


def _has_key(parser: Any, key: str) -> bool:
    try:
        parser.get_default(key)
    except Exception:
        return False
    return True


def _cuda_available() -> bool:
    import torch

    return torch.cuda.is_available()


def main(argv: Sequence[str] | None = None, config_dir: Path | None = None) -> int:
    """Run ``train.py``; return the exit status (bad input: one line on stderr and a non-zero status)."""
    argv = list(sys.argv[1:] if argv is None else argv)
    try:
        spec, method, args = _resolve(argv, config_dir or DEFAULT_CONFIG_DIR)
        program, sys.argv = sys.argv, sys.argv[:1]  # the arguments are passed explicitly, as resolved above
        try:
            cli = _build_cli_class()(spec, method, args, config_dir or DEFAULT_CONFIG_DIR)
        finally:
            sys.argv = program
        results = method.run(cli.context())
    except NB360Error as err:
        print(f"nb360: error: {one_line(err)}", file=sys.stderr)
        return err.exit_code
    except argparse.ArgumentError as err:
        lines = [line.strip() for line in str(err).splitlines() if line.strip()]
        detail = [line for line in lines[1:] if line.startswith(("Given value:", "Expected "))]
        print(f"nb360: error: {' '.join(lines[:1] + detail)}; see train.py --help", file=sys.stderr)
        return UsageError.exit_code
    value, where = results["value"], Path(results.get("run_dir", cli.run_dir)) / "results.json"
    score = f"{results['split']} {results['metric']} = {value:.6g}" if value is not None else "no validation score"
    print(f"{results['task']} / {results['method']} / seed {results['seed']}: {score}  ->  {where}")
    return 0
