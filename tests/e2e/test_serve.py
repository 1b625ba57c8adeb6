"""`medgate serve` as an operator sees it: the ready line, the credentials file,
graceful SIGTERM, and an access key that stays with the data dir."""

from __future__ import annotations

import configparser
import stat
import time

from support import ACCESS_KEY_ID, client_for, get_bytes


def test_ready_line_credentials_file_and_sigterm(gateway, aws):
    deadline = time.monotonic() + 10
    while f"medgate listening on http://127.0.0.1:{gateway.port}" not in gateway.log_text():
        assert time.monotonic() < deadline, f"no ready line in the output:\n{gateway.log_tail()}"
        time.sleep(0.1)

    cred = gateway.data_dir / "credentials"
    assert cred.is_file(), "DATA_DIR/credentials was not written"
    mode = stat.S_IMODE(cred.stat().st_mode)
    assert mode == 0o600, f"DATA_DIR/credentials has mode {oct(mode)}, expected 0600"
    parsed = configparser.ConfigParser()
    parsed.read(cred)
    assert parsed.has_section("medgate"), cred.read_text()
    assert parsed["medgate"]["aws_access_key_id"].strip() == ACCESS_KEY_ID
    assert parsed["medgate"]["aws_secret_access_key"].strip() == gateway.secret_access_key

    # The file works as-is with the aws CLI's --profile.
    out = aws(gateway.endpoint, "s3", "mb", "s3://via-profile", "--profile", "medgate",
              extra_env={"AWS_SHARED_CREDENTIALS_FILE": str(cred)})
    assert "make_bucket: via-profile" in out.stdout

    assert gateway.stop() == 0, f"SIGTERM: expected exit 0\n{gateway.log_tail()}"


def test_access_key_stays_with_the_data_dir(gateway):
    s3 = client_for(gateway)
    s3.create_bucket(Bucket="keys")
    s3.put_object(Bucket="keys", Key="k", Body=b"kept")
    first_secret = gateway.secret_access_key
    assert gateway.stop() == 0
    # A later run with a different secret in the environment keeps the data dir's key.
    gateway.secret_access_key = "N" * 40
    gateway.start()
    assert get_bytes(client_for(gateway, secret=first_secret), "keys", "k") == b"kept"
    cred = (gateway.data_dir / "credentials").read_text()
    assert first_secret in cred and "N" * 40 not in cred

