"""`cdsw hosts`: add worker gateway hosts over SSH, list the swarm's nodes, remove a host.

ssh.py runs commands on the remote through the system OpenSSH client (host keys checked
against known_hosts); install.py renders what goes there (settings, units, shell steps) as
plain text, so it is unit-tested without a remote; nodes.py is the master's side (swarm nodes,
heartbeats, drain).
"""
