"""Account > Hadoop Authentication: the signed-in user's own Kerberos principal and credential
(GET status, PUT a principal with a password or a keytab upload, DELETE)."""

from __future__ import annotations

from typing import Any, Dict, Optional

from fastapi import Depends, File, Form, Request, Response, UploadFile
from pydantic import BaseModel
from sqlalchemy.orm import Session

from ...kerberos import account as kerberos_account
from ...kerberos.kdc import KerberosError
from .. import audit
from ..deps import get_db, get_state
from ..errors import ApiError
from ..permissions import Access, api_router, require
from ..state import ServerState

router = api_router(prefix="/kerberos", tags=["account"])


class KerberosStatus(BaseModel):
    enabled: bool
    realm: str
    principal: Optional[str]
    kind: Optional[str]  # password | keytab; the secret itself is never shown again
    state: str  # none | valid | expired | failing
    ticket_expires_at: Optional[str]
    renew_until: Optional[str]
    last_renewed_at: Optional[str]
    last_error: str
    last_error_at: Optional[str]


@router.get("", response_model=KerberosStatus)
def get_kerberos(access: Access = require("account.own"), db: Session = Depends(get_db),
                 state: ServerState = Depends(get_state)) -> Dict[str, Any]:
    return kerberos_account.status(db, state.settings, db.merge(access.user))


@router.put("", response_model=KerberosStatus)
def put_kerberos(request: Request,
                       principal: str = Form(max_length=400),
                       password: Optional[str] = Form(default=None, max_length=1024),
                       keytab: Optional[UploadFile] = File(default=None),
                       access: Access = require("account.own"), db: Session = Depends(get_db),
                       state: ServerState = Depends(get_state)) -> Dict[str, Any]:
    data = None
    if keytab is not None:
        data = keytab.file.read(kerberos_account.MAX_KEYTAB_BYTES + 1)  # a thread: kinit blocks
    user = db.merge(access.user)
    try:
        cred = kerberos_account.save(db, state.settings, user, principal,
                                     password=password if keytab is None else None,
                                     keytab=data)
    except KerberosError as e:
        audit.record_now(state.db, "kerberos.credential.refused", actor=user, request=request,
                         target=user.username, error=str(e))
        raise ApiError(e.status, str(e))
    audit.record(db, "kerberos.credential.set", user, target=user.username, request=request,
                 principal=cred.principal, kind=cred.kind)
    db.commit()
    return kerberos_account.status(db, state.settings, user)


@router.delete("", status_code=204)
def delete_kerberos(request: Request, access: Access = require("account.own"),
                    db: Session = Depends(get_db),
                    state: ServerState = Depends(get_state)) -> Response:
    user = db.merge(access.user)
    principal = kerberos_account.remove(db, state.settings, user)
    if principal is not None:
        audit.record(db, "kerberos.credential.removed", user, target=user.username,
                     request=request, principal=principal)
    db.commit()
    return Response(status_code=204)
