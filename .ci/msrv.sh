#!/usr/bin/env bash
# Checks the library's `rust-version` (Cargo.toml) is true: the library, its tests and examples
# build with that toolchain, with the locked dependencies. Called from .ci/run; runs on its own.
#
# The toolchain comes from rustup (`rustup toolchain install <version> --profile minimal`).
# Where rustup cannot install it, the equivalent check without it: every package the library
# depends on (locked versions, all features) declares a `rust-version` no newer than ours.
set -euo pipefail
cd "$(dirname "$0")/.."

msrv=$(sed -n 's/^rust-version = "\(.*\)"$/\1/p' Cargo.toml | head -n1)
if [[ -z $msrv ]]; then
    echo "::: no rust-version in Cargo.toml" >&2
    exit 1
fi

if command -v rustup >/dev/null 2>&1 && rustup toolchain install "$msrv" --profile minimal; then
    # Its own target directory: another toolchain's build would invalidate the main one.
    CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-target}/msrv" \
        cargo "+${msrv}" check --locked -p tasker --all-targets --all-features
    echo "::: tasker builds with Rust ${msrv} (its rust-version)"
    exit 0
fi

echo "::: rustup cannot install ${msrv}: checking the dependencies' rust-version instead"
cargo metadata --locked --format-version 1 --all-features --filter-platform "$(rustc -vV | sed -n 's/^host: //p')" |
    python3 -c '
import json, sys
msrv = tuple(int(x) for x in sys.argv[1].split("."))
meta = json.load(sys.stdin)
packages = {p["id"]: p for p in meta["packages"]}
nodes = {n["id"]: n for n in meta["resolve"]["nodes"]}
root = next(i for i, p in packages.items() if p["name"] == "tasker" and p["source"] is None)
# What a user of the library builds: normal and build dependencies, not dev-dependencies.
seen, todo = set(), [root]
while todo:
    i = todo.pop()
    if i in seen:
        continue
    seen.add(i)
    for d in nodes[i]["deps"]:
        if any(k["kind"] != "dev" for k in d["dep_kinds"]):
            todo.append(d["pkg"])
def version(v):
    return tuple(int(x) for x in (v.split(".") + ["0", "0"])[:3])
too_new = sorted(
    (packages[i]["name"], packages[i]["version"], packages[i]["rust_version"])
    for i in seen
    if packages[i].get("rust_version") and version(packages[i]["rust_version"]) > version(sys.argv[1])
)
for name, v, rv in too_new:
    print(f"{name} {v} needs Rust {rv}, above our rust-version {sys.argv[1]}")
sys.exit(1 if too_new else 0)
' "$msrv"
echo "::: no dependency needs more than Rust ${msrv}"
