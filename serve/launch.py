"""Start `bentoml serve` in the background on 127.0.0.1 and talk to it (tests, benchmarks, scripts).

`bentoml serve` empties $BENTOML_HOME/prometheus_multiproc_dir when it starts, so two servers on one home break
each other's metrics: with `own_home`, the server gets a home of its own whose model and bento stores are links
to the given home's.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

__all__ = ["LocalServer", "free_port"]

ROOT = Path(__file__).resolve().parents[1]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class LocalServer:
    def __init__(self, target: str, home: Path, env: dict[str, str] | None = None, own_home: bool = True,
                 log: Path | None = None, timeout: float = 120.0) -> None:
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        home = Path(home)
        home.mkdir(parents=True, exist_ok=True)
        server_home = home
        self._own_home: Path | None = None
        if own_home:
            # a fresh folder per server: a port can come round again, and an earlier server's folder stays behind
            server_home = self._own_home = Path(tempfile.mkdtemp(prefix=f"home-{self.port}-", dir=home))
            for store in ("models", "bentos"):
                (home / store).mkdir(exist_ok=True)
                (server_home / store).symlink_to(home / store)
        self.log = log or home / f"serve-{self.port}.log"
        full_env = {**os.environ, "BENTOML_HOME": str(server_home), "BENTOML_DO_NOT_TRACK": "true", **(env or {})}
        bentoml = Path(sys.executable).parent / "bentoml"
        self.proc = subprocess.Popen([str(bentoml), "serve", target, "--port", str(self.port)], cwd=ROOT,
                                     env=full_env, stdout=open(self.log, "w"), stderr=subprocess.STDOUT,
                                     start_new_session=True)
        deadline = time.time() + timeout
        while time.time() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"bentoml serve exited: {self.log.read_text()[-3000:]}")
            try:
                if self.get("/readyz")[0] == 200:
                    return
            except OSError:
                pass
            time.sleep(0.5)
        self.stop()
        raise RuntimeError(f"bentoml serve did not become ready in {timeout:.0f} s: {self.log.read_text()[-3000:]}")

    def get(self, path: str) -> tuple[int, str]:
        try:
            with urllib.request.urlopen(self.url + path, timeout=30) as r:
                return r.status, r.read().decode()
        except urllib.error.HTTPError as e:
            return e.code, e.read().decode()

    def post(self, path: str, body: Any = None, raw: bytes | None = None,
             content_type: str = "application/json") -> tuple[int, Any]:
        data = raw if raw is not None else json.dumps(body).encode()
        req = urllib.request.Request(self.url + path, data=data, method="POST", headers={"Content-Type": content_type})
        try:
            with urllib.request.urlopen(req, timeout=60) as r:
                return r.status, json.loads(r.read())
        except urllib.error.HTTPError as e:
            text = e.read().decode()
            try:
                return e.code, json.loads(text)
            except ValueError:
                return e.code, text

    def stop(self) -> None:
        try:
            os.killpg(self.proc.pid, signal.SIGTERM)
            self.proc.wait(timeout=30)
        except (ProcessLookupError, subprocess.TimeoutExpired):
            try:
                os.killpg(self.proc.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        if self._own_home is not None:  # its links to the shared stores and its metrics files, not the stores
            shutil.rmtree(self._own_home, ignore_errors=True)

    def __enter__(self) -> "LocalServer":
        return self

    def __exit__(self, *exc: Any) -> None:
        self.stop()
