"""A local job listens on loopback only, and its REST endpoint refuses jar uploads, jar listings and job
cancels (riverflink's REST guard, pipelines/java/riverflink/RestGuard.java).

Flink's own endpoints (REST, RPC, task manager) are bound to 127.0.0.1 by configuration.  Beam's gRPC servers
for the Python workers (six per Python operator) listened on every interface, twelve sockets for the training
job, until riverflink-loopback.jar (a Java agent, pipelines/java-loopback) replaced Beam's server factory.
"""

from __future__ import annotations

import subprocess
import sys
import json
import time
import urllib.error
import urllib.request

import pytest

from riverflink.pipelines import kafka_io
from riverflink.pipelines.broker import stop_pid
from riverflink.pipelines.config import Topics
from tests.netlisten import flink_rest_port, listening

pytestmark = pytest.mark.integration

LOOPBACK = ("127.0.0.1:", "::1:", "[::1]:")


def test_local_job_binds_loopback_and_refuses_jars_and_cancel(kafka_bootstrap, tmp_path):
    run = f"loop{int(time.time())}"
    t = Topics.for_run(run)
    kafka_io.create_topics(kafka_bootstrap, t.to_create())
    proc = subprocess.Popen([sys.executable, "-m", "riverflink.pipelines.cli", "train", "--bootstrap-servers",
                             kafka_bootstrap, "--model-name", run, "--group-id", run, *t.cli_args()],
                            stdout=open(tmp_path / "train.log", "wb"), stderr=subprocess.STDOUT,
                            start_new_session=True)
    try:
        deadline, port, sockets = time.time() + 90, None, {}
        while port is None and time.time() < deadline:
            assert proc.poll() is None, (tmp_path / "train.log").read_text()[-2000:]
            time.sleep(1)
            sockets = listening(proc.pid)
            port = flink_rest_port(proc.pid)
        assert port is not None, f"no Flink REST endpoint among {sockets}"
        time.sleep(5)  # let the Python workers start too
        sockets = listening(proc.pid)
        rest = [a for addrs in sockets.values() for a in addrs if a.endswith(f":{port}")]
        assert rest and all(a.startswith(LOOPBACK) for a in rest), rest
        # the run printed where its web UI is
        assert f"web UI (this machine only): http://127.0.0.1:{port}" in (tmp_path / "train.log").read_text()
        exposed = [a for addrs in sockets.values() for a in addrs if not a.startswith(LOOPBACK)]
        assert len([a for addrs in sockets.values() for a in addrs]) > 6, sockets  # the workers' servers are up
        assert not exposed, f"listening beyond loopback: {exposed}"
        # Flink's REST answers a cancel whatever web.cancel.enable says; riverflink's guard refuses it, and
        # every /jars request (Flink answers an upload 400 even with submission enabled, so 400 proves nothing)
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/jobs", timeout=5) as r:
            jid = json.load(r)["jobs"][0]["id"]
        for method, path, body in (("POST", "/jars/upload", b"x"), ("GET", "/jars", None), ("GET", "/v1/jars", None),
                                   ("PATCH", f"/jobs/{jid}?mode=cancel", None), ("PATCH", f"/v1/jobs/{jid}", None),
                                   ("GET", f"/jobs/{jid}/yarn-cancel", None)):
            req = urllib.request.Request(f"http://127.0.0.1:{port}{path}", data=body, method=method)
            with pytest.raises(urllib.error.HTTPError) as refused:
                urllib.request.urlopen(req, timeout=10)
            assert refused.value.code == 403, (method, path, refused.value.code)
            assert "disabled on this cluster" in refused.value.read().decode(), (method, path)
        time.sleep(2)
        assert proc.poll() is None, "the job ended after a refused cancel"
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/jobs/{jid}", timeout=5) as r:
            assert json.load(r)["state"] == "RUNNING"
    finally:
        stop_pid(proc.pid)
