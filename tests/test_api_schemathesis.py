"""Schemathesis against the served OpenAPI document: no 5xx, every status and
body as documented, invalid data refused (a bounded, seeded run)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import httpx
import pytest

from jex.api.testing import ApiServer

pytestmark = pytest.mark.timeout(240)

CHECKS = ",".join((
    "not_a_server_error",
    "status_code_conformance",
    "content_type_conformance",
    "response_schema_conformance",
    "negative_data_rejection",
))
MAX_EXAMPLES = 5  # per operation and phase: keeps the run near ten seconds on two slow cores
SEED = 20261126


def test_schemathesis_finds_no_server_error_or_schema_violation(tmp_path):
    srv = ApiServer.start(tmp_path / "data", rate_per_s=1e6, rate_burst=1e6)
    try:
        with httpx.Client(base_url=srv.url, timeout=30) as http:
            r = http.post("/api/v1/instruments", json={"symbol": "X", "tick": "0.01", "lot": "1"},
                          headers=srv.headers("ops"))
            assert r.status_code == 200
        st = Path(sys.executable).with_name("schemathesis")
        run = subprocess.run(
            [str(st), "run", f"{srv.url}/schema/openapi.json", "--checks", CHECKS,
             "--header", f"Authorization: Bearer {srv.keys['ops']}",
             "--max-examples", str(MAX_EXAMPLES), "--seed", str(SEED), "--generation-database", "none",
             "--workers", "1", "--no-color", "--request-timeout", "30"],
            cwd=tmp_path, capture_output=True, text=True, timeout=200,
        )
        summary = run.stdout[-4000:]
        assert run.returncode == 0, summary
        assert "generated" in summary and "failure" not in summary.split("SUMMARY")[-1].lower(), summary
    finally:
        assert srv.stop() == 0
