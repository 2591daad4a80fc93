"""The README's tour, command by command, as a newcomer types it: every step answers, none hangs or prints a
traceback.  One embedded broker (``riverflink broker start``), the training and serving jobs, and a resume
from the savepoint that ``riverflink stop`` takes.  Every process is stopped by its PID, also on failure."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from riverflink.pipelines.broker import descendants, stop_pid

pytestmark = pytest.mark.integration

EVENTS, MORE, REQUESTS = 3000, 500, 100


class Tour:
    def __init__(self, home: Path):
        self.home = home
        self.env = {**os.environ, "RIVERFLINK_HOME": str(home), "COLUMNS": "160"}
        self.env.pop("RIVERFLINK_BOOTSTRAP", None)
        self.jobs: list[subprocess.Popen] = []

    def run(self, *args: str, timeout: float = 180) -> subprocess.CompletedProcess:
        res = subprocess.run([sys.executable, "-m", "riverflink.pipelines.cli", *args], capture_output=True,
                             text=True, timeout=timeout, env=self.env)
        assert "Traceback" not in res.stdout + res.stderr, res.stdout[-2000:] + res.stderr[-2000:]
        return res

    def start(self, name: str, *args: str) -> tuple[subprocess.Popen, Path]:
        log = self.home / f"{name}.log"
        job = subprocess.Popen([sys.executable, "-m", "riverflink.pipelines.cli", *args], env=self.env,
                               stdout=log.open("wb"), stderr=subprocess.STDOUT, start_new_session=True)
        self.jobs.append(job)
        return job, log

    def wait_for(self, what: str, check, timeout: float = 240, every: float = 2.0):
        deadline = time.time() + timeout
        while time.time() < deadline:
            for job in self.jobs:
                assert job.poll() in (None, 0, 130), f"a job exited with {job.returncode} while waiting for {what}"
            found = check()
            if found:
                return found
            time.sleep(every)
        raise AssertionError(f"no {what} within {timeout:.0f} s")

    def stop_all(self) -> None:
        for job in self.jobs:
            if job.poll() is None:
                for pid in reversed(descendants(job.pid)):
                    stop_pid(pid)


def _latest_events(tour: Tour, name: str) -> int:
    res = tour.run("models", "--latest", "--model-name", name, "--idle", "2")
    rows = [line.split() for line in res.stdout.splitlines() if line.startswith(name + " ")]
    return int(rows[0][3]) if rows and rows[0][3].isdigit() else 0


def test_the_readme_tour(tmp_path):
    tour = Tour(tmp_path)
    try:
        res = tour.run("broker", "start")
        assert res.returncode == 0 and "embedded Tansu broker on 127.0.0.1:" in res.stdout, res.stdout

        res = tour.run("keys", str(tmp_path / "keys"))
        assert (tmp_path / "keys" / "signing.pem").exists() and (tmp_path / "keys" / "verify.pem").exists()

        train, train_log = tour.start("train", "train", "--model-name", "phishing", "--status-every", "2")
        serve, serve_log = tour.start("serve", "serve", "--model-name", "phishing", "--status-every", "2")
        res = tour.run("produce", "--dataset", "Phishing", "--limit", str(EVENTS))
        assert f"produced {EVENTS} events to events" in res.stdout
        tour.wait_for("a merged model with every event", lambda: _latest_events(tour, "phishing") == EVENTS)
        res = tour.run("produce", "--topic", "requests", "--unlabelled", "--limit", str(REQUESTS), "--quiet")
        assert f"produced {REQUESTS} events to requests" in res.stdout

        res = tour.run("tail", "predictions", "--from-beginning", "--limit", str(REQUESTS), "--idle", "120")
        answers = [line for line in res.stdout.splitlines() if '"source":"serving"' in line]
        assert len(answers) == REQUESTS and all('"status":"ok"' in a for a in answers), res.stdout[-1000:]
        res = tour.run("tail", "predictons", "--idle", "1")  # a typo: refused, with the right name
        assert res.returncode == 2 and "did you mean 'predictions'" in res.stderr, res.stderr

        res = tour.run("models", "--latest")
        assert "phishing" in res.stdout and "counts: events each replica key added" in res.stdout, res.stdout

        res = tour.run("top", "--duration", "3")  # no --run: the newest run, named; not a terminal: plain lines
        assert "following the newest run" in res.stderr and f"{EVENTS} learned" in res.stdout, res.stdout[-1500:]
        assert "job phishing@" in res.stdout

        res = tour.run("report", "--out", str(tmp_path / "report"))
        assert res.returncode == 0, res.stderr
        page = (tmp_path / "report" / "index.html").read_text()
        assert "<figcaption>" in page and "single-node River" in page

        # the jobs said what they were doing
        assert re.search(rf"train phishing: {EVENTS:,} learned, 0 dead-lettered, [\d,]+ events/s; [\d,]+ versions, "
                         rf"newest v\d+ \({EVENTS:,} events\)", train_log.read_text()), train_log.read_text()[-2000:]
        assert re.search(rf"serve phishing: {REQUESTS:,} ok", serve_log.read_text()), serve_log.read_text()[-2000:]

        # stop with a savepoint, on the URL the job printed, and resume as 'stop' says
        url = re.search(r"Flink web UI \(this machine only\): (http://127\.0\.0\.1:\d+)", train_log.read_text())[1]
        assert train.poll() is None, train_log.read_text()[-3000:]
        res = tour.run("stop", "--jobmanager", url, "--name", "riverflink-train-phishing")
        assert res.returncode == 0, res.stderr + train_log.read_text()[-3000:]
        hint = re.search(r"resume with: riverflink train \.\.\. \(the same flags\) --from-savepoint (\S+)", res.stdout)
        assert hint and "--jobmanager" not in res.stdout.split("resume with:")[1], res.stdout
        tour.wait_for("the stopped job's exit", lambda: train.poll() is not None, timeout=60)
        lines = [ln for ln in train_log.read_text().splitlines() if ln.strip()]
        assert train.returncode == 0, lines[-5:]
        assert any(ln.startswith("riverflink-train-phishing stopped") for ln in lines[-2:]), lines[-5:]
        assert "Traceback" not in train_log.read_text()  # nothing from the shutdown itself
        tour.start("train-resumed", "train", "--model-name", "phishing", "--from-savepoint", hint[1])
        tour.run("produce", "--dataset", "Phishing", "--limit", str(MORE), "--seed", "7", "--quiet")
        tour.wait_for("the resumed job's model with every event",
                      lambda: _latest_events(tour, "phishing") == EVENTS + MORE)
        tour.stop_all()

        # the demo on the tour's broker: it names its run, and --report keeps the run's report
        bootstrap = re.search(r"127\.0\.0\.1:\d+", tour.run("broker", "status").stdout)[0]
        res = tour.run("demo", "--bootstrap-servers", bootstrap, "--events", "1500", "--report",
                       str(tmp_path / "demo-report"), timeout=420)
        assert res.returncode == 0, res.stdout[-2000:] + res.stderr[-2000:]
        run = re.search(r"^run (\S+): topics events-\1,", res.stdout, re.M)
        assert run and f"'riverflink report --run {run[1]}'" in res.stdout, res.stdout[:1000]
        assert re.search(r"summary: events=\d+ learned=1500 ", res.stdout), res.stdout[-1000:]
        assert (tmp_path / "demo-report" / "index.html").exists()
    finally:
        tour.stop_all()
        subprocess.run([sys.executable, "-m", "riverflink.pipelines.cli", "broker", "stop"], env=tour.env,
                       capture_output=True, timeout=60)


def test_ctrl_c_while_a_job_starts_leaves_no_process_and_no_traceback(tmp_path):
    """SIGINT at several moments of a training job's start-up (imports, JVM start, Python workers).

    Not before 1.5 s: in the interpreter's own start-up (about 0.1 s on a quiet machine, before any line of
    riverflink runs) a Ctrl-C is Python's, with its traceback; a loaded machine stretches that window."""
    env = {**os.environ, "RIVERFLINK_HOME": str(tmp_path)}
    from riverflink.pipelines.broker import EmbeddedBroker

    with EmbeddedBroker(log_path=tmp_path / "tansu.log") as broker:
        for delay in (1.5, 4.0, 9.0, 16.0):
            job = subprocess.Popen([sys.executable, "-m", "riverflink.pipelines.cli", "train", "--bootstrap-servers",
                                    broker.bootstrap, "--model-name", f"ctrlc{int(delay)}"], env=env,
                                   stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
            try:
                time.sleep(delay)
                started = descendants(job.pid)[1:]
                job.send_signal(signal.SIGINT)
                out, _ = job.communicate(timeout=60)
                text = out.decode(errors="replace")
                assert job.returncode == 130, (delay, job.returncode, text[-2000:])
                assert "Traceback" not in text, (delay, text[-3000:])
                time.sleep(2)
                left = [p for p in started if Path(f"/proc/{p}").exists()
                        and Path(f"/proc/{p}/stat").read_text().rsplit(")", 1)[1].split()[0] != "Z"]
                assert not left, (delay, left)
            finally:
                for pid in reversed(descendants(job.pid)):
                    stop_pid(pid)
