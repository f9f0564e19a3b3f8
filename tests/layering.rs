//! The project's own layering guard: imports point down only.
//!
//! Every `crate::…` path in `src/` names the unit it reaches (a top-level module, or one engine
//! under `engines/`). A unit may use only the units its row of [`ALLOWED`] lists; the table
//! itself must have no cycle. `lib.rs` and `main.rs` wire everything and are not checked.
//! Names that are not units (the crate-root re-export `Config`, `#[macro_export]` macros) are
//! skipped.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

/// Each unit and what it may use (besides itself). Top to bottom: entry points, API rooms,
/// HTTP plumbing, the composed state, engines, the object core, stores, the domain model.
const ALLOWED: &[(&str, &[&str])] = &[
    ("router", &["api", "http", "state", "config"]),
    ("cli", &["tls", "config", "error"]),
    (
        "api",
        &[
            "http",
            "state",
            "engines::catalogue",
            "engines::definitions",
            "engines::dr",
            "engines::replication",
            "engines::tasks",
            "engines::topology",
            "core",
            "meta",
            "storage",
            "model",
            "error",
            "config",
        ],
    ),
    ("http", &["core", "model", "error", "config"]),
    (
        "state",
        &[
            "engines::catalogue",
            "engines::definitions",
            "engines::dr",
            "engines::replication",
            "engines::tasks",
            "engines::topology",
            "core",
            "meta",
            "storage",
            "tls",
            "model",
            "error",
            "config",
        ],
    ),
    (
        "engines::dr",
        &[
            "engines::tasks",
            "engines::topology",
            "core",
            "meta",
            "model",
            "error",
            "config",
        ],
    ),
    (
        "engines::definitions",
        &[
            "engines::tasks",
            "engines::topology",
            "core",
            "meta",
            "model",
            "error",
            "config",
        ],
    ),
    (
        "engines::catalogue",
        &[
            "engines::replication",
            "engines::topology",
            "core",
            "meta",
            "storage",
            "model",
            "error",
            "config",
        ],
    ),
    (
        "engines::replication",
        &[
            "engines::topology",
            "core",
            "meta",
            "storage",
            "model",
            "error",
            "config",
        ],
    ),
    (
        "engines::tasks",
        &[
            "engines::topology",
            "core",
            "meta",
            "model",
            "error",
            "config",
        ],
    ),
    (
        "engines::topology",
        &["core", "meta", "model", "error", "config"],
    ),
    ("engines", &[]),
    ("core", &["meta", "storage", "model", "error", "config"]),
    ("meta", &["model", "error", "config"]),
    ("storage", &["model", "error", "config"]),
    ("tls", &["config"]),
    ("model", &["error"]),
    ("config", &[]),
    ("error", &[]),
];

fn allowed() -> BTreeMap<&'static str, BTreeSet<&'static str>> {
    ALLOWED
        .iter()
        .map(|(unit, deps)| (*unit, deps.iter().copied().collect()))
        .collect()
}

/// The unit a source file belongs to: `src/engines/replication/applier.rs` is
/// `engines::replication`, `src/core/objects.rs` is `core`, `src/state.rs` is `state`.
fn unit_of_file(rel: &Path) -> Option<String> {
    let parts: Vec<String> = rel
        .iter()
        .map(|p| p.to_string_lossy().trim_end_matches(".rs").to_owned())
        .collect();
    match parts.as_slice() {
        [top] if top == "lib" || top == "main" => None,
        [engines, engine, ..] if engines == "engines" && parts.len() > 2 => {
            Some(format!("engines::{engine}"))
        }
        [engines, engine] if engines == "engines" && engine != "mod" => {
            Some(format!("engines::{engine}"))
        }
        [top, ..] => Some(top.clone()),
        [] => None,
    }
}

/// The units named by the `crate::…` paths of one line of code.
fn units_in_line(line: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut rest = line;
    while let Some(pos) = rest.find("crate::") {
        rest = &rest[pos + "crate::".len()..];
        let ident = |s: &str| -> String {
            s.chars()
                .take_while(|c| c.is_ascii_alphanumeric() || *c == '_')
                .collect()
        };
        let first = ident(rest);
        if first == "engines" && rest[first.len()..].starts_with("::") {
            let second = ident(&rest[first.len() + 2..]);
            out.push(format!("engines::{second}"));
        } else if !first.is_empty() {
            out.push(first);
        }
    }
    out
}

fn rust_files(dir: &Path, out: &mut Vec<PathBuf>) {
    for entry in std::fs::read_dir(dir).expect("read src") {
        let path = entry.expect("dir entry").path();
        if path.is_dir() {
            rust_files(&path, out);
        } else if path.extension().is_some_and(|e| e == "rs") {
            out.push(path);
        }
    }
}

#[test]
fn imports_point_down_only() {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let table = allowed();
    let mut files = Vec::new();
    rust_files(&src, &mut files);
    files.sort();
    let mut violations = Vec::new();
    for file in &files {
        let rel = file.strip_prefix(&src).unwrap();
        let Some(unit) = unit_of_file(rel) else {
            continue;
        };
        let Some(may_use) = table.get(unit.as_str()) else {
            violations.push(format!(
                "{}: unit `{unit}` has no row in ALLOWED",
                rel.display()
            ));
            continue;
        };
        let text = std::fs::read_to_string(file).unwrap();
        for (n, line) in text.lines().enumerate() {
            if line.trim_start().starts_with("//") {
                continue;
            }
            for used in units_in_line(line) {
                let known = table.contains_key(used.as_str());
                if known && used != unit && !may_use.contains(used.as_str()) {
                    violations.push(format!(
                        "{}:{}: `{unit}` may not use `{used}`: {}",
                        rel.display(),
                        n + 1,
                        line.trim()
                    ));
                }
            }
        }
    }
    assert!(
        violations.is_empty(),
        "imports that point up or sideways (fix the import, or change ALLOWED in tests/layering.rs \
         if the architecture really changed):\n{}",
        violations.join("\n")
    );
}

#[test]
fn the_allowed_table_has_no_cycle() {
    let table = allowed();
    // Repeatedly remove units whose allowed dependencies are all removed already.
    let mut left: BTreeSet<&str> = table.keys().copied().collect();
    loop {
        let free: Vec<&str> = left
            .iter()
            .copied()
            .filter(|u| table[u].iter().all(|d| !left.contains(d)))
            .collect();
        if free.is_empty() {
            break;
        }
        for u in free {
            left.remove(u);
        }
    }
    assert!(
        left.is_empty(),
        "these units depend on each other in a cycle: {left:?}"
    );
}

#[test]
fn every_allowed_dependency_is_a_unit() {
    let table = allowed();
    for (unit, deps) in &table {
        for d in deps {
            assert!(table.contains_key(d), "{unit} lists unknown unit {d}");
        }
    }
}

#[test]
fn the_guard_sees_an_upward_import() {
    assert_eq!(
        units_in_line("use crate::engines::replication::Replication; use crate::api::x;"),
        vec!["engines::replication".to_string(), "api".to_string()]
    );
    let core_rule = &allowed()["core"];
    assert!(!core_rule.contains("engines::replication"));
    assert!(!core_rule.contains("api"));
    assert_eq!(
        unit_of_file(Path::new("engines/replication/applier.rs")).as_deref(),
        Some("engines::replication")
    );
    assert_eq!(
        unit_of_file(Path::new("engines/mod.rs")).as_deref(),
        Some("engines")
    );
    assert_eq!(
        unit_of_file(Path::new("core/objects.rs")).as_deref(),
        Some("core")
    );
    assert_eq!(unit_of_file(Path::new("lib.rs")), None);
}
