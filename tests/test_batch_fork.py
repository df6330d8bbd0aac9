"""`kconvert batch`'s fork servers (application/batch_zygote.py, batch_run.ForkServer): a child's crash leaves
its server serving the next job, a server that dies mid-job hands that job to a process of its own and is
started again, a server that cannot start turns fork servers off for the batch, the off switch, and the
server imports only the conversion path before it forks."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

import pytest

from application import batch_run
from application.batch_run import FORK_SERVER, FORK_SERVER_ENV, SUBPROCESS, ForkServer, ForkServers

ROOT = Path(__file__).resolve().parents[1]
FIXTURES = ROOT / "fixtures"
HEAVY = {"tensorflow", "keras", "tf_keras", "jax", "torch", "onnxruntime", "distributed", "dask", "click"}
pytestmark = pytest.mark.skipif(not batch_run.fork_server_enabled(), reason="fork servers run on Linux only")


def _job(tmp_path: Path, name: str, extension: Path | None = None, timeout: float = 120) -> dict[str, Any]:
    options = {} if extension is None else {"extension": [str(extension)]}
    return {"name": name, "model": str(FIXTURES / "dense_relu" / "model.h5"), "output": str(tmp_path / f"{name}.onnx"),
            "options": options, "timeout": timeout, "memory": None, "key": None}


def _extension(tmp_path: Path, name: str, body: str) -> Path:
    path = tmp_path / name
    registers = ("from converter.extensions import register_layer\n\n"
                 "@register_layer('Unused')\ndef unused(b, inputs, node):\n    return inputs[0]\n")
    path.write_text("import os, signal\n" + body + "\n" + registers)  # an extension must register a handler
    return path


def test_a_crashing_child_leaves_its_server_serving(tmp_path: Path) -> None:
    aborts = _extension(tmp_path, "aborts.py", "os.abort()")
    server = ForkServer()
    try:
        first = server.run(_job(tmp_path, "a"))
        assert first is not None and first["status"] == "pass" and first["runner"] == FORK_SERVER
        assert server.process is not None
        pid = server.process.pid
        crashed = server.run(_job(tmp_path, "b", aborts))
        assert crashed is not None and crashed["status"] == "crashed" and "SIGABRT" in crashed["reason"]
        after = server.run(_job(tmp_path, "c"))
        assert after is not None and after["status"] == "pass" and Path(after["output"]).is_file()
        assert server.process is not None and server.process.pid == pid and server.process.poll() is None
        assert server.served == 3
    finally:
        server.close()


def _gone(pid: int) -> bool:
    """Ended (a zombie waiting for init counts: it runs no more)."""
    stat = Path(f"/proc/{pid}/stat")
    try:
        return stat.read_text().rsplit(")", 1)[1].split()[0] in ("Z", "X")
    except (FileNotFoundError, ProcessLookupError):
        return True


def test_a_timeout_kills_the_childs_group_not_the_server(tmp_path: Path) -> None:
    """The child forks a grandchild that sleeps: the timeout kills both (the child's session), and the
    server goes on."""
    marker = tmp_path / "grandchild.pid"
    hangs = _extension(tmp_path, "hangs.py", "import time\nif os.fork() == 0:\n"
                                             f"    open({str(marker)!r}, 'w').write(str(os.getpid()))\n"
                                             "time.sleep(300)")
    server = ForkServer()
    try:
        slow = server.run(_job(tmp_path, "slow", hangs, timeout=2.0))
        assert slow is not None and slow["status"] == "timeout" and "2 s" in slow["reason"]
        assert server.process is not None and server.process.poll() is None
        fine = server.run(_job(tmp_path, "fine"))
        assert fine is not None and fine["status"] == "pass"
    finally:
        server.close()
    grandchild = int(marker.read_text())
    deadline = time.monotonic() + 10
    while not _gone(grandchild) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert _gone(grandchild)


def test_a_server_that_dies_mid_job_hands_the_job_on_and_is_started_again(tmp_path: Path) -> None:
    """The extension kills its parent when that parent is a fork server (in the fallback's own process the
    parent is this test, which it leaves alone)."""
    kills = _extension(tmp_path, "kills_server.py",
                       "if b'batch_zygote' in open(f'/proc/{os.getppid()}/cmdline', 'rb').read():\n"
                       "    os.kill(os.getppid(), signal.SIGKILL)")
    servers = ForkServers()
    try:
        results = [servers.run(_job(tmp_path, name, extension))
                   for name, extension in (("a", None), ("b", kills), ("c", None))]
    finally:
        servers.close()
    assert [r["status"] for r in results] == ["pass"] * 3
    assert [r["runner"] for r in results] == [FORK_SERVER, SUBPROCESS, FORK_SERVER]
    assert not servers.broken


def test_a_server_that_cannot_start_turns_fork_servers_off(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(batch_run, "SERVER_MODULE", "application.no_such_module")
    servers = ForkServers()
    try:
        results = [servers.run(_job(tmp_path, name)) for name in ("a", "b")]
    finally:
        servers.close()
    assert servers.broken and [(r["status"], r["runner"]) for r in results] == [("pass", SUBPROCESS)] * 2


@pytest.mark.parametrize(("setting", "runner"), [(None, FORK_SERVER), ("0", SUBPROCESS)])
def test_fork_servers_are_the_default_and_the_variable_turns_them_off(tmp_path: Path, setting: str | None,
                                                                      runner: str) -> None:
    registry = tmp_path / "registry"
    for case in ("dense_relu", "gru"):
        (registry / case).mkdir(parents=True)
        for name in ("model.h5", "model.keras"):
            shutil.copy(FIXTURES / case / name, registry / case / name)
    env = {key: value for key, value in os.environ.items() if key != FORK_SERVER_ENV}
    env["PYTHONPATH"] = str(ROOT)
    if setting is not None:
        env[FORK_SERVER_ENV] = setting
    code = "import sys; from application.cli import main; sys.exit(main())"
    run = subprocess.run([sys.executable, "-c", code, "batch", str(registry), "-o", str(tmp_path / "out"), "--jobs",
                          "2", "--json"], capture_output=True, text=True, timeout=300, env=env)
    assert run.returncode == 0, run.stderr
    models = json.loads(run.stdout)["models"]
    assert len(models) >= 4 and {(m["status"], m["runner"]) for m in models} == {("pass", runner)}


def test_the_server_imports_only_the_conversion_path_before_it_forks() -> None:
    code = ("import json, sys; from application.batch_zygote import preload; preload(); "
            "print(json.dumps(sorted(sys.modules)))")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120,
                          env={**os.environ, "PYTHONPATH": str(ROOT)}, check=True)
    modules = set(json.loads(done.stdout.splitlines()[-1]))
    assert not {name.split(".")[0] for name in modules} & HEAVY
    # what a conversion would otherwise import in each child: the service, and onnx's C++ core
    assert {"application.service", "application.batch_sources", "onnx.onnx_cpp2py_export"} <= modules


def test_ctrl_c_reaching_a_server_ends_its_job_without_a_fallback(tmp_path: Path) -> None:
    """Ctrl-C goes to the whole foreground group, the servers with it (their children, in sessions of their
    own, do not get it): the server kills its child and ends, and the job is not started again elsewhere."""
    running = tmp_path / "child-running"
    hangs = _extension(tmp_path, "hangs.py", f"import pathlib, time\npathlib.Path({str(running)!r}).touch()\n"
                                             "time.sleep(300)")
    # A shell starting a command in the background without job control (a CI script, `cmd &`) sets SIGINT
    # to ignored, and every process below inherits that: what a terminal's Ctrl-C does needs it default.
    previous = signal.signal(signal.SIGINT, signal.default_int_handler)
    servers = ForkServers()

    def interrupt() -> None:
        # The child reads the extension file: the server's imports are done and its child runs (a fixed
        # sleep here raced a slow start on a busy machine).
        while not running.exists():
            time.sleep(0.05)
        process = servers._every[0].process
        if process is not None:
            os.kill(process.pid, signal.SIGINT)

    threading.Thread(target=interrupt, daemon=True).start()
    start = time.perf_counter()
    try:
        result = servers.run(_job(tmp_path, "slow", hangs, timeout=60))
    finally:
        servers.close()
        signal.signal(signal.SIGINT, previous)
    assert time.perf_counter() - start < 30
    assert (result["status"], result["runner"], result["reason"]) == ("error", FORK_SERVER, "interrupted (SIGINT)")
