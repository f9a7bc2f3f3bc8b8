"""``netspec data``: the built-in datasets (list, check, download a copy)."""

from __future__ import annotations

import click

from ..data import mnist
from .options import friendly


@click.group("data")
def command():
    """Built-in datasets: where they are, and how to fetch MNIST elsewhere."""


@command.command("info")
@friendly
def info():
    """Show the built-in datasets and verify their checksums."""
    for split in ("train", "test"):
        x, y = mnist.load_mnist(split)
        click.echo(f"builtin:mnist split={split}: {x.shape[0]} images {x.shape[1:]} uint8, "
                   f"labels 0-9 (SHA-256 verified) in {mnist.BUILTIN_DIR}")


@command.command("download")
@click.argument("name", type=click.Choice(["mnist"]))
@click.argument("folder", type=click.Path(file_okay=False))
@click.option("--mirror", "mirrors", multiple=True, help="Base URL to try first (repeatable).")
@friendly
def download(name, folder, mirrors):
    """Download NAME's files into FOLDER (checksums verified); use FOLDER as a Data `source`."""
    path = mnist.download(folder, tuple(mirrors) + mnist.MIRRORS)
    click.echo(f"MNIST in {path}: point a Data layer at it with `source: {path}`")
