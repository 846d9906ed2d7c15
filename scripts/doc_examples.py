#!/usr/bin/env python3
"""Lists the public items of the `tasker` library whose docs have no code example.

The public items are what a user reaches from the crate root: the re-exported types, traits,
functions and constants, the inherent methods and associated constants of those types, and the
methods of those traits (trait impls such as `Debug` or `Clone`, struct fields and enum variants
are not counted: their docs are the type's). An example is a fenced code block in the item's
own docs.

    RUSTC_BOOTSTRAP=1 cargo rustdoc --lib -- -Z unstable-options --output-format json
    python3 scripts/doc_examples.py [target/doc/tasker.json]

(rustdoc's JSON output is unstable: `RUSTC_BOOTSTRAP=1` lets the stable toolchain write it,
or use `cargo +nightly`.) `.ci/run` runs both lines.

Prints each item lacking an example and a count; exits 1 if any lacks one.
"""

import json
import sys

KINDS = ("struct", "enum", "trait", "function", "constant", "type_alias", "macro")


def main() -> int:
    path = sys.argv[1] if len(sys.argv) > 1 else "target/doc/tasker.json"
    with open(path) as f:
        krate = json.load(f)
    index = krate["index"]

    def inner_kind(item):
        return next(iter(item["inner"]))

    def target(item):
        """The item a `pub use` points at, or the item itself."""
        if inner_kind(item) == "use":
            use = item["inner"]["use"]
            return index.get(str(use["id"])) if use.get("id") is not None else None
        return item

    items = []  # (path shown, item)
    root = index[str(krate["root"])]
    for child in root["inner"]["module"]["items"]:
        item = index[str(child)]
        if item.get("visibility") != "public" or (item.get("attrs") and "doc(hidden)" in str(item["attrs"])):
            continue
        item = target(item)
        if item is None or inner_kind(item) not in KINDS:
            continue
        name = item["name"]
        items.append((name, item))
        kind = inner_kind(item)
        if kind in ("struct", "enum"):
            for impl_id in item["inner"][kind]["impls"]:
                impl = index[str(impl_id)]["inner"]["impl"]
                if impl.get("trait") is not None or impl.get("is_synthetic") or impl.get("blanket_impl"):
                    continue
                for member in impl["items"]:
                    m = index[str(member)]
                    if m.get("visibility") == "public":
                        items.append((f"{name}::{m['name']}", m))
        elif kind == "trait":
            for member in item["inner"]["trait"]["items"]:
                m = index[str(member)]
                items.append((f"{name}::{m['name']}", m))

    missing = [p for p, i in items if "```" not in (i.get("docs") or "")]
    for p in missing:
        print(f"no example: {p}")
    print(f"{len(items) - len(missing)} of {len(items)} public items have an example; {len(missing)} lack one")
    return 1 if missing else 0


if __name__ == "__main__":
    sys.exit(main())
