"""Every permission decision, in one place.

Routes never check roles themselves: they declare an action with
``access: Access = require("project.files.write")`` and receive the loaded
project (or team) once the caller is allowed. The rules:

- site roles: ``admin`` may do everything except act inside someone else's
  engine session (that rule lives with sessions);
- project roles, weakest first: viewer < operator < contributor < admin;
  the owning user, and the owning team's admins, are project admins; the
  owning team's members are contributors; collaborators have their role;
  public projects give every signed-in user viewer;
- a project the caller cannot see answers 404, never 403, so private
  projects are not revealed; one the caller can see but not change answers 403;
- only the project's owner (the owning user, or an administrator of the owning team) or a site
  administrator may transfer it; an Admin collaborator may not (they could take the project
  from its owner, or push it into anyone's namespace);
- an engine session acts only as its launcher: its metadata is visible to the project's
  viewers, but only its owner, and users the owner shared it with (view: read the console;
  interactive: execute too), may attach to it; collaborators and site admins included. The
  owner and project admins may stop it; only the owner shares it, and only while the site
  allows sharing (site setting session_sharing_allowed, off by default with Kerberos): when it
  does not, existing shares give no access either;
- API keys with the ``read`` scope may only read (WebSockets count as writing); the key an
  engine gets for MLflow tracking (scope ``mlflow``) reaches the MLflow API only;
- Prometheus may scrape /metrics anonymously from loopback only;
- the MLflow tracking API (/mlflow) needs a signed-in caller; what it reaches is a project's,
  reached through an experiment or run id: viewers read, contributors write, and a project the
  caller cannot see answers 404 (project_access). MLflow's searches are POSTs that only read,
  so read-scoped API keys may make them;
- a deployed model is called with its access key (POST /model): the key in the body is the
  permission, no sign-in; the model router checks it against the stored digests before any
  replica is reached;
- clusters (cdsw_agent/clusters): running work on a project (sessions, job runs) also needs a
  grant on the project's home cluster (site administrators, granted users, members of granted
  teams; the default cluster is open to all); every engine is refused without it too;
- promotions: a Contributor of the source project requests one (and must see the target); the
  review (approve, reject) and the rollback belong to the target project: they need the
  Contributor role there and a grant on its cluster, and the requester never approves or
  rejects their own request, site administrators included.
"""

from __future__ import annotations

import functools
import inspect
import ipaddress
from dataclasses import dataclass
from typing import Any, Callable, Dict, Iterator, Optional, Sequence

from fastapi import Depends, Request, WebSocket, WebSocketException
from fastapi.routing import APIRoute, APIRouter
from sqlalchemy import and_, exists, false, or_, select
from sqlalchemy.orm import Session
from sqlalchemy.sql import Select
from starlette.concurrency import run_in_threadpool

from ..security import tokens
from ..store.models import PROJECT_ROLES, Collaborator, Project, Team, TeamMember, User
from ..store.sessions_models import EngineSession, SessionShare
from .auth import SAFE_METHODS, Caller, current_caller
from .deps import get_db
from .errors import ApiError


@dataclass(frozen=True)
class Rule:
    kind: str  # public | signed_in | site_admin | site_admin_or_loopback | project |
    #            project_owner | team | session | signed_in_read | promotion
    min_role: str = ""  # project: one of PROJECT_ROLES; team: member | admin; session: SESSION_LEVELS
    on_cluster: bool = False  # project: the caller also needs a grant on the project's cluster
    not_requester: bool = False  # promotion: the requester may not


# what an engine's MLflow tracking key (scope tokens.MLFLOW_SCOPE) may do: nothing else of its
# user's
MLFLOW_ACTIONS = frozenset(("mlflow.read", "mlflow.write"))

# action -> rule. Adding a route means adding (or reusing) an action here.
RULES: Dict[str, Rule] = {
    "public": Rule("public"),
    "signed_in": Rule("signed_in"),
    "account.own": Rule("signed_in"),  # one's own account (Hadoop Authentication)
    "site.admin": Rule("site_admin"),
    "metrics.read": Rule("site_admin_or_loopback"),
    "project.read": Rule("project", "viewer"),
    "project.files.read": Rule("project", "viewer"),
    "project.files.write": Rule("project", "contributor"),
    "project.env.read": Rule("project", "contributor"),
    "project.run": Rule("project", "operator", on_cluster=True),
    "project.promote": Rule("project", "contributor"),
    "promotion.read": Rule("promotion", "viewer"),
    "promotion.review": Rule("promotion", "contributor", on_cluster=True, not_requester=True),
    "promotion.rollback": Rule("promotion", "contributor", on_cluster=True),
    "project.admin": Rule("project", "admin"),
    "project.transfer": Rule("project_owner", "admin"),
    "team.read": Rule("team", "none"),
    "team.admin": Rule("team", "admin"),
    "model.call": Rule("model_access_key"),
    # the project rule is applied to the object reached (project_access)
    "mlflow.read": Rule("signed_in_read"),
    "mlflow.write": Rule("signed_in"),
    "session.read": Rule("session", "metadata"),
    "session.view": Rule("session", "view"),
    "session.use": Rule("session", "interactive"),
    "session.stop": Rule("session", "stop"),
    "session.share": Rule("session", "owner"),
}
# session rule levels: metadata (project viewer), view / interactive (owner or a share of at
# least that mode), stop (owner or project admin), owner (the launcher only)
SESSION_LEVELS = ("metadata", "view", "interactive", "stop", "owner")


@dataclass
class Access:
    caller: Caller
    project: Optional[Project] = None
    project_role: Optional[str] = None
    team: Optional[Team] = None
    engine_session: Optional[Any] = None  # EngineSession, for session rules
    promotion: Optional[Any] = None  # Promotion, for promotion rules

    @property
    def user(self) -> User:
        assert self.caller.user is not None
        return self.caller.user


def role_rank(role: Optional[str]) -> int:
    return PROJECT_ROLES.index(role) + 1 if role in PROJECT_ROLES else 0


def team_role(db: Session, user: User, team_id: int) -> Optional[str]:
    member = db.get(TeamMember, (team_id, user.id))
    return member.role if member else None


def role_from_facts(user: User, owner_user_id: Optional[int], owner_team_id: Optional[int],
                    visibility: str, team_role_: Optional[str],
                    collaborator_role: Optional[str]) -> Optional[str]:
    """The role rule itself, from the project's owner and visibility, the user's role in the
    owning team and as a collaborator."""
    if user.is_admin or owner_user_id == user.id:
        return "admin"
    candidates = [collaborator_role]
    if owner_team_id is not None:
        candidates.append({"admin": "admin", "member": "contributor"}.get(team_role_ or ""))
    if visibility == "public":
        candidates.append("viewer")
    best = max(candidates, key=role_rank)
    return best if role_rank(best) else None


def project_role(db: Session, user: Optional[User], project: Project) -> Optional[str]:
    """The caller's effective role on a project, or None when it may not even see it."""
    if user is None:
        return None
    t_role = team_role(db, user, project.owner_team_id) if project.owner_team_id else None
    collab = db.get(Collaborator, (project.id, user.id))
    return role_from_facts(user, project.owner_user_id, project.owner_team_id,
                           project.visibility, t_role, collab.role if collab else None)


def project_roles(db: Session, user: User, projects: Sequence[Project]) -> Dict[int, Optional[str]]:
    """project_role for many projects in two queries (for listings)."""
    ids = [p.id for p in projects]
    teams = dict(db.execute(select(TeamMember.team_id, TeamMember.role)
                            .where(TeamMember.user_id == user.id)).all())
    collabs = dict(db.execute(select(Collaborator.project_id, Collaborator.role)
                              .where(Collaborator.user_id == user.id,
                                     Collaborator.project_id.in_(ids))).all()) if ids else {}
    return {p.id: role_from_facts(user, p.owner_user_id, p.owner_team_id, p.visibility,
                                  teams.get(p.owner_team_id), collabs.get(p.id))
            for p in projects}


def role_facts(user_id: Any) -> tuple:
    """The two facts of project_role that live in other tables, as columns for a query over
    Project: the user's role in the owning team (`team_role`) and as a collaborator
    (`collaborator_role`). A listing selects them with its rows and gets each row's role from
    role_from_facts, in its one query instead of two more (project_roles). user_id: the id, or
    a bind parameter for a statement built once."""
    team = select(TeamMember.role).where(TeamMember.team_id == Project.owner_team_id,
                                         TeamMember.user_id == user_id)
    collaborator = select(Collaborator.role).where(Collaborator.project_id == Project.id,
                                                   Collaborator.user_id == user_id)
    return (team.correlate(Project).scalar_subquery().label("team_role"),
            collaborator.correlate(Project).scalar_subquery().label("collaborator_role"))


def visible_projects(user: User) -> Select:
    """The projects a user can see, as one query (the same rule as project_role)."""
    return visible_projects_of(user.is_admin, user.id)


def visible_projects_of(is_admin: bool, user_id: Any) -> Select:
    """visible_projects for a user known by is_admin and id (or a bind parameter for the id,
    for a statement built once)."""
    q = select(Project)
    if is_admin:
        return q
    in_owner_team = exists().where(and_(TeamMember.team_id == Project.owner_team_id,
                                        TeamMember.user_id == user_id))
    is_collaborator = exists().where(and_(Collaborator.project_id == Project.id,
                                          Collaborator.user_id == user_id))
    return q.where(or_(Project.owner_user_id == user_id, in_owner_team, is_collaborator,
                       Project.visibility == "public", false()))


def _from_loopback(request: Request) -> bool:
    host = request.client.host if request.client else ""
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def _path_int(request: Request, name: str, what: str) -> int:
    raw = request.path_params.get(name)
    try:
        value = int(raw)  # type: ignore[arg-type]
    except (TypeError, ValueError):
        raise ApiError(404, "%s not found" % what)
    if value < 1 or value > 2**62:
        raise ApiError(404, "%s not found" % what)
    return value


def decide(action: str, caller: Caller, request: Request, db: Session) -> Access:
    rule = RULES[action]
    if rule.kind in ("public", "model_access_key"):
        return Access(caller)
    if rule.kind == "site_admin_or_loopback":
        if _from_loopback(request):
            return Access(caller)
        if not caller.signed_in:
            raise ApiError(401, "anonymous access is open to loopback only; send a site "
                                "administrator's API key as 'Authorization: Bearer <key>'")
    if not caller.signed_in:
        raise ApiError(401, "sign in first, or send an API key as 'Authorization: Bearer <key>'")
    if caller.scope == tokens.MLFLOW_SCOPE and action not in MLFLOW_ACTIONS:
        raise ApiError(403, "this key is an engine's MLflow tracking token: it reaches the "
                            "MLflow API (/mlflow) only")
    if rule.kind == "signed_in_read":  # reads whatever the method (MLflow's POST searches)
        return Access(caller)
    if caller.scope == "read" and getattr(request, "method", "WEBSOCKET") not in SAFE_METHODS:
        raise ApiError(403, "this API key has the read scope; create a key with the write scope")
    user = caller.user
    assert user is not None
    if rule.kind == "signed_in":
        return Access(caller)
    if rule.kind in ("site_admin", "site_admin_or_loopback"):
        if not user.is_admin:
            raise ApiError(403, "only site administrators may do this")
        return Access(caller)
    if rule.kind in ("project", "project_owner"):
        project = db.get(Project, _path_int(request, "project_id", "project"))
        role = project_role(db, user, project) if project is not None else None
        if project is None or role is None:
            raise ApiError(404, "project not found")
        if role_rank(role) < role_rank(rule.min_role):
            raise ApiError(403, "this needs the %s role on the project; you are %s"
                           % (rule.min_role, role))
        if rule.kind == "project_owner" and not is_project_owner(db, user, project):
            raise ApiError(403, "only the project's owner or a site administrator may do this; "
                                "you are an admin collaborator, ask the owner")
        if rule.on_cluster:
            check_cluster_grant(db, user, project)
        return Access(caller, project=project, project_role=role)
    if rule.kind == "promotion":
        return _promotion_access(db, caller, request, user, rule)
    if rule.kind == "team":
        team = db.get(Team, _path_int(request, "team_id", "team"))
        if team is None:
            raise ApiError(404, "team not found")
        if rule.min_role == "admin" and not user.is_admin \
                and team_role(db, user, team.id) != "admin":
            raise ApiError(403, "only the team's administrators may do this")
        return Access(caller, team=team)
    if rule.kind == "session":
        return _session_access(db, caller, request, user, rule.min_role)
    raise AssertionError("unknown rule kind %s" % rule.kind)


def project_access(db: Session, user: User, project: Project, min_role: str) -> str:
    """The project rule for a project reached through an object (an MLflow experiment or run)
    rather than the path: the caller's role, ApiError 404 when it may not see the project,
    403 when its role is weaker than min_role."""
    role = project_role(db, user, project)
    if role is None:
        raise ApiError(404, "not found")
    if role_rank(role) < role_rank(min_role):
        raise ApiError(403, "this needs the %s role on project %s; you are %s"
                       % (min_role, project.slug, role))
    return role


def check_cluster_grant(db: Session, user: User, project: Project) -> None:
    """ApiError 403 unless user may run work on the project's home cluster."""
    from .. import clusters

    check_grant_on(db, user, clusters.cluster_of(db, project),
                   ", where project %s runs" % project.slug)


def check_grant_on(db: Session, user: User, cluster: Any, where: str = "") -> None:
    """ApiError 403 unless user may run work on cluster (a project made there, or moved)."""
    from .. import clusters

    if not clusters.has_grant(db, user, cluster):
        raise ApiError(403, "you have no grant on cluster %s%s; ask a site administrator for "
                            "one" % (cluster.name, where))


def _promotion_access(db: Session, caller: Caller, request: Any, user: User,
                      rule: Rule) -> Access:
    """Promotion routes hang under a project (path project_id): reading needs a role on that
    project, which must be the promotion's source or target; reviewing and rolling back are the
    target's (see the module docstring)."""
    from ..store.promotions_models import Promotion

    project = db.get(Project, _path_int(request, "project_id", "project"))
    role = project_role(db, user, project) if project is not None else None
    if project is None or role is None:
        raise ApiError(404, "project not found")
    promotion = db.get(Promotion, _path_int(request, "promotion_id", "promotion"))
    if promotion is None or project.id not in (promotion.source_project_id,
                                               promotion.target_project_id):
        raise ApiError(404, "promotion not found")
    access = Access(caller, project=project, project_role=role, promotion=promotion)
    if rule.min_role == "viewer":
        return access
    if project.id != promotion.target_project_id:
        raise ApiError(403, "promotion %d is reviewed on its target project %d; open it there"
                       % (promotion.id, promotion.target_project_id))
    if role_rank(role) < role_rank(rule.min_role):
        raise ApiError(403, "this needs the %s role on the target project; you are %s"
                       % (rule.min_role, role))
    check_cluster_grant(db, user, project)
    if rule.not_requester and promotion.requested_by_id == user.id:
        raise ApiError(403, "you requested promotion %d; someone else with a grant on the "
                            "target's cluster must review it" % promotion.id)
    return access


def is_project_owner(db: Session, user: User, project: Project) -> bool:
    """The owning user, an administrator of the owning team, or a site administrator."""
    if user.is_admin or project.owner_user_id == user.id:
        return True
    return project.owner_team_id is not None \
        and team_role(db, user, project.owner_team_id) == "admin"


def sharing_allowed(db: Session, settings: Any) -> bool:
    """Whether owners may lend their sessions (site setting session_sharing_allowed)."""
    from .routes.site_settings import effective  # definitions only; no routes

    return bool(effective(db, settings, "session_sharing_allowed"))


def session_share_mode(db: Session, user: User, session: EngineSession,
                       sharing: bool = True) -> Optional[str]:
    """owner, interactive, view or None: how far this user may reach into the session.
    With `sharing` False (the site forbids sharing) shares count for nothing."""
    if session.user_id == user.id:
        return "owner"
    share = db.get(SessionShare, (session.id, user.id)) if sharing else None
    return share.mode if share is not None else None


def _session_access(db: Session, caller: Caller, request: Any, user: User, level: str) -> Access:
    session = db.get(EngineSession, _path_int(request, "session_id", "session"))
    project = db.get(Project, session.project_id) if session is not None else None
    role = project_role(db, user, project) if project is not None else None
    if session is None or project is None or role is None:
        raise ApiError(404, "session not found")
    access = Access(caller, project=project, project_role=role, engine_session=session)
    if level == "metadata":
        return access
    sharing = True
    if session.user_id != user.id and level in ("view", "interactive"):
        sharing = sharing_allowed(db, request.app.state.server.settings)
    mode = session_share_mode(db, user, session, sharing)
    if not sharing and mode is None and db.get(SessionShare, (session.id, user.id)) is not None:
        raise ApiError(403, "session sharing is turned off on this site (site setting "
                            "session_sharing_allowed); only the session's owner may use it")
    if level == "stop" and (mode == "owner" or role == "admin"):
        return access
    allowed = {"view": ("owner", "interactive", "view"), "interactive": ("owner", "interactive"),
               "stop": (), "owner": ("owner",)}[level]
    if mode in allowed:
        return access
    if level == "interactive" and mode == "view":
        raise ApiError(403, "session %d is shared with you to view only; ask its owner for "
                            "interactive access" % session.id)
    raise ApiError(403, "session %d acts as its owner only: no one else, site administrators "
                        "included, may %s unless the owner shares it"
                   % (session.id, "stop it" if level == "stop" else "change its sharing"
                      if level == "owner" else "use it"))


def require(action: str) -> Callable[..., Access]:
    """A dependency that lets the request through only when `action` is allowed. A `def`
    route of an AuthorizedRoute router gets the decision made in its own worker thread
    instead (Pending)."""
    if action not in RULES:
        raise KeyError("no permission rule named %r" % action)

    def authorize(request: Request, db: Session) -> Access:
        access = decide(action, current_caller(request, db), request, db)
        request.state.permission = action
        return access

    def authorize_and_release(request: Request, db: Session) -> Access:
        access = authorize(request, db)
        # end the read (nothing is pending: current_caller commits its own write) so the
        # connection goes back to the pool while the request waits for a thread to run its
        # route: connections held across that wait, with every worker thread blocked waiting
        # for one, stalled the server at more concurrent calls than pool + threads (issue 14)
        db.commit()
        return access

    async def dependency(request: Request, db: Session = Depends(get_db)) -> Access:
        # who calls, then whether they may: both read the database, in one worker-thread call
        # (as two `def` dependencies they took a thread-pool hop each)
        return await run_in_threadpool(authorize_and_release, request, db)

    # the route goes on in the same thread and transaction: nothing to give back in between
    async def in_route_thread(request: Request, db: Session = Depends(get_db)) -> Pending:
        pending = request.state.pending_permission = Pending(authorize, request, db)
        return pending

    dependency.permission_action = action  # type: ignore[attr-defined]
    in_route_thread.permission_action = action  # type: ignore[attr-defined]
    dependency.in_route_thread = in_route_thread  # type: ignore[attr-defined]
    return Depends(dependency)


class Pending:
    """A `require` decision a `def` route makes first thing in its own worker thread: one
    thread-pool hop per call instead of two (the decision's, then the route's). With 50
    clients the hops' hand-offs and the threads' contention for the interpreter lock cost more
    than the decision itself: one hop answered 25 % more calls (benchmarks/README.md, issue
    14). Nothing else of the request runs before the decision: the route's only other
    dependencies (get_db, get_state) read nothing, and a request whose parameters do not
    validate is decided before its 422 is given (errors.py)."""

    __slots__ = ("authorize", "request", "db", "access")

    def __init__(self, authorize: Callable[[Request, Session], Access], request: Request,
                 db: Session) -> None:
        self.authorize, self.request, self.db = authorize, request, db
        self.access: Optional[Access] = None

    def decide(self, db: Optional[Session] = None) -> Access:
        if self.access is None:
            self.access = self.authorize(self.request, db or self.db)
        return self.access


def decide_in_route_thread(endpoint: Callable[..., Any]) -> Callable[..., Any]:
    """`endpoint` with its `require` parameters decided in its own worker thread (Pending),
    when it is a `def` route; an `async def` route is returned as it is."""
    if inspect.iscoroutinefunction(endpoint) or not inspect.isfunction(endpoint):
        return endpoint
    signature = inspect.signature(endpoint)
    names, parameters = [], []
    for p in signature.parameters.values():
        later = getattr(getattr(p.default, "dependency", None), "in_route_thread", None)
        if later is not None:
            p = p.replace(default=Depends(later))
            names.append(p.name)
        parameters.append(p)
    if not names:
        return endpoint

    @functools.wraps(endpoint)  # FastAPI reads the annotations in endpoint's module
    def decided_first(*args: Any, **kwargs: Any) -> Any:
        for name in names:
            kwargs[name] = kwargs[name].decide()
        return endpoint(*args, **kwargs)

    decided_first.__signature__ = signature.replace(  # type: ignore[attr-defined]
        parameters=parameters)
    return decided_first


class AuthorizedRoute(APIRoute):
    """The route class of every router (api_router): see decide_in_route_thread."""

    def __init__(self, path: str, endpoint: Callable[..., Any], **kwargs: Any) -> None:
        super().__init__(path, decide_in_route_thread(endpoint), **kwargs)


def api_router(**kwargs: Any) -> APIRouter:
    """A router of the app's routes (the API's and the pages'): an APIRouter whose `def`
    routes decide their permission in their own worker thread."""
    return APIRouter(route_class=AuthorizedRoute, **kwargs)


def require_model_key(action: str) -> Callable[..., Access]:
    """`require` for routes whose credential is a deployed model's access key (rule kind
    model_access_key): no sign-in is read, so the key may come as 'Authorization: Bearer' (the
    Open Inference Protocol's way); the route checks it against the model router's keys."""
    if RULES[action].kind not in ("model_access_key", "public"):
        raise KeyError("%r is not an access-key or public rule" % action)

    async def dependency(request: Request) -> Access:  # no I/O: no worker thread
        from .auth import ANONYMOUS

        request.state.permission = action
        return Access(ANONYMOUS)

    dependency.permission_action = action  # type: ignore[attr-defined]
    return Depends(dependency)


def _websocket_db(websocket: WebSocket) -> Iterator[Session]:
    """get_db for WebSocket routes (get_db takes an HTTP request)."""
    session = websocket.app.state.server.db.sessionmaker()
    try:
        yield session
    finally:
        session.rollback()
        session.close()


def require_websocket(action: str) -> Callable[..., Access]:
    """`require` for WebSocket routes. A browser cannot add the CSRF header to a WebSocket, so
    a cookie-authenticated one must come from our own origin instead (no cross-site hijacking);
    a refusal closes the handshake with 1008 and the one-line reason."""
    if action not in RULES:
        raise KeyError("no permission rule named %r" % action)

    def dependency(websocket: WebSocket, db: Session = Depends(_websocket_db)) -> Access:
        from starlette.requests import Request as HttpRequest

        origin = websocket.headers.get("origin")
        try:
            if origin is not None and "authorization" not in websocket.headers:
                host = websocket.headers.get("host", "")
                if origin.split("://", 1)[-1].rstrip("/") != host:
                    raise ApiError(403, "cross-origin WebSocket refused; open it from this site")
            # authenticate as a read (no CSRF header on WebSockets), authorise as a write
            caller = current_caller(HttpRequest(dict(websocket.scope, type="http",
                                                     method="GET")), db)
            access = decide(action, caller, websocket, db)
        except ApiError as e:
            raise WebSocketException(code=1008, reason=e.error[:120])
        websocket.state.permission = action
        return access

    dependency.permission_action = action  # type: ignore[attr-defined]
    return Depends(dependency)
