"""./build.sh's artifacts: names from the one version, expected contents, valid, and
byte-identical when built twice from the same sources."""

from __future__ import annotations

import hashlib
import json
import shutil
import struct
import subprocess
import tarfile
import zipfile
import zlib


from .helpers import ROOT

import build_packages  # noqa: E402
import pkgcommon  # noqa: E402
from validate_mpack import validate_mpack  # noqa: E402
from validate_parcel import validate_manifest, validate_parcel  # noqa: E402


def _names(version):
    return sorted(["CDSW-%s.jar" % version, "manifest.json", "cdsw-ambari-mpack-%s.tar.gz" % version]
                  + ["CDSW-%s-%s.parcel%s" % (version, d, s) for d in ("el8", "el9", "jammy")
                     for s in ("", ".sha1")])


def test_version_carries_a_build_number_that_grows_with_every_commit(version, build_number,
                                                                    monkeypatch, tmp_path):
    """RELEASE.BUILD: the build number is the commit count (CDSW_BUILD_NUMBER where there is
    no git), so the parcel, CSD, mpack and wheel of a newer commit are newer versions."""
    assert version == "%s.%d" % (pkgcommon.base_version(), build_number)
    assert pkgcommon.parse_version(version)[-1] == build_number
    monkeypatch.delenv("CDSW_BUILD_NUMBER")
    count = subprocess.run(["git", "-C", str(ROOT), "rev-list", "--count", "HEAD"],
                           capture_output=True, text=True).stdout.strip()
    if count.isdigit():  # a git checkout (CI's clean clone is one)
        assert pkgcommon.build_number() >= int(count)
        repo = tmp_path / "repo"
        git = ["git", "-C", str(repo), "-c", "user.name=t", "-c", "user.email=t@e"]
        subprocess.run(["git", "init", "-q", str(repo)], check=True)
        numbers = []
        for i in range(3):
            subprocess.run(git + ["commit", "-q", "--allow-empty", "-m", str(i)], check=True)
            numbers.append(pkgcommon.build_number(repo))
        assert numbers == [1, 2, 3]
    monkeypatch.setenv("CDSW_BUILD_NUMBER", "41")
    assert pkgcommon.version().endswith(".41")
    assert pkgcommon.parse_version("0.1.0.41") < pkgcommon.parse_version("0.1.0.100")
    monkeypatch.setenv("CDSW_BUILD_NUMBER", "4a")
    try:
        pkgcommon.build_number()
        raise AssertionError("a bad CDSW_BUILD_NUMBER must be refused")
    except pkgcommon.BuildError as e:
        assert "CDSW_BUILD_NUMBER='4a': expected a whole number" in str(e)


def test_build_makes_every_artifact_from_the_one_version(dist, version):
    assert sorted(p.name for p in dist.iterdir()) == _names(version)


def test_csd_jar_layout_and_icon(dist, version):
    with zipfile.ZipFile(dist / ("CDSW-%s.jar" % version)) as zf:
        files = sorted(n for n in zf.namelist() if not n.endswith("/"))
        sdl = json.loads(zf.read("descriptor/service.sdl"))
        icon = zf.read("images/icon.png")
        control = zf.getinfo("scripts/control.sh")
    assert files == ["aux/README.txt", "descriptor/service.mdl", "descriptor/service.sdl",
                     "images/icon.png", "scripts/control.sh"]
    assert sdl["version"] == version and sdl["name"] == "CDSW"
    assert "(CSD %s)" % version in zf_text(dist / ("CDSW-%s.jar" % version), "scripts/control.sh")
    assert (control.external_attr >> 16) & 0o111, "control.sh must be executable"
    # a real PNG: signature, IHDR 32x32 RGBA, and image data that inflates to 32 rows
    assert icon[:8] == b"\x89PNG\r\n\x1a\n"
    width, height, depth, colour = struct.unpack(">IIBB", icon[16:26])
    assert (width, height, depth, colour) == (32, 32, 8, 6)
    idat_len = struct.unpack(">I", icon[33:37])[0]
    assert len(zlib.decompress(icon[41:41 + idat_len])) == 32 * (1 + 32 * 4)


def test_parcels_manifest_and_mpack_pass_their_validators(dist, version):
    for distro in ("el8", "el9", "jammy"):
        parcel = dist / ("CDSW-%s-%s.parcel" % (version, distro))
        assert validate_parcel(parcel, build_root=str(ROOT)) == []
        sha1 = (dist / (parcel.name + ".sha1")).read_text().split()[0]
        assert sha1 == hashlib.sha1(parcel.read_bytes()).hexdigest()
    assert validate_manifest(dist / "manifest.json") == []
    manifest = json.loads((dist / "manifest.json").read_text())
    assert [p["parcelName"] for p in manifest["parcels"]] == [
        "CDSW-%s-%s.parcel" % (version, d) for d in ("el8", "el9", "jammy")]
    assert all(p["components"][0]["version"] == version for p in manifest["parcels"])
    assert validate_mpack(dist / ("cdsw-ambari-mpack-%s.tar.gz" % version)) == []
    with tarfile.open(dist / ("cdsw-ambari-mpack-%s.tar.gz" % version)) as tar:
        mpack = json.loads(tar.extractfile("cdsw-ambari-mpack-%s/mpack.json" % version).read())
    assert mpack["version"] == version


def test_parcel_carries_a_wheelhouse_per_cpython_and_the_launcher(dist, version):
    top = "CDSW-%s/" % version
    for distro, pythons in (("el8", ["3.12", "3.11", "3.9"]), ("jammy", ["3.10"])):
        with tarfile.open(dist / ("CDSW-%s-%s.parcel" % (version, distro))) as tar:
            names = tar.getnames()
            info = json.loads(tar.extractfile(top + "lib/cdsw/BUILD.json").read())
            launcher = tar.getmember(top + "bin/cdsw")
            env = tar.extractfile(top + "meta/cdsw_env.sh").read().decode()
        assert info["pythons"] == pythons and info["platform"] == "manylinux2014_x86_64"
        wheels = [n.rsplit("/", 1)[1] for n in names if n.endswith(".whl")]
        assert "cdsw_agent-%s-py3-none-any.whl" % version in wheels
        for pyver in pythons:  # a compiled dependency for each CPython it claims
            tag = "cp" + pyver.replace(".", "")
            assert any(w.startswith("pydantic_core-") and "-%s-" % tag in w for w in wheels), pyver
        assert launcher.mode & 0o111
        assert all(n == top.rstrip("/") or n.startswith(top) for n in names)
        assert 'export CDSW_HOME="${PARCELS_ROOT:-/opt/cloudera/parcels}/$CDSW_DIRNAME"' in env


def test_archives_are_normalised(dist, version, epoch):
    with tarfile.open(dist / ("cdsw-ambari-mpack-%s.tar.gz" % version)) as tar:
        members = tar.getmembers()
    assert {(m.uid, m.gid, m.mtime) for m in members} == {(0, 0, epoch)}
    assert [m.name for m in members if m.isdir()] == sorted(m.name for m in members if m.isdir())
    raw = (dist / ("CDSW-%s-el8.parcel" % version)).read_bytes()
    assert raw[4:8] == b"\0\0\0\0", "gzip header mtime must be 0"


def test_second_build_is_byte_identical(dist, tmp_path, cache_dir, agent_sources):
    """Same sources, same SOURCE_DATE_EPOCH (pinned by the epoch fixture) -> same bytes. The
    agent wheel is rebuilt from scratch (fresh wheel cache) to show it is reproducible too."""
    again = tmp_path / "again"
    fresh = tmp_path / "cache"
    shutil.copytree(cache_dir / "deps", fresh / "deps")  # downloads reused, nothing else
    shutil.copytree(cache_dir / "buildenv", fresh / "buildenv", symlinks=True)
    build_packages.build(again, fresh, list(build_packages.PARTS), agent_sources)
    first = {p.name: p.read_bytes() for p in dist.iterdir()}
    second = {p.name: p.read_bytes() for p in again.iterdir()}
    assert sorted(first) == sorted(second)
    differing = [n for n in first if first[n] != second[n]]
    assert differing == []


def test_build_sh_refuses_a_broken_descriptor_with_the_reason(tmp_path):
    """build.sh validates what it built: a descriptor template that breaks CM's rules stops it."""
    work = tmp_path / "tree"
    for rel in ("csd", "parcel", "ambari-mpack", "scripts/packaging", "cdsw_agent/settings",
                "cdsw_agent/__init__.py", "build.sh"):
        src = ROOT / rel
        dst = work / rel
        dst.parent.mkdir(parents=True, exist_ok=True)
        if src.is_dir():
            shutil.copytree(src, dst, ignore=shutil.ignore_patterns("__pycache__"))
        else:
            dst.write_bytes(src.read_bytes())
            dst.chmod(src.stat().st_mode)
    (work / "cdsw_agent" / "settings" / "__init__.py").write_text("")
    sdl_in = work / "csd" / "descriptor" / "service.sdl.in"
    sdl = json.loads(sdl_in.read_text())
    sdl["serviceInit"]["preStartSteps"][0]["commandName"] = "CdswMissing"
    sdl_in.write_text(json.dumps(sdl))
    proc = subprocess.run(["bash", str(work / "build.sh"), "--only", "csd", "--out",
                           str(tmp_path / "out")], capture_output=True, text=True,
                          env={"PATH": "/usr/bin:/bin", "PYTHON": _python(),
                               "CDSW_BUILD_NUMBER": "7"})
    assert proc.returncode == 1
    assert "CDSW-" in proc.stderr and "is invalid" in proc.stderr
    assert ("descriptor/service.sdl: serviceInit.preStartSteps[0].commandName: refers to "
            "unknown service command 'CdswMissing'") in proc.stderr


def zf_text(jar, name) -> str:
    with zipfile.ZipFile(jar) as zf:
        return zf.read(name).decode()


def _python() -> str:
    import sys
    return sys.executable


