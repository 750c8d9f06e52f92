"""SQLAlchemy 2 models: the workbench's state. Schema changes go through Alembic migrations."""

from __future__ import annotations

import datetime as dt
from typing import Any, List, Optional

from sqlalchemy import (JSON, Boolean, CheckConstraint, DateTime, Float, ForeignKey, Index,
                        Integer, String, Text, UniqueConstraint)
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column, relationship


def utcnow() -> dt.datetime:
    return dt.datetime.now(dt.timezone.utc).replace(tzinfo=None)


class Base(DeclarativeBase):
    pass


SITE_ROLES = ("user", "admin")
PROJECT_ROLES = ("viewer", "operator", "contributor", "admin")  # weakest first
TEAM_ROLES = ("member", "admin")
VISIBILITIES = ("private", "team", "public")


class User(Base):
    __tablename__ = "users"
    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    username: Mapped[str] = mapped_column(String(64), unique=True, index=True)
    email: Mapped[str] = mapped_column(String(255), default="")
    full_name: Mapped[str] = mapped_column(String(255), default="")
    password_hash: Mapped[Optional[str]] = mapped_column(String(255), nullable=True)
    auth_source: Mapped[str] = mapped_column(String(16), default="local")  # local | ldap
    is_admin: Mapped[bool] = mapped_column(Boolean, default=False)
    is_active: Mapped[bool] = mapped_column(Boolean, default=True)
    failed_logins: Mapped[int] = mapped_column(Integer, default=0)
    locked_until: Mapped[Optional[dt.datetime]] = mapped_column(DateTime, nullable=True)
    created_at: Mapped[dt.datetime] = mapped_column(DateTime, default=utcnow)
    last_login_at: Mapped[Optional[dt.datetime]] = mapped_column(DateTime, nullable=True)


class SigninFailure(Base):
    """A counter of failed sign-ins for one name, one client address or one pair of both
    (security/signin_throttle.py holds the rules). Kept for names that are no account too."""
    __tablename__ = "signin_failures"
    key: Mapped[str] = mapped_column(String(400), primary_key=True)
    failures: Mapped[int] = mapped_column(Integer, default=0)
    first_failure_at: Mapped[dt.datetime] = mapped_column(DateTime, index=True)
    last_failure_at: Mapped[dt.datetime] = mapped_column(DateTime)


class WebSession(Base):
    """A browser sign-in. Only a hash of the cookie value is stored."""
    __tablename__ = "web_sessions"
    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    token_hash: Mapped[str] = mapped_column(String(64), unique=True, index=True)
    csrf_token: Mapped[str] = mapped_column(String(64))
    user_id: Mapped[int] = mapped_column(ForeignKey("users.id", ondelete="CASCADE"), index=True)
    created_at: Mapped[dt.datetime] = mapped_column(DateTime, default=utcnow)
    expires_at: Mapped[dt.datetime] = mapped_column(DateTime)
    user: Mapped[User] = relationship()


class ApiKey(Base):
    """A long-lived credential for scripts, used as a Bearer token. Stored hashed."""
    __tablename__ = "api_keys"
    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    user_id: Mapped[int] = mapped_column(ForeignKey("users.id", ondelete="CASCADE"), index=True)
    name: Mapped[str] = mapped_column(String(100))
    prefix: Mapped[str] = mapped_column(String(16), index=True)
    key_hash: Mapped[str] = mapped_column(String(64), unique=True)
    scope: Mapped[str] = mapped_column(String(16), default="write")  # read | write | mlflow
    created_at: Mapped[dt.datetime] = mapped_column(DateTime, default=utcnow)
    expires_at: Mapped[dt.datetime] = mapped_column(DateTime)
    last_used_at: Mapped[Optional[dt.datetime]] = mapped_column(DateTime, nullable=True)
    revoked_at: Mapped[Optional[dt.datetime]] = mapped_column(DateTime, nullable=True)
    user: Mapped[User] = relationship()
    __table_args__ = (UniqueConstraint("user_id", "name", name="uq_api_key_name"),)


class Team(Base):
    __tablename__ = "teams"
    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    name: Mapped[str] = mapped_column(String(64), unique=True, index=True)
    description: Mapped[str] = mapped_column(Text, default="")
    created_at: Mapped[dt.datetime] = mapped_column(DateTime, default=utcnow)
    members: Mapped[List["TeamMember"]] = relationship(cascade="all, delete-orphan",
                                                       back_populates="team")


class TeamMember(Base):
    __tablename__ = "team_members"
    team_id: Mapped[int] = mapped_column(ForeignKey("teams.id", ondelete="CASCADE"),
                                         primary_key=True)
    user_id: Mapped[int] = mapped_column(ForeignKey("users.id", ondelete="CASCADE"),
                                         primary_key=True)
    role: Mapped[str] = mapped_column(String(16), default="member")
    team: Mapped[Team] = relationship(back_populates="members")
    user: Mapped[User] = relationship()


class Project(Base):
    __tablename__ = "projects"
    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    name: Mapped[str] = mapped_column(String(100))
    slug: Mapped[str] = mapped_column(String(100))
    description: Mapped[str] = mapped_column(Text, default="")
    owner_user_id: Mapped[Optional[int]] = mapped_column(
        ForeignKey("users.id", ondelete="RESTRICT"), nullable=True, index=True)
    owner_team_id: Mapped[Optional[int]] = mapped_column(
        ForeignKey("teams.id", ondelete="RESTRICT"), nullable=True, index=True)
    # one namespace per owner: "u:<id>" or "t:<id>", so (namespace, slug) is unique
    namespace: Mapped[str] = mapped_column(String(32))
    visibility: Mapped[str] = mapped_column(String(16), default="private")
    default_engine_image_id: Mapped[Optional[int]] = mapped_column(
        ForeignKey("engine_images.id", ondelete="SET NULL"), nullable=True)
    # the project's home cluster (clusters/); NULL: the default cluster
    cluster_id: Mapped[Optional[int]] = mapped_column(
        ForeignKey("clusters.id", ondelete="RESTRICT"), nullable=True, index=True)
    created_at: Mapped[dt.datetime] = mapped_column(DateTime, default=utcnow)
    updated_at: Mapped[dt.datetime] = mapped_column(DateTime, default=utcnow, onupdate=utcnow)
    owner_user: Mapped[Optional[User]] = relationship(foreign_keys=[owner_user_id])
    owner_team: Mapped[Optional[Team]] = relationship(foreign_keys=[owner_team_id])
    collaborators: Mapped[List["Collaborator"]] = relationship(cascade="all, delete-orphan",
                                                               back_populates="project")
    __table_args__ = (
        UniqueConstraint("namespace", "slug", name="uq_project_namespace_slug"),
        CheckConstraint("(owner_user_id IS NULL) <> (owner_team_id IS NULL)",
                        name="ck_project_one_owner"),
        # the project list's order (newest change first): read in index order, no sort
        Index("ix_projects_updated_at_id", "updated_at", "id"),
    )

    @property
    def owner_name(self) -> str:
        if self.owner_team is not None:
            return self.owner_team.name
        return self.owner_user.username if self.owner_user else ""


class Cluster(Base):
    """A Hadoop cluster work runs next to (cdsw_agent/clusters holds the rules): its gateway
    nodes carry the swarm node label cdsw.cluster=NAME. The default cluster is the one a
    single-cluster workbench always had; its nodes are every node no other cluster claims."""
    __tablename__ = "clusters"
    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    name: Mapped[str] = mapped_column(String(32), unique=True)
    kind: Mapped[str] = mapped_column(String(16), default="dev")  # dev | test | prod | default
    description: Mapped[str] = mapped_column(Text, default="")
    is_default: Mapped[bool] = mapped_column(Boolean, default=False)
    requires_grant: Mapped[bool] = mapped_column(Boolean, default=True)
    client_config_dir: Mapped[str] = mapped_column(String(1024), default="")  # "" = the site's
    krb5_conf: Mapped[str] = mapped_column(String(1024), default="")  # "" = the site's
    java_home: Mapped[str] = mapped_column(String(1024), default="")  # "" = the site's
    created_at: Mapped[dt.datetime] = mapped_column(DateTime, default=utcnow)


class ClusterGrant(Base):
    """Who may run work on a cluster that requires a grant: one user, or every member of a team."""
    __tablename__ = "cluster_grants"
    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    cluster_id: Mapped[int] = mapped_column(ForeignKey("clusters.id", ondelete="CASCADE"),
                                            index=True)
    user_id: Mapped[Optional[int]] = mapped_column(
        ForeignKey("users.id", ondelete="CASCADE"), nullable=True)
    team_id: Mapped[Optional[int]] = mapped_column(
        ForeignKey("teams.id", ondelete="CASCADE"), nullable=True)
    grantee: Mapped[str] = mapped_column(String(32))  # "u:<id>" or "t:<id>": unique per cluster
    created_at: Mapped[dt.datetime] = mapped_column(DateTime, default=utcnow)
    __table_args__ = (UniqueConstraint("cluster_id", "grantee", name="uq_cluster_grant"),
                      CheckConstraint("(user_id IS NULL) <> (team_id IS NULL)",
                                      name="ck_cluster_grant_one_grantee"))


class ClusterNode(Base):
    """What a CDSW_WORKER host last told the master (join, heartbeats, leave), kept in the
    database: a report reaching any master process is seen by all, and survives a restart."""
    __tablename__ = "cluster_nodes"
    hostname: Mapped[str] = mapped_column(String(253), primary_key=True)
    report: Mapped[Any] = mapped_column(JSON, default=dict)  # the fields of cluster.nodes()
    updated_at: Mapped[dt.datetime] = mapped_column(DateTime, default=utcnow, onupdate=utcnow)


class Collaborator(Base):
    __tablename__ = "collaborators"
    project_id: Mapped[int] = mapped_column(ForeignKey("projects.id", ondelete="CASCADE"),
                                            primary_key=True)
    user_id: Mapped[int] = mapped_column(ForeignKey("users.id", ondelete="CASCADE"),
                                         primary_key=True)
    role: Mapped[str] = mapped_column(String(16))
    project: Mapped[Project] = relationship(back_populates="collaborators")
    user: Mapped[User] = relationship()


class EngineImage(Base):
    __tablename__ = "engine_images"
    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    repository: Mapped[str] = mapped_column(String(255))
    tag: Mapped[str] = mapped_column(String(128))
    description: Mapped[str] = mapped_column(Text, default="")
    kernels: Mapped[Any] = mapped_column(JSON, default=list)  # ["python3", "ir", ...]
    editors: Mapped[Any] = mapped_column(JSON, default=list)  # ["workbench", "jupyterlab"]
    is_default: Mapped[bool] = mapped_column(Boolean, default=False)
    created_at: Mapped[dt.datetime] = mapped_column(DateTime, default=utcnow)
    __table_args__ = (UniqueConstraint("repository", "tag", name="uq_engine_image_ref"),)


class EngineProfile(Base):
    __tablename__ = "engine_profiles"
    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    name: Mapped[str] = mapped_column(String(64), unique=True)
    cpu: Mapped[float] = mapped_column(Float)
    memory_gb: Mapped[float] = mapped_column(Float)
    gpus: Mapped[int] = mapped_column(Integer, default=0)
    created_at: Mapped[dt.datetime] = mapped_column(DateTime, default=utcnow)


class EnvVar(Base):
    """An environment variable given to engines, site-wide or for one project."""
    __tablename__ = "env_vars"
    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    project_id: Mapped[Optional[int]] = mapped_column(
        ForeignKey("projects.id", ondelete="CASCADE"), nullable=True, index=True)
    name: Mapped[str] = mapped_column(String(128))
    value: Mapped[str] = mapped_column(Text)
    secret: Mapped[bool] = mapped_column(Boolean, default=False)
    # "site" or "p:<id>": keeps (scope, name) unique on every database (NULLs are not equal)
    scope: Mapped[str] = mapped_column(String(32))
    __table_args__ = (UniqueConstraint("scope", "name", name="uq_env_var_scope_name"),)


class SiteSetting(Base):
    __tablename__ = "site_settings"
    key: Mapped[str] = mapped_column(String(64), primary_key=True)
    value: Mapped[Any] = mapped_column(JSON)


class AuditEvent(Base):
    __tablename__ = "audit_events"
    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    at: Mapped[dt.datetime] = mapped_column(DateTime, default=utcnow, index=True)
    actor_id: Mapped[Optional[int]] = mapped_column(Integer, nullable=True)
    actor: Mapped[str] = mapped_column(String(64), default="")
    action: Mapped[str] = mapped_column(String(64), index=True)
    target: Mapped[str] = mapped_column(String(255), default="")
    detail: Mapped[Any] = mapped_column(JSON, default=dict)
    ip: Mapped[str] = mapped_column(String(64), default="")
