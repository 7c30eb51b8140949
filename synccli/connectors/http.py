"""The one HTTP layer every connector goes through.

It owns: timeouts on every call, short-window pacing (:class:`WindowPacer` for "N calls a
window", steered by the provider's own count of calls left when it sends one; a leaky-bucket
pacer driven by the provider's headers, behind requests-ratelimiter's burst cap), the persistent
call ledger (day and month budgets survive between cron runs), error classification, bounded
jittered retries, token refresh on 401, and the one log line per call at ``-v`` with secrets
redacted.
"""

from __future__ import annotations

import gc
import json
import logging
import math
import os
import random
import threading
import time
from collections import deque
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from email.utils import parsedate_to_datetime
from typing import Any, Protocol, cast
from urllib.parse import urlencode, urlsplit

import requests
import urllib3
from pyrate_limiter import Limiter, Rate
from requests_ratelimiter import LimiterSession
from requests_ratelimiter.buckets import HostBucketFactory

from synccli import fmt, interrupt, secrets
from synccli.clock import Clock, SystemClock
from synccli.connectors.base import Limits
from synccli.connectors.wire import MESSAGE_KEYS, error_message
from synccli.errors import (
    AuthError,
    BadResponse,
    BudgetExhausted,
    ProviderError,
    RateLimited,
    Rejected,
    TransientError,
)
from synccli.progress import QUIET, ProgressObserver

log = logging.getLogger("synccli.http")


@dataclass
class CallRecord:
    """What the ledger keeps of one call."""

    at: datetime
    method: str
    path: str
    status: int | None
    ms: int
    cost: float
    remaining: dict[str, float] = field(default_factory=dict)  # what the provider says is left


class Ledger(Protocol):
    """Persistent per-connection call accounting (the store implements it)."""

    def check(self, now: datetime, cost: float) -> None:
        """Raise BudgetExhausted if the day's or month's budget is known to be spent."""

    def record(self, call: CallRecord) -> None:
        """Remember a call and what the provider said is left."""

    def exhausted(self, scope: str, reset_at: datetime, message: str) -> None:
        """The provider said the day/month budget is spent until ``reset_at``."""


class MemoryLedger:
    """A ledger that lives for one process: for tests, benchmarks and the sandbox-backed demo."""

    def __init__(self, limits: Limits | None = None) -> None:
        self.limits = limits or Limits()
        self.calls: list[CallRecord] = []
        self.blocked_until: datetime | None = None
        self.blocked_reason = ""

    def check(self, now: datetime, cost: float) -> None:
        if self.blocked_until and now < self.blocked_until:
            raise BudgetExhausted(self.blocked_reason, reset_at=self.blocked_until)

    def record(self, call: CallRecord) -> None:
        self.calls.append(call)

    def exhausted(self, scope: str, reset_at: datetime, message: str) -> None:
        self.blocked_until, self.blocked_reason = reset_at, message


class Auth(Protocol):
    """How a connector authenticates its calls."""

    def headers(self, method: str, url: str, query: str) -> dict[str, str]:
        """Headers to add to a request whose encoded query string is ``query``."""

    def on_unauthorized(self, used_headers: Mapping[str, str]) -> bool:
        """Called once after a 401; return True when a retry with fresh headers makes sense."""


class NoAuth:
    def headers(self, method: str, url: str, query: str) -> dict[str, str]:
        return {}

    def on_unauthorized(self, used_headers: Mapping[str, str]) -> bool:
        return False


def _no_body_error(body: Any) -> None:
    """Profile's default: no error envelope to look for, so the body need not be parsed twice."""
    return None


@dataclass
class Profile:
    """Provider-specific reading of responses; each connector module builds one."""

    # headers -> {"minute": n, "day": n, "bucket_level": x, "bucket_size": y, "drip": z}
    read_remaining: Callable[[requests.Response], dict[str, float]] = lambda r: {}
    # a 429 (or quota answer) -> "short" (wait and retry), "day" or "month" (budget exhausted)
    limit_scope: Callable[[requests.Response], str] = lambda r: "short"
    # a readable one-line error message from an error response
    error_message: Callable[[requests.Response], str] = lambda r: _default_message(r)
    # some providers answer a quota breach with another status (Unleashed: unconfirmed)
    is_limit: Callable[[requests.Response], bool] = lambda r: r.status_code == 429
    # a 200 whose body is an error envelope
    body_error: Callable[[Any], str | None] = _no_body_error
    # how the connector reads a body (from its bytes): the body-error check parses with it, and
    # leaves the result for the connector (``parsed_body``), so a page is parsed once
    loads: Callable[[bytes], Any] = json.loads


# where _body_error leaves the body it parsed, for parse_json to reuse
_PARSED = "_synccli_parsed_json"
NOT_PARSED: Any = _PARSED  # parsed_body's answer when nothing was parsed


def _default_message(resp: requests.Response) -> str:
    return error_message(resp, MESSAGE_KEYS)


def _server_date(resp: requests.Response) -> datetime | None:
    """The answer's ``Date`` header (RFC 7231: every origin server with a clock sends it), UTC."""
    value = resp.headers.get("Date")
    if not value:
        return None
    try:
        when = parsedate_to_datetime(value)
    except (TypeError, ValueError, IndexError):
        return None
    return when.replace(tzinfo=UTC) if when.tzinfo is None else when.astimezone(UTC)


def retry_after_seconds(resp: requests.Response, now: datetime) -> float | None:
    """``Retry-After`` as seconds: a number (Xero, Lightspeed R) or an HTTP date (Lightspeed X)."""
    value = resp.headers.get("Retry-After")
    if not value:
        return None
    try:
        return max(0.0, float(value))
    except ValueError:
        pass
    try:
        return max(0.0, (parsedate_to_datetime(value) - now).total_seconds())
    except (TypeError, ValueError):
        return None


# Slack added to every computed wait, as a share of the window: covers a provider clock that runs a
# little faster than ours and sleep granularity (60 ms of a real minute, 1 ms when the sandbox
# makes a minute last a second). A fixed number of milliseconds would be too much for a scaled
# window and nothing for a real one.
WINDOW_MARGIN = 0.001


class WindowPacer:
    """At most ``limit`` calls in any ``window`` seconds, without giving calls away.

    Two ways of knowing when the next call may go:

    - A log of the last ``limit`` calls, each stamped when its *answer* came back. The provider
      counted the call somewhere between our send and its answer, so a call sent ``window``
      seconds after the answer of the call ``limit`` places earlier cannot share a window with it,
      whatever the network did: no fixed buffer to guess, and latency is accounted for. This is a
      rolling window, safe against fixed and rolling provider windows alike.
    - The provider's own count of calls left in its current fixed window (Xero's
      ``X-MinLimit-Remaining``), when answers carry one (``steer``). While calls are left we send;
      when none are, we wait until the latest moment that window can end: ``window`` after the
      answer of the first call we saw in it (the window began before that answer). A rolling log
      copies every stall of the previous window into the next one (call k+limit waits for call k's
      slot however late call k was), so a slow or busy client falls further behind each window;
      the provider's fixed window forgets stalls, and steering by its count does too.

    One client is driven by one thread at a time (jobs are sequential); the lock only keeps the
    bookkeeping whole if that ever changes.
    """

    def __init__(
        self,
        limit: int,
        window: float,
        *,
        steer: bool = True,
        monotonic: Callable[[], float] = time.monotonic,
        sleep: Callable[[float], None] = interrupt.sleep,
    ) -> None:
        self.limit = limit
        self.window = window
        self.margin = window * WINDOW_MARGIN
        self.steer = steer
        self._monotonic = monotonic
        self._sleep = sleep
        self._answers: deque[float] = deque(maxlen=limit)  # answer times of the last calls
        self._left: float | None = None  # calls the provider said are left, less those sent since
        self._said: float | None = None  # what the provider last said was left
        self._window_end: float | None = None  # the latest its current window can end
        self._lock = threading.Lock()
        self.waited = 0.0  # seconds spent waiting, for run summaries and benchmarks

    def resume(self, left: float, ends_in: float) -> None:
        """Start from a count the provider gave an earlier client: ``left`` calls until a
        window that ends at the latest ``ends_in`` seconds from now."""
        with self._lock:
            self._said = self._left = left
            self._window_end = self._monotonic() + ends_in + self.margin

    def delay(self, now: float) -> float:
        """Seconds to wait from ``now`` before the next call may be sent (0: send now)."""
        if self._left is not None and self._window_end is not None:
            if self._left >= 1 or now >= self._window_end:
                return 0.0
            return self._window_end - now
        if len(self._answers) < self.limit:
            return 0.0
        return max(0.0, self._answers[0] + self.window + self.margin - now)

    def acquire(self) -> None:
        """Block until the next call may be sent; the caller sends it right away."""
        with self._lock:
            while True:
                wait = self.delay(self._monotonic())
                if wait <= 0:
                    break
                self.waited += wait
                self._sleep(wait)
            if self._left is not None:
                self._left -= 1

    def done(
        self,
        sent_at: float,
        answered_at: float,
        left: float | None = None,
        *,
        refused: bool = False,
    ) -> None:
        """Record a call sent at ``sent_at`` and answered (or failed) at ``answered_at`` (both on
        the pacer's clock); ``left`` is the provider's count of calls left in its current window,
        when the answer carried one; ``refused``: the provider answered 429 (its Retry-After is
        waited out by the caller)."""
        with self._lock:
            self._answers.append(answered_at)
            if not self.steer or refused or (self._window_end is None and left is None):
                return
            ended = self._window_end is not None and sent_at >= self._window_end
            if left is None:
                if ended:
                    # No count this time, but the window we knew of had ended before we sent, so
                    # this call is in a later one, which allows ``limit`` at most. Without this, a
                    # provider that stopped sending its count would never be paced again.
                    self._window_end = answered_at + self.window + self.margin
                    self._said = self._left = self.limit - 1
                return
            if (
                self._said is None
                or self._window_end is None
                or left >= self._said  # the count went back up: a window began since our last call
                or ended
            ):
                self._window_end = answered_at + self.window + self.margin
            self._said = left
            self._left = left


class HttpClient:
    """A requests session with limits, ledger, retries and auth, for one connection."""

    def __init__(
        self,
        base_url: str,
        *,
        auth: Auth | None = None,
        limits: Limits | None = None,
        profile: Profile | None = None,
        ledger: Ledger | None = None,
        clock: Clock | None = None,
        time_scale: float = 1.0,
        timeout: tuple[float, float] = (5.0, 30.0),
        retries: int = 3,
        backoff: float = 0.5,
        verify: bool = True,
        pace: bool = True,
        default_headers: Mapping[str, str] | None = None,
    ) -> None:
        self.base_url = base_url.rstrip("/")
        self.auth = auth or NoAuth()
        self.limits = limits or Limits()
        self.profile = profile or Profile()
        self.ledger = ledger
        self.clock = clock or SystemClock()
        self.time_scale = time_scale
        self.timeout = timeout
        self.retries = retries
        self.backoff = backoff
        self.default_headers = dict(default_headers or {})
        self.calls = 0  # calls this client made (for run summaries)
        # the provider's clock: the Date header of its latest answer (None before any, or when
        # it sent none). A job judges the provider's record stamps against it, not against ours.
        self.server_date: datetime | None = None
        self.cost = 0.0
        self.session = self._session(pace)
        # requests reads the proxy, CA-bundle and netrc settings from the environment again on
        # every call (walking os.environ, stat'ing ~/.netrc): about 1 ms a call, 0.5 s of a
        # 500-page pull. They are read here once instead, and proxies once per host.
        self.session.trust_env = False
        bundle = os.environ.get("REQUESTS_CA_BUNDLE") or os.environ.get("CURL_CA_BUNDLE")
        self.session.verify = bundle if verify is True and bundle else verify
        self._proxies: dict[str, dict[str, str]] = {}
        self.pacer = self._window_pacer(pace)
        self._bucket: tuple[float, float, float, float] | None = None  # level, size, drip, t
        # Set by a job for the writes it makes under a claim (an invoice job's): ``fence`` is
        # called right before every write is sent, retries included, and raises ClaimLost once
        # the claim is gone, so a process that stalled past its claim sends nothing more;
        # ``write_wait`` caps the seconds one write may spend in retries and Retry-After waits,
        # so that it never outlives the claim it was started under.
        self.fence: Callable[[], None] | None = None
        self.write_wait: float | None = None
        # told of every wait for the provider's rate limit (a progress line shows it)
        self.observer: ProgressObserver = QUIET

    def _session(self, pace: bool) -> requests.Session:
        if not (pace and self.limits.drip_per_second and not self.limits.per_minute):
            return requests.Session()
        # Leaky bucket: the header-driven pacer (_pace) does the real work; requests-ratelimiter
        # only caps the burst before the first answer has told us the bucket's level, a job a
        # plain rate limiter does well (no provider count to read, no window to fill).
        burst = int(self.limits.bucket_size or 60)
        window_ms = int(burst * 1000 / self.limits.drip_per_second / self.time_scale)
        limiter = Limiter(HostBucketFactory(rates=[Rate(burst, max(1, window_ms))]), buffer_ms=20)
        return LimiterSession(limiter=limiter, max_delay=None)

    def _window_pacer(self, pace: bool) -> WindowPacer | None:
        if pace and self.limits.per_minute:
            limit, seconds = self.limits.per_minute, 60.0
        elif pace and self.limits.window_calls and self.limits.window_seconds:
            limit, seconds = self.limits.window_calls, self.limits.window_seconds
        else:
            return None
        # "N calls a minute" (Xero) or "N calls in 5 minutes" (Lightspeed X-Series): steered by
        # the provider's own count of calls left, which a client-side rate limiter cannot read
        # (see WindowPacer). The window shrinks with the sandbox's time scale so tests cross it
        # in seconds.
        pacer = WindowPacer(limit, seconds / self.time_scale, sleep=self._rate_limit_sleep)
        said = getattr(self.ledger, "window_left", None)
        known = said(self.clock.now()) if said is not None else None
        if known is not None:
            # an earlier run (maybe another host) left this window partly spent: start from
            # the provider's own count, until the latest that window can end
            left, at = known
            ends = seconds - (self.clock.now() - at).total_seconds()
            pacer.resume(left, max(0.0, ends) / self.time_scale)
        return pacer

    # ------------------------------------------------------------------------------------------
    def url(self, path: str) -> str:
        return path if path.startswith("http") else f"{self.base_url}/{path.lstrip('/')}"

    def request(
        self,
        method: str,
        path: str,
        *,
        params: Mapping[str, Any] | list[tuple[str, Any]] | None = None,
        query: str | None = None,
        json_body: Any = None,
        headers: Mapping[str, str] | None = None,
        cost: float = 1.0,
        retry: bool | None = None,
        ok: tuple[int, ...] = (),
    ) -> requests.Response:
        """Send one logical request; returns a 2xx response (or one whose status is in ``ok``).

        ``query`` is an already-encoded query string sent byte for byte (Unleashed signs it);
        otherwise ``params`` is encoded once here. Writes are retried only when ``retry`` is True
        (the caller knows the write is idempotent); reads are retried on transient errors.
        """
        if query is None and params:
            query = urlencode(params, doseq=True)
        url = self.url(path)
        if query:
            url = f"{url}{'&' if '?' in url else '?'}{query}"
        query_string = urlsplit(url).query
        write = method.upper() != "GET"
        retry = not write if retry is None else retry
        began = time.monotonic()
        refreshed = False
        attempt = 0
        while True:
            attempt += 1
            try:
                resp = self._send_once(method, url, query_string, json_body, headers, cost)
            except TransientError as err:
                if retry and attempt <= self.retries:
                    self._wait_to_retry(self._backoff_delay(attempt, err), err, write, began)
                    continue
                raise
            status = resp.status_code
            if status in ok:
                return resp  # the caller reads this answer itself (e.g. a 404 meaning "absent")
            if 200 <= status < 300:
                body_error = self._body_error(resp)
                if body_error:
                    raise BadResponse(f"{method} {urlsplit(url).path}: {body_error}", status=status)
                return resp
            if status == 401 and not refreshed:
                refreshed = True
                # every header this client sends is text (requests types them str | bytes)
                if self.auth.on_unauthorized(cast(Mapping[str, str], resp.request.headers)):
                    continue
            failure = self._classify(method, url, resp)
            if isinstance(failure, RateLimited) and attempt <= self.retries + 3:
                self._wait_to_retry(failure.retry_after, failure, write, began, rate_limit=True)
                continue
            if isinstance(failure, TransientError) and retry and attempt <= self.retries:
                self._wait_to_retry(self._backoff_delay(attempt, failure), failure, write, began)
                continue
            raise failure

    def _wait_to_retry(
        self,
        seconds: float,
        err: ProviderError,
        write: bool,
        began: float,
        *,
        rate_limit: bool = False,
    ) -> None:
        """Sleep before sending again; a write that would then have waited longer than
        ``write_wait`` in all gives up instead (a transient failure: the next run tries again)."""
        if write and self.write_wait is not None:
            spent = time.monotonic() - began
            if spent + seconds > self.write_wait:
                raise TransientError(
                    f"{err.message}; not waiting {seconds:g}s more for it (a write may wait "
                    f"{self.write_wait:g}s in all): tried again by the next run",
                    status=err.status,
                    body=err.body,
                ) from err
        if rate_limit:
            self._rate_limit_sleep(min(seconds, 3600.0))
        else:
            self._sleep(seconds)

    def json(self, method: str, path: str, **kw: Any) -> Any:
        """``request`` and parse the JSON body; an unreadable body is a BadResponse."""
        resp = self.request(method, path, **kw)
        return parse_json(resp)

    # ------------------------------------------------------------------------------------------
    def _send_once(
        self,
        method: str,
        url: str,
        query: str,
        json_body: Any,
        headers: Mapping[str, str] | None,
        cost: float,
    ) -> requests.Response:
        now = self.clock.now()
        if self.ledger is not None:
            self.ledger.check(now, cost)
        self._pace(cost)
        if self.pacer is not None:
            self.pacer.acquire()
        all_headers = {"Accept": "application/json", **self.default_headers}
        if json_body is not None:
            all_headers["Content-Type"] = "application/json"
        all_headers.update(self.auth.headers(method, url, query))
        all_headers.update(headers or {})
        data = None if json_body is None else json.dumps(json_body, default=str)
        if self.fence is not None and method.upper() != "GET":
            self.fence()  # the last moment before the write leaves: is the claim still ours?
        started = time.perf_counter()
        sent_at = time.monotonic()
        path = urlsplit(url).path
        status: int | None = None
        remaining: dict[str, float] = {}
        try:
            resp = self.session.request(
                method,
                url,
                data=data,
                headers=all_headers,
                timeout=self.timeout,
                proxies=self._proxies_for(url),
                stream=True,  # the body is read by _read_body, in one go
            )
            status = resp.status_code
            remaining = self._remaining(resp)
            self.server_date = _server_date(resp)
            _read_body(resp)
            return resp
        except (requests.Timeout, urllib3.exceptions.TimeoutError) as exc:
            raise TransientError(f"{method} {path}: timed out ({exc.__class__.__name__})") from None
        except requests.ConnectionError as exc:
            raise TransientError(f"{method} {path}: connection failed ({_short(exc)})") from None
        except (urllib3.exceptions.ProtocolError, urllib3.exceptions.DecodeError) as exc:
            raise TransientError(f"{method} {path}: answer cut short ({_short(exc)})") from None
        finally:
            if self.pacer is not None:
                # Every call stays in the pacer's log (one that died on the way may have been
                # counted); a 429's count describes a window the caller waits out (Retry-After).
                calls_left = remaining.get("minute", remaining.get("window"))
                self.pacer.done(sent_at, time.monotonic(), calls_left, refused=status == 429)
            ms = int((time.perf_counter() - started) * 1000)
            self.calls += 1
            self.cost += cost
            if self.ledger is not None:
                self.ledger.record(CallRecord(now, method, path, status, ms, cost, remaining))
            left = " ".join(f"{k}={fmt.number(v)}" for k, v in remaining.items())
            cost_text = fmt.number(cost)
            log.info(
                secrets.redact(f"{method} {path} {status or 'ERR'} {ms}ms cost={cost_text} {left}")
            )

    def _proxies_for(self, url: str) -> dict[str, str]:
        """The environment's proxies for ``url``'s host (``HTTPS_PROXY``, ``NO_PROXY``...), as
        requests itself would choose them, read once per host."""
        parts = urlsplit(url)
        key = f"{parts.scheme}://{parts.netloc}"
        found = self._proxies.get(key)
        if found is None:
            found = self._proxies[key] = requests.utils.get_environ_proxies(key)
        return found

    def _remaining(self, resp: requests.Response) -> dict[str, float]:
        try:
            remaining = self.profile.read_remaining(resp)
        except (ValueError, TypeError):
            return {}
        if {"bucket_level", "bucket_size"} <= remaining.keys():
            drip = remaining.get("drip") or self.limits.drip_per_second or 1.0
            self._bucket = (
                remaining["bucket_level"],
                remaining["bucket_size"],
                drip,
                time.monotonic(),
            )
        return remaining

    def _pace(self, cost: float) -> None:
        """Wait until a leaky bucket has room for this call (Lightspeed): never trip a 429 we
        could see coming from the provider's own headers."""
        if not self._bucket:
            return
        level, size, drip, at = self._bucket
        drip_scaled = drip * self.time_scale
        level = max(0.0, level - (time.monotonic() - at) * drip_scaled)
        excess = level + cost - size
        if excess > 0:
            self._rate_limit_sleep(excess / drip_scaled)

    def _classify(self, method: str, url: str, resp: requests.Response) -> ProviderError:
        status = resp.status_code
        path = urlsplit(url).path
        message = secrets.redact(self.profile.error_message(resp))
        body = secrets.redact(resp.text[:2000])
        where = f"{method} {path}"
        if self.profile.is_limit(resp):
            scope = self.profile.limit_scope(resp)
            # an HTTP-date Retry-After (Lightspeed X-Series) is read against the answer's own
            # Date, not our clock [its rate-limiting page]
            wait = retry_after_seconds(resp, _server_date(resp) or self.clock.now())
            if scope in ("day", "month"):
                reset = self.clock.now() + timedelta(
                    seconds=wait or _until_reset(scope, self.clock)
                )
                text = (
                    f"{where}: the provider's {scope} budget is exhausted until "
                    f"{reset:%Y-%m-%d %H:%M} UTC"
                )
                if self.ledger is not None:
                    self.ledger.exhausted(scope, reset, text)
                return BudgetExhausted(text, reset_at=reset, status=status, body=body)
            return RateLimited(
                f"{where}: rate limited ({scope})",
                retry_after=wait if wait is not None else 1.0 / self.time_scale,
                status=status,
                body=body,
            )
        if status in (401,):
            return AuthError(f"{where}: not authorised ({message})", status=status, body=body)
        if status == 403:
            return AuthError(f"{where}: forbidden ({message})", status=status, body=body)
        if status >= 500 or status in (408, 425):
            return TransientError(f"{where}: HTTP {status} {message}", status=status, body=body)
        return Rejected(f"{where}: {message}", status=status, body=body)

    def _body_error(self, resp: requests.Response) -> str | None:
        if self.profile.body_error is _no_body_error:
            return None  # nothing to look for: a 25 MB catalogue is parsed once, by parse_json
        ctype = resp.headers.get("Content-Type", "")
        if resp.status_code == 204 or not resp.content or "json" not in ctype:
            return None
        try:
            body = without_gc(self.profile.loads, resp.content)
        except ValueError:  # UnicodeDecodeError too: the connector's own parse reports it
            return None
        setattr(resp, _PARSED, body)  # parse_json answers with it instead of parsing again
        return self.profile.body_error(body)

    def _backoff_delay(self, attempt: int, err: ProviderError) -> float:
        # Full jitter (AWS-style): spreads retries of parallel cron runs apart.
        base = self.backoff * (2 ** (attempt - 1))
        return random.uniform(0, base) / self.time_scale

    def _sleep(self, seconds: float) -> None:
        if seconds > 0:
            interrupt.sleep(min(seconds, 3600.0))  # a stop signal ends it at once

    def _rate_limit_sleep(self, seconds: float) -> None:
        """Wait for the provider's rate limit (a pacer's wait or a 429's Retry-After), telling
        the observer; a stop signal ends it at once."""
        if seconds <= 0:
            return
        self.observer.waiting(seconds)
        try:
            interrupt.sleep(seconds)
        finally:
            self.observer.waited()


def _read_body(resp: requests.Response) -> None:
    """Read the whole body at once, as requests would have with ``stream=False``.

    requests reads a body 10 KB at a time, and each read gives up the interpreter lock: while the
    pull's other thread was busy, every one of a 1.5 MB page's ~150 reads waited to get it back
    (12-14 ms a page, against 8 ms read whole; 3-4 ms against 1.6 ms on a quiet machine). The
    body is stored where ``Response.content`` keeps it (vcrpy and requests' own adapters do the
    same); reading it to the end hands the connection back to the pool."""
    try:
        body = resp.raw.read(decode_content=True)
    except BaseException:
        resp.close()  # a connection dropped mid-answer is not handed back
        raise
    resp._content = body or b""
    resp._content_consumed = True
    resp.raw.release_conn()


def without_gc(parse: Callable[..., Any], *args: Any, **kw: Any) -> Any:
    """``parse(*args, **kw)`` with the cyclic garbage collector paused: parsing a page creates
    tens of thousands of dicts and lists, all reachable until it returns, and each collection
    the allocations trigger walks them (and everything else alive) for nothing to free."""
    if not gc.isenabled():
        return parse(*args, **kw)
    gc.disable()
    try:
        return parse(*args, **kw)
    finally:
        gc.enable()


def parsed_body(resp: requests.Response) -> Any:
    """The body the body-error check already parsed with the profile's ``loads`` (taken: a second
    call answers ``NOT_PARSED``), or ``NOT_PARSED``."""
    return resp.__dict__.pop(_PARSED, NOT_PARSED)


def parse_json(
    resp: requests.Response, object_hook: Callable[[dict[str, Any]], Any] | None = None
) -> Any:
    """The JSON body of ``resp``; HTML error pages and truncated bodies become BadResponse.

    ``object_hook`` is json's: it replaces each object as soon as it is parsed."""
    parsed = resp.__dict__.pop(_PARSED, _PARSED)
    if parsed is not _PARSED and object_hook is None:
        return parsed
    try:
        # from the bytes: a 25 MB catalogue is not copied into a str first
        return without_gc(json.loads, resp.content, object_hook=object_hook)
    except ValueError:
        snippet = resp.content[:80].decode("utf-8", "replace").replace("\n", " ")
        raise BadResponse(
            f"{resp.request.method} {urlsplit(resp.url).path}: unreadable response "
            f"(HTTP {resp.status_code}, {resp.headers.get('Content-Type', 'no content type')}): "
            f"{snippet!r}",
            status=resp.status_code,
        ) from None


def _until_reset(scope: str, clock: Clock) -> float:
    now = clock.now()
    if scope == "day":
        nxt = (now + timedelta(days=1)).replace(hour=0, minute=0, second=0, microsecond=0)
    else:
        year, month = (now.year + 1, 1) if now.month == 12 else (now.year, now.month + 1)
        nxt = now.replace(year=year, month=month, day=1, hour=0, minute=0, second=0, microsecond=0)
    return math.ceil((nxt - now).total_seconds())


def _short(exc: Exception) -> str:
    text = str(exc)
    if "reset" in text.lower():
        return "connection reset"
    if "refused" in text.lower():
        return "connection refused"
    return exc.__class__.__name__


def x_ratelimit(resp: requests.Response) -> dict[str, float]:
    """The common ``X-RateLimit-Remaining`` and ``X-RateLimit-Limit`` headers, for
    :attr:`Profile.read_remaining`: what is left of the window steers the pacer; the limit is
    kept beside it."""
    pairs = (("window", "X-RateLimit-Remaining"), ("window_limit", "X-RateLimit-Limit"))
    return {key: float(resp.headers[name]) for key, name in pairs if name in resp.headers}
