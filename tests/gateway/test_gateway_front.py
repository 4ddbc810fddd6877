"""The gateway's front in-process (no jobs started): serve's key check, validation and error shapes."""

from __future__ import annotations

from fastapi.testclient import TestClient

from auroragpt.gateway.app import create_gateway_app
from auroragpt.gateway.config import load_gateway_config
from auroragpt.serve.auth import KeyChecker, hash_key

KEY = "sk-front"


def _app(tmp_path):
    path = tmp_path / "g.toml"
    path.write_text(f'[[sites]]\nname = "here"\nscheduler = "local"\n[[models]]\nname = "tiny"\npath = "{tmp_path}"\n')
    return create_gateway_app(load_gateway_config(path), KeyChecker([hash_key(KEY)]))


def test_keys_validation_and_unknown_models(tmp_path):
    client = TestClient(_app(tmp_path))  # no lifespan: nothing polls, nothing is submitted
    r = client.get("/v1/models")
    assert r.status_code == 401 and r.headers["WWW-Authenticate"].startswith("Bearer")
    assert r.json()["error"]["code"] == "invalid_api_key"
    auth = {"Authorization": f"Bearer {KEY}"}
    models = client.get("/v1/models", headers=auth).json()["data"]
    assert models[0]["id"] == "tiny" and models[0]["state"] == "cold"
    assert client.get("/v1/jobs", headers=auth).json()["data"] == []
    r = client.post("/v1/completions", headers=auth, json={"model": "nope", "prompt": "x"})
    assert r.status_code == 404 and r.json()["error"]["code"] == "model_not_found"
    r = client.post("/v1/completions", headers=auth, json={"model": "tiny", "prompt": "x", "max_tokens": "4"})
    assert r.status_code == 400 and r.json()["error"]["param"] == "max_tokens"
    r = client.post("/v1/chat/completions", headers=auth, content=b"[" * 1000)
    assert r.status_code == 400
    assert client.get("/health").status_code == 200  # open, as in serve


def test_a_model_no_site_takes_answers_503_with_each_sites_reason(tmp_path):
    path = tmp_path / "g.toml"
    path.write_text(f'[gateway]\nstate_dir = "state"\n[[sites]]\nname = "broken"\nscheduler = "local"\n'
                    f'python = "{tmp_path}/no-such-python"\n[[models]]\nname = "tiny"\npath = "{tmp_path}"\n')
    with TestClient(create_gateway_app(load_gateway_config(path), KeyChecker([hash_key(KEY)]))) as client:
        r = client.post("/v1/completions", headers={"Authorization": f"Bearer {KEY}"}, json={"model": "tiny", "prompt": "x"})
    assert r.status_code == 503 and int(r.headers["Retry-After"]) >= 1
    error = r.json()["error"]
    assert "site broken: submission failed" in error["message"] and "no-such-python" in error["message"]
    assert error["model_state"]["state"] == "cold" and "broken" in error["model_state"]["site_errors"]
