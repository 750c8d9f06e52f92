"""`cdsw models`: edge bundles of built models (models/bundles.py).

`export` and `signing-key` run on the master (its database, its Docker, its signing key);
`verify` and `run-bundle` run anywhere, on a host with no workbench, given the site's public key.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any, Optional

import click

from ..errors import UserError
from .context import CliContext, pass_ctx

PLAIN_DOCKER = "unix:///var/run/docker.sock"


def _trusted_key(ctx: CliContext, key_file: Optional[str]) -> Any:
    from ..models import signing

    try:
        if key_file:
            try:
                data = Path(key_file).read_bytes()
            except OSError as e:
                raise UserError("cannot read the key %s: %s" % (key_file, e.strerror or e))
            return signing.load_public(data, key_file)
        site = signing.key_path(ctx.settings)
        if site.is_file():  # on the master: its own key
            return signing.load_public(site.read_bytes(), str(site))
    except signing.SigningKeyError as e:
        raise UserError(str(e))
    raise UserError("no trusted key: pass --key FILE, the site's public key (`cdsw models "
                    "signing-key` on the master prints it)")


@click.group("models")
def command() -> None:
    """Export built models as signed edge bundles, verify and run them."""


@command.command("export")
@click.argument("model", metavar="MODEL_ID|NAME")
@click.option("--build", "build_id", type=int, metavar="N",
              help="The build to export (default: the model's latest successful build).")
@click.option("-o", "--out", "out", required=True, type=click.Path(dir_okay=False),
              metavar="FILE", help="Bundle file to write.")
@click.option("--docker-host", metavar="URL",
              help="The master's Docker (default: the docker_host setting).")
@pass_ctx
def export_cmd(ctx: CliContext, model: str, build_id: Optional[int], out: str,
               docker_host: Optional[str]) -> None:
    """Write a model's build as a signed bundle that runs on a plain Docker engine."""
    from ..images import connect
    from ..models import bundles

    client = connect(docker_host or ctx.settings.docker_host, timeout=600)
    db = ctx.database()
    try:
        with db.session() as s:
            bundles.export(s, ctx.settings, client, model, build_id, Path(out),
                           write=lambda line: click.echo(line, err=True))
    except bundles.BundleError as e:
        raise UserError(str(e))
    finally:
        db.engine.dispose()
    click.echo(out)


@command.command("verify")
@click.argument("bundle", metavar="FILE", type=click.Path(dir_okay=False))
@click.option("--key", "key_file", metavar="PEM",
              help="The site's public key (default: this master's own key).")
@click.option("--json", "as_json", is_flag=True, help="Print the bundle's manifest as JSON.")
@pass_ctx
def verify_cmd(ctx: CliContext, bundle: str, key_file: Optional[str], as_json: bool) -> None:
    """Check a bundle's signature and that not a byte of it changed."""
    from ..models import bundles

    key = _trusted_key(ctx, key_file)
    try:
        manifest = bundles.verify(Path(bundle), key)
    except bundles.BundleError as e:
        raise UserError(str(e))
    if as_json:
        click.echo(json.dumps(manifest, indent=1, sort_keys=True))
        return
    click.echo("%s: model %s, build %s, image %s, signed by %s: OK" % (
        bundle, manifest["model"]["name"], manifest["build"]["id"], manifest["image"]["ref"],
        manifest["signed_by"]))


@command.command("run-bundle")
@click.argument("bundle", metavar="FILE", type=click.Path(dir_okay=False))
@click.option("--key", "key_file", metavar="PEM",
              help="The site's public key (default: this master's own key).")
@click.option("--port", type=click.IntRange(1, 65535), default=8080, show_default=True,
              help="Host port the model answers on.")
@click.option("--name", metavar="NAME", help="Container name.")
@click.option("--access-key", metavar="KEY", envvar="CDSW_MODEL_ACCESS_KEY",
              help="Callers must send this key (default: none, the endpoint is open).")
@click.option("--docker-host", metavar="URL",
              help="Docker to run on (default: DOCKER_HOST, else %s)." % PLAIN_DOCKER)
@pass_ctx
def run_bundle_cmd(ctx: CliContext, bundle: str, key_file: Optional[str], port: int,
                   name: Optional[str], access_key: Optional[str],
                   docker_host: Optional[str]) -> None:
    """Verify a bundle, load it into Docker and start it (no workbench needed)."""
    from ..images import connect
    from ..models import bundles

    key = _trusted_key(ctx, key_file)
    try:
        verified = bundles.verify(Path(bundle), key)  # refuse before touching Docker
        client = connect(docker_host or os.environ.get("DOCKER_HOST") or PLAIN_DOCKER,
                         timeout=600)
        manifest, container = bundles.run(Path(bundle), key, client, port=port, name=name,
                                          access_key=access_key or "", verified=verified)
    except bundles.BundleError as e:
        raise UserError(str(e))
    click.echo("model %s (build %s) started in container %s on port %d: POST /model, "
               "POST /v2/models/%s/infer" % (manifest["model"]["name"], manifest["build"]["id"],
                                             container.name, port, manifest["model"]["name"]))


@command.command("signing-key")
@pass_ctx
def signing_key_cmd(ctx: CliContext) -> None:
    """Print the site's public key for bundles (PEM), made on first use."""
    from ..models import signing

    key = signing.site_key(ctx.settings)
    click.echo(signing.public_pem(key), nl=False)
    click.echo("fingerprint %s" % signing.fingerprint(key), err=True)
