"""The sandbox's provider-neutral data: a seeded, realistic catalogue, customers and invoices, and
the mutations tests, the demo and the benchmarks apply to it.

Each simulator renders these records in its provider's wire format; keeping one neutral model
means a mutation ("archive 5 products without touching other timestamps") means the same thing on
every provider.
"""

from __future__ import annotations

import itertools
import random
import threading
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from decimal import Decimal
from typing import Any

from synccli.clock import Clock, SystemClock

ADJECTIVES = [
    "Blue",
    "Red",
    "Green",
    "Matte",
    "Glazed",
    "Large",
    "Small",
    "Classic",
    "Organic",
    "Deluxe",
    "Rustic",
    "Slim",
    "Heavy",
    "Light",
    "Vintage",
    "Nordic",
    "Coastal",
    "Urban",
    "Bamboo",
    "Copper",
]
NOUNS = [
    "Mug",
    "Bowl",
    "Plate",
    "Teapot",
    "Vase",
    "Candle",
    "Basket",
    "Blanket",
    "Cushion",
    "Lamp",
    "Tray",
    "Jar",
    "Bottle",
    "Planter",
    "Towel",
    "Apron",
    "Notebook",
    "Pen",
    "Clock",
    "Frame",
]
FIRST = [
    "John",
    "Jane",
    "Mary",
    "Peter",
    "Sarah",
    "David",
    "Emma",
    "James",
    "Olivia",
    "Liam",
    "Noah",
    "Ava",
    "Lucas",
    "Mia",
    "Ethan",
    "Chloe",
    "Henry",
    "Grace",
    "Oscar",
    "Ruby",
    "Jack",
    "Isla",
    "Leo",
    "Zoe",
    "Max",
    "Lily",
    "Sam",
    "Ella",
    "Tom",
    "Amelia",
]
LAST = [
    "Smith",
    "Brown",
    "Wilson",
    "Taylor",
    "Anderson",
    "Thomas",
    "Walker",
    "White",
    "Harris",
    "Martin",
    "Thompson",
    "Young",
    "King",
    "Wright",
    "Scott",
    "Green",
    "Baker",
    "Adams",
    "Nelson",
    "Hill",
    "Campbell",
    "Mitchell",
    "Roberts",
    "Carter",
    "Phillips",
    "Evans",
    "Turner",
    "Parker",
]
DOMAINS = ["example.com", "mail.test", "shop.example", "post.example.org"]

CENT = Decimal("0.01")


class _Version:
    """A counter that moves whenever any product, or any world's set of products, changes.

    The simulators page through tens of thousands of products; rebuilding and sorting the whole
    catalogue for every page made a full read quadratic. They cache their sorted views under this
    counter's value instead, so a cached view is only ever reused while nothing it was built from
    has changed (tests and handlers mutate products in place, so the products themselves report
    it)."""

    value = 0


def catalogue_version() -> int:
    """The current value of the product change counter (see :class:`_Version`)."""
    return _Version.value


# Every change to a product draws a new number from here (``next`` on a count is atomic, so two
# threads never draw the same one): see :func:`product_revision`.
_REVISIONS = itertools.count(1)


def product_revision(product: Product) -> int | None:
    """A number that changes whenever any field of ``product`` is set (None if it has none).

    The simulators keep each product's rendered rows under it, so a change to one product
    re-renders that product only. It is drawn *after* the new value is in place: a renderer reads
    the revision first, so what it rendered from a half-made change is filed under the old
    revision and never served again."""
    return product.__dict__.get("revision")


# Who hears of every change to a product or customer: ``watcher(container, record, what)``, where
# ``what`` is the field set, "added" or "deleted" and ``container`` the world's dict for the last
# two (None for a field). The simulators' webhook senders (synccli.sandbox.webhooks) listen here, so
# a change made by a handler, a test or a benchmark's mutation is pushed alike. Empty, it costs one
# truth test per change.
_WATCHERS: list[Callable[[Any, Any, str], None]] = []


def watch(watcher: Callable[[Any, Any, str], None]) -> None:
    _WATCHERS.append(watcher)


def unwatch(watcher: Callable[[Any, Any, str], None]) -> None:
    if watcher in _WATCHERS:
        _WATCHERS.remove(watcher)


def _tell(container: Any, record: Any, what: str) -> None:
    for watcher in list(_WATCHERS):
        watcher(container, record, what)


class _ProductDict(dict[str, Any]):
    """A world's products: adding or removing one moves the change counter."""

    def __setitem__(self, key: str, value: Any) -> None:
        _Version.value += 1
        super().__setitem__(key, value)
        if _WATCHERS:
            _tell(self, value, "added")

    def __delitem__(self, key: str) -> None:
        _Version.value += 1
        gone = super().pop(key)
        if _WATCHERS:
            _tell(self, gone, "deleted")

    def pop(self, key: str, *default: Any) -> Any:
        _Version.value += 1
        had = key in self
        gone = super().pop(key, *default)
        if had and _WATCHERS:
            _tell(self, gone, "deleted")
        return gone

    def popitem(self) -> tuple[str, Any]:
        _Version.value += 1
        return super().popitem()

    def setdefault(self, key: str, default: Any = None) -> Any:
        _Version.value += 1
        return super().setdefault(key, default)

    def update(self, *args: Any, **kw: Any) -> None:
        _Version.value += 1
        super().update(*args, **kw)

    def clear(self) -> None:
        _Version.value += 1
        super().clear()

    # ``|=`` returns the dict itself while ``|`` builds a wider one: the stubs' own dict carries
    # the same ignore for this clash.
    def __ior__(self, other: Any) -> _ProductDict:  # type: ignore[override, misc]
        _Version.value += 1
        super().__ior__(other)
        return self


@dataclass
class Product:
    id: str
    code: str
    name: str
    description: str
    price: Decimal
    stock: Decimal
    updated_at: datetime
    stock_updated_at: datetime
    created_at: datetime
    archived: bool = False
    tracked: bool = True
    seq: int = 0  # a provider's integer id where it has one (Lightspeed itemID)

    def __setattr__(self, name: str, value: Any) -> None:
        # every change to a product invalidates the simulators' cached views of the catalogue,
        # and their cached renderings of this product (see product_revision)
        _Version.value += 1
        object.__setattr__(self, name, value)
        object.__setattr__(self, "revision", next(_REVISIONS))
        if _WATCHERS:
            _tell(None, self, name)


@dataclass
class Customer:
    id: str
    name: str
    first_name: str
    last_name: str
    email: str | None
    account_number: str | None
    code: str
    updated_at: datetime
    created_at: datetime
    archived: bool = False
    seq: int = 0

    def __setattr__(self, name: str, value: Any) -> None:
        object.__setattr__(self, name, value)
        if _WATCHERS:
            _tell(None, self, name)


class _CustomerDict(dict[str, Any]):
    """A world's customers: adding one is told to the watchers (removing is not modelled: a
    provider archives a customer)."""

    def __setitem__(self, key: str, value: Any) -> None:
        super().__setitem__(key, value)
        if _WATCHERS:
            _tell(self, value, "added")


@dataclass
class Invoice:
    id: str
    number: str
    customer_id: str
    total: Decimal
    body: dict[str, Any]
    created_at: datetime
    updated_at: datetime
    seq: int = 0


@dataclass
class World:
    """Everything one account (tenant) holds."""

    products: dict[str, Product] = field(default_factory=_ProductDict)
    customers: dict[str, Customer] = field(default_factory=_CustomerDict)
    invoices: dict[str, Invoice] = field(default_factory=dict)
    deleted_products: set[str] = field(default_factory=set)
    next_seq: int = 1

    def seq(self) -> int:
        self.next_seq += 1
        return self.next_seq

    def product_by_code(self, code: str) -> Product | None:
        for p in self.products.values():
            if p.code == code:
                return p
        return None


class Generator:
    """Seeded data: the same seed always gives the same catalogue and customers."""

    def __init__(self, seed: int = 42, clock: Clock | None = None) -> None:
        self.rng = random.Random(seed)
        self.clock = clock or SystemClock()

    def uuid(self) -> str:
        return str(uuid.UUID(int=self.rng.getrandbits(128), version=4))

    def populate(
        self,
        world: World,
        products: int = 50,
        customers: int = 30,
        near_duplicates: int = 0,
    ) -> None:
        """Fill ``world`` with products and customers created in the past 90 days."""
        now = self.clock.now()
        for i in range(products):
            self.add_product(
                world, code=f"SKU-{i + 1:05d}", at=now - timedelta(days=90, seconds=-i)
            )
        for i in range(customers):
            self.add_customer(world, index=i, at=now - timedelta(days=90, seconds=-i))
        for _ in range(near_duplicates):
            self.add_near_duplicate(world)

    def add_product(
        self,
        world: World,
        code: str | None = None,
        at: datetime | None = None,
        name: str | None = None,
        price: Decimal | None = None,
    ) -> Product:
        at = at or self.clock.now()
        adjective, noun = self.rng.choice(ADJECTIVES), self.rng.choice(NOUNS)
        name = name or f"{adjective} {noun}"
        product = Product(
            id=self.uuid(),
            code=code or f"SKU-{len(world.products) + 1:05d}",
            name=name[:50],
            description=f"{name}, {self.rng.choice(['300ml', 'set of 2', 'hand made', 'large'])}",
            price=price if price is not None else Decimal(self.rng.randint(300, 20000)) / 100,
            stock=Decimal(self.rng.randint(0, 200)),
            updated_at=at,
            stock_updated_at=at,
            created_at=at,
            seq=world.seq(),
        )
        world.products[product.id] = product
        return product

    def add_customer(
        self,
        world: World,
        index: int | None = None,
        at: datetime | None = None,
        first: str | None = None,
        last: str | None = None,
        email: str | None = None,
        account_number: str | None = None,
    ) -> Customer:
        at = at or self.clock.now()
        n = len(world.customers) + 1 if index is None else index + 1
        first = first or self.rng.choice(FIRST)
        last = last or self.rng.choice(LAST)
        name = f"{first} {last}"
        taken = {c.name for c in world.customers.values() if not c.archived}
        if name in taken:
            name = f"{name} ({n})"
        email = email or f"{first.lower()}.{last.lower()}{n}@{self.rng.choice(DOMAINS)}"
        customer = Customer(
            id=self.uuid(),
            name=name,
            first_name=first,
            last_name=last,
            email=email,
            account_number=account_number or f"ACC-{n:05d}",
            code=f"C{n:05d}",
            updated_at=at,
            created_at=at,
            seq=world.seq(),
        )
        world.customers[customer.id] = customer
        return customer

    def add_near_duplicate(self, world: World) -> tuple[Customer, Customer]:
        """A pair the merchant would call one person: a typo, a transposed letter, an initial."""
        base = self.add_customer(world)
        first, last = base.first_name, base.last_name
        style = self.rng.choice(["typo", "transpose", "initial"])
        if style == "typo" and len(first) > 3:
            i = self.rng.randrange(1, len(first) - 1)
            first2 = first[:i] + first[i + 1 :]
        elif style == "transpose" and len(last) > 3:
            i = self.rng.randrange(1, len(last) - 2)
            last = last[:i] + last[i + 1] + last[i] + last[i + 2 :]
            first2 = first
        else:
            first2 = f"{first[0]}."
        twin = self.add_customer(
            world,
            first=first2,
            last=last,
            email=f"{first2.lower().strip('.')}{last.lower()}@{DOMAINS[0]}",
        )
        return base, twin


class Catalogue:
    """The tenants of one sandbox and the mutation API. All methods are thread-safe."""

    def __init__(self, seed: int = 42, clock: Clock | None = None) -> None:
        self.clock = clock or SystemClock()
        self.gen = Generator(seed, self.clock)
        self.tenants: dict[str, World] = {}
        self.lock = threading.RLock()

    def tenant(self, tenant_id: str) -> World:
        with self.lock:
            return self.tenants.setdefault(tenant_id, World())

    # mutations --------------------------------------------------------------------------------
    def _pick(self, world: World, n: int, exclude: set[str] | None = None) -> list[Product]:
        candidates = [
            p for p in world.products.values() if not p.archived and p.id not in (exclude or set())
        ]
        candidates.sort(key=lambda p: p.code)
        return self.gen.rng.sample(candidates, min(n, len(candidates)))

    def change_prices(self, tenant: str, n: int, exclude: set[str] | None = None) -> list[Product]:
        """Change the price of ``n`` products; their timestamp moves, as the provider's would."""
        with self.lock:
            world = self.tenant(tenant)
            picked = self._pick(world, n, exclude)
            now = self.clock.now()
            for p in picked:
                p.price = (p.price + Decimal(self.gen.rng.randint(1, 500)) / 100).quantize(CENT)
                p.updated_at = now
            return picked

    def change_descriptions(self, tenant: str, n: int) -> list[Product]:
        with self.lock:
            world = self.tenant(tenant)
            picked = self._pick(world, n)
            now = self.clock.now()
            for p in picked:
                p.description = f"{p.name}, revised {now:%Y-%m-%d %H:%M}"
                p.updated_at = now
            return picked

    def change_stock(self, tenant: str, n: int, exclude: set[str] | None = None) -> list[Product]:
        """Move the stock of ``n`` products. Only the stock timestamp moves (Lightspeed's ItemShop,
        Unleashed's StockOnHand); whether Xero's Item timestamp moves is a simulator switch."""
        with self.lock:
            world = self.tenant(tenant)
            picked = self._pick(world, n, exclude)
            now = self.clock.now()
            for p in picked:
                delta = self.gen.rng.choice([-3, -2, -1, 1, 2, 5, 10])
                p.stock = max(Decimal(0), p.stock + delta) if p.stock + delta >= 0 else p.stock + 1
                p.stock_updated_at = now
            return picked

    def archive(self, tenant: str, n: int) -> list[Product]:
        """Archive ``n`` products without moving any timestamp (the ghost case)."""
        with self.lock:
            picked = self._pick(self.tenant(tenant), n)
            for p in picked:
                p.archived = True
            return picked

    def delete(self, tenant: str, n: int) -> list[Product]:
        """Delete ``n`` products outright; nothing else changes."""
        with self.lock:
            world = self.tenant(tenant)
            picked = self._pick(world, n)
            for p in picked:
                del world.products[p.id]
                world.deleted_products.add(p.id)
            return picked

    def add_customers(self, tenant: str, n: int) -> list[Customer]:
        with self.lock:
            world = self.tenant(tenant)
            return [self.gen.add_customer(world) for _ in range(n)]
