//! The reference (API tables, semantics, metrics, builder knobs, feature flags) is one text,
//! `src/reference.md`, shown in two places: the crate docs include it, and the README carries
//! a copy. This test fails when the copy drifts, and checks that every method the reference's
//! tables name is one the crate documents.

const README: &str = include_str!("../README.md");
const REFERENCE: &str = include_str!("../src/reference.md");
const LIB: &str = include_str!("../src/lib.rs");

#[test]
fn the_readme_carries_the_reference_unchanged() {
    assert!(
        README.contains(REFERENCE),
        "README.md no longer contains src/reference.md verbatim: edit src/reference.md and \
         copy it over the README's sections from `## API` to just before `## Bursting`"
    );
}

#[test]
fn the_crate_docs_include_the_reference() {
    assert!(LIB.contains("#![doc = include_str!(\"reference.md\")]"));
}

/// The first backticked name of each row of the table under `heading`, up to `(`.
fn first_column(heading: &str) -> Vec<String> {
    let section = &REFERENCE[REFERENCE.find(heading).expect(heading)..];
    section
        .lines()
        .skip_while(|l| !l.starts_with('|'))
        .take_while(|l| l.starts_with('|'))
        .skip(2)
        .filter_map(|row| {
            let cell = row.split('|').nth(1)?.trim();
            let name = cell.strip_prefix('`')?;
            Some(name[..name.find(['(', '`'])?].to_owned())
        })
        .collect()
}

#[test]
fn every_builder_knob_in_the_table_is_a_builder_method() {
    let knobs = first_column("## Builder");
    assert!(knobs.len() >= 20, "{knobs:?}");
    let source = include_str!("../src/builder.rs");
    for knob in &knobs {
        assert!(
            source.contains(&format!("pub fn {knob}("))
                || source.contains(&format!("pub fn {knob}<")),
            "the Builder table names `{knob}`, which Builder does not have"
        );
    }
    // And every public builder method is in the table.
    for line in source.lines() {
        let Some(rest) = line.trim().strip_prefix("pub fn ") else {
            continue;
        };
        let name = &rest[..rest.find(['(', '<']).unwrap()];
        if name != "build" {
            assert!(
                knobs.iter().any(|k| k == name),
                "`{name}` is missing from the Builder table"
            );
        }
    }
}

#[test]
fn the_submission_table_names_the_twelve_methods() {
    let source = include_str!("../src/manager.rs");
    let table = &REFERENCE[REFERENCE.find("| delivery \\ kind").unwrap()..];
    let table = &table[..table.find("\n\n").unwrap()];
    let mut named = 0;
    for cell in table.split('|').map(str::trim) {
        if let Some(name) = cell.strip_prefix('`').and_then(|c| c.strip_suffix('`'))
            && name.starts_with("queue_task")
        {
            named += 1;
            assert!(
                source.contains(&format!("pub fn {name}<")),
                "the table names `{name}`, which TaskManager does not have"
            );
        }
    }
    assert_eq!(named, 12);
    let defined = source
        .lines()
        .filter(|l| l.trim().starts_with("pub fn queue_task"))
        .count();
    assert_eq!(
        defined, 12,
        "a queue_task method was added or removed: update the table"
    );
}
