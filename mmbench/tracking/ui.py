"""``mmbench ui``: the MLflow UI (``mlflow server``) on the store, in the foreground, stopped as a group."""

from __future__ import annotations

import contextlib
import os
import socket
from collections.abc import Callable
from typing import Any

from mmbench.tracking.uri import TrackingError, artifact_root, check_reachable, resolve_uri, sqlite_path


def port_free(host: str, port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind((host, port))
        except OSError:
            return False
    return True


def ui_command(uri: str, host: str, port: int) -> list[str]:
    """``mlflow server`` on the store at ``uri`` (artifacts of new experiments beside a SQLite store)."""
    import sys

    cmd = [sys.executable, "-m", "mlflow", "server", "--backend-store-uri", uri, "--host", host, "--port", str(port),
           "--workers", "1"]
    root = artifact_root(uri)
    if root is not None:
        cmd += ["--artifacts-destination", root]
    return cmd


def serve_ui(uri: str | None, host: str, port: int, say: Callable[[str], None]) -> int:
    """Run the MLflow UI in the foreground until Ctrl-C or SIGTERM; stops its whole process group."""
    import signal
    import subprocess
    import threading

    uri = resolve_uri(uri)
    check_reachable(uri)
    db = sqlite_path(uri)
    if db is not None and not db.exists():
        raise TrackingError(f"no store at {db} yet; run `mmbench run` first or pass --tracking-uri")
    if not port_free(host, port):
        raise TrackingError(f"port {port} on {host} is in use; pass another --port")
    env = {**os.environ, "MLFLOW_DISABLE_TELEMETRY": "true"}
    proc = subprocess.Popen(ui_command(uri, host, port), env=env, start_new_session=True)
    if threading.current_thread() is threading.main_thread():
        signal.signal(signal.SIGTERM, _interrupt)
    say(f"MLflow UI for {uri} at http://{host}:{port}  (Ctrl-C stops it)")
    try:
        return proc.wait()
    except KeyboardInterrupt:
        say("stopping the MLflow UI")
        return 0
    finally:
        _stop_group(proc)


def _interrupt(signum: int, frame: Any) -> None:
    raise KeyboardInterrupt


def _stop_group(proc: Any) -> None:
    """SIGTERM the server's process group (started as its own process group leader, so only ours), SIGKILL if it lingers."""
    import signal
    import subprocess

    try:
        os.killpg(proc.pid, signal.SIGTERM)
    except ProcessLookupError:
        return
    try:
        proc.wait(timeout=15)
    except subprocess.TimeoutExpired:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()
