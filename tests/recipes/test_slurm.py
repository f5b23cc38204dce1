"""The SLURM scripts, submitted for real: a one-node SLURM on this machine
(recipes/librispeech/slurm/local_cluster.sh: Debian's slurmctld, slurmd and munge, as root) runs
``submit_all.sh`` with the smoke preset: the data job, the teachers' job array (one task a
teacher), the job that writes the teachers' marker, the distill job (2 tasks under srun, DDP over
gloo) and the decode job, chained by ``afterok``. The scripts' GPU, memory and node lines are
overridden on the sbatch command line (the node offers 2 stand-in GPUs so ``--gpus`` schedules; the
recipe runs with ``train.accelerator=cpu``).

Every job must end COMPLETED with exit code 0, and the report must match the one-process smoke
run's within the tolerances of tests/run_compare.py. To stay in CI's budget the run starts from a
copy of that run's costly data stages and graph (found done by the data and decode jobs), and
trains one student, at the temperature of the one-process run's Table-5 soft run.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.run_compare import assert_reports_match, copy_until_training, single_temperature

pytestmark = [pytest.mark.slow, pytest.mark.slurm]

REPO = Path(__file__).resolve().parents[2]
SLURM = REPO / "recipes" / "librispeech" / "slurm"
TOOLS = ("slurmctld", "slurmd", "sbatch", "squeue", "munged")


@pytest.fixture(scope="module")
def cluster(tmp_path_factory):
    missing = [t for t in TOOLS if shutil.which(t) is None]
    if missing or os.geteuid() != 0:
        why = f"missing {missing}" if missing else "not root"
        if os.environ.get("CI"):
            pytest.fail(f"the SLURM test must run in CI ({why}): `make apt` installs slurmd slurmctld slurm-client munge")
        pytest.skip(f"a local SLURM needs root and Debian's slurmd slurmctld slurm-client munge ({why})")
    root = tmp_path_factory.mktemp("slurm")
    env = {**os.environ, "GPUS": "2"}
    res = subprocess.run(["bash", str(SLURM / "local_cluster.sh"), "start", str(root)], env=env,
                         capture_output=True, text=True, timeout=120)
    assert res.returncode == 0, res.stdout + res.stderr
    yield root
    subprocess.run(["bash", str(SLURM / "local_cluster.sh"), "stop", str(root)], capture_output=True, timeout=60)


def _finished_jobs(root: Path) -> dict[str, tuple[str, str]]:
    """JobId -> (JobState, ExitCode) of every job the cluster finished (its jobcomp file)."""
    out = {}
    path = root / "jobs.txt"
    for line in path.read_text().splitlines() if path.exists() else []:
        fields = dict(re.findall(r"(\w+)=(\S+)", line))
        out[fields["JobId"]] = (fields.get("JobState", "?"), fields.get("ExitCode", "?"))
    return out


def test_submit_all_runs_every_job_to_the_one_process_report(cluster, smoke_run, smoke_corpus, tmp_path):
    exp = tmp_path / "exp"
    copy_until_training(smoke_run, exp)
    T = single_temperature(smoke_run)
    logs = tmp_path / "logs"
    logs.mkdir()
    env = {
        **os.environ,
        "SLURM_CONF": str(cluster / "slurm.conf"),
        "ASR_KD_VENV": sys.prefix, "LIBRISPEECH": str(smoke_corpus), "EXP": str(exp), "PRESET": "smoke",
        # the scripts ask for GPU nodes; this machine is one node of 2 cores
        "SBATCH_ALL": f"--mem=3G --cpus-per-task=1 --time=30 --output={logs}/%x-%j.out",
        "DATA_SBATCH": "--cpus-per-task=2", "DECODE_SBATCH": "--cpus-per-task=2",
        "DISTILL_SBATCH": "--nodes=1 --ntasks-per-node=2 --gpus-per-node=2",
    }
    assert sys.prefix != sys.base_prefix, "run the tests from the project's venv (make test)"
    t0 = time.time()
    res = subprocess.run(["bash", str(SLURM / "submit_all.sh"), "--set", "train.accelerator=cpu",
                          "--set", f"distill.temperatures={T:g}", "--set", f"distill.subset_temperature={T:g}"],
                         cwd=REPO, env=env, capture_output=True, text=True, timeout=120)
    assert res.returncode == 0, res.stdout + res.stderr
    ids = dict(re.findall(r"(\w+)=(\d+)", res.stdout.splitlines()[-1]))
    assert set(ids) == {"data", "teachers", "teachers_done", "distill", "decode"}, res.stdout

    while time.time() - t0 < 1500:
        queued = subprocess.run(["squeue", "-h", "-o", "%i %T"], env=env, capture_output=True, text=True)
        if queued.returncode == 0 and not queued.stdout.strip():
            break
        if any(state not in ("COMPLETED", "?") for state, _ in _finished_jobs(cluster).values()):
            break  # a job failed: its dependants never start
        time.sleep(3)
    print(f"SLURM flow: {time.time() - t0:.0f} s")
    finished = _finished_jobs(cluster)
    outputs = {p.name: p.read_text(errors="replace")[-3000:] for p in sorted(logs.glob("*.out"))}
    teachers = json.loads((exp / "config.json").read_text())["teachers"]["num_teachers"]
    # data, K array tasks, teachers_done, distill, decode: every one COMPLETED with exit code 0
    assert len(finished) == 4 + teachers, (finished, outputs)
    bad = {job: s for job, s in finished.items() if s != ("COMPLETED", "0:0")}
    assert not bad, (bad, outputs)

    log = "\n".join(p.read_text(errors="replace") for p in logs.glob("asrkd-teacher-*.out"))
    assert log.count("did its part") >= 1  # array tasks train one teacher each, without the marker
    assert_reports_match(smoke_run, exp, T)
    assert not list(exp.glob(".lock*")), "every job released its lock"

