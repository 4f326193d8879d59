"""Kill the whole run (SIGKILL to its process group) at random points, rerun to completion:
nothing lost, duplicated or redone, and deterministic-mode rows equal an uninterrupted run's
(scripts/chaos_resume.py; the README reports its 10-kill run)."""
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.slow
ROOT = Path(__file__).resolve().parents[1]


def test_chaos_resume_two_kills(tmp_path, smollm2_path):
    p = subprocess.run([sys.executable, str(ROOT / "scripts" / "chaos_resume.py"), "--kills", "2", "--seed", "1",
                        "--out", str(tmp_path / "chaos")], capture_output=True, text=True, timeout=1500)
    out = p.stdout
    assert p.returncode == 0, out[-3000:] + p.stderr[-3000:]
    assert "| no committed shard redone | PASS |" in out and "| outputs equal the uninterrupted run's | PASS |" in out
    killed = out.count("| killed")
    assert killed >= 1 and f"{killed}/{killed} kills survived" in out
