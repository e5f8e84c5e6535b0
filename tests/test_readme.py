"""The README's commands (scripts/readme_commands.py): each one planned, its options ones the command
line takes, and, in the slow tier, every runnable one run as typed, at the simulator's speed."""
import subprocess
import sys

import pytest

from conftest import REPO

SCRIPT = REPO / "scripts" / "readme_commands.py"


def test_every_readme_command_is_run_or_skipped_with_a_reason_and_takes_only_real_options():
    planned = subprocess.run([sys.executable, SCRIPT, "--plan"], capture_output=True, text=True, timeout=120)
    assert planned.returncode == 0, planned.stdout[-3000:] + planned.stderr[-2000:]
    lines = planned.stdout.splitlines()
    assert sum(line.startswith("run ") for line in lines) >= 30
    assert all(line.startswith(("run ", "skip ", "      (")) for line in lines), planned.stdout[-2000:]


def test_a_readme_command_without_a_plan_or_with_a_wrong_option_fails_the_check(tmp_path, monkeypatch):
    sys.path.insert(0, str(SCRIPT.parent))
    try:
        import readme_commands
    finally:
        sys.path.remove(str(SCRIPT.parent))
    text = "```bash\ntrace-build run --backend simulated --no-such-option 3\nfrobnicate --all\n```\n"
    commands = readme_commands.readme_commands(text)
    assert readme_commands.unplanned(commands) == ["frobnicate --all"]
    assert readme_commands.options_unknown(commands[0]) == ["--no-such-option"]


@pytest.mark.slow
@pytest.mark.timeout(1500)
def test_the_readme_commands_run_as_typed():
    done = subprocess.run([sys.executable, SCRIPT], capture_output=True, text=True, timeout=1450)
    assert done.returncode == 0, done.stdout[-4000:] + done.stderr[-2000:]
    assert " 0 failed" in done.stdout
