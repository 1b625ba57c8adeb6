#!/usr/bin/env python3
"""Tests tests/layers.py on planted violations: each case copies gateway/src to a temporary
directory, plants one breach (or one thing that is not a breach), and checks the checker's
verdict and message. The unchanged copy must pass beside them.

    python3 tests/test_layers.py     (also collected by pytest)
"""

from __future__ import annotations

import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

HERE = Path(__file__).resolve().parent
SRC = HERE.parent / "gateway" / "src"
CHECKER = HERE / "layers.py"
ALLOWED = HERE / "layers_allowed.txt"


def run_on(plant: dict[str, str], allowed_extra: str = "") -> tuple[int, str]:
    """Runs the checker on a copy of gateway/src with `plant` (file -> text) appended."""
    with tempfile.TemporaryDirectory() as tmp:
        src = Path(tmp) / "src"
        shutil.copytree(SRC, src)
        for rel, text in plant.items():
            with open(src / rel, "a") as f:
                f.write("\n" + text + "\n")
        allowed = Path(tmp) / "allowed.txt"
        allowed.write_text(ALLOWED.read_text() + allowed_extra)
        p = subprocess.run([sys.executable, str(CHECKER), str(src), str(allowed)],
                           capture_output=True, text=True)
        return p.returncode, p.stdout + p.stderr


def expect_fail(name: str, plant: dict[str, str], needle: str, allowed_extra: str = "") -> None:
    rc, out = run_on(plant, allowed_extra)
    assert rc == 1, f"{name}: the checker passed a planted violation:\n{out}"
    assert needle in out, f"{name}: expected {needle!r} in:\n{out}"


def expect_pass(name: str, plant: dict[str, str]) -> None:
    rc, out = run_on(plant)
    assert rc == 0, f"{name}: the checker failed:\n{out}"


def test_unchanged_source_passes():
    expect_pass("unchanged", {})


def test_inline_upward_path_fails():
    expect_fail("inline", {"store/public.rs": "fn planted() { let _ = crate::engine::gc::run; }"},
                "store/public.rs:")
    expect_fail("inline message", {"store/public.rs": "fn planted() { let _ = crate::engine::gc::run; }"},
                "crate::engine::gc::run: the store layer may not use the engine layer")


def test_grouped_use_fails():
    expect_fail("grouped", {"engine/gc.rs": "use crate::{runtime::tls::Tls as Planted, Error as E2};"},
                "the engine layer may not use the runtime layer")


def test_super_path_escaping_the_layer_fails():
    expect_fail("super", {"store/private/sled.rs": "use super::super::super::front::s3::Front as Planted;"},
                "the store layer may not use the front layer")


def test_sled_outside_the_adapter_fails():
    expect_fail("sled", {"engine/gc.rs": "fn planted(_: &sled::Db) {}"},
                "engine/gc.rs:")
    expect_fail("sled message", {"error.rs": "use sled as planted;"},
                "the sled crate is named outside the sled adapter")


def test_rules_naming_an_adapter_fail():
    expect_fail("rules", {"store/rules/objects.rs": "fn planted() { let _ = crate::store::private::sled::SledKv::open; }"},
                "store/rules/objects.rs:")
    expect_fail("kv", {"store/kv.rs": "use super::private::sled_backup as planted;"},
                "the store's rules name an adapter")
    expect_pass("rules naming sled in a comment", {"store/rules/log.rs": "// the sled adapter runs this as one SledKv transaction"})


def test_front_naming_the_store_fails():
    expect_fail("front", {"front/s3.rs": "fn planted() { let _ = crate::store::public::blob_path; }"},
                "a front may not name the store")


def test_front_reaching_the_engines_store_fails():
    expect_fail("engine.private", {"front/api.rs": "async fn planted(e: &crate::engine::record::Engine) {\n"
                                                   "    let _ = e;\n    let _ = engine\n        .private\n        .flush();\n}"},
                "engine.private: a front may not reach the private store")


def test_front_calling_the_test_accessor_fails():
    expect_fail("private_store", {"front/s3/mod.rs": "async fn planted(e: &crate::engine::record::Engine) {\n"
                                                     "    let _ = e.private_store()\n        .flush();\n}"},
                "private_store(): a front may not reach the private store")


def test_front_flushing_fails():
    expect_fail("flush", {"front/s3/objects.rs": "async fn planted(front: &Front) -> crate::Result<()> {\n"
                                                 "    front.engine\n        .flush().await\n}"},
                "flush(): a front may not flush")
    expect_fail("flush line", {"front/api/mod.rs": "async fn planted(e: &crate::engine::record::Engine) { let _ = e.flush(); }"},
                "front/api/mod.rs:")


def test_raw_kv_outside_the_store_and_tests_fails():
    expect_fail("raw_kv in the engine", {"engine/gc.rs": "fn planted(s: &crate::store::private::sled::SledStore) {\n"
                                                        "    let _ = s\n        .raw_kv();\n}"},
                "engine/gc.rs:")
    expect_fail("raw_kv message", {"runtime/run.rs": "fn planted<K>(s: &crate::store::rules::KvStore<K>) -> &K { s.raw_kv() }"},
                "raw_kv(): the adapter under the store's rules is for tests and store/ only")
    expect_pass("raw_kv in test code and in store/", {
        "engine/gc.rs": "#[cfg(test)]\nmod planted_tests {\n    fn f<K>(s: &crate::store::rules::KvStore<K>) -> &K { s.raw_kv() }\n}",
        "store/rules/admin.rs": "fn planted<K>(s: &KvStore<K>) -> &K { s.raw_kv() }",
    })


def test_unknown_top_level_module_fails():
    expect_fail("unknown", {"engine/gc.rs": "fn planted() { let _ = crate::newlayer::thing; }"},
                "unknown top-level module 'newlayer'")


def test_stale_allowlist_entry_fails():
    expect_fail("stale", {}, "no longer found", "front/s3.rs: crate::store::private::Gone\n")


def test_comments_strings_and_test_code_are_not_paths():
    expect_pass("not code", {
        "store/public.rs": '// crate::runtime::server in a comment\n'
                           '/* crate::front::s3 in a block comment */\n'
                           'const PLANTED: &str = "crate::engine::gc and sled::Db in a string";\n'
                           '#[cfg(test)]\nmod planted_tests {\n    use crate::runtime::server as _;\n}',
    })


def main() -> int:
    tests = [v for k, v in sorted(globals().items()) if k.startswith("test_") and callable(v)]
    for t in tests:
        t()
        print(f"ok  {t.__name__}")
    print(f"test_layers.py: {len(tests)} passed")
    return 0


if __name__ == "__main__":
    sys.exit(main())
