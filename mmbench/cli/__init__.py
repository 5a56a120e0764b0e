"""The ``mmbench`` command line. Each command group lives in its own module and imports heavy
libraries (torch, mlflow) only inside its commands, so ``mmbench --help`` and ``mmbench ls`` are fast."""

from __future__ import annotations

import importlib
import os

import click

# name -> "module:attribute" of a click command or group
_COMMANDS = {
    "data": "mmbench.cli.data:data",
    "classifier": "mmbench.cli.classifier:classifier",
    "ls": "mmbench.cli.ls:ls",
    "validate": "mmbench.cli.harness:validate",
    "run": "mmbench.cli.harness:run",
    "report": "mmbench.cli.harness:report",
    "ui": "mmbench.cli.harness:ui",
}


class LazyGroup(click.Group):
    def list_commands(self, ctx: click.Context) -> list[str]:
        return sorted(_COMMANDS)

    def get_command(self, ctx: click.Context, cmd_name: str) -> click.Command | None:
        target = _COMMANDS.get(cmd_name)
        if target is None:
            return None
        module_name, _, attr = target.partition(":")
        try:
            module = importlib.import_module(module_name)
        except ModuleNotFoundError as exc:
            if exc.name == module_name:
                return None
            raise
        return getattr(module, attr)

    def resolve_command(self, ctx: click.Context, args: list[str]):  # type: ignore[override]
        name = args[0] if args else None
        if name and name not in _COMMANDS and not name.startswith("-"):
            from mmbench.config import did_you_mean

            raise click.UsageError(f"no command {name!r}.{did_you_mean(name, _COMMANDS)}", ctx)
        return super().resolve_command(ctx, args)


@click.group(cls=LazyGroup)
@click.version_option(package_name="mmbench")
def main() -> None:
    """mmbench: train multimodal generative models and score them with one metric pipeline."""
    os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")
    _check_home()


def _check_home() -> None:
    """A set ``MMBENCH_HOME`` that names a file fails every command at once, with the fix (not a traceback)."""
    value = os.environ.get("MMBENCH_HOME")
    if value and os.path.exists(os.path.expanduser(value)) and not os.path.isdir(os.path.expanduser(value)):
        raise click.ClickException(f"MMBENCH_HOME={value} is a file, not a folder; point MMBENCH_HOME at a folder "
                                   "(it is created if missing)")
