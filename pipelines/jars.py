"""The Kafka connector jars and riverflink's own operators jar.

Maven is not reachable here, so the thin connector (``flink-connector-kafka``
4.0.1-2.0) and ``kafka-clients`` 3.9.1 come from the PyPI wheel
``shigawire-apache-flink-libraries``: ``fetch`` downloads it with pip and
extracts just those two jars.  ``riverflink-operators.jar`` is compiled from
``pipelines/java`` with ``javac`` (it hands PyFlink every record's bytes,
partition and offset, batches them by key, rewinds sources past a lost log and
guards the REST API), ``riverflink-loopback.jar`` from ``pipelines/java-loopback``
(a Java agent: the Python workers' gRPC servers on 127.0.0.1 only).

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
LOOPBACK_JAR = "riverflink-loopback.jar"  # Beam's gRPC server factory, listening on 127.0.0.1 only
LOOPBACK_SRC = REPO / "pipelines" / "java-loopback" / "src"
LOOPBACK_STUB = REPO / "pipelines" / "java-loopback" / "stub"  # compiled against, never packaged
LOOPBACK_MANIFEST = REPO / "pipelines" / "java-loopback" / "MANIFEST.MF"  # a Java agent's


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
    build_jar(out / OPERATORS_JAR, JAVA_SRC, connector_jars())
    build_jar(out / LOOPBACK_JAR, LOOPBACK_SRC, glob.glob(str(_pyflink_dir() / "opt" / "flink-python*.jar")),
              stub=LOOPBACK_STUB, manifest=LOOPBACK_MANIFEST)
    print(f"jars ready in {out}")


def _pyflink_dir() -> Path:
    import pyflink

    return Path(pyflink.__file__).parent


def build_jar(target: Path, src: Path, classpath: list, stub: Path | None = None, manifest: Path | None = None) -> None:
    """Compiles ``src`` (with its ``META-INF`` resources, if any) into ``target`` against Flink's own jar and
    ``classpath``, unless ``target`` is newer than every file of ``src``.  ``stub``: sources compiled with
    ``src`` (ahead of ``classpath``) whose classes are left out of the jar.  ``manifest``: the jar's manifest.
    Without a JDK: a warning, no jar."""
    files = sorted(p for p in src.rglob("*") if p.is_file())
    stubs = sorted(stub.rglob("*.java")) if stub else []
    inputs = [*files, *stubs, *([manifest] if manifest else [])]
    if target.exists() and target.stat().st_mtime >= max(f.stat().st_mtime for f in inputs):
        return
    javac, jar = shutil.which("javac"), shutil.which("jar")
    if not javac or not jar:
        print(f"warning: no javac; {target.name} not built (dead-letter records will carry no source offsets)",
              file=sys.stderr)
        return
    flink_dist = glob.glob(str(_pyflink_dir() / "lib" / "flink-dist*.jar"))
    cp = os.pathsep.join(map(str, [*flink_dist, *classpath]))
    with tempfile.TemporaryDirectory() as classes:
        sources = [str(f) for f in [*files, *stubs] if f.suffix == ".java"]
        subprocess.run([javac, "--release", "11", "-d", classes, "-cp", cp, *sources], check=True)
        if stubs:  # leave out exactly the classes the stubs compile to
            with tempfile.TemporaryDirectory() as stub_classes:
                subprocess.run([javac, "--release", "11", "-d", stub_classes, "-cp", cp, *map(str, stubs)], check=True)
                for c in Path(stub_classes).rglob("*.class"):
                    (Path(classes) / c.relative_to(stub_classes)).unlink()
        if (src / "META-INF").is_dir():
            shutil.copytree(src / "META-INF", Path(classes) / "META-INF")
        if manifest:
            subprocess.run([jar, "cfm", str(target), str(manifest), "-C", classes, "."], check=True)
        else:
            subprocess.run([jar, "cf", str(target), "-C", classes, "."], check=True)


def loopback_agent() -> Path | None:
    """``riverflink-loopback.jar``, a Java agent for a local run's JVM that makes Beam's gRPC servers for the
    Python workers listen on 127.0.0.1 only (pipelines/java-loopback); None if it was not built."""
    p = jars_dir() / LOOPBACK_JAR
    return p if p.exists() else None


if __name__ == "__main__":
    if sys.argv[1:] != ["fetch"]:
        sys.exit("usage: python -m riverflink.pipelines.jars fetch")
    fetch()
