"""`cdsw images`: build, list and move engine images."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any, Callable, Optional

import click

from ..errors import UserError
from .context import CliContext, pass_ctx


def _docker_option(f: Callable) -> Callable:
    return click.option("--docker-host", metavar="URL",
                        help="Docker daemon to use (default: the docker_host setting).")(f)


def _client(ctx: CliContext, docker_host: Optional[str]) -> Any:
    from ..images import connect

    return connect(docker_host or ctx.settings.docker_host)


def _cache_dir(ctx: CliContext, cache_dir: Optional[str]) -> Path:
    return Path(cache_dir) if cache_dir else Path(ctx.settings.data_dir) / "images-cache"


def _registry(ctx: CliContext) -> str:
    registry = ctx.settings.engine_registry
    if not registry:
        raise UserError("no engine registry is configured; set engine_registry (cdsw.engine.registry), "
                        "or move images with `cdsw images export` / `cdsw images import`")
    return registry


@click.group("images")
def command() -> None:
    """Build, list and distribute engine images."""


@command.command("build")
@click.option("--with-r", is_flag=True, help="Add R (r-base-core) and the IRkernel Jupyter kernel.")
@click.option("--with-scala", is_flag=True,
              help="Add the Scala kernel (it runs on the cluster's Spark and Java).")
@click.option("--with-jupyterlab", is_flag=True, help="Add JupyterLab as an editor.")
@click.option("--mirror", metavar="URL",
              help="Debian mirror for debootstrap (default: engine_debian_mirror, else the one apt uses).")
@click.option("--cache-dir", type=click.Path(file_okay=False), metavar="DIR",
              help="Where root file systems, wheels and logs are cached (default DATA_DIR/images-cache).")
@click.option("--work-dir", type=click.Path(file_okay=False), metavar="DIR",
              help="Where image trees are assembled (default: /dev/shm when it has room, else the cache).")
@click.option("--rebuild", is_flag=True, help="Build even when an image with the same content exists.")
@click.option("--keep-work", is_flag=True, help="Keep the assembled tree in the cache for inspection.")
@click.option("--push", "push", is_flag=True, help="Push the image to engine_registry afterwards.")
@click.option("--json", "as_json", is_flag=True, help="Print the result as JSON on the last line.")
@_docker_option
@pass_ctx
def build(ctx: CliContext, with_r: bool, with_scala: bool, with_jupyterlab: bool, mirror: Optional[str],
          cache_dir: Optional[str], work_dir: Optional[str], rebuild: bool, keep_work: bool,
          push: bool, as_json: bool, docker_host: Optional[str]) -> None:
    """Build the engine image from scratch (or reuse it when nothing changed)."""
    from ..images import Progress, Recipe, build_image, push_image

    registry = _registry(ctx) if push else ""
    client = _client(ctx, docker_host)
    progress = Progress(lambda line: click.echo(line, err=as_json))
    recipe = Recipe(with_r=with_r, with_scala=with_scala, with_jupyterlab=with_jupyterlab)
    result = build_image(client, recipe,
                         _cache_dir(ctx, cache_dir), progress, mirror=mirror or "",
                         mirror_setting=ctx.settings.engine_debian_mirror,
                         rebuild=rebuild, keep_work=keep_work,
                         work_dir=Path(work_dir) if work_dir else None,
                         proxies={"http_proxy": ctx.settings.http_proxy,
                                  "https_proxy": ctx.settings.https_proxy,
                                  "no_proxy": ctx.settings.no_proxy})
    remote = ""
    if push:
        with progress.step("push", "to %s" % registry):
            remote = push_image(client, result.image, registry)
    if as_json:
        click.echo(json.dumps({"image": result.image, "alias": result.alias, "id": result.image_id,
                               "content_sha256": result.content_sha256, "cache_hit": result.cache_hit,
                               "seconds": round(result.seconds, 1), "pushed": remote or None}))
    else:
        click.echo("%s %s (also %s)%s" % ("reused" if result.cache_hit else "built", result.image,
                                          result.alias, "; pushed " + remote if remote else ""))


@command.command("list")
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
@_docker_option
@pass_ctx
def list_cmd(ctx: CliContext, as_json: bool, docker_host: Optional[str]) -> None:
    """Show the engine images Docker holds."""
    from ..images.catalog import human_age, human_size, list_engine_images

    rows = list_engine_images(_client(ctx, docker_host))
    if as_json:
        click.echo(json.dumps([r.as_dict() for r in rows], indent=2))
        return
    if not rows:
        click.echo("no engine images; build one with `cdsw images build`")
        return
    table = [("REPOSITORY", "TAG", "IMAGE ID", "SIZE", "CREATED", "KERNELS", "EDITORS")]
    for r in rows:
        table.append((r.repository, r.tag, r.image_id.split(":")[-1][:12], human_size(r.size),
                      human_age(r.created), ",".join(r.kernels), ",".join(r.editors)))
    widths = [max(len(row[i]) for row in table) for i in range(len(table[0]))]
    for row in table:
        click.echo("  ".join(cell.ljust(w) for cell, w in zip(row, widths)).rstrip())


@command.command("export")
@click.argument("ref", default="cdsw/engine:latest")
@click.option("--out", "out", required=True, metavar="FILE",
              help="Archive to write (`-` for stdout); FILE.sha256 is written beside it.")
@_docker_option
@pass_ctx
def export_cmd(ctx: CliContext, ref: str, out: str, docker_host: Optional[str]) -> None:
    """Save an engine image to a file with its sha256 checksum (docker save)."""
    from ..images import save_image

    client = _client(ctx, docker_host)
    if out == "-":
        saved = save_image(client, ref, sys.stdout.buffer)
        click.echo("sha256 %s" % saved.sha256, err=True)
        return
    saved = save_image(client, ref, Path(out))
    click.echo("%s: %s, %.1f MB, sha256 %s" % (saved.path, ref, saved.size / 1e6, saved.sha256))


@command.command("import")
@click.argument("archive", metavar="FILE")
@click.option("--sha256", metavar="HEX", help="Expected checksum (default: read FILE.sha256).")
@_docker_option
@pass_ctx
def import_cmd(ctx: CliContext, archive: str, sha256: Optional[str], docker_host: Optional[str]) -> None:
    """Load an engine image saved by `cdsw images export`, after checking its sha256."""
    from ..images import load_image

    client = _client(ctx, docker_host)
    source: Any = sys.stdin.buffer if archive == "-" else Path(archive)
    for ref in load_image(client, source, sha256=sha256):
        click.echo("loaded %s" % ref)


@command.command("push")
@click.argument("ref", default="cdsw/engine:latest")
@_docker_option
@pass_ctx
def push_cmd(ctx: CliContext, ref: str, docker_host: Optional[str]) -> None:
    """Push an engine image to the configured engine_registry (under its content tag)."""
    from ..images import push_image
    from ..images.transfer import content_tag_of

    registry = _registry(ctx)
    client = _client(ctx, docker_host)
    click.echo("pushed %s" % push_image(client, content_tag_of(client, ref), registry))


@command.command("pull")
@click.argument("tag")
@_docker_option
@pass_ctx
def pull_cmd(ctx: CliContext, tag: str, docker_host: Optional[str]) -> None:
    """Pull cdsw/engine:TAG from the configured engine_registry."""
    from ..images import pull_image

    registry = _registry(ctx)
    click.echo("pulled %s" % pull_image(_client(ctx, docker_host), tag, registry))
