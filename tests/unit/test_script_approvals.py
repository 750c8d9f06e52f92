"""Which proxied engine calls count as a JupyterLab save of a whole file, and the bytes such a
save writes (server/script_approvals.py), checked against jupyter_server's own contents manager
writing the same bodies."""

from __future__ import annotations

import asyncio
import base64
import json
from pathlib import Path
from typing import Any, Dict

import pytest
from jupyter_server.services.contents.largefilemanager import AsyncLargeFileManager

from cdsw_agent.server.script_approvals import saved_bytes, saved_script


@pytest.mark.parametrize("method,path,expected", [
    ("PUT", "api/contents/nightly.py", "nightly.py"),
    ("PUT", "api/contents/./jobs//etl.py", "jobs/etl.py"),
    ("PUT", "api/contents/../other/x.py", None),
    ("PUT", "api/contents//jobs/etl.py", None),  # absolute: nothing is approved
    ("PATCH", "api/contents/nightly.py", None),  # a rename
    ("POST", "api/contents/nightly.py", None),  # a copy or a new untitled file
    ("PUT", "api/sessions/nightly.py", None),
    ("PUT", "files/nightly.py", None),
])
def test_only_a_contents_put_is_a_save(method: str, path: str, expected: Any) -> None:
    assert saved_script(method, path) == expected


@pytest.mark.parametrize("model", [
    {"type": "file", "format": "text", "content": "print('é')\r\nx = 1\n"},
    {"type": "file", "format": "base64",
     "content": base64.b64encode(b"\x00\xffbinary\n").decode()},
])
def test_the_saved_bytes_are_what_jupyter_server_writes(tmp_path: Path,
                                                        model: Dict[str, Any]) -> None:
    manager = AsyncLargeFileManager(root_dir=str(tmp_path))
    asyncio.run(manager.save(dict(model), "saved.txt"))
    assert saved_bytes(json.dumps(model).encode()) == (tmp_path / "saved.txt").read_bytes()


@pytest.mark.parametrize("body", [
    b"not json", b"[]", json.dumps({"type": "notebook", "content": {"cells": []}}).encode(),
    json.dumps({"type": "directory"}).encode(),
    json.dumps({"type": "file", "format": "text", "content": "part", "chunk": 1}).encode(),
    json.dumps({"type": "file", "format": "text", "content": 5}).encode(),
    json.dumps({"type": "file", "content": "no format"}).encode(),
    json.dumps({"type": "file", "format": "base64", "content": "é!"}).encode(),
])
def test_anything_but_a_whole_file_approves_nothing(body: bytes) -> None:
    assert saved_bytes(body) is None
