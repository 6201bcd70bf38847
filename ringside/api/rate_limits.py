"""Rate limits at the inference endpoints: who the call counts against (the caller's address,
read through trusted proxies), the check, and the ``X-RateLimit-*`` headers, which
``factory._end`` adds to the response (a 429 and any later error included)."""

from __future__ import annotations

from quart import g, request

from ringside.domain.auth import Caller
from ringside.domain.rate_limits import Admission, Subject, client_ip
from ringside.services import Services
from ringside.store.bridge import Conn


async def admit(
    svc: Services,
    caller: Caller,
    customer_ref: str | None,
    tokens: int,
    conn: Conn | None = None,
) -> Admission:
    """Count the call against every layer (raises ``RateLimited``); settle the returned
    admission with ``svc.limits.settle_soon`` once the call's usage is known."""
    limits = svc.limits
    ip = None
    if limits.policy.enabled:
        forwarded = request.headers.getlist("X-Forwarded-For")
        ip = client_ip(request.remote_addr, forwarded, limits.policy.trusted_proxies)
    subject = Subject(
        ip=ip,
        client_token_id=caller.client_token_id,
        developer_id=caller.developer_id,
        tier=caller.tier,
        customer_ref=customer_ref,
    )
    admission = await limits.admit(subject, tokens, conn)
    g.rate_limit_headers = admission.headers
    admission.check()
    return admission
