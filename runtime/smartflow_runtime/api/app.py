"""The api role's aiohttp application: middlewares (errors, request metrics) around the routes.

Built by the role runner (:mod:`smartflow_runtime.roles`) for the ``api`` and ``all`` roles and
served on ``SMARTFLOW_HTTP_PORT``. The routes live in :mod:`.routes`; this module turns errors
into clear JSON responses and counts requests for Prometheus. Every error answer is JSON: a
database that cannot be reached (or any other database failure) is a 503 naming the dependency
with ``Retry-After``, never a plain-text 500.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Awaitable, Callable
from typing import Any

import asyncpg
from aiohttp import web
from prometheus_client import CollectorRegistry, Counter, Histogram
from pydantic import ValidationError

from ..errors import DatabaseError, IdempotencyKeyConflictError, PermanentHandlerError, SmartflowError
from ..outbox.model import DEFAULT_MAX_ATTEMPTS
from ..outbox.store import UNAVAILABLE_ERRORS
from .routes import MAX_ATTEMPTS_KEY, POOL_KEY, TOPIC_KEY, BadRequest, add_routes

log = logging.getLogger(__name__)

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


RETRY_AFTER_SECONDS = 1


def error_response(
    status: int, message: str, *, headers: dict[str, str] | None = None, **details: object
) -> web.Response:
    return web.json_response({"error": message, **details}, status=status, headers=headers)


def unavailable_response(dependency: str) -> web.Response:
    return error_response(
        503,
        f"{dependency} unavailable, retry later",
        dependency=dependency,
        headers={"Retry-After": str(RETRY_AFTER_SECONDS)},
    )


def _validation_message(error: ValidationError) -> str:
    parts = []
    for item in error.errors():
        where = ".".join(str(p) for p in item["loc"]) or "body"
        parts.append(f"{where}: {item['msg']}")
    return "invalid request body: " + "; ".join(parts)


def build_api_app(
    *,
    pool: asyncpg.Pool,
    registry: CollectorRegistry,
    topic: str,
    max_attempts: int = DEFAULT_MAX_ATTEMPTS,
) -> web.Application:
    """The api app; its commands write events to ``topic`` with ``max_attempts`` delivery attempts."""
    requests = Counter(
        "smartflow_api_requests_total",
        "Business API requests by route, method and status code.",
        ["route", "method", "status"],
        registry=registry,
    )
    latency = Histogram(
        "smartflow_api_request_seconds",
        "Business API request latency by route and method.",
        ["route", "method"],
        registry=registry,
        buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10),
    )

    label_children: dict[tuple[str, str, int], tuple[Any, Any]] = {}

    @web.middleware
    async def metrics_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
        started = time.perf_counter()
        # The route template, not the raw path: ids in paths would explode the label set.
        resource = request.match_info.route.resource
        route = resource.canonical if resource is not None else "unmatched"
        status = 500
        try:
            response = await handler(request)
            status = response.status
            return response
        except web.HTTPException as http_error:
            status = http_error.status
            raise
        finally:
            key = (route, request.method, status)
            children = label_children.get(key)
            if children is None:  # labels() costs a lock and a dict walk: once per label set
                children = (
                    requests.labels(route, request.method, str(status)),
                    latency.labels(route, request.method),
                )
                label_children[key] = children
            children[0].inc()
            children[1].observe(time.perf_counter() - started)

    @web.middleware
    async def error_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
        try:
            return await handler(request)
        except web.HTTPException:
            raise  # the router's own answers (404, 405): aiohttp renders them
        except ValidationError as error:
            return error_response(400, _validation_message(error))
        except BadRequest as error:
            return error_response(400, str(error))
        except (PermanentHandlerError, IdempotencyKeyConflictError) as error:
            return error_response(422, str(error))
        except (DatabaseError, asyncpg.PostgresError, *UNAVAILABLE_ERRORS) as error:
            # Wrapped at the store boundary as DatabaseError; the raw driver classes are caught too
            # so that no database failure ever becomes a plain 500. The client may retry: with an
            # Idempotency-Key a retry of a request that did commit has no second effect.
            log.warning("database unavailable for %s %s: %s", request.method, request.path, error)
            return unavailable_response("database")
        except SmartflowError as error:
            log.error("request failed: %s", error, exc_info=True)
            return error_response(500, "internal error")
        except Exception as error:  # a bug: still a JSON answer, and the traceback in the log
            log.error("request failed: %s", error, exc_info=True)
            return error_response(500, "internal error")

    app = web.Application(middlewares=[metrics_middleware, error_middleware], client_max_size=1024**2)
    app[POOL_KEY] = pool
    app[TOPIC_KEY] = topic
    app[MAX_ATTEMPTS_KEY] = max_attempts
    add_routes(app)
    return app
