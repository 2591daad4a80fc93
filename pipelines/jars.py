"""The Kafka connector jars and riverflink's own operators jar.

Maven is not reachable here, so the thin connector (``flink-connector-kafka``
4.0.1-2.0) and ``kafka-clients`` 3.9.1 come from the PyPI wheel
``shigawire-apache-flink-libraries``: ``fetch`` downloads it with pip and
extracts just those two jars.  ``riverflink-operators.jar`` is compiled from
``pipelines/java`` with ``javac`` (it hands PyFlink every record's bytes,
partition and offset).

Overrides: ``RIVERFLINK_JARS_DIR`` (a folder holding all three jars) or
``RIVERFLINK_KAFKA_JARS`` (an ``os.pathsep``-separated list of connector jars,
e.g. your own fat ``flink-sql-connector-kafka.jar``).

    python -m riverflink.pipelines.jars fetch     # idempotent; used by ``make``
"""

from __future__ import annotations

import glob
import os
import shutil
import subprocess
import sys
import tempfile
import zipfile
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
WHEEL = "shigawire-apache-flink-libraries==2.0.0.post1"
CONNECTOR_JARS = ("flink-connector-kafka.jar", "kafka-clients.jar")
OPERATORS_JAR = "riverflink-operators.jar"  # record frames, keys, the batcher, rewinding sources, the REST guard
JAVA_SRC = REPO / "pipelines" / "java"


def jars_dir() -> Path:
    return Path(os.environ.get("RIVERFLINK_JARS_DIR", REPO / ".riverflink" / "jars"))


def connector_jars() -> list[Path]:
    override = os.environ.get("RIVERFLINK_KAFKA_JARS")
    if override:
        return [Path(p) for p in override.split(os.pathsep) if p]
    return [jars_dir() / j for j in CONNECTOR_JARS]


def operators_jar() -> Path | None:
    p = jars_dir() / OPERATORS_JAR
    return p if p.exists() else None


def all_jars() -> list[Path]:
    """Every jar a job loads; raises ``FileNotFoundError`` with the fix when one is missing."""
    jars = connector_jars()
    missing = [str(j) for j in jars if not j.exists()]
    if missing:
        raise FileNotFoundError(
            f"Kafka connector jar(s) missing: {', '.join(missing)}; run 'make' or 'python -m riverflink.pipelines.jars fetch'"
        )
    env = operators_jar()
    return jars + ([env] if env else [])


def fetch() -> None:
    out = jars_dir()
    out.mkdir(parents=True, exist_ok=True)
    if not all((out / j).exists() for j in CONNECTOR_JARS):
        with tempfile.TemporaryDirectory() as tmp:
            subprocess.run(
                [sys.executable, "-m", "pip", "download", "--no-deps", "-q", "-d", tmp, WHEEL], check=True
            )
            (wheel,) = glob.glob(os.path.join(tmp, "*.whl"))
            with zipfile.ZipFile(wheel) as z:
                for j in CONNECTOR_JARS:
                    with z.open(f"pyflink/lib/{j}") as src, open(out / j, "wb") as dst:
                        shutil.copyfileobj(src, dst)
    build_operators_jar(out)
    print(f"jars ready in {out}")


def build_operators_jar(out: Path) -> None:
    target = out / OPERATORS_JAR
    sources = sorted(JAVA_SRC.rglob("*.java"))
    resources = sorted(p for p in (JAVA_SRC / "META-INF").rglob("*") if p.is_file())  # ServiceLoader entries
    if target.exists() and target.stat().st_mtime >= max(s.stat().st_mtime for s in [*sources, *resources]):
        return
    javac, jar = shutil.which("javac"), shutil.which("jar")
    if not javac or not jar:
        print("warning: no javac; dead-letter records will carry no source offsets", file=sys.stderr)
        return
    import pyflink

    flink_lib = Path(pyflink.__file__).parent / "lib"
    cp = os.pathsep.join([*map(str, glob.glob(str(flink_lib / "flink-dist*.jar"))), *map(str, connector_jars())])
    with tempfile.TemporaryDirectory() as classes:
        subprocess.run([javac, "--release", "11", "-d", classes, "-cp", cp, *map(str, sources)], check=True)
        shutil.copytree(JAVA_SRC / "META-INF", Path(classes) / "META-INF")
        subprocess.run([jar, "cf", str(target), "-C", classes, "."], check=True)


if __name__ == "__main__":
    if sys.argv[1:] != ["fetch"]:
        sys.exit("usage: python -m riverflink.pipelines.jars fetch")
    fetch()
