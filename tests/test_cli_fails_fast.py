"""Bad settings and unreachable services end a command with one readable line, quickly."""

from __future__ import annotations

import time

import pytest

from riverflink.pipelines.broker import free_port
from tests.cluster_jobs import riverflink


@pytest.mark.parametrize(
    "args, message",
    [
        (["train", "--bootstrap-servers", "127.0.0.1:{port}"], "Kafka unreachable at 127.0.0.1:"),
        (["serve", "--bootstrap-servers", "127.0.0.1:{port}"], "Kafka unreachable at 127.0.0.1:"),
        (["train", "--bootstrap-servers", "nonsense"], "--bootstrap-servers must be HOST:PORT"),
        (["train", "--bootstrap-servers", "127.0.0.1:9", "--replicas", "0"], "--replicas must be >= 1"),
        (["train", "--bootstrap-servers", "127.0.0.1:9", "--model", "Bogus"], "unknown model step 'Bogus'"),
        (["train", "--bootstrap-servers", "127.0.0.1:9", "--max-staleness", "0"], "--max-staleness must be >= 1"),
        (["train", "--bootstrap-servers", "127.0.0.1:9", "--working-set", "0"], "--working-set must be >= 1"),
        (["train", "--bootstrap-servers", "127.0.0.1:9", "--working-set", "100", "--model",
          "FeatureHasher(n_features=64)|LogisticRegression"], "FeatureHasher renames the events' features"),
        (["serve", "--bootstrap-servers", "127.0.0.1:9", "--shards", "0"], "--shards must be in [1, "),
        (["produce", "--bootstrap-servers", "127.0.0.1:{port}", "--quiet"], "Kafka unreachable"),
        (["models", "--bootstrap-servers", "127.0.0.1:{port}"], "Kafka unreachable"),
    ],
)
def test_one_line_error_without_hanging(args, message):
    port = str(free_port())  # nothing listens there
    started = time.time()
    res = riverflink(*[a.replace("{port}", port) for a in args])
    assert res.returncode == 2, res.stderr
    lines = res.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("riverflink: error:") and message in lines[0], res.stderr
    assert time.time() - started < 30


def test_unreachable_flink_cluster(kafka_bootstrap):
    port = str(free_port())
    res = riverflink("serve", "--bootstrap-servers", kafka_bootstrap, "--jobmanager", f"127.0.0.1:{port}")
    assert res.returncode == 2
    assert res.stderr.strip().startswith(f"riverflink: error: Flink cluster unreachable at 127.0.0.1:{port}")


def test_help_is_available_for_every_command():
    for cmd in ("broker", "produce", "train", "serve", "tail", "models", "demo"):
        res = riverflink(cmd, "--help")
        assert res.returncode == 0 and "usage: riverflink" in res.stdout


def test_a_port_that_is_not_kafka_fails_fast(tmp_path):
    import socket
    import threading

    server = socket.socket()
    server.bind(("127.0.0.1", 0))
    server.listen(8)
    stop = threading.Event()

    def talk_nonsense():
        server.settimeout(0.5)
        while not stop.is_set():
            try:
                conn, _ = server.accept()
            except OSError:
                continue
            conn.sendall(b"HTTP/1.1 400 Bad Request\r\n\r\n")
            conn.close()

    threading.Thread(target=talk_nonsense, daemon=True).start()
    try:
        started = time.time()
        res = riverflink("train", "--bootstrap-servers", f"127.0.0.1:{server.getsockname()[1]}")
        lines = res.stderr.strip().splitlines()
        assert res.returncode == 2 and len(lines) == 1, res.stderr
        assert "does not answer as a Kafka broker" in lines[0]
        assert time.time() - started < 30
    finally:
        stop.set()
        server.close()


def test_missing_savepoint_and_bad_files_are_one_line(tmp_path):
    res = riverflink("train", "--bootstrap-servers", "127.0.0.1:9", "--from-savepoint", str(tmp_path / "nope"))
    assert res.returncode == 2 and res.stderr.strip().splitlines() == [
        f"riverflink: error: --from-savepoint {tmp_path / 'nope'}: no such savepoint"]
    jsonl = tmp_path / "bad.jsonl"
    jsonl.write_text('{"x": {"a": 1}, "y": true}\n{"x": {"a": 2}, "y": tru\n')
    csv_file = tmp_path / "bad.csv"
    csv_file.write_text("a,b,label\n1,2,true\n3,oops,false\n")
    from riverflink.pipelines.config import ConfigError
    from riverflink.pipelines.sources import file_events

    with pytest.raises(ConfigError, match=r"bad.jsonl:2: not a JSON object"):
        list(file_events(str(jsonl), None))
    with pytest.raises(ConfigError, match=r"bad.csv:3: could not convert string to float: 'oops'"):
        list(file_events(str(csv_file), "label"))


def test_models_listing_skips_foreign_records(kafka_bootstrap):
    from riverflink.pipelines import kafka_io

    topic = f"models-foreign-{int(time.time() * 1000)}"
    kafka_io.create_topics(kafka_bootstrap, {topic: 1})
    kafka_io.produce(kafka_bootstrap, topic, [b"garbage", b"[1, 2]", b'{"schema":"riverflink.model/1","meta":{}}',
                                              b'{"schema":"riverflink.model/1","meta":5}', b"\xff\xfe"])
    res = riverflink("models", "--bootstrap-servers", kafka_bootstrap, "--models-topic", topic, "--idle", "2")
    assert res.returncode == 0, res.stderr
    assert "record(s) on" in res.stdout and "not model documents" in res.stdout
    res = riverflink("tail", "models", "--bootstrap-servers", kafka_bootstrap, "--models-topic", topic,
                     "--from-beginning", "--idle", "2")
    assert res.returncode == 0, res.stderr
    assert res.stdout.count("not a model document") == 4


def test_config_file_sets_defaults_and_flags_win(tmp_path):
    from riverflink.pipelines import config_file
    from riverflink.pipelines.cli import parser

    toml = tmp_path / "riverflink.toml"
    toml.write_text('bootstrap-servers = "127.0.0.1:9"\nmodel-name = "top"\nverify-key = "k.pem"\n'
                    '[train]\nreplicas = 7\nmodel_name = "trainer"\nkafka-property = ["client.id=x"]\n')
    args = config_file.parse(parser(), ["--config", str(toml), "train", "--replicas", "3"])
    assert (args.bootstrap_servers, args.model_name, args.replicas, args.kafka_property) == (
        "127.0.0.1:9", "trainer", 3, ["client.id=x"])
    args = config_file.parse(parser(), ["--config", str(toml), "serve"])  # verify-key: serve's, not train's
    assert (args.model_name, args.verify_key) == ("top", "k.pem")
    toml.write_text("[train]\nverify-key = 'k.pem'\n")
    res = riverflink("--config", str(toml), "train")
    assert res.returncode == 2 and res.stderr.strip().splitlines() == [
        f"riverflink: error: --config {toml}: 'riverflink train' takes no 'verify-key'"]
    toml.write_text("replicaz = 4\n")
    res = riverflink("--config", str(toml), "train")
    assert res.stderr.strip().splitlines() == [f"riverflink: error: --config {toml}: no command takes 'replicaz'"]


def test_models_latest_reads_the_tail_and_finds_each_models_newest_version(kafka_bootstrap):
    """500 versions of model a, then one of b, then foreign records: --latest shows a's and b's newest only,
    read from the topic's tail (the tail is widened until it holds a document of the model asked for)."""
    from river import linear_model

    from riverflink import models
    from riverflink.pipelines import kafka_io

    topic = f"models-latest-{int(time.time() * 1000)}"
    kafka_io.create_topics(kafka_bootstrap, {topic: 1})
    m = linear_model.LogisticRegression()
    docs = [models.dumps(models.to_wire(m, name="a", version=v)) for v in range(1, 501)]
    docs += [models.dumps(models.to_wire(m, name="b", version=7))] + [b"garbage"] * 20
    kafka_io.produce(kafka_bootstrap, topic, docs)
    res = riverflink("models", "--bootstrap-servers", kafka_bootstrap, "--models-topic", topic, "--latest",
                     "--idle", "2")
    assert res.returncode == 0, res.stderr
    rows = [line.split() for line in res.stdout.splitlines()[1:] if line.startswith(("a ", "b "))]
    assert sorted((r[0], r[1]) for r in rows) == [("a", "500"), ("b", "7")], res.stdout
    res = riverflink("models", "--bootstrap-servers", kafka_bootstrap, "--models-topic", topic, "--latest",
                     "--model-name", "a", "--idle", "2")
    assert [line.split()[1] for line in res.stdout.splitlines() if line.startswith("a ")] == ["500"]


def test_ctrl_c_while_the_arguments_are_read_ends_with_130_and_no_traceback():
    """A Ctrl-C that lands while ``main`` reads its arguments (1.5 s after start on CI's loaded machine) ends the
    command as any Ctrl-C does: exit 130, no traceback (it escaped ``main`` once)."""
    import subprocess
    import sys

    code = ("import sys\nfrom riverflink.pipelines import cli, config_file\n"
            "def interrupted(*args): raise KeyboardInterrupt\n"
            "config_file.parse = interrupted\nsys.exit(cli.main(['train']))\n")
    res = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert res.returncode == 130 and "Traceback" not in res.stderr, (res.returncode, res.stderr[-2000:])


def test_a_reset_rest_connection_is_tried_again_for_a_get_never_for_a_post():
    """A busy local cluster's REST server once reset a connection: a GET is asked again, a POST (a stop) is not."""
    import socket
    import struct
    import threading

    from riverflink.pipelines import flink_rest
    from riverflink.pipelines.config import ConfigError

    server = socket.socket()
    server.bind(("127.0.0.1", 0))
    server.listen(4)
    address = f"127.0.0.1:{server.getsockname()[1]}"
    resets = [1]  # connections still to reset

    def serve() -> None:
        while True:
            try:
                conn, _ = server.accept()
            except OSError:
                return
            conn.recv(65536)
            if resets[0]:
                resets[0] -= 1
                conn.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))  # close with a RST
            else:
                conn.sendall(b'HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: 11\r\n'
                             b'Connection: close\r\n\r\n{"jobs": 1}')
            conn.close()

    threading.Thread(target=serve, daemon=True).start()
    try:
        assert flink_rest._call(address, "/overview") == {"jobs": 1}
        resets[0] = 1
        with pytest.raises(ConfigError, match="unreachable"):
            flink_rest._call(address, "/jobs/x/stop", body={"drain": False})
    finally:
        server.close()
