"""Start and stop gunicorn on 127.0.0.1 for the benchmark."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

from bench.client import HttpClient

ROOT = Path(__file__).resolve().parent.parent


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


class Gunicorn:
    """`gunicorn reviewqueue.wsgi:application -w N -b 127.0.0.1:PORT` with the bench settings;
    with `asgi=True`, `reviewqueue.asgi:application` with uvicorn workers instead."""

    def __init__(
        self, *, database_url: str, workers: int = 2, log_path: Path | None = None, asgi: bool = False
    ) -> None:
        self.port = free_port()
        self.workers = workers
        self.asgi = asgi
        self.database_url = database_url
        self.log_path = log_path or ROOT / "bench" / "results" / "gunicorn.log"
        self.process: subprocess.Popen | None = None

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self, timeout: float = 60.0) -> None:
        env = {
            **os.environ,
            "DJANGO_SETTINGS_MODULE": os.environ.get("DJANGO_SETTINGS_MODULE", "bench.settings"),
            "DATABASE_URL": self.database_url,
            "DEBUG": "0",
            "ALLOWED_HOSTS": "127.0.0.1",
            "SECRET_KEY": os.environ.get("SECRET_KEY", "bench-only-secret-key-not-for-production-use-0123456789"),
            "LOG_LEVEL": "WARNING",
        }
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        log = self.log_path.open("ab")
        app = "reviewqueue.asgi:application" if self.asgi else "reviewqueue.wsgi:application"
        command = [
            sys.executable, "-m", "gunicorn", app,
            "-w", str(self.workers), "-b", f"127.0.0.1:{self.port}",
            "--chdir", str(ROOT), "--timeout", "120",
        ]  # fmt: skip
        if self.asgi:
            command += ["--worker-class", "uvicorn_worker.UvicornWorker", "--backlog", "4096"]
        self.process = subprocess.Popen(command, env=env, cwd=ROOT, stdout=log, stderr=log)
        client = HttpClient(self.port)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"gunicorn exited with {self.process.returncode}; see {self.log_path}")
            try:
                if client.request("GET", "/bench/bare").status == 200:
                    self._warm_up(client)
                    return
            except OSError:
                pass
            time.sleep(0.2)
        self.stop()
        raise RuntimeError(f"gunicorn did not answer within {timeout:.0f}s; see {self.log_path}")

    def _warm_up(self, client: HttpClient) -> None:
        # Every worker imports the URLconf and opens its database connection before we measure.
        for _ in range(20 * self.workers):
            client.request("GET", "/bench/bare")
        client.close()

    def stop(self) -> None:
        if self.process is None:
            return
        self.process.send_signal(signal.SIGTERM)
        try:
            self.process.wait(timeout=20)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()
        self.process = None

    def __enter__(self) -> Gunicorn:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()
