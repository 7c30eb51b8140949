"""Lightspeed X-Series refunds on the wire (issue 22, lines 4 and 6): a return sale under our own
id, negative quantities and payment, naming the sale it returns; the request and the
simulator's answers validate against the official spec; the simulator refuses a return naming
no closed sale, and negative quantities outside a return; a lost answer is found by
``GET /sales/{id}``, never posted twice.
"""

from __future__ import annotations

from dataclasses import replace
from decimal import Decimal

import pytest
from lightspeed_x_helpers import (
    SpecRequest,
    documented,
    make_app,
    make_connector,
    serve,
    validate_answer,
    validate_request,
)

from synccli.connectors.base import InvoiceDraft, InvoiceLine, RefundTarget
from synccli.errors import Rejected, TransientError


def sale(app, number: str) -> InvoiceDraft:  # type: ignore[no-untyped-def]
    p = next(iter(app.world().products.values()))
    line = InvoiceLine(p.id, p.code, "mug", Decimal(2), Decimal("4.50"), "GST",
                       tax_rate=Decimal("0.15"))  # fmt: skip
    return InvoiceDraft(number, app.clock.now(), "NZD", "", [line], total=Decimal("10.35"))


def test_a_return_is_sent_and_answered_as_the_spec_says() -> None:
    app = make_app(products=4, customers=1)
    app.keep_answers = True
    with serve(app) as server:
        conn, _ = make_connector(app, server)
        original = sale(app, "X-7")
        posted = conn.post_invoice(original, "k")
        target = RefundTarget("X-7", posted.remote_id, original.date)
        lines = [replace(original.lines[0], quantity=Decimal(1))]
        refund = replace(original, number="X-7-R1", lines=lines, refund_of=target)
        returned = conn.post_refund(refund, "k-r1")
        assert returned.total == Decimal("5.18")  # 4.50 + 0.675 -> 0.68 tax, given back
        found = conn.find_refund("X-7-R1", target)
        assert found is not None and found.remote_id == returned.remote_id
        assert found.total == Decimal("5.18")
        body = app.world().invoices[returned.remote_id].body
        assert body["return"] == {"is_return": True, "original_sale_id": posted.remote_id}
        assert [ln["quantity"] for ln in body["line_items"]] == [-1]
    checked = 0
    for req, _endpoint, resp in app.answers:
        if "/sales" in req.path and documented(req.method, req.path, resp.status):
            validate_request(SpecRequest.received(req))
            validate_answer(req, resp)
            checked += 1
    assert checked == 3  # two POST /sales, the look-up GET /sales/{id}


def test_the_simulator_refuses_a_return_of_no_sale_and_negative_quantities_elsewhere() -> None:
    app = make_app(products=4, customers=1)
    with serve(app) as server:
        conn, _ = make_connector(app, server)
        original = sale(app, "X-8")
        nowhere = RefundTarget("X-0", "0b0e6f4e-3c51-5c1e-9d0b-2f3f6c1d7a10", original.date)
        with pytest.raises(Rejected, match="is no closed sale of this store"):
            conn.post_refund(replace(original, number="X-8-R1", refund_of=nowhere), "k1")
        negative = replace(original.lines[0], quantity=Decimal(-1))
        with pytest.raises(Rejected, match="negative, and only a return's"):
            conn.post_invoice(replace(original, number="X-9", lines=[negative]), "k2")


def test_a_lost_return_answer_is_found_and_not_posted_twice() -> None:
    app = make_app(products=4, customers=1)
    with serve(app) as server:
        conn, _ = make_connector(app, server)
        original = sale(app, "X-10")
        posted = conn.post_invoice(original, "k")
        target = RefundTarget("X-10", posted.remote_id, original.date)
        refund = replace(original, number="X-10-R1", refund_of=target)
        app.faults.add("lost", method="POST", path="/sales$", times=20)
        with pytest.raises(TransientError):
            conn.post_refund(refund, "k-r")
        app.faults.clear()
        found = conn.find_refund("X-10-R1", target)
        assert found is not None and found.total == Decimal("10.35")
        returns = [i for i in app.world().invoices.values() if i.body.get("return_for")]
        assert len(returns) == 1
