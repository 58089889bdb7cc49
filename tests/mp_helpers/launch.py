"""Start a command under `accelerate launch` with 2 CPU processes (gloo), as README "Several processes" shows."""

import os
import socket
import subprocess
import sys

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def free_port() -> int:
    """A TCP port free now on 127.0.0.1, so that launches in parallel test workers do not share accelerate's 29500."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def accelerate_launch(args: list[str], num_processes: int = 2, timeout: float = 240) -> subprocess.CompletedProcess:
    """``accelerate launch --multi_gpu --num_processes N ARGS`` from the repository root; a hang fails the test
    (``subprocess.TimeoutExpired``) instead of blocking CI."""
    cmd = [sys.executable, "-m", "accelerate.commands.launch", "--multi_gpu", "--num_processes", str(num_processes),
           "--num_machines", "1", "--main_process_port", str(free_port()), "--mixed_precision", "no",
           "--dynamo_backend", "no", *args]
    path = [REPO, os.path.join(REPO, "tests"), *filter(None, [os.environ.get("PYTHONPATH")])]
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(path))
    return subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, cwd=REPO, env=env)
