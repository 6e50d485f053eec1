"""Operations endpoints: liveness, readiness (the ledger is reachable and migrated) and the
Prometheus exposition of this worker's gateway. No key needed; bind them to a trusted
network (`llmgw serve` binds 127.0.0.1 by default)."""

from __future__ import annotations

import asyncio
from typing import Any

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse, Response

from llmgw.errors import LedgerError
from llmgw.ledger.migrate import ensure_current
from llmgw.server.schemas import Health

router = APIRouter(tags=["operations"])


@router.api_route("/", methods=["GET", "HEAD"], response_model=Health, include_in_schema=False)
async def root(request: Request) -> Any:
    """The server answers: clients probe it (Claude Code sends `HEAD /` before its first
    call). No key needed, nothing recorded."""
    if request.method == "HEAD":
        return Response(status_code=200, media_type="application/json")
    return Health(status="ok", detail="llmgw: OpenAI and Anthropic APIs under /v1, the "
                                      "dashboard at /ui")


@router.get("/healthz", response_model=Health)
async def healthz() -> Any:
    """The process answers."""
    return Health(status="ok")


@router.get("/readyz", response_model=Health, responses={503: {"model": Health}})
async def readyz(request: Request) -> Any:
    """The ledger is reachable and at this llmgw's schema revision."""
    engine = request.app.state.gateway.ledger.engine
    try:
        await asyncio.to_thread(ensure_current, engine)
    except LedgerError as exc:
        detail = f"{exc.message} {exc.hint}" if exc.hint else exc.message
        return JSONResponse(Health(status="unready", detail=detail).model_dump(),
                            status_code=503)
    return Health(status="ready")


@router.get("/metrics", response_class=Response,
            responses={200: {"content": {"text/plain": {"schema": {"type": "string"}}}}})
async def metrics(request: Request) -> Response:
    """Prometheus text format (this worker's series)."""
    return Response(request.app.state.metrics.exposition(),
                    media_type="text/plain; version=0.0.4; charset=utf-8")
