"""Account > Hadoop Authentication: the user's Kerberos principal and ticket state."""

from __future__ import annotations

from fastapi import Depends, Request
from fastapi.responses import Response
from sqlalchemy.orm import Session

from ...kerberos import account as kerberos_account
from ...server.deps import get_db, get_state
from ...server.permissions import Access, require
from ...server.state import ServerState
from ..render import page
from .common import page_router

router = page_router()


@router.get("/account/hadoop-authentication")
def hadoop_authentication_page(request: Request, access: Access = require("account.own"),
                               db: Session = Depends(get_db),
                               state: ServerState = Depends(get_state)) -> Response:
    status = kerberos_account.status(db, state.settings, db.merge(access.user))
    return page(request, "kerberos.html", title="Hadoop Authentication", access=access, db=db,
                section="account", krb=status, account=access.user)
