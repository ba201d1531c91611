"""Real database servers for the tests: a PostgreSQL and a redis-server on loopback.

Each starts once per test session, in a temporary directory, on a free port of
127.0.0.1, and is stopped at the end. ``initdb`` refuses to run as root, so as
root the server runs as the ``postgres`` user (``runuser``). Without the server
binaries the tests that need them are skipped, saying what to install.
"""

from __future__ import annotations

import contextlib
import glob
import os
import shutil
import socket
import subprocess
import tempfile
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

_START_TIMEOUT = 30.0


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def _as_server_user(argv: list[str]) -> list[str]:
    if os.geteuid() == 0:
        return ["runuser", "-u", "postgres", "--", *argv]
    return argv


def _wait_for_port(port: int, process: subprocess.Popen[bytes], what: str) -> None:
    deadline = time.monotonic() + _START_TIMEOUT
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"{what} exited with {process.returncode} while starting")
        with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port), 0.2):
            return
        time.sleep(0.05)
    raise RuntimeError(f"{what} did not start within {_START_TIMEOUT} s")


def _wait_until_accepting(uri: str) -> None:
    """Wait out "the database system is starting up": an open port is not a ready server."""
    import psycopg

    deadline = time.monotonic() + _START_TIMEOUT
    while True:
        try:
            psycopg.connect(uri, connect_timeout=2).close()
        except psycopg.OperationalError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.05)
        else:
            return


@contextlib.contextmanager
def postgres_server() -> Iterator[str]:
    """Run a throwaway PostgreSQL; yields the URI of its ``postgres`` database."""
    found = sorted(glob.glob("/usr/lib/postgresql/*/bin/initdb"))
    initdb = found[-1] if found else shutil.which("initdb")
    if initdb is None:
        pytest.skip("no PostgreSQL server binaries (apt-get install postgresql)")
    bindir = Path(initdb).parent
    root = Path(tempfile.mkdtemp(prefix="spo-pg-"))
    if os.geteuid() == 0:
        shutil.chown(root, "postgres", "postgres")
    data = root / "data"
    subprocess.run(  # noqa: S603 - our own argv
        _as_server_user(
            [initdb, "-D", str(data), "-U", "spo", "--auth=trust", "-E", "UTF8", "--no-sync"]
        ),
        check=True,
        capture_output=True,
    )
    port = _free_port()
    argv = [str(bindir / "postgres"), "-D", str(data), "-k", str(root), "-p", str(port)]
    argv += ["-h", "127.0.0.1", "-c", "fsync=off", "-c", "max_connections=200"]
    process = subprocess.Popen(  # noqa: S603 - our own argv
        _as_server_user(argv), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
    )
    try:
        _wait_for_port(port, process, "postgres")
        uri = f"postgresql://spo@127.0.0.1:{port}/postgres"
        _wait_until_accepting(uri)
        yield uri
    finally:
        process.terminate()
        process.wait(timeout=30)
        shutil.rmtree(root, ignore_errors=True)


def fresh_database(server_uri: str) -> str:
    """A new empty database on the server; its URI."""
    import psycopg

    name = f"t_{uuid.uuid4().hex[:12]}"
    with psycopg.connect(server_uri, autocommit=True) as conn:
        conn.execute(f"CREATE DATABASE {name}")
    return server_uri.rpartition("/")[0] + "/" + name


@contextlib.contextmanager
def redis_server() -> Iterator[str]:
    """Run a throwaway redis-server without persistence; yields its ``redis://`` URI."""
    binary = shutil.which("redis-server")
    if binary is None:
        pytest.skip("no redis-server (apt-get install redis-server)")
    root = Path(tempfile.mkdtemp(prefix="spo-redis-"))
    port = _free_port()
    argv = [binary, "--port", str(port), "--bind", "127.0.0.1", "--dir", str(root)]
    argv += ["--save", "", "--appendonly", "no"]
    process = subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)  # noqa: S603
    try:
        _wait_for_port(port, process, "redis-server")
        yield f"redis://127.0.0.1:{port}/0"
    finally:
        process.terminate()
        process.wait(timeout=30)
        shutil.rmtree(root, ignore_errors=True)


@pytest.fixture(scope="session")
def postgres_uri() -> Iterator[str]:
    """The session's PostgreSQL server (its ``postgres`` database)."""
    pytest.importorskip("psycopg", reason="psycopg is not installed (spo-async[postgres])")
    with postgres_server() as uri:
        yield uri


@pytest.fixture
def pg_database(postgres_uri: str) -> str:
    """A new, empty database for one test."""
    return fresh_database(postgres_uri)


@pytest.fixture(scope="session")
def redis_uri() -> Iterator[str]:
    """The session's redis-server."""
    pytest.importorskip("redis", reason="redis-py is not installed (spo-async[redis])")
    with redis_server() as uri:
        yield uri


@pytest.fixture(params=["postgresql", "redis"])
def store(request: pytest.FixtureRequest) -> str:
    """The URI of a store for shared state: a fresh PostgreSQL database, or the session's Redis.

    Tests that take it run once on each engine.
    """
    if request.param == "postgresql":
        uri: str = request.getfixturevalue("pg_database")
    else:
        uri = request.getfixturevalue("redis_uri")
    return uri
