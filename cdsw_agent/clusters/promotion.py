"""Promotion of what runs (project files, job and model definitions) from a project on one
cluster to a project on another, as a reviewed request. The rules, once:

- a request freezes a snapshot at once: a copy of the source's files (links stay links, .git
  and caches left out, as a model build's) and its job and model definitions; what is approved
  is exactly what was requested, whatever the source becomes meanwhile;
- secrets are never copied: project environment variables stay each project's own (the
  review shows only the names), and so do Kerberos credentials;
- the review shows the diff against the target as it is now (files, jobs, models);
- applying makes the target's files exactly the snapshot's, creates or updates its jobs by name
  (jobs the snapshot no longer has are paused, never deleted with their history) and its models
  by name; scheduled jobs count their schedule from the approval and act as the approver (who
  holds the target cluster's grant), never as the requester; models deployed on the target are
  rebuilt from the new files and redeployed replica by replica (models/service.py rolls them
  with no failed call);
- before applying, the target's state is kept; a rollback applies it again.

Who may request, approve or roll back is decided in server/permissions.py.
"""

from __future__ import annotations

import hashlib
import logging
import os
import shutil
import stat
import threading
from pathlib import Path
from typing import Any, Callable, Dict, List, Optional, Tuple

from sqlalchemy import select
from sqlalchemy.orm import Session

from ..models.builds import SKIPPED
from ..models.builds import snapshot as copy_project
from ..projects import safe_fs
from ..projects.storage import chown_tree, engine_owner
from ..settings import Settings
from ..jobs import script
from ..store.envvars import project_scope
from ..store.jobs_models import Job
from ..store.models import EnvVar, Project, User, utcnow
from ..store.models_models import Model, ModelBuild, ModelDeployment
from ..store.promotions_models import Promotion

log = logging.getLogger(__name__)

JOB_FIELDS = ("script", "arguments", "engine_image_id", "profile_id", "env", "timeout_minutes",
              "schedule_kind", "cron", "timezone", "recipients", "notify_on", "enabled")
JOB_EMPTY = {"env": {}, "recipients": [], "notify_on": [], "script": "", "arguments": "",
             "schedule_kind": "manual", "cron": "", "timezone": "UTC", "enabled": True}
MODEL_FIELDS = ("description", "file", "function", "example_input", "engine_image_id")
SNAPSHOT, BEFORE = "snapshot", "before"


class PromotionError(Exception):
    """The promotion cannot go on; str() is one line saying what to do."""

    def __init__(self, status: int, message: str):
        super().__init__(message)
        self.status = status


def promotion_dir(settings: Settings, promotion_id: int) -> Path:
    return Path(settings.data_dir) / "promotions" / str(promotion_id)


def project_dir(settings: Settings, project_id: int) -> Path:
    return Path(settings.projects_dir) / str(project_id)


# --- what a project runs -----------------------------------------------------------------------

def file_digests(root: Path) -> Dict[str, str]:
    """relative path -> sha256 of every regular file ("link:TARGET" for symbolic links), read
    through directory descriptors (no link is followed)."""
    out: Dict[str, str] = {}
    try:
        fd = os.open(str(root), safe_fs.DIR_FLAGS)
    except OSError:
        return out
    try:
        for parts, st, dir_fd in safe_fs.scan(fd):
            if parts[0] in (".git",) or "__pycache__" in parts or ".ipynb_checkpoints" in parts:
                continue
            rel = "/".join(parts)
            if stat.S_ISLNK(st.st_mode):
                out[rel] = "link:" + os.readlink(parts[-1], dir_fd=dir_fd)
            elif stat.S_ISREG(st.st_mode):
                f = safe_fs.open_regular(dir_fd, parts[-1])
                if f is None:
                    continue
                h = hashlib.sha256()
                try:
                    while True:
                        chunk = os.read(f, 1 << 20)
                        if not chunk:
                            break
                        h.update(chunk)
                finally:
                    os.close(f)
                out[rel] = h.hexdigest()
    finally:
        os.close(fd)
    return out


def definitions(db: Session, project_id: int) -> Dict[str, Any]:
    """The project's job and model definitions by name, and its variables' names (no values)."""
    jobs = db.scalars(select(Job).where(Job.project_id == project_id).order_by(Job.id)).all()
    names = {j.id: j.name for j in jobs}
    out_jobs = []
    for j in jobs:
        d = {f: getattr(j, f) for f in JOB_FIELDS}
        d["name"] = j.name
        d["parent"] = names.get(j.parent_job_id) if j.parent_job_id else None
        out_jobs.append(d)
    models = db.scalars(select(Model).where(Model.project_id == project_id).order_by(Model.id))
    out_models = []
    for m in models:
        d = {f: getattr(m, f) for f in MODEL_FIELDS}
        d["name"] = m.name
        d["deployed"] = _active_deployment(db, m.id) is not None
        out_models.append(d)
    env_names = sorted(db.scalars(select(EnvVar.name).where(
        EnvVar.scope == project_scope(project_id))))
    return {"jobs": out_jobs, "models": out_models, "env_names": env_names}


def capture(db: Session, settings: Settings, project: Project, dest: Path) -> Dict[str, Any]:
    """Copy the project's files to dest and describe what it runs."""
    copy_project(project_dir(settings, project.id), dest)
    return dict(definitions(db, project.id), files=file_digests(dest))


def _by_name(items: List[Dict[str, Any]]) -> Dict[str, Dict[str, Any]]:
    return {i["name"]: i for i in items}


def diff(target_now: Dict[str, Any], snapshot: Dict[str, Any]) -> Dict[str, Any]:
    """What approving would change on the target: files, jobs, models (added, changed with the
    fields, removed) and the variable names each side has (never values)."""
    before, after = target_now.get("files", {}), snapshot.get("files", {})
    out: Dict[str, Any] = {"files": {
        "added": sorted(set(after) - set(before)),
        "changed": sorted(p for p in set(after) & set(before) if after[p] != before[p]),
        "removed": sorted(set(before) - set(after))}}
    for kind in ("jobs", "models"):
        b, a = _by_name(target_now.get(kind, [])), _by_name(snapshot.get(kind, []))
        changed = {}
        for name in sorted(set(a) & set(b)):
            fields = sorted(k for k in a[name] if k != "deployed" and a[name][k] != b[name].get(k))
            if fields:
                changed[name] = fields
        out[kind] = {"added": sorted(set(a) - set(b)), "changed": changed,
                     "removed": sorted(set(b) - set(a))}
    out["env_names"] = {"source": snapshot.get("env_names", []),
                        "target": target_now.get("env_names", [])}
    return out


# --- requesting --------------------------------------------------------------------------------

def request(db: Session, settings: Settings, source: Project, target: Project, user: User,
            note: str = "") -> Promotion:
    """A pending promotion with its snapshot frozen. The caller commits."""
    from . import cluster_of

    if source.id == target.id:
        raise PromotionError(422, "a project cannot be promoted onto itself; choose a target "
                                  "project on another cluster")
    src_cluster, dst_cluster = cluster_of(db, source), cluster_of(db, target)
    if src_cluster.id == dst_cluster.id:
        raise PromotionError(422, "projects %s and %s are both on cluster %s; promote to a "
                                  "project on another cluster"
                             % (source.slug, target.slug, src_cluster.name))
    promotion = Promotion(source_project_id=source.id, target_project_id=target.id,
                          status="pending", note=note, snapshot={}, result={},
                          requested_by_id=user.id, requested_at=utcnow(), review_note="")
    db.add(promotion)
    db.flush()
    where = promotion_dir(settings, promotion.id)
    try:
        promotion.snapshot = capture(db, settings, source, where / SNAPSHOT)
    except Exception:
        shutil.rmtree(where, ignore_errors=True)
        raise
    return promotion


# --- applying ----------------------------------------------------------------------------------

def _active_deployment(db: Session, model_id: int) -> Optional[ModelDeployment]:
    return db.scalars(select(ModelDeployment).where(
        ModelDeployment.model_id == model_id, ModelDeployment.status != "stopped")
        .order_by(ModelDeployment.id.desc())).first()


def replace_files(source: Path, target: Path) -> None:
    """Make target's content exactly source's, keeping the target folder itself (running
    engines bind-mount it), through descriptors only. What a snapshot never carries (SKIPPED:
    the target's own .git and caches) stays as it is."""
    target.mkdir(parents=True, exist_ok=True)
    src = os.open(str(source), safe_fs.DIR_FLAGS)
    dst = os.open(str(target), safe_fs.DIR_FLAGS)
    try:
        for name in sorted(os.listdir(dst)):
            if name not in SKIPPED:
                safe_fs.remove_tree(dst, name)
        safe_fs.copy_tree(src, dst, skip=SKIPPED.__contains__)
    finally:
        os.close(src)
        os.close(dst)
    chown_tree(target, engine_owner())


def _apply_jobs(db: Session, target: Project, jobs: List[Dict[str, Any]], actor: User,
                result: Dict[str, Any], files: Path) -> None:
    """`files`: the project files the target gets with these jobs, whose scripts the approver
    approves (jobs/identity.py)."""
    now = utcnow()
    existing = {j.name: j for j in db.scalars(select(Job).where(Job.project_id == target.id))}
    wanted = _by_name(jobs)
    for name, d in wanted.items():
        job = existing.get(name)
        if job is None:
            job = Job(project_id=target.id, name=name, created_by_id=actor.id)
            db.add(job)
            result["jobs_created"].append(name)
        else:
            result["jobs_updated"].append(name)
        for f in JOB_FIELDS:  # images and profiles are site-wide: the same ids everywhere
            value = d.get(f)
            setattr(job, f, JOB_EMPTY.get(f, "") if value is None and f in JOB_EMPTY
                    else value)
        job.parent_job_id = None
        # the schedule counts from the approval, and the job acts as the approver
        job.last_scheduled_at = now if job.cron else None
        job.run_as_user_id, job.run_as_since = actor.id, now
        job.script_sha256 = script.current_digest(files, job.script) if job.script else ""
        job.updated_at = now
    db.flush()
    by_name = {j.name: j for j in db.scalars(select(Job).where(Job.project_id == target.id))}
    for name, d in wanted.items():
        if d.get("parent") and d["parent"] in by_name:
            by_name[name].parent_job_id = by_name[d["parent"]].id
    for name, job in existing.items():
        if name not in wanted and job.enabled:
            job.enabled = False
            result["jobs_paused"].append(name)


def _apply_models(db: Session, target: Project, models: List[Dict[str, Any]], actor: User,
                  result: Dict[str, Any]) -> List[Tuple[int, int]]:
    """Upsert the models; returns (deployment id, new build id) for every deployed one."""
    existing = {m.name: m for m in db.scalars(select(Model).where(Model.project_id == target.id))}
    rebuilds: List[Tuple[int, int]] = []
    for d in models:
        model = existing.get(d["name"])
        if model is None:
            model = Model(project_id=target.id, name=d["name"], created_by_id=actor.id)
            db.add(model)
            result["models_created"].append(d["name"])
        else:
            result["models_updated"].append(d["name"])
        for f in MODEL_FIELDS:
            value = d.get(f)
            setattr(model, f, "" if value is None and f in ("description", "file", "function")
                    else value)
        model.updated_at = utcnow()
        db.flush()
        dep = _active_deployment(db, model.id)
        if dep is not None:
            build = ModelBuild(model_id=model.id, status="queued", reason="", file=model.file,
                               function=model.function, artifact="", created_by_id=actor.id,
                               created_at=utcnow())
            db.add(build)
            db.flush()
            build.log_path = "models/builds/%d.log" % build.id
            rebuilds.append((dep.id, build.id))
            result["models_redeployed"].append(d["name"])
    return rebuilds


def apply(db: Session, settings: Settings, promotion: Promotion, actor: User,
          state: Dict[str, Any], files: Path) -> List[Tuple[int, int]]:
    """Make the target's jobs and models what `state` describes (its files change to `files`
    in commit_with_files). Returns the model rebuilds to start once committed
    (redeploy_after_builds)."""
    target = db.get(Project, promotion.target_project_id)
    assert target is not None
    result: Dict[str, Any] = {k: [] for k in (
        "jobs_created", "jobs_updated", "jobs_paused", "models_created", "models_updated",
        "models_redeployed")}
    _apply_jobs(db, target, state.get("jobs", []), actor, result, files)
    rebuilds = _apply_models(db, target, state.get("models", []), actor, result)
    result["files"] = len(state.get("files", {}))
    promotion.result = result
    return rebuilds


def approve(db: Session, settings: Settings, promotion: Promotion, actor: User,
            note: str = "") -> List[Tuple[int, int]]:
    """Keep the target's state, apply the snapshot, mark it approved. The caller commits, then
    starts the rebuilds."""
    if promotion.status != "pending":
        raise PromotionError(409, "promotion %d is %s, not pending; request a new one"
                             % (promotion.id, promotion.status))
    target = db.get(Project, promotion.target_project_id)
    assert target is not None
    where = promotion_dir(settings, promotion.id)
    promotion.before = capture(db, settings, target, where / BEFORE)
    rebuilds = apply(db, settings, promotion, actor, promotion.snapshot, where / SNAPSHOT)
    promotion.status, promotion.reviewed_by_id = "approved", actor.id
    promotion.reviewed_at, promotion.review_note = utcnow(), note
    return rebuilds


def reject(promotion: Promotion, actor: User, note: str = "") -> None:
    if promotion.status != "pending":
        raise PromotionError(409, "promotion %d is %s, not pending" % (promotion.id,
                                                                      promotion.status))
    promotion.status, promotion.reviewed_by_id = "rejected", actor.id
    promotion.reviewed_at, promotion.review_note = utcnow(), note


def latest_applied(db: Session, target_id: int) -> Optional[Promotion]:
    return db.scalars(select(Promotion).where(Promotion.target_project_id == target_id,
                                              Promotion.status == "approved")
                      .order_by(Promotion.reviewed_at.desc(), Promotion.id.desc())).first()


def rollback(db: Session, settings: Settings, promotion: Promotion,
             actor: User) -> List[Tuple[int, int]]:
    """Restore the target as it was before this promotion, the latest one applied to it."""
    latest = latest_applied(db, promotion.target_project_id)
    if promotion.status != "approved" or latest is None or latest.id != promotion.id:
        raise PromotionError(409, "only the latest approved promotion of a project can be "
                                  "rolled back%s" % ("; that is promotion %d" % latest.id
                                                     if latest is not None else ""))
    before = promotion.before or {}
    applied = promotion.result
    rebuilds = apply(db, settings, promotion, actor, before,
                     promotion_dir(settings, promotion.id) / BEFORE)
    promotion.result = dict(applied, rollback=promotion.result)
    promotion.status, promotion.rolled_back_by_id = "rolled_back", actor.id
    promotion.rolled_back_at = utcnow()
    return rebuilds


def files_to_apply(settings: Settings, promotion: Promotion) -> Path:
    """The files an approval (the snapshot) or a rollback (the target's files before) puts in
    place."""
    which = BEFORE if promotion.status == "rolled_back" else SNAPSHOT
    return promotion_dir(settings, promotion.id) / which


def commit_with_files(db: Session, settings: Settings, promotion: Promotion) -> None:
    """The one step that changes the target's files, with the commit of what approve or rollback
    changed in the database: the files become files_to_apply's, then the transaction commits.
    If either fails (a full disk, the database gone), the files that were there are put back
    and the transaction rolled back, so the target keeps its files, jobs and models together."""
    target = project_dir(settings, promotion.target_project_id)
    target.mkdir(parents=True, exist_ok=True)
    keep = promotion_dir(settings, promotion.id) / ("files-%d" % os.getpid())
    shutil.rmtree(keep, ignore_errors=True)
    keep.mkdir(parents=True)
    src = os.open(str(target), safe_fs.DIR_FLAGS)
    dst = os.open(str(keep), safe_fs.DIR_FLAGS)
    try:
        safe_fs.copy_tree(src, dst, skip=SKIPPED.__contains__)  # as it is now, edits included
    finally:
        os.close(src)
        os.close(dst)
    try:
        replace_files(files_to_apply(settings, promotion), target)
        db.commit()
    except BaseException:
        db.rollback()
        try:
            replace_files(keep, target)
        except BaseException:
            log.error("promotion %d: the files of project %d could not be put back; they are "
                      "kept in %s", promotion.id, promotion.target_project_id, keep)
            raise
        shutil.rmtree(keep, ignore_errors=True)
        raise
    shutil.rmtree(keep, ignore_errors=True)


# --- after the commit: rebuild and roll the deployed models ------------------------------------

def redeploy_after_builds(rebuilds: List[Tuple[int, int]], start_build: Callable[[int], None],
                          wait_build: Callable[[int], None],
                          redeploy: Callable[[int, int], None]) -> Optional[threading.Thread]:
    """Start each build; once it succeeded, roll its deployment onto it (in a thread)."""
    if not rebuilds:
        return None
    for _, build_id in rebuilds:
        start_build(build_id)

    def run() -> None:
        for dep_id, build_id in rebuilds:
            try:
                wait_build(build_id)
                redeploy(dep_id, build_id)
            except Exception as e:  # the database went away: the model stays on its build
                log.warning("promotion: deployment %d not moved to build %d: %s", dep_id,
                            build_id, str(e).splitlines()[0] if str(e) else type(e).__name__)

    t = threading.Thread(target=run, daemon=True, name="cdsw-promotion-redeploy")
    t.start()
    return t


def roll_deployment(db: Session, dep_id: int, build_id: int, actor_id: int) -> bool:
    """Point the deployment at the build when it succeeded (the supervisor then replaces the
    replicas one by one). False when the build failed: the old replicas keep serving."""
    build = db.get(ModelBuild, build_id)
    dep = db.get(ModelDeployment, dep_id)
    if build is None or dep is None or build.status != "succeeded" or dep.status == "stopped":
        return False
    dep.build_id = build.id
    dep.status, dep.reason = "deploying", "replacing replicas with build %d" % build.id
    dep.deployed_by_id, dep.deployed_at, dep.updated_at = actor_id, utcnow(), utcnow()
    return True
