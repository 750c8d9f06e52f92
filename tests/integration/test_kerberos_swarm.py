"""Per-user Kerberos on the swarm backend (issue 12): tickets from a real MIT KDC, obtained by
the master, reach engine containers only as their own user's cache, mounted read-only.

alice's and bob's sessions run on h1 (a network namespace with its own dockerd and swarm).
Inside each, KRB5CCNAME names a cache whose default principal is that user's; the directory
holds nothing else, cannot be written, and the other user's cache is nowhere in the container.
The engine image carries no Kerberos client, so the cache file is read with a few lines of
Python (the MIT ccache format's header).
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Dict, Iterator

import pytest

from cdsw_agent.images import transfer
from cdsw_agent.kerberos import tickets

from .docker_fixtures import docker_engine, engine_image, engine_image_build  # noqa: F401
from .kdc import start_kdc
from .netns import Lab, available
from .test_sessions_swarm import SwarmMaster, swarm_master

pytestmark = [pytest.mark.docker, pytest.mark.timeout(900)]

PASSWORDS = {"alice": "alice-Krb-pw1", "bob": "bob-Krb-pw2"}

READ_CACHE = r'''
import os, struct
path = os.environ["KRB5CCNAME"].split(":", 1)[1]
data = open(path, "rb").read()
assert data[0] == 5 and data[1] == 4, data[:2]  # MIT ccache version 4
at = 4 + struct.unpack(">H", data[2:4])[0]
name_type, count = struct.unpack(">II", data[at:at + 8]); at += 8
def counted():
    global at
    n = struct.unpack(">I", data[at:at + 4])[0]; at += 4
    value = data[at:at + n].decode(); at += n
    return value
realm = counted()
parts = [counted() for _ in range(count)]
folder = os.path.dirname(path)
try:
    open(os.path.join(folder, "x"), "w")
    writable = "yes"
except OSError as e:
    writable = "no: %s" % e.strerror
print("principal=%s@%s listing=%s writable=%s" % ("/".join(parts), realm,
      sorted(os.listdir(folder)), writable))
print("other=%s" % os.path.exists(OTHER))
'''


@pytest.fixture(scope="module")
def master(engine_image: str, docker_engine: Any,  # noqa: F811
           tmp_path_factory: pytest.TempPathFactory) -> Iterator[Dict[str, Any]]:
    reason = available()
    if reason:
        pytest.skip(reason)
    root = tmp_path_factory.mktemp("krbswarm")
    kdc = start_kdc(root / "kdc")
    try:
        for name, password in PASSWORDS.items():
            kdc.add_principal(name, password)
        saved = transfer.save_image(docker_engine.client, engine_image, root / "engine.tar")
        with Lab(Path("/var/lib/cdsw-lab") / ("krb-" + os.urandom(3).hex())) as lab:
            m = swarm_master(lab, saved.path, engine_image, root / "data",
                             kerberos_enabled=True, krb5_conf=str(kdc.krb5_conf))
            try:
                yield {"m": m, "kdc": kdc}
            finally:
                from cdsw_agent.sessions.monitor import manager_for

                orch = manager_for(m.api.client.app.state.server).orchestrator
                for ref in orch.list():
                    orch.remove(ref.id)
                m.api.db.engine.dispose()
    finally:
        kdc.stop()


def test_each_swarm_engine_holds_only_its_users_ticket_read_only(master: Dict[str, Any]) -> None:
    m: SwarmMaster = master["m"]
    api = m.api
    users = {name: api.user(name) for name in PASSWORDS}
    clients = {name: api.key_client(u) for name, u in users.items()}
    for name, user in users.items():
        r = m.client.put("/api/v1/projects/%d/collaborators/%d" % (m.project_id, user.id),
                         json={"role": "contributor"})
        assert r.status_code == 200, r.text
        r = clients[name].put("/api/v1/account/kerberos",
                              data={"principal": name, "password": PASSWORDS[name]})
        assert r.status_code == 200, r.text
    sessions = {}
    for name in PASSWORDS:
        r = clients[name].post("/api/v1/projects/%d/sessions" % m.project_id, json={})
        assert r.status_code == 201, r.text
        sessions[name] = r.json()["id"]
    for name, sid in sessions.items():
        other = "bob" if name == "alice" else "alice"
        other_cache = str(tickets.cache_file(api.settings, users[other].id))
        running = m.wait(sid, "running", "failed")
        assert running["status"] == "running", running
        with clients[name].stream("POST", "/api/v1/sessions/%d/execute" % sid,
                                  json={"code": "OTHER = %r\n" % other_cache + READ_CACHE}) as r:
            assert r.status_code == 200, r.read()
            text = "".join(__import__("json").loads(line).get("text", "")
                           for line in r.iter_lines() if line)
        assert ("principal=%s@CDSW.TEST listing=['krb5cc'] writable=no: Read-only file system"
                % name) in text, text
        assert "other=False" in text, text
