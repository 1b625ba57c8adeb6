#!/usr/bin/env bash
# Recompiles the Python locks from their .in files, with hashes, using a pinned pip-tools in
# target/pip-tools. Run it for a deliberate upgrade (edit a .in file, or pass --upgrade), then
# run the whole suite (tests/run.sh) and commit the .in and .txt files together.
#
#   tests/requirements/compile.sh              keep existing pins where the .in allows
#   tests/requirements/compile.sh --upgrade    newest versions the .in allows
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")"
ROOT=$(cd ../.. && pwd)
PT=$ROOT/target/pip-tools
if [[ ! -x $PT/bin/pip-compile ]]; then
    python3 -m venv "$PT"
    "$PT/bin/python" -m pip install --quiet --disable-pip-version-check pip-tools==7.6.2
fi
for in in e2e checkov; do
    "$PT/bin/pip-compile" --quiet --generate-hashes --allow-unsafe --strip-extras \
        --no-emit-index-url "$@" -o "$in.txt" "$in.in"
done
echo "compiled: $(ls ./*.txt | tr '\n' ' ')"
