"""Models: a project file and function served as a REST endpoint.

builds.py makes a build (an image on swarm, a snapshot directory on the local backend);
replicas.py describes a replica workload; service.py supervises deployments (launching,
health, rolling replacement, scaling, stopping, re-adoption after a master restart);
router.py answers POST /model: checks the access key and balances over the ready replicas;
signing.py holds the site's bundle signing key; bundles.py exports a build as a signed, self-
contained edge bundle, verifies one, and starts it on a plain Docker engine.
"""
