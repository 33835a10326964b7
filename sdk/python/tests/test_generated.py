import subprocess
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent


def test_generated_code_matches_the_protos() -> None:
    result = subprocess.run(
        [sys.executable, str(HERE.parent / "generate.py"), "--check"], capture_output=True, text=True
    )
    assert result.returncode == 0, result.stderr
