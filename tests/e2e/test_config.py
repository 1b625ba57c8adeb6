"""Configuration: TOML file < MEDGATE_* environment < flags, JSON logs, the chunk size
setting, and the institution identity sealed with MEDGATE_PASSPHRASE."""

from __future__ import annotations

import json
import subprocess
import time

from support import Gateway, client_for, free_port, get_bytes, port_open


class ConfigGateway(Gateway):
    """A gateway whose settings come from a config file (plus env/flags under test)."""

    def __init__(self, workdir, config_text: str, env: dict[str, str], flags: list[str]):
        super().__init__(workdir)
        self.config_path = workdir / "medgate.toml"
        self.config_path.write_text(config_text)
        self.extra_env = env
        self.flags = flags

    def argv(self):
        return [self.bin, "serve", "--config", str(self.config_path), *self.flags]


def test_file_then_env_then_flag(tmp_path):
    data = tmp_path / "cfg-data"
    file_port, env_port, flag_port = free_port(), free_port(), free_port()
    config = f"""
data_dir = "{data}"
listen = "127.0.0.1:{file_port}"
log_format = "json"

[engine]
chunk_size = 65536
"""
    gw = ConfigGateway(tmp_path / "gw", config, {"MEDGATE_LISTEN": f"127.0.0.1:{env_port}"}, [])
    gw.data_dir = data
    gw.port = env_port
    try:
        gw.start()
        assert not port_open(file_port), "the environment must override the config file"
        s3 = client_for(gw)
        s3.create_bucket(Bucket="cfg")
        body = bytes(range(256)) * 800  # 204800 bytes: 4 chunks of 64 KiB
        s3.put_object(Bucket="cfg", Key="k", Body=body)
        assert get_bytes(s3, "cfg", "k") == body
        blobs = [p for p in (data / "public" / "v1" / "b").rglob("*") if p.is_file()]
        assert [p.stat().st_size for p in blobs] == [len(body) + 16 * 4], \
            "chunk_size from the config file was not applied"
        assert gw.stop() == 0
        # Logs are JSON, one object per line.
        server_lines = [l for l in gw.log_text().splitlines() if l.startswith("{")]
        assert server_lines, gw.log_text()
        for line in server_lines:
            json.loads(line)

        # A flag beats the environment.
        gw.flags = ["--listen", f"127.0.0.1:{flag_port}"]
        gw.port = flag_port
        gw.start()
        assert not port_open(env_port)
        assert get_bytes(client_for(gw), "cfg", "k") == body
    finally:
        gw.teardown()


def test_bad_config_is_a_clear_error(tmp_path):
    bad = tmp_path / "bad.toml"
    bad.write_text('listen = "not an address"\n')
    gw = Gateway(tmp_path / "gw")
    cp = subprocess.run([gw.bin, "serve", "--config", str(bad), "--data-dir", str(tmp_path / "d")],
                        capture_output=True, timeout=30, env=gw.env(), stdin=subprocess.DEVNULL)
    assert cp.returncode != 0
    assert b"bad.toml" in cp.stderr and b"not valid" in cp.stderr, cp.stderr

    unknown = tmp_path / "unknown.toml"
    unknown.write_text('colour = "blue"\n')
    cp = subprocess.run([gw.bin, "serve", "--config", str(unknown), "--data-dir", str(tmp_path / "d")],
                        capture_output=True, timeout=30, env=gw.env(), stdin=subprocess.DEVNULL)
    assert cp.returncode != 0
    assert b"colour" in cp.stderr, cp.stderr


def test_passphrase_sealed_identity(gateway_factory):
    gw = gateway_factory(start=False)
    gw.extra_env = {"MEDGATE_PASSPHRASE": "correct horse battery staple"}
    gw.start()
    key_text = (gw.data_dir / "institution.key").read_text()
    assert "MEDGATE-SEALED-KEY" in key_text.upper()
    assert "MEDGATE-SECRET-KEY" not in key_text.upper(), "the secret key must not be stored in clear"
    s3 = client_for(gw)
    s3.create_bucket(Bucket="sealed")
    s3.put_object(Bucket="sealed", Key="rec", Body=b"record")
    assert gw.stop() == 0

    for env, needle in (({}, b"MEDGATE_PASSPHRASE"),
                        ({"MEDGATE_PASSPHRASE": "wrong"}, b"does not open")):
        gw.extra_env = env
        cp = subprocess.run(gw.argv(), capture_output=True, timeout=60, env=gw.env(),
                            stdin=subprocess.DEVNULL)
        assert cp.returncode != 0, "must refuse to start without the right passphrase"
        assert needle in cp.stderr, cp.stderr

    gw.extra_env = {"MEDGATE_PASSPHRASE": "correct horse battery staple"}
    gw.start()
    assert get_bytes(client_for(gw), "sealed", "rec") == b"record"
    assert "unsealed" not in gw.log_text().split("===== run 2")[-1]


def test_unsealed_identity_warns(gateway):
    deadline = time.monotonic() + 10
    while "unsealed" not in gateway.log_text():
        assert time.monotonic() < deadline, gateway.log_tail()
        time.sleep(0.1)
