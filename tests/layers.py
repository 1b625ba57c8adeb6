#!/usr/bin/env python3
"""Checks the gateway's layer rules (docs/architecture.md) on gateway/src, mechanically.

    tests/layers.py [SRC_DIR [ALLOWED]]      exit 0 when every rule holds, 1 with one line per breach

The layers, bottom to top: base (lib.rs, error.rs, metrics.rs, routes.rs: usable by all, using none)
< store < engine < front < runtime; keyring sits below them all and is another crate. Every
`crate::` path (in `use` lines and inline, grouped `crate::{a, b}` included) and every
`super::` path, resolved to its top-level module, is checked:

1. a path may only go to the same layer or a lower one (never upward);
2. the `sled` crate is named only in the sled adapter (store/private/sled.rs, sled_*.rs);
3. a front (front/) never names the store layer, nor reaches the engine's store through
   `engine.private` or `Engine::private_store()` (the integration tests' accessor): it calls
   the engine;
4. a front never calls `flush` (of anything): every engine method that changes state returns
   only once it is durable, so durability is decided in one place (`Engine::durable`);
5. the store's rules (store/rules/) and its transaction interface (store/kv.rs, store/kv/)
   never name an adapter (`…::sled…`, `SledKv`, `SledStore`): they see only `Kv`;
6. `KvStore::raw_kv()` (the adapter under the rules, for tests that plant or inspect raw
   rows) is called only by test code and inside store/: anywhere else it would read or
   write rows around the rules. Run without arguments, the binary's sources (`src/` at the
   repository root) are checked for it too.

Breaches known when the rules were written and not yet fixed are listed, one `file: path`
a line, in tests/layers_allowed.txt; an entry that no longer matches anything is itself an
error, so the list can only shrink.

Comments and string literals are not code and are skipped; so is test code (a file named
tests.rs, or a `#[cfg(test)] mod … { … }` block), which may compose any layers. tests/test_layers.py plants violations in a copy and checks this script finds them.
"""

from __future__ import annotations

import re
import sys
from pathlib import Path

RANK = {"base": 0, "store": 1, "engine": 2, "front": 3, "runtime": 4}
# Top-level modules of the crate root and the layer each belongs to.
ROOT_MODULES = {
    "error": "base",
    "metrics": "base",
    "routes": "base",
    "now_ms": "base",
    "Error": "base",
    "Result": "base",
    "store": "store",
    "engine": "engine",
    "front": "front",
    "runtime": "runtime",
}


def strip_comments_and_strings(text: str) -> str:
    """The code of `text` with comments and string contents blanked (newlines kept)."""
    out: list[str] = []
    i, n = 0, len(text)
    while i < n:
        c = text[i]
        two = text[i:i + 2]
        if two == "//":
            j = text.find("\n", i)
            i = n if j < 0 else j
        elif two == "/*":
            depth, i = 1, i + 2
            while i < n and depth:
                if text[i:i + 2] == "/*":
                    depth, i = depth + 1, i + 2
                elif text[i:i + 2] == "*/":
                    depth, i = depth - 1, i + 2
                else:
                    if text[i] == "\n":
                        out.append("\n")
                    i += 1
        elif c == "r" and re.match(r'r#*"', text[i:i + 8]) and not (i and (text[i - 1].isalnum() or text[i - 1] == "_")):
            m = re.match(r'r(#*)"', text[i:])
            end = '"' + m.group(1)
            j = text.find(end, i + len(m.group(0)))
            j = n if j < 0 else j + len(end)
            out.append('""' + "\n" * text.count("\n", i, j))
            i = j
        elif c == '"':
            j = i + 1
            while j < n and text[j] != '"':
                j += 2 if text[j] == "\\" else 1
            out.append('""' + "\n" * text.count("\n", i, j))
            i = j + 1
        elif c == "'" and re.match(r"'(\\.|[^\\'])'|'\\u\{[0-9a-fA-F]+\}'", text[i:i + 12]):
            m = re.match(r"'(\\.|[^\\'])'|'\\u\{[0-9a-fA-F]+\}'", text[i:i + 12])
            out.append("' '")
            i += len(m.group(0))
        else:
            out.append(c)
            i += 1
    return "".join(out)


def non_test_code(code: str, rel: Path) -> str:
    """`code` (comments and strings already blanked) without its `#[cfg(test)] mod x { … }`
    blocks, newlines kept so line numbers stay true."""
    if rel.name == "tests.rs":
        return ""
    out, pos = [], 0
    for m in re.finditer(r"#\[cfg\(test\)\]\s*(?:pub(?:\([\w:]+\))?\s+)?mod\s+\w+\s*([{;])", code):
        if m.start() < pos:
            continue
        out.append(code[pos:m.start()])
        if m.group(1) == ";":
            pos = m.end()
            continue
        depth, i = 0, m.end() - 1
        while i < len(code):
            if code[i] == "{":
                depth += 1
            elif code[i] == "}":
                depth -= 1
                if depth == 0:
                    break
            i += 1
        out.append("\n" * code.count("\n", m.start(), i + 1))
        pos = i + 1
    out.append(code[pos:])
    return "".join(out)


def layer_of(rel: Path) -> str:
    return rel.parts[0] if len(rel.parts) > 1 else "base"


def module_path(rel: Path) -> list[str]:
    parts = list(rel.with_suffix("").parts)
    if parts[-1] in ("mod", "lib"):
        parts.pop()
    return parts


def group_heads(body: str) -> list[str]:
    """The first segment of each top-level item of a `{a::b, c, d::{e}}` group."""
    heads, depth, cur = [], 0, ""
    for ch in body:
        if ch == "{":
            depth += 1
        elif ch == "}":
            depth -= 1
        elif ch == "," and depth == 0:
            heads.append(cur)
            cur = ""
            continue
        if depth == 0:
            cur += ch
    heads.append(cur)
    out = []
    for h in heads:
        m = re.match(r"\s*(\w+)", h)
        if m and m.group(1) != "self":
            out.append(m.group(1))
    return out


def brace_body(code: str, start: int) -> str:
    depth, i = 0, start
    while i < len(code):
        if code[i] == "{":
            depth += 1
        elif code[i] == "}":
            depth -= 1
            if depth == 0:
                return code[start + 1:i]
        i += 1
    return code[start + 1:]


def targets(code: str, rel: Path):
    """(line, top-level module, full path text) of every crate:: and super:: path."""
    here = module_path(rel)
    for m in re.finditer(r"(?<![\w:])(crate|(?:super::)+)(?:\s*::\s*)?", code):
        line = code.count("\n", 0, m.start()) + 1
        if m.group(1) == "crate":
            base: list[str] = []
            rest_at = m.end()
            if not code[m.start():m.end()].rstrip().endswith("::"):
                continue  # `crate` alone (e.g. `pub(crate)`)
        else:
            ups = m.group(1).count("super")
            # A file's module is `here`; super goes to its parent (a mod.rs is its folder).
            base = here[: max(len(here) - ups, 0)]
            rest_at = m.end()
        rest = code[rest_at:]
        if rest.startswith("{"):
            for head in group_heads(brace_body(code, rest_at)):
                yield line, (base + [head])[0], f"{m.group(0)}{{{head}}}"
        else:
            seg = re.match(r"(\w+)", rest)
            if seg:
                full = base + [seg.group(1)]
                yield line, full[0], m.group(0) + seg.group(1)


def path_text(code: str, text: str, line: int) -> str:
    """The whole path starting at `text` on `line` (e.g. `crate::store::private::PrivateStore`)."""
    src_line = code.split("\n")[line - 1]
    m = re.search(re.escape(text) + r"(?:::\w+)*", src_line)
    return m.group(0) if m else text


def load_allowed(path: Path) -> set[str]:
    if not path.is_file():
        return set()
    return {l.split("#", 1)[0].strip() for l in path.read_text().splitlines()} - {""}


def raw_kv_calls(code: str, shown: str) -> list[str]:
    """Rule 6: every use of `raw_kv` in `code` (comments, strings and test code already out)."""
    out = []
    for m in re.finditer(r"\braw_kv\b", code):
        line = code.count("\n", 0, m.start()) + 1
        out.append(f"{shown}:{line}: raw_kv(): the adapter under the store's rules is for tests and store/ only; call the store's methods")
    return out


def check_binary(src: Path) -> list[str]:
    """Rule 6 on the binary's sources (`src/`): no `raw_kv` outside test code."""
    errors: list[str] = []
    for path in sorted(src.rglob("*.rs")):
        rel = path.relative_to(src)
        code = non_test_code(strip_comments_and_strings(path.read_text()), rel)
        errors.extend(raw_kv_calls(code, f"src/{rel}"))
    return errors


def check(src: Path, allowed: set[str] | None = None) -> list[str]:
    allowed = allowed or set()
    used: set[str] = set()
    errors: list[str] = []
    for path in sorted(src.rglob("*.rs")):
        rel = path.relative_to(src)
        code = non_test_code(strip_comments_and_strings(path.read_text()), rel)
        layer = layer_of(rel)
        is_sled_adapter = rel.parts[:2] == ("store", "private") and (
            rel.name == "sled.rs" or rel.name.startswith("sled_") or rel.parts[2:3] == ("sled",))
        for line, top, text in targets(code, rel):
            shown = path_text(code, text, line)
            if f"{rel}: {shown}" in allowed:
                used.add(f"{rel}: {shown}")
                continue
            to = ROOT_MODULES.get(top)
            if to is None:
                errors.append(f"{rel}:{line}: {shown}: unknown top-level module {top!r} (add it to a layer)")
                continue
            if RANK[to] > RANK[layer]:
                errors.append(f"{rel}:{line}: {shown}: the {layer} layer may not use the {to} layer above it")
            if layer == "front" and to == "store":
                errors.append(f"{rel}:{line}: {shown}: a front may not name the store; call the engine")
        if layer == "front":
            for m in re.finditer(r"\bengine\s*\.\s*private\b|\.\s*private_store\s*\(", code):
                line = code.count("\n", 0, m.start()) + 1
                what = "private_store()" if "private_store" in m.group(0) else "engine.private"
                errors.append(f"{rel}:{line}: {what}: a front may not reach the private store; call the engine")
            for m in re.finditer(r"\.\s*flush\s*\(", code):
                line = code.count("\n", 0, m.start()) + 1
                errors.append(f"{rel}:{line}: flush(): a front may not flush; engine methods return once their writes are durable")
        is_rules = rel.parts[:2] in (("store", "rules"), ("store", "kv"), ("store", "kv.rs"))
        if is_rules:
            for m in re.finditer(r"::\s*sled\w*\b|\bSledKv\b|\bSledStore\b", code):
                line = code.count("\n", 0, m.start()) + 1
                errors.append(f"{rel}:{line}: the store's rules name an adapter; they use only the Kv interface (store/kv.rs)")
        if layer != "store":
            errors.extend(raw_kv_calls(code, str(rel)))
        if not is_sled_adapter:
            for m in re.finditer(r"(?<![\w:])sled\s*::|\buse\s+sled\b|\bextern\s+crate\s+sled\b", code):
                line = code.count("\n", 0, m.start()) + 1
                errors.append(f"{rel}:{line}: the sled crate is named outside the sled adapter (store/private/sled*)")
    for stale in sorted(allowed - used):
        errors.append(f"tests/layers_allowed.txt: {stale}: no longer found; remove the entry")
    return errors


def main() -> int:
    src = Path(sys.argv[1]) if len(sys.argv) > 1 else Path(__file__).resolve().parent.parent / "gateway" / "src"
    if not (src / "lib.rs").is_file():
        print(f"layers.py: {src} has no lib.rs; pass the gateway's src directory", file=sys.stderr)
        return 2
    allow = Path(sys.argv[2]) if len(sys.argv) > 2 else Path(__file__).resolve().parent / "layers_allowed.txt"
    errors = check(src, load_allowed(allow))
    binary = Path(__file__).resolve().parent.parent / "src"
    if len(sys.argv) <= 1 and binary.is_dir():
        errors += check_binary(binary)
    for e in errors:
        print(e)
    if errors:
        print(f"layers.py: {len(errors)} layer rule(s) broken in {src}", file=sys.stderr)
        return 1
    print(f"layers.py: every path in {src} goes downward")
    return 0


if __name__ == "__main__":
    sys.exit(main())
