"""GET /health (open, for load balancers) and GET /metrics (Prometheus, behind the keys)."""

from __future__ import annotations

from fastapi import APIRouter, Depends
from fastapi.responses import Response

from auroragpt.serve.deps import api_key
from auroragpt.serve.state import ServerState, server_state

router = APIRouter()


@router.get("/health")
async def health(state: ServerState = Depends(server_state)) -> dict:
    engine = state.engine
    return {"status": "ok", "model": state.settings.model_name, "running": engine.num_running, "waiting": engine.queue_depth}


@router.get("/metrics", dependencies=[Depends(api_key)])
async def prometheus(state: ServerState = Depends(server_state)) -> Response:
    from prometheus_client import CONTENT_TYPE_LATEST

    return Response(state.metrics.exposition(), media_type=CONTENT_TYPE_LATEST)
