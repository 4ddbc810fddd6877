"""The Files and Batch APIs: upload, list, read and delete files; create, list, read, cancel batches."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Depends, Request
from fastapi.responses import Response
from starlette.concurrency import run_in_threadpool

from auroragpt.serve.batches import BatchStore, parse_multipart
from auroragpt.serve.deps import api_key, json_body, read_capped
from auroragpt.serve.protocol import APIError
from auroragpt.serve.state import ServerState, server_state

router = APIRouter()


async def store(state: ServerState = Depends(server_state)) -> BatchStore:
    return state.store


def _page(data: list[dict]) -> dict:
    return {"object": "list", "data": data, "first_id": data[0]["id"] if data else None,
            "last_id": data[-1]["id"] if data else None, "has_more": False}


@router.post("/v1/files")
async def upload_file(request: Request, key_id: str = Depends(api_key), state: ServerState = Depends(server_state)):
    fields = parse_multipart(request.headers.get("content-type", ""), await read_capped(request, state.settings.max_file_bytes))
    if "file" not in fields:
        raise APIError(400, "the form has no 'file' field", param="file")
    purpose = fields.get("purpose", (None, b""))[1].decode("utf-8", errors="replace")
    if purpose != "batch":
        raise APIError(400, "only purpose='batch' is supported", param="purpose")
    filename, data = fields["file"]
    # off the event loop: writing (and, at the gateway, checking) a big file must not stall other requests
    return await run_in_threadpool(state.store.add_file, data, filename or "upload.jsonl", purpose, key_id)


@router.get("/v1/files")
async def list_files(purpose: str | None = None, key_id: str = Depends(api_key), files: BatchStore = Depends(store)):
    return _page(files.list_files(key_id, purpose))


@router.get("/v1/files/{file_id}")
async def file_info(file_id: str, key_id: str = Depends(api_key), files: BatchStore = Depends(store)):
    return files.get_file(file_id, key_id)


@router.delete("/v1/files/{file_id}")
async def delete_file(file_id: str, key_id: str = Depends(api_key), files: BatchStore = Depends(store)):
    return files.delete_file(file_id, key_id)


@router.get("/v1/files/{file_id}/content")
async def file_content(file_id: str, key_id: str = Depends(api_key), files: BatchStore = Depends(store)):
    return Response(files.file_content(file_id, key_id), media_type="application/jsonl")


@router.post("/v1/batches")
async def create_batch(key_id: str = Depends(api_key), body: Any = Depends(json_body), files: BatchStore = Depends(store)):
    return files.create_batch(body, key_id)


@router.get("/v1/batches")
async def list_batches(key_id: str = Depends(api_key), files: BatchStore = Depends(store)):
    return _page(files.list_batches(key_id))


@router.get("/v1/batches/{batch_id}")
async def get_batch(batch_id: str, key_id: str = Depends(api_key), files: BatchStore = Depends(store)):
    return files.get_batch(batch_id, key_id)


@router.post("/v1/batches/{batch_id}/cancel")
async def cancel_batch(batch_id: str, key_id: str = Depends(api_key), files: BatchStore = Depends(store)):
    return files.cancel_batch(batch_id, key_id)
