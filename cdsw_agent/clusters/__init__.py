"""Several Hadoop clusters behind one workbench.

A cluster (store.models.Cluster) is a name (DEV, PROD, ...), a kind, its gateway nodes, its
client-configuration bundles, its krb5.conf and JAVA_HOME, and who may run work on it. The
rules, once:

- a worker host belongs to exactly one cluster: its worker role labels its swarm node
  ``cdsw.cluster=NAME`` (setting ``workbench_cluster``); a node without the label belongs to the
  default cluster, the one a single-cluster workbench always had;
- a project has a home cluster (NULL: the default) and every engine of it (session, job run,
  experiment, model replica) runs only on that cluster's nodes, with that cluster's client
  configuration; while the default is the only cluster nothing is constrained, as before;
- a cluster that requires a grant runs work only for site administrators, users granted it,
  and members of teams granted it (the default cluster requires none).
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Dict, List, Optional, Sequence, Tuple

from sqlalchemy import or_, select
from sqlalchemy.orm import Session
from sqlalchemy.sql import Select

from ..errors import UserError
from ..settings import Settings
from ..store.models import Cluster, ClusterGrant, Project, Team, TeamMember, User

NODE_LABEL = "cdsw.cluster"  # swarm node label naming a worker host's cluster
KINDS = ("dev", "test", "prod", "default")
NAME_RE = re.compile(r"^[A-Za-z][A-Za-z0-9_-]{0,31}$")

# a placement constraint: (node label, "==" or "!=", value); see placement()
Constraint = Tuple[str, str, str]


def check_name(name: str) -> str:
    if not NAME_RE.match(name or ""):
        raise UserError("cluster name %r: use a letter then letters, digits, '-' or '_' (at "
                        "most 32), e.g. DEV or PROD" % name)
    return name


def default_cluster(db: Session) -> Cluster:
    cluster = db.scalars(select(Cluster).where(Cluster.is_default.is_(True))
                         .order_by(Cluster.id)).first()
    if cluster is None:  # only a database emptied by hand has none: make it again
        cluster = Cluster(name="default", kind="default", is_default=True,
                          requires_grant=False,
                          description="The cluster this workbench was installed with.")
        db.add(cluster)
        db.flush()
    return cluster


def of_node(db: Session, label: str) -> Cluster:
    """The cluster whose work a node takes, by its label (its worker's workbench_cluster): the
    cluster of that name, else the default one, as placement() reads the labels."""
    cluster = db.scalars(select(Cluster).where(Cluster.name == label)).first() if label else None
    return cluster or default_cluster(db)


def home_ids(db: Session, among: Select) -> Dict[int, int]:
    """project id -> the id of its home cluster (cluster_of, for the projects whose ids the
    statement `among` selects, at once)."""
    default = default_cluster(db).id
    known = set(db.scalars(select(Cluster.id)))
    return {pid: cid if cid in known else default for pid, cid in db.execute(
        select(Project.id, Project.cluster_id).where(Project.id.in_(among)))}


def all_clusters(db: Session) -> List[Cluster]:
    return list(db.scalars(select(Cluster).order_by(Cluster.is_default.desc(), Cluster.name)))


def by_name(db: Session, name: str) -> Cluster:
    cluster = db.scalars(select(Cluster).where(Cluster.name == name)).first()
    if cluster is None:
        raise UserError("no cluster named %s; `cdsw clusters list` shows them" % name)
    return cluster


def cluster_of(db: Session, project: Project) -> Cluster:
    """The project's home cluster."""
    if project.cluster_id is not None:
        cluster = db.get(Cluster, project.cluster_id)
        if cluster is not None:
            return cluster
    return default_cluster(db)


def register(db: Session, name: str, kind: str = "dev", description: str = "",
             client_config_dir: str = "", krb5_conf: str = "", java_home: str = "",
             requires_grant: bool = True) -> Cluster:
    check_name(name)
    if kind not in KINDS or kind == "default":
        raise UserError("cluster kind %r: choose one of dev, test, prod" % kind)
    for label, path in (("client configuration directory", client_config_dir),
                        ("krb5.conf", krb5_conf), ("JAVA_HOME", java_home)):
        if path and not path.startswith("/"):
            raise UserError("%s %r must be an absolute path on the gateway hosts" % (label, path))
    if db.scalars(select(Cluster.id).where(Cluster.name == name)).first() is not None:
        raise UserError("a cluster named %s already exists; choose another name" % name)
    default_cluster(db)  # registered first, so it stays the default
    cluster = Cluster(name=name, kind=kind, description=description, is_default=False,
                      requires_grant=requires_grant, client_config_dir=client_config_dir,
                      krb5_conf=krb5_conf, java_home=java_home)
    db.add(cluster)
    db.flush()
    return cluster


def remove(db: Session, cluster: Cluster) -> None:
    if cluster.is_default:
        raise UserError("the default cluster cannot be removed")
    if db.scalars(select(Project.id).where(Project.cluster_id == cluster.id)).first():
        raise UserError("cluster %s is the home of projects; move or delete them first"
                        % cluster.name)
    db.delete(cluster)


# --- grants ------------------------------------------------------------------------------------

def grant(db: Session, cluster: Cluster, user: Optional[User] = None,
          team: Optional[Team] = None) -> ClusterGrant:
    if (user is None) == (team is None):
        raise UserError("grant a cluster to one user or one team")
    grantee = "u:%d" % user.id if user is not None else "t:%d" % team.id  # type: ignore[union-attr]
    existing = db.scalars(select(ClusterGrant).where(ClusterGrant.cluster_id == cluster.id,
                                                     ClusterGrant.grantee == grantee)).first()
    if existing is not None:
        return existing
    row = ClusterGrant(cluster_id=cluster.id, user_id=user.id if user else None,
                       team_id=team.id if team else None, grantee=grantee)
    db.add(row)
    db.flush()
    return row


def revoke(db: Session, cluster: Cluster, user: Optional[User] = None,
           team: Optional[Team] = None) -> bool:
    grantee = "u:%d" % user.id if user is not None else "t:%d" % team.id  # type: ignore[union-attr]
    row = db.scalars(select(ClusterGrant).where(ClusterGrant.cluster_id == cluster.id,
                                                ClusterGrant.grantee == grantee)).first()
    if row is None:
        return False
    db.delete(row)
    return True


def has_grant(db: Session, user: Optional[User], cluster: Cluster) -> bool:
    """Whether user may run work on cluster (the rule in the module docstring)."""
    if not cluster.requires_grant:
        return True
    if user is None:
        return False
    if user.is_admin:
        return True
    teams = select(TeamMember.team_id).where(TeamMember.user_id == user.id)
    return db.scalars(select(ClusterGrant.id).where(
        ClusterGrant.cluster_id == cluster.id,
        or_(ClusterGrant.user_id == user.id, ClusterGrant.team_id.in_(teams)))).first() is not None


def grantees(db: Session, cluster: Cluster) -> List[Tuple[int, str]]:
    """(grant id, 'user NAME' or 'team NAME') for every grant on the cluster."""
    out: List[Tuple[int, str]] = []
    for g in db.scalars(select(ClusterGrant).where(ClusterGrant.cluster_id == cluster.id)
                        .order_by(ClusterGrant.id)):
        if g.user_id is not None:
            u = db.get(User, g.user_id)
            out.append((g.id, "user %s" % (u.username if u else g.user_id)))
        else:
            t = db.get(Team, g.team_id)
            out.append((g.id, "team %s" % (t.name if t else g.team_id)))
    return out


# --- placement ---------------------------------------------------------------------------------

def placement(db: Session, cluster: Cluster) -> List[Constraint]:
    """Where the cluster's engines may run, as node-label constraints: nothing while it is the
    only cluster; else its own label, or (the default cluster) no other cluster's label."""
    others = [c.name for c in all_clusters(db) if c.id != cluster.id]
    if not others:
        return []
    if not cluster.is_default:
        return [(NODE_LABEL, "==", cluster.name)]
    return [(NODE_LABEL, "!=", name) for name in sorted(others)]


def node_matches(labels: Dict[str, str], constraints: Sequence[Constraint]) -> bool:
    """The constraints as the swarm reads them: a missing label equals nothing."""
    for label, op, value in constraints:
        equal = labels.get(label) == value
        if equal != (op == "=="):
            return False
    return True


def bundles_root(settings: Settings, cluster: Cluster) -> Path:
    """Where the cluster's client-configuration bundles live (`cdsw client-config collect
    --cluster NAME` writes them): the cluster's own directory, the site's for the default
    cluster, else DATA_DIR/clusters/NAME/client-config."""
    from ..clientconfig import bundles_dir

    if cluster.client_config_dir:
        return Path(cluster.client_config_dir)
    if cluster.is_default:
        return bundles_dir(settings)
    return Path(settings.data_dir) / "clusters" / cluster.name / "client-config"
