"""Signed model documents: only documents signed by the merger's key are accepted where a verify key is set."""

from __future__ import annotations

import json
import time

import jsonschema
import orjson
from river import linear_model

from riverflink import models
from riverflink.models.signing import Signer, Verifier, sign
from riverflink.operators.model_feed import FeedRules, accept
from tests.test_models_wire import SCHEMA_FILE


def _doc(version: int, weight: float = 1.0) -> dict:
    m = linear_model.LogisticRegression()
    m.learn_one({"a": weight}, True)
    return models.to_wire(m, name="m", version=version, created_at=time.time())


def test_signed_documents_verify_and_forgeries_do_not(tmp_path):
    signer = Signer.generate()
    private, public = signer.write(tmp_path)
    assert oct(private.stat().st_mode & 0o777) == "0o600"
    rules = FeedRules("m", verifier=Verifier.load(public))
    version = int(time.time() * 1000)

    signed = models.dumps(sign(_doc(version), Signer.load(private)))
    jsonschema.validate(json.loads(signed), json.loads(SCHEMA_FILE.read_text()))
    entry, model, problem = accept(signed, rules, None)
    assert problem is None and entry.version == version and model is not None

    unsigned = models.dumps(_doc(version + 1))
    assert "not signed" in accept(unsigned, rules, version)[2]

    tampered = orjson.loads(signed)
    tampered["meta"]["version"] = version + 2
    assert "does not match" in accept(orjson.dumps(tampered), rules, version)[2]

    other = models.dumps(sign(_doc(version + 3), Signer.generate()))
    assert "another key" in accept(other, rules, version)[2]

    # without a verify key, behaviour is as before: any valid document is accepted
    assert accept(unsigned, FeedRules("m"), version)[2] is None


def test_key_material_stays_private(tmp_path):
    import stat

    import pytest

    signer = Signer.generate()
    assert signer.private_raw.hex() not in repr(signer) and "key_id=" in repr(signer)
    private, public = signer.write(tmp_path / "keys")
    assert stat.S_IMODE(private.stat().st_mode) == 0o600
    with pytest.raises(FileExistsError, match="--force"):
        Signer.generate().write(tmp_path / "keys")  # never overwrites a pair silently
    assert Signer.load(private).private_raw == signer.private_raw
    Signer.generate().write(tmp_path / "keys", force=True)
    assert Signer.load(private).private_raw != signer.private_raw
    with pytest.raises(ValueError, match="private"):
        Verifier.load(private)  # a serving node handed the signing key would be able to sign


def test_live_model_keeps_the_genuine_version_when_only_the_signature_can_stop_a_forgery(tmp_path):
    """A forgery with a newer, plausible version and a valid body: with a verify key LiveModel keeps the
    genuine version; without one the same forgery would take over (so the signature alone stopped it)."""
    from riverflink import LiveModel

    signer = Signer.generate()
    _, public = signer.write(tmp_path)
    version = int(time.time() * 1000)
    genuine = models.dumps(sign(_doc(version, weight=1.0), signer))
    forged = [models.dumps(_doc(version + 5_000, weight=-9.0)),
              models.dumps(sign(_doc(version + 5_000, weight=-9.0), Signer.generate()))]
    guarded = LiveModel("127.0.0.1:9", "m", verify_key=str(public), start=False)
    open_door = LiveModel("127.0.0.1:9", "m", start=False)
    for live in (guarded, open_door):
        assert live.offer(genuine)
    for doc in forged:
        assert not guarded.offer(doc)
    assert guarded.version == version and guarded.ignored == 2
    assert open_door.offer(forged[0]) and open_door.version == version + 5_000  # what the key prevented


def test_the_submitting_client_reads_only_the_public_key(tmp_path):
    """Only the merger's task managers read the private key: a client submitting to a cluster needs just
    ``verify.pem`` (here the private key does not even exist on the client)."""
    import pytest

    from riverflink.pipelines.config import ConfigError, FlinkConfig, TrainConfig

    Signer.generate().write(tmp_path)
    private = tmp_path / "signing.pem"
    private.unlink()  # it lives on the merger's task managers alone
    cfg = TrainConfig("127.0.0.1:9092", signing_key=str(private), flink=FlinkConfig(jobmanager="127.0.0.1:8081"))
    cfg.validate()
    assert cfg.verifier() == Verifier.load(tmp_path / "verify.pem")
    # a local run's task manager is this machine: a missing key is one error before Flink starts
    with pytest.raises(ConfigError, match="no such file"):
        TrainConfig("127.0.0.1:9092", signing_key=str(private)).validate()
    # the public half is needed, and a private key is refused in its place
    (tmp_path / "verify.pem").unlink()
    with pytest.raises(ConfigError, match="--signing-verify-key"):
        cfg.validate()
    Signer.generate().write(tmp_path / "other")
    with pytest.raises(ConfigError, match="private"):
        TrainConfig("127.0.0.1:9092", signing_key=str(private), signing_verify_key=str(tmp_path / "other" / "signing.pem"),
                    flink=FlinkConfig(jobmanager="127.0.0.1:8081")).validate()
