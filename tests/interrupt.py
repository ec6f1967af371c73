"""Helper of the interruption tests: kill a child process the moment it has written a checkpoint."""
import os
import signal
import subprocess
import sys
import time
from pathlib import Path


def kill_when_written(code: str, path: Path, what: str = "training") -> None:
    """Run ``code`` in a new Python process and SIGKILL it as soon as ``path`` exists."""
    proc = subprocess.Popen([sys.executable, "-c", code], stderr=subprocess.DEVNULL)
    deadline = time.time() + 120
    while not path.exists() and proc.poll() is None and time.time() < deadline:
        time.sleep(0.005)
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    assert proc.returncode == -signal.SIGKILL, f"{what} finished before it could be killed"
