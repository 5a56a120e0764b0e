"""The ``mmbench`` command line. Each command group lives in its own module and imports heavy
libraries (torch, mlflow) only inside its commands, so ``mmbench --help`` and ``mmbench ls`` are fast."""

from __future__ import annotations

import os

import click

from mmbench.plugins import Registry

# name -> "module:attribute" of a click command or group (imported when the command is asked for; its
# docstring is its help)
COMMANDS: Registry[click.Command] = Registry("command", expects=click.Command)
COMMANDS.register("data", "mmbench.cli.data:data")
COMMANDS.register("classifier", "mmbench.cli.classifier:classifier")
COMMANDS.register("ls", "mmbench.cli.ls:ls")
COMMANDS.register("validate", "mmbench.cli.harness:validate")
COMMANDS.register("run", "mmbench.cli.harness:run")
COMMANDS.register("report", "mmbench.cli.harness:report")
COMMANDS.register("ui", "mmbench.cli.harness:ui")
COMMANDS.register("eval", "mmbench.cli.evaluate:evaluate")
COMMANDS.register("store", "mmbench.cli.store:store")


class LazyGroup(click.Group):
    def list_commands(self, ctx: click.Context) -> list[str]:
        return sorted(COMMANDS.names())

    def get_command(self, ctx: click.Context, cmd_name: str) -> click.Command | None:
        if cmd_name not in COMMANDS:
            return None
        try:
            return COMMANDS.resolve(cmd_name)
        except ModuleNotFoundError as exc:
            if exc.name == COMMANDS.entry(cmd_name).target.partition(":")[0]:
                return None
            raise

    def resolve_command(self, ctx: click.Context, args: list[str]):  # type: ignore[override]
        name = args[0] if args else None
        if name and name not in COMMANDS and not name.startswith("-"):
            from mmbench.config import did_you_mean

            raise click.UsageError(f"no command {name!r}.{did_you_mean(name, COMMANDS.names())}", ctx)
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
