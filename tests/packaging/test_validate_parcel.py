"""The parcel validator refuses parcels and manifests Cloudera Manager would refuse."""

from __future__ import annotations

import hashlib
import json

import pytest

from . import helpers  # noqa: F401

import parcel as parcel_mod  # noqa: E402
from pkgcommon import tar_gz_bytes  # noqa: E402
from validate_parcel import validate_manifest, validate_parcel  # noqa: E402

ENV = b'CDSW_DIRNAME=${PARCEL_DIRNAME:-"CDSW-1.0"}\nexport CDSW_HOME=$PARCELS_ROOT/$CDSW_DIRNAME\n'


def _entries(meta=None, top="CDSW-1.0/", env=ENV):
    meta = parcel_mod.parcel_json("1.0") if meta is None else meta
    return {top + "meta/parcel.json": (json.dumps(meta).encode(), False),
            top + "meta/cdsw_env.sh": (env, True),
            top + "bin/cdsw": (b"#!/bin/sh\n", True)}


def _write(tmp_path, entries, name="CDSW-1.0-el9.parcel"):
    path = tmp_path / name
    path.write_bytes(tar_gz_bytes(entries, 315532800))
    return path


def test_minimal_parcel_is_valid(tmp_path):
    assert validate_parcel(_write(tmp_path, _entries())) == []


def test_top_directory_must_match_name_and_version(tmp_path):
    entries = _entries()
    entries["stray.txt"] = (b"x", False)
    problems = validate_parcel(_write(tmp_path, entries))
    assert problems == ["CDSW-1.0-el9.parcel: stray.txt: is outside the only allowed "
                        "top-level directory CDSW-1.0/"]


def test_parcel_json_rules(tmp_path):
    meta = parcel_mod.parcel_json("1.0")
    meta["schema_version"] = 2
    meta["Name"] = "x"
    meta["scripts"] = {"defines": "cdsw_env.sh", "postinstall": "x.sh"}
    del meta["users"]
    problems = validate_parcel(_write(tmp_path, _entries(meta)))
    where = "CDSW-1.0-el9.parcel!meta/parcel.json"
    assert "%s: schema_version: must be 1" % where in problems
    assert "%s: Name: unknown field (parcel.json is always parsed strictly)" % where in problems
    assert "%s: users: is required" % where in problems
    assert any(p.startswith(where + ": scripts: must be exactly") for p in problems)


def test_name_with_dash_and_version_mismatch(tmp_path):
    meta = parcel_mod.parcel_json("1.1")
    meta["name"] = "CD-SW"
    problems = validate_parcel(_write(tmp_path, _entries(meta)))
    assert any("name: must not contain '-'" in p for p in problems)
    assert any("version: '1.1' differs from the file name's '1.0'" in p for p in problems)


def test_defines_script_must_not_exit_and_must_parse(tmp_path):
    problems = validate_parcel(_write(tmp_path, _entries(env=ENV + b"exit 0\n")))
    assert problems == ["CDSW-1.0-el9.parcel!meta/cdsw_env.sh: (script): a defines script is "
                        "sourced: it must not exit or return"]
    problems = validate_parcel(_write(tmp_path, _entries(env=b"if then\n")))
    assert len(problems) == 1 and "bash syntax error" in problems[0]


def test_missing_defines_file_and_bad_file_name(tmp_path):
    entries = _entries()
    del entries["CDSW-1.0/meta/cdsw_env.sh"]
    problems = validate_parcel(_write(tmp_path, entries))
    assert problems == ["CDSW-1.0-el9.parcel!meta/parcel.json: scripts.defines: "
                        "meta/cdsw_env.sh is not in the parcel"]
    assert validate_parcel(_write(tmp_path, _entries(), "CDSW.parcel")) == [
        "CDSW.parcel: file name: must be NAME-VERSION-DISTRO.parcel"]


def test_build_machine_paths_are_refused(tmp_path):
    entries = _entries()
    entries["CDSW-1.0/lib/paths.txt"] = (b"/home/builder/src/cdsw\n", False)
    problems = validate_parcel(_write(tmp_path, entries), build_root="/home/builder/src")
    assert problems == ["CDSW-1.0-el9.parcel: CDSW-1.0/lib/paths.txt: contains the build "
                        "machine path /home/builder/src"]


@pytest.fixture()
def repo(tmp_path):
    parcel = _write(tmp_path, _entries())
    digest = hashlib.sha1(parcel.read_bytes()).hexdigest()
    manifest = {"lastUpdated": 1, "parcels": [{"parcelName": parcel.name, "hash": digest,
                                                "components": []}]}
    (tmp_path / "manifest.json").write_text(json.dumps(manifest))
    return tmp_path, manifest


def test_manifest_hash_must_match(repo):
    path, manifest = repo
    assert validate_manifest(path / "manifest.json") == []
    manifest["parcels"][0]["hash"] = "0" * 40
    (path / "manifest.json").write_text(json.dumps(manifest))
    problems = validate_manifest(path / "manifest.json")
    assert len(problems) == 1
    assert problems[0].startswith("manifest.json: parcels[0].hash: 0000")
    assert "does not match CDSW-1.0-el9.parcel's SHA-1" in problems[0]


def test_manifest_must_list_every_parcel_and_have_last_updated(repo):
    path, manifest = repo
    _write(path, _entries(), "CDSW-1.0-el8.parcel")
    del manifest["lastUpdated"]
    (path / "manifest.json").write_text(json.dumps(manifest))
    problems = validate_manifest(path / "manifest.json")
    assert "manifest.json: lastUpdated: is required: milliseconds since 1970 as an integer" in problems
    assert ("manifest.json: parcels: CDSW-1.0-el8.parcel is in the repository but not listed"
            in problems)
