"""Money for one provider call: reserve the worst case before the provider is called, settle
exactly once however the call ends.

``reserve`` writes a durable hold (and refuses a call that does not fit the customer's budget
or wallet, or the developer's prepaid wallet) in one statement. ``settle`` turns the hold into
one usage event, one budget movement, the wallet debits and the daily aggregate, again in one
statement, and runs under a bounded shield so a cancelled request still settles. A hold whose
process died is settled by the ``settlement`` worker at its reserved amount.

Billable = cost * (1 + markup) * the developer's rate multiplier * the model's multiplier,
rounded half up to micro-dollars.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass
from decimal import Decimal

import trio

from ringside.catalog import ModelInfo
from ringside.domain.auth import Caller
from ringside.domain.metering import CallContext
from ringside.domain.modelrefs import ResolvedModel
from ringside.errors import PaymentRequired, ServiceUnavailable
from ringside.money import charge, format_usd
from ringside.pricing import PricingPolicy
from ringside.store import billing as store
from ringside.store.bridge import TRANSIENT_ERRORS, Conn, Database, InterfaceError, PostgresError
from ringside.tokens import TokenUsage

log = logging.getLogger("ringside.billing")

_PER_TOKEN = Decimal(1_000_000)
# Bounded shield for settling: long enough for a slow database, short enough that shutdown and
# cancellation stay prompt. A hold not settled in time is settled by the worker.
_SETTLE_DEADLINE_S = 5.0


def billable(policy: PricingPolicy, caller: Caller, model_ref: str, cost: Decimal) -> Decimal:
    factor = policy.factor(caller.tier, caller.markup_percent, caller.rate_multiplier, model_ref)
    return charge(cost * factor)


@dataclass(frozen=True)
class CallBounds:
    """What a call can cost at most: its prompt (bounded by the request's size in bytes, which
    no tokenizer exceeds) and its output (``max_tokens`` or the model's limit, times ``n``)."""

    prompt_tokens: int
    max_output_tokens: int | None
    choices: int

    def worst_cost(self, model: ModelInfo) -> Decimal:
        p = model.pricing
        output = self.max_output_tokens
        if output is None:
            output = model.max_output_tokens or model.context_window
        total = self.prompt_tokens * max(p.input, p.cached_input) + output * self.choices * max(
            p.output, p.reasoning
        )
        return total / _PER_TOKEN


@dataclass(frozen=True)
class Hold:
    request_id: str
    caller: Caller
    customer_id: str | None
    wallet_balance_usd: Decimal | None
    started: float

    def headers(self) -> dict[str, str]:
        """What a stream can say before it has run: the wallet's balance before the call."""
        if self.wallet_balance_usd is None:
            return {}
        return {"X-Ringside-Wallet-Balance": format_usd(self.wallet_balance_usd) or ""}


@dataclass(frozen=True)
class Outcome:
    """How a call ended, for its settlement."""

    target: ResolvedModel
    usage: TokenUsage
    usage_source: str  # upstream | counted | none
    status: str  # ok | upstream_error | timeout | client_aborted
    http_status: int
    # When a call had answers from several models (a cascade moving on after a schema
    # failure): each model's share of ``usage``, priced at its own rates.
    parts: tuple[tuple[ResolvedModel, TokenUsage], ...] = ()


@dataclass(frozen=True)
class Charged:
    billable_usd: Decimal
    wallet_balance_usd: Decimal | None

    def headers(self, hold: Hold) -> dict[str, str]:
        if self.wallet_balance_usd is None:
            return {}
        return {
            "X-Ringside-Wallet-Balance": format_usd(self.wallet_balance_usd) or "",
            "X-Ringside-Wallet-Deducted": format_usd(self.billable_usd) or "",
        }


_REFUSALS = {
    "customer_budget_exceeded": "Customer {customer} has exhausted its monthly budget.",
    "customer_wallet_empty": "The wallet of customer {customer} is empty; top it up to continue.",
    "wallet_empty": "Your prepaid balance is used up; ask the operator to top up your wallet.",
}


async def reserve(
    db: Conn | Database,
    policy: PricingPolicy,
    process_id: str,
    caller: Caller,
    ctx: CallContext,
    targets: Sequence[ResolvedModel],
    bounds: CallBounds,
) -> Hold:
    """Hold the call's worst case (the dearest model of a cascade); raise ``PaymentRequired``
    when the customer's budget or wallet, or the developer's wallet, cannot take it."""
    worst = max(targets, key=lambda t: billable(policy, caller, t.ref, bounds.worst_cost(t.model)))
    cost = bounds.worst_cost(worst.model)
    spec = store.HoldSpec(
        request_id=ctx.request_id,
        process_id=process_id,
        developer_id=caller.developer_id,
        api_key_id=caller.key_id,
        customer_ref=ctx.customer_ref,
        model_requested=ctx.model_requested,
        model_resolved=targets[0].ref,
        provider=targets[0].model.provider,
        upstream_model=targets[0].model.model,
        stream=ctx.stream,
        cost_usd=cost,
        amount_usd=billable(policy, caller, worst.ref, cost),
    )
    # Shielded: a cancellation (the client leaving) landing while the statement runs could
    # otherwise arrive after PostgreSQL committed the hold, leaving nobody to settle it. Once
    # it returns, the caller's next checkpoint raises and its ``finally`` settles.
    with trio.CancelScope(shield=True) as scope:
        scope.deadline = trio.current_time() + _SETTLE_DEADLINE_S
        reservation = await store.reserve(db, spec)
    if scope.cancelled_caught:
        raise ServiceUnavailable("PostgreSQL did not answer the reservation in time.")
    if reservation.outcome != "ok":
        message = _REFUSALS[reservation.outcome].format(customer=reservation.customer_id)
        raise PaymentRequired(message, code=reservation.outcome)
    return Hold(
        request_id=ctx.request_id,
        caller=caller,
        customer_id=reservation.customer_id,
        wallet_balance_usd=reservation.wallet_balance_usd,
        started=ctx.started,
    )


def _cost(model: ModelInfo, usage: TokenUsage) -> Decimal:
    return model.cost(
        input=usage.input,
        cached_input=usage.cached_input,
        output=usage.output,
        reasoning=usage.reasoning,
        cache_write=usage.cache_write,
    )


def settlement(
    policy: PricingPolicy, hold: Hold, outcome: Outcome
) -> tuple[store.SettleSpec, Decimal]:
    """What settling ``hold`` with ``outcome`` writes, and the amount charged."""
    model = outcome.target.model
    usage = outcome.usage
    # A refused call carries no usage, so it costs nothing; a stream cut short is billed for
    # what was generated.
    cost = Decimal(0)
    charged = Decimal(0)
    for target, part in outcome.parts or ((outcome.target, usage),):
        part_cost = _cost(target.model, part)
        cost += part_cost
        charged += billable(policy, hold.caller, target.model.ref, part_cost)
    spec = store.SettleSpec(
        request_id=hold.request_id,
        status=outcome.status,
        http_status=outcome.http_status,
        usage_source=outcome.usage_source,
        model_resolved=model.ref,
        provider=model.provider,
        upstream_model=model.model,
        input_tokens=usage.input,
        cached_input_tokens=usage.cached_input,
        output_tokens=usage.output,
        reasoning_tokens=usage.reasoning,
        cost_usd=cost,
        billable_usd=charged,
        latency_ms=max(0, round((trio.current_time() - hold.started) * 1000)),
    )
    return spec, charged


async def settle(db: Database, policy: PricingPolicy, hold: Hold, outcome: Outcome) -> Charged:
    """Settle the hold once, shielded from cancellation for at most a few seconds. A failure
    is logged, never raised: the hold stays, and the settlement worker settles it."""
    spec, charged = settlement(policy, hold, outcome)
    with trio.CancelScope(shield=True) as scope:
        scope.deadline = trio.current_time() + _SETTLE_DEADLINE_S
        try:
            settled = await store.settle(db, spec)
            return Charged(charged, settled.wallet_balance_usd)
        except (*TRANSIENT_ERRORS, PostgresError, InterfaceError) as exc:
            log.error("settlement failed, request_id=%s: %s", hold.request_id, exc)
    if scope.cancelled_caught:
        log.error("settlement timed out, request_id=%s", hold.request_id)
    return Charged(charged, None)
