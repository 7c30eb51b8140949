"""Hostile provider: answers that are HTML error pages, truncated JSON, the wrong shape, records
with wrong types or missing fields, a 200 carrying an error body, an enormous page.

Acceptance: each is a clear error for that call or that record; the run records it (``runs``
outcome and error, or the errors in the run's report); good records of the same run still apply;
nothing half-written remains.

The simulators are subclassed here: :class:`_Hostile` rewrites the answers of chosen requests
after the simulator made them. ``pull-products`` and ``post-invoices`` run through the CLI's entry
point in this process.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from decimal import Decimal
from typing import Any

import pytest
from hostile.support import TABLES, jsonl, orders_for, row_counts, serve
from sqlalchemy import select

from synccli import registry
from synccli.sandbox import harness
from synccli.sandbox.core import Response
from synccli.sandbox.lightspeed import LightspeedSandbox
from synccli.sandbox.lightspeed_x import LightspeedXSandbox
from synccli.sandbox.unleashed import UnleashedSandbox
from synccli.sandbox.xero import XeroSandbox
from synccli.store.connections import get_connection
from synccli.store.db import Store
from synccli.store.models import ApiCall, InvoiceAttempt, InvoiceJob, Product, Run
from synccli.sync.orders import add_orders

pytestmark = pytest.mark.reliability

PROVIDERS = registry.suite_names()
SCALE = {**dict.fromkeys(PROVIDERS, 1000.0), "lightspeed": 200.0}
BASES = {
    "xero": XeroSandbox,
    "unleashed": UnleashedSandbox,
    "lightspeed": LightspeedSandbox,
    "lightspeed-x": LightspeedXSandbox,
}
PRODUCT_LIST = {  # the first call of a pull: the product list
    "xero": ("GET", r"/Items$"),
    "unleashed": ("GET", r"^/Products(/\d+)?$"),
    "lightspeed": ("GET", r"/Item\.json$"),
    "lightspeed-x": ("GET", r"/api/2026-07/products$"),
}
RECORDS = {"xero": "Items", "unleashed": "Items", "lightspeed": "Item", "lightspeed-x": "data"}
CODES = {
    "xero": "Code",
    "unleashed": "ProductCode",
    "lightspeed": "customSku",
    "lightspeed-x": "sku",
}
INVOICE_WRITE = {
    "xero": ("PUT", r"/Invoices$"),
    "unleashed": ("POST", r"/SalesOrders/[0-9a-fA-F-]+$"),
    "lightspeed": ("POST", r"/Sale\.json$"),
    "lightspeed-x": ("POST", r"/sales$"),
}
ERROR_BODY_200 = {  # each provider's own error envelope, answered with status 200
    "xero": {"ErrorNumber": 500, "Type": "UnknownErrorException", "Message": "An error occurred"},
    "unleashed": {"Description": "An error has occurred. Please contact support."},
    "lightspeed": {
        "httpCode": "500",
        "httpMessage": "Internal Server Error",
        "message": "Something went wrong",
        "errorClass": "Exception",
    },
    "lightspeed-x": {"error": "Something went wrong"},  # the one error shape its spec gives
}


class _Hostile:
    """Rewrites the answers of matching requests: ``rules`` of (method, path regex, rewrite)."""

    rules: list[tuple[str, str, Callable[[Any, Response], Response]]]

    def handle(self, req: Any) -> Any:
        resp = super().handle(req)  # type: ignore[misc]
        if resp is None:
            return resp
        for method, path, rewrite in self.rules:
            if req.method == method and re.search(path, req.path):
                resp = rewrite(req, resp)
        return resp


@contextmanager
def hostile(provider: str, **kw: Any) -> Iterator[harness.Running]:
    cls = type(f"Hostile{BASES[provider].__name__}", (_Hostile, BASES[provider]), {})
    app = cls(time_scale=SCALE[provider], **kw)
    app.rules = []
    with serve(provider, app) as running:
        yield running


def connect(store: Store, running: harness.Running) -> None:
    harness.add_connection(
        store,
        "shop",
        running,
        notify_email="owner@shop.example",
        time_scale=SCALE[running.provider],
    )


def body_of(resp: Response) -> Any:
    return json.loads(resp.encode())


def with_body(resp: Response, body: Any) -> Response:
    return Response(resp.status, body, dict(resp.headers), resp.content_type)


def last_run(store: Store, job: str) -> Run:
    with store.session() as s:
        run = s.scalar(select(Run).where(Run.job == job).order_by(Run.id.desc()))
    assert run is not None
    return run


def remote_products(running: harness.Running) -> dict[str, Any]:
    w = running.app.catalogue.tenant(running.app.tenant)
    return {p.code: p for p in w.products.values()}


def local_products(store: Store) -> dict[str, Product]:
    with store.session() as s:
        return {p.sku: p for p in s.scalars(select(Product))}


# --- whole answers --------------------------------------------------------------------------------
def _html_200(req: Any, resp: Response) -> Response:
    page = "<!DOCTYPE html><html><body><h1>Sign in</h1><form>...</form></body></html>"
    return Response(200, page, {}, "text/html; charset=utf-8")


def _wrong_top_level(req: Any, resp: Response) -> Response:
    return with_body(resp, ["not", "an", "object"])


def _list_is_a_string(provider: str) -> Callable[[Any, Response], Response]:
    def rewrite(req: Any, resp: Response) -> Response:
        body = body_of(resp)
        body[RECORDS[provider]] = "none today"
        return with_body(resp, body)

    return rewrite


def _error_body_200(provider: str) -> Callable[[Any, Response], Response]:
    def rewrite(req: Any, resp: Response) -> Response:
        return Response(200, ERROR_BODY_200[provider], {}, "application/json; charset=utf-8")

    return rewrite


WHOLE_ANSWERS = [
    "html-502",
    "html-200",
    "truncated",
    "wrong-top-level",
    "list-is-a-string",
    "error-body-200",
]


@pytest.mark.parametrize("kind", WHOLE_ANSWERS)
@pytest.mark.parametrize("provider", PROVIDERS)
def test_unreadable_answer_is_a_clear_error_and_nothing_is_written(
    store: Store, cli: Any, provider: str, kind: str
) -> None:
    with hostile(provider, products=12, customers=3) as running:
        connect(store, running)
        method, path = PRODUCT_LIST[provider]
        app = running.app
        if kind in ("html-502", "truncated"):
            app.faults.add(kind.removesuffix("-502"), method=method, path=path)
        else:
            rewrite = {
                "html-200": _html_200,
                "wrong-top-level": _wrong_top_level,
                "list-is-a-string": _list_is_a_string(provider),
                "error-body-200": _error_body_200(provider),
            }[kind]
            app.rules.append((method, path, rewrite))
        before = row_counts(
            store, [t for t in TABLES if t not in ("runs", "api_calls", "budgets", "leases")]
        )
        result = cli("pull-products", "-c", "shop")

        lines = result.stderr.strip().splitlines()
        assert result.exit_code == 1, (result.exit_code, result.stderr)
        assert len(lines) == 1 and lines[0].startswith("error: shop: "), result.stderr
        assert "internal error" not in lines[0] and "Traceback" not in result.stderr
        run = last_run(store, "pull-products")
        assert run.outcome == "failed" and run.error, (run.outcome, run.error)
        assert run.error in lines[0]
        after = row_counts(store, list(before))
        assert after == before, "something was written from an unreadable answer"


# --- bad records among good ones ----------------------------------------------------------------
def _mutator(provider: str, case: str) -> Callable[[dict[str, Any]], None]:
    """What to do to one record (a dict in the provider's wire format)."""

    def set_path(*keys: str, value: Any) -> Callable[[dict[str, Any]], None]:
        def apply(rec: dict[str, Any]) -> None:
            target = rec
            for k in keys[:-1]:
                target = target[k]
                if isinstance(target, list):
                    target = target[0]
            target[keys[-1]] = value

        return apply

    def drop(key: str) -> Callable[[dict[str, Any]], None]:
        return lambda rec: rec.pop(key, None)

    table: dict[str, dict[str, Callable[[dict[str, Any]], None]]] = {
        "xero": {
            "price-wrong-type": set_path("SalesDetails", "UnitPrice", value="twelve dollars"),
            "id-missing": drop("ItemID"),
            "code-missing": drop("Code"),
            "timestamp-wrong": set_path("UpdatedDateUTC", value="yesterday"),
            "object-is-a-string": set_path("SalesDetails", value="free"),
        },
        "unleashed": {
            "price-wrong-type": set_path("DefaultSellPrice", value="twelve dollars"),
            "id-missing": drop("Guid"),
            "code-missing": drop("ProductCode"),
            "timestamp-wrong": set_path("LastModifiedOn", value="yesterday"),
            "object-is-a-string": set_path("ProductCode", value={"code": "SKU"}),
        },
        "lightspeed": {
            "price-wrong-type": set_path("Prices", "ItemPrice", "amount", value="twelve dollars"),
            "id-missing": drop("itemID"),
            # an item with no customSku is an item like any other (issue 17, line 7): the broken
            # form of its code is one that is not a string
            "code-missing": set_path("customSku", value={"code": "SKU"}),
            "timestamp-wrong": set_path("timeStamp", value="yesterday"),
            "object-is-a-string": set_path("Prices", value="free"),
        },
        "lightspeed-x": {
            "price-wrong-type": set_path("price_excluding_tax", value="twelve dollars"),
            "id-missing": drop("id"),
            "code-missing": set_path("sku", value={"code": "SKU"}),
            "timestamp-wrong": set_path("version", value="yesterday"),  # its stamp: a version
            "object-is-a-string": set_path("active", value="free"),  # a boolean, as a string
        },
    }
    return table[provider][case]


RECORD_CASES = [
    "price-wrong-type",
    "id-missing",
    "code-missing",
    "timestamp-wrong",
    "object-is-a-string",
]


@pytest.mark.parametrize("case", RECORD_CASES)
@pytest.mark.parametrize("provider", PROVIDERS)
def test_bad_record_is_reported_good_records_apply(
    store: Store, cli: Any, provider: str, case: str
) -> None:
    with hostile(provider, products=12, customers=3) as running:
        connect(store, running)
        remote = remote_products(running)
        # the first pull is clean: every product known locally, with its values
        assert cli("pull-products", "-c", "shop").exit_code == 0
        before = {sku: (p.name, p.price, p.active) for sku, p in local_products(store).items()}
        # the provider changes every price; one record of the answer is broken
        app = running.app
        app.catalogue.change_prices(app.tenant, len(remote))
        victim: dict[str, str] = {}
        mutate = _mutator(provider, case)

        def rewrite(req: Any, resp: Response) -> Response:
            body = body_of(resp)
            records = body.get(RECORDS[provider])
            if isinstance(records, list) and len(records) > 3:
                rec = records[2]
                victim["code"] = rec.get(CODES[provider])
                mutate(rec)
            return with_body(resp, body)

        method, path = PRODUCT_LIST[provider]
        app.rules.append((method, path, rewrite))
        result = cli("pull-products", "-c", "shop", "--json")

        assert "Traceback" not in result.stderr and "internal error" not in result.stderr
        assert result.exit_code == 0, result.stderr
        assert victim.get("code"), "the answer had no record to break"
        run = last_run(store, "pull-products")
        errors = (run.counts or {}).get("errors") or []
        assert run.outcome == "ok"
        assert errors, "the broken record was not reported"
        assert len(errors) == 1 and len(errors[0]) < 500, errors
        local = local_products(store)
        assert set(local) == set(before), "a product was created from a broken record"
        for sku, product in local.items():
            if sku == victim["code"]:
                assert (product.name, product.price, product.active) == before[sku], (
                    "the broken record was half-applied"
                )
            else:
                assert Decimal(product.price) == remote[sku].price, (
                    f"{sku}: good record not applied"
                )


@pytest.mark.parametrize("provider", [p for p in PROVIDERS if p != "unleashed"])
@pytest.mark.parametrize("known", [False, True], ids=["new-catalogue", "known-catalogue"])
def test_duplicate_records_in_one_page_apply_once(
    store: Store, cli: Any, provider: str, known: bool
) -> None:
    """A provider that repeats records within a page (seen with offset paging under writes)."""
    with hostile(provider, products=12, customers=3) as running:
        connect(store, running)
        if known:
            assert cli("pull-products", "-c", "shop").exit_code == 0
            running.app.catalogue.change_prices(running.app.tenant, 12)
        key = RECORDS[provider]

        def repeat(req: Any, resp: Response) -> Response:
            body = body_of(resp)
            rows = body.get(key)
            if isinstance(rows, list):
                body[key] = rows + rows[:3]
            return with_body(resp, body)

        method, path = PRODUCT_LIST[provider]
        running.app.rules.append((method, path, repeat))
        result = cli("pull-products", "-c", "shop")
        assert result.exit_code == 0, result.stderr
        assert "internal error" not in result.stderr
        remote = remote_products(running)
        local = local_products(store)
        assert set(local) == set(remote)
        assert all(Decimal(local[c].price) == p.price for c, p in remote.items())


def test_enormous_page_is_applied(store: Store, cli: Any) -> None:
    """Xero answers the whole catalogue in one unpaged call: 20,000 items (about 20 MB) plus a
    record whose description alone is 5 MB. The pull applies every good record."""
    with hostile("xero", products=20_000, customers=3) as running:
        connect(store, running)
        huge = "x" * (5 * 1024 * 1024)

        def pad(req: Any, resp: Response) -> Response:
            body = body_of(resp)
            body["Items"][0]["Description"] = huge
            return with_body(resp, body)

        running.app.rules.append(("GET", r"/Items$", pad))
        result = cli("pull-products", "-c", "shop")
        assert "Traceback" not in result.stderr and "internal error" not in result.stderr
        assert result.exit_code == 0, result.stderr
        local = local_products(store)
        assert len(local) == 20_000


# --- invoice writes answered with garbage --------------------------------------------------------
@pytest.mark.parametrize("provider", PROVIDERS)
@pytest.mark.parametrize("kind", ["truncated", "html"])
def test_garbled_invoice_answer_posts_exactly_once(
    store: Store, cli: Any, provider: str, kind: str
) -> None:
    """``truncated``: the provider committed the invoice and its answer is cut in half; ``html``:
    a gateway answered 502 with an HTML page before the provider saw it. Either way the call is a
    clear error recorded on the invoice, and the next run posts it exactly once."""
    with hostile(provider, products=12, customers=6) as running:
        connect(store, running)
        conn = get_connection(store, "shop")
        orders = orders_for(running, provider, 3, "HP")
        add_orders(store, conn, jsonl(orders))
        method, path = INVOICE_WRITE[provider]
        running.app.faults.add(kind, method=method, path=path, times=1)

        first = cli("post-invoices", "-c", "shop")
        assert "Traceback" not in first.stderr and "internal error" not in first.stderr
        second = cli("post-invoices", "-c", "shop")
        assert second.exit_code == 0, second.stderr

        w = running.app.catalogue.tenant(running.app.tenant)
        numbers = sorted(inv.number for inv in w.invoices.values())
        assert numbers == sorted(o["number"] for o in orders), "posted twice or lost"
        with store.session() as s:
            states = set(s.scalars(select(InvoiceJob.state)))
            transient = list(
                s.scalars(select(InvoiceAttempt.error).where(InvoiceAttempt.outcome == "transient"))
            )
            calls = list(s.scalars(select(ApiCall.status).where(ApiCall.method == method)))
        assert states == {"posted"}
        if kind == "truncated":
            # the answer came (200) but cannot be read: each invoice of that call is left to the
            # next run's look-up, with the reason on its attempt
            assert transient and all("unreadable response" in e for e in transient), transient
            assert all(len(e.splitlines()) == 1 for e in transient)
        else:
            # a 502 before the provider saw the write: retried at once where the write is
            # idempotent, else left for the next run; the call is in the ledger either way
            assert 502 in calls, calls
