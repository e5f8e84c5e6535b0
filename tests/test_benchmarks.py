"""The benchmark scripts run end to end on a tiny build and report what their docstrings promise:
their figures live in the README, so a script that broke (a renamed key of the simulator's
stats once stopped scale.py after its first build) would leave those figures unreproducible."""
import json
import subprocess
import sys

import pytest

from conftest import REPO


def benchmark(script: str, *args: str, timeout: int = 300) -> subprocess.CompletedProcess:
    done = subprocess.run([sys.executable, str(REPO / "benchmarks" / script), *args], cwd=REPO,
                          capture_output=True, text=True, timeout=timeout)
    assert done.returncode == 0, done.stderr[-3000:]
    return done


@pytest.mark.slow
def test_throughput_reports_occupancy_profile_and_what_stalled_the_loop():
    done = benchmark("throughput.py", "--seeds", "24", "--capacity", "8", "--latency", "0.02",
                     "--latency-kinds", "constant", "--no-bare", "--find-stalls", "--full")
    result = json.loads(done.stdout.strip().splitlines()[-1])
    assert result["seeds"] == 24 and result["max_in_flight"] == 8
    assert result["requests"] >= 24 * 5  # every seed went through the chain of stages
    assert 0 < result["occupancy"] <= 1.0
    assert result["profile"] and len(result["profile_per_5s"]) == len(result["profile"])
    assert len(result["gc_seconds_by_generation"]) == 3 and result["client_cpu_ms_per_request"] > 0


@pytest.mark.slow
def test_scale_measures_a_cli_build(tmp_path):
    out = tmp_path / "scale.json"
    done = benchmark("scale.py", "--cli-sizes", "40", "--flow-sizes", "", "--json", str(out))
    (cli,) = json.loads(out.read_text())["cli"]
    assert cli["seeds"] == 40 and cli["requests"] >= 40 * 5
    assert 0 < cli["slots_busy"] <= 1.0 and cli["build_peak_rss_mb"] > 0 and cli["requests_per_s"] > 0
    assert "| 40 |" in done.stdout.replace(",", "")  # the markdown table the README quotes
