"""Routes of the sandbox: the processor's API, its ledger and its knobs.

Creating calls (authorizations, refunds) answer 201 the first time and 200 with
``Idempotent-Replayed: true`` when the same key and body come again; the body is the object as
it stands now, so a replay after a void shows it voided. The same key with another body is a
422 problem. Capture and void are idempotent by state and answer 200.
"""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Body, Depends, Header, Query, Request, Response
from fastapi import Path as PathParam
from fastapi.exceptions import RequestValidationError
from pydantic import ValidationError

from payment_sandbox.faults import Faults
from payment_sandbox.ledger import Ledger
from payment_sandbox.schemas import (
    AuthorizationCreate,
    AuthorizationRead,
    KeyVoidRead,
    LedgerPage,
    OrderLedger,
    RefundCreate,
    RefundRead,
)
from payment_sandbox.settings import Knobs, Operation

router = APIRouter(prefix="/v1")
REPLAYED_HEADER = "Idempotent-Replayed"


async def get_ledger(request: Request) -> Ledger:
    ledger: Ledger = request.app.state.ledger
    return ledger


async def get_faults(request: Request) -> Faults:
    faults: Faults = request.app.state.faults
    return faults


LedgerDep = Annotated[Ledger, Depends(get_ledger)]
FaultsDep = Annotated[Faults, Depends(get_faults)]
KeyHeader = Annotated[str, Header(alias="Idempotency-Key", min_length=1, max_length=255)]


def _created(response: Response, created: bool) -> None:
    response.status_code = 201 if created else 200
    if not created:
        response.headers[REPLAYED_HEADER] = "true"


@router.post("/authorizations", status_code=201, tags=["authorizations"])
async def authorize(
    body: AuthorizationCreate,
    idempotency_key: KeyHeader,
    response: Response,
    ledger: LedgerDep,
    faults: FaultsDep,
) -> AuthorizationRead:
    """Authorize (hold) an amount for an order, or decline it; once per idempotency key."""
    await faults.before(Operation.AUTHORIZE)
    auth, created = ledger.authorize(idempotency_key, body, faults.decline_reason)
    await faults.after(Operation.AUTHORIZE)
    _created(response, created)
    return auth


@router.get("/authorizations/{authorization_id}", tags=["authorizations"])
async def read_authorization(authorization_id: str, ledger: LedgerDep) -> AuthorizationRead:
    """One authorization as it stands."""
    return ledger.get(authorization_id)


@router.post("/authorizations/{authorization_id}/capture", tags=["authorizations"])
async def capture(authorization_id: str, ledger: LedgerDep, faults: FaultsDep) -> AuthorizationRead:
    """Capture the whole authorized amount (only from authorized; repeat-safe)."""
    await faults.before(Operation.CAPTURE)
    auth = ledger.capture(authorization_id)
    await faults.after(Operation.CAPTURE)
    return auth


@router.post("/authorizations/{authorization_id}/void", tags=["authorizations"])
async def void(authorization_id: str, ledger: LedgerDep, faults: FaultsDep) -> AuthorizationRead:
    """Release an uncaptured authorization (repeat-safe)."""
    await faults.before(Operation.VOID)
    auth = ledger.void(authorization_id)
    await faults.after(Operation.VOID)
    return auth


@router.post("/authorizations/{authorization_id}/refunds", status_code=201, tags=["refunds"])
async def refund(
    authorization_id: str,
    body: RefundCreate,
    idempotency_key: KeyHeader,
    response: Response,
    ledger: LedgerDep,
    faults: FaultsDep,
) -> RefundRead:
    """Refund up to what was captured and not yet refunded; once per idempotency key."""
    await faults.before(Operation.REFUND)
    result, created = ledger.refund(authorization_id, idempotency_key, body.amount)
    await faults.after(Operation.REFUND)
    _created(response, created)
    return result


@router.post("/idempotency-keys/{key}/void", tags=["authorizations"])
async def void_key(
    key: Annotated[str, PathParam(min_length=1, max_length=255)],
    ledger: LedgerDep,
    faults: FaultsDep,
) -> KeyVoidRead:
    """Give up on a key: void what it authorized and decline any later authorization with it."""
    await faults.before(Operation.VOID_KEY)
    result = ledger.void_key(key)
    await faults.after(Operation.VOID_KEY)
    return result


@router.get("/ledger", tags=["ledger"])
async def ledger_view(
    ledger: LedgerDep,
    order_id: Annotated[str | None, Query(min_length=1, max_length=100)] = None,
    after: Annotated[str, Query(max_length=100)] = "",
    limit: Annotated[int, Query(ge=1, le=1000)] = 100,
) -> OrderLedger | LedgerPage:
    """With ``order_id``: that order's sums and authorizations. Without: every order, paged."""
    if order_id is not None:
        return ledger.order(order_id)
    items = ledger.orders(after=after, limit=limit)
    next_after = items[-1].order_id if len(items) == limit else None
    return LedgerPage(items=items, next_after=next_after)


@router.get("/_config", tags=["config"])
async def read_config(faults: FaultsDep) -> Knobs:
    """The knobs in force."""
    return faults.knobs


@router.put("/_config", tags=["config"])
async def update_config(faults: FaultsDep, changes: Annotated[dict[str, Any], Body()]) -> Knobs:
    """Change some knobs (the others keep their values); all or nothing."""
    try:
        return faults.update(changes)
    except ValidationError as exc:
        raise RequestValidationError(exc.errors()) from None
