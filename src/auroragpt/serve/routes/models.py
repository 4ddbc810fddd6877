"""GET /v1/models: the one model this server serves."""

from __future__ import annotations

from fastapi import APIRouter, Depends

from auroragpt.serve.deps import api_key
from auroragpt.serve.state import ServerState, server_state

router = APIRouter(dependencies=[Depends(api_key)])


@router.get("/v1/models")
async def list_models(state: ServerState = Depends(server_state)) -> dict:
    return {"object": "list", "data": [{"id": state.settings.model_name, "object": "model", "created": 0,
                                        "owned_by": "auroragpt", "max_model_len": state.engine.max_seq_len}]}
