//! The direction of dependency in `src/`, read from the `crate::…` paths each module names
//! (comments left out): the kernel imports only the kernel; domain modules import the kernel
//! and each other, never an edge; only the edges (HTTP, pages, scheduler, command line,
//! start-up, demo) name the app state. A module added to `src/` must be placed in one layer
//! here, or this test fails.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

/// Shared by everything, depending on nothing above: errors, configuration, time, text and
/// paging helpers, vocabularies, the database, privacy, who is acting, areas, the audit log,
/// file readers and writers, telemetry.
const KERNEL: &[&str] = &[
    "area",
    "audit",
    "auth",
    "client_key",
    "config",
    "db",
    "error",
    "export",
    "import",
    "paging",
    "privacy",
    "signature",
    "telemetry",
    "text",
    "time",
    "vocabulary",
];

/// The domain: each owns its tables. They still call each other directly; the cascades are
/// to move into one layer of their own.
const DOMAIN: &[&str] = &[
    "appointment",
    "campaign",
    "contact",
    "exam",
    "institution",
    "outreach",
    "refusal",
    "registry",
    "report",
    "users",
];

/// Where transactions begin and the cascades between domain modules are written.
const FLOWS: &[&str] = &["flows"];

/// What the edges share: the handles every handler and job can reach.
const STATE: &[&str] = &["state"];

/// The edges, on top.
const EDGES: &[&str] = &["cli", "demo", "http", "scheduler", "startup", "web"];

fn source_files(dir: &Path, out: &mut Vec<PathBuf>) {
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.is_dir() {
            if path.file_name().is_some_and(|n| n != "bin") {
                source_files(&path, out);
            }
        } else if path.extension().is_some_and(|e| e == "rs") {
            out.push(path);
        }
    }
}

/// The top-level module a file belongs to (`src/outreach/dispatch.rs` → `outreach`).
fn module_of(src: &Path, file: &Path) -> String {
    let relative = file.strip_prefix(src).unwrap();
    let first = relative.components().next().unwrap().as_os_str();
    first.to_string_lossy().trim_end_matches(".rs").to_owned()
}

/// The top-level modules a file names through `crate::…`, comments left out.
fn imports(text: &str) -> BTreeSet<String> {
    let mut named = BTreeSet::new();
    for line in text.lines() {
        let code = line.split("//").next().unwrap_or_default();
        let mut rest = code;
        while let Some(at) = rest.find("crate::") {
            rest = &rest[at + "crate::".len()..];
            if let Some(list) = rest.strip_prefix('{') {
                let inner = list.split('}').next().unwrap_or_default();
                for part in inner.split(',') {
                    let name = part.trim().split("::").next().unwrap_or_default();
                    if !name.is_empty() {
                        named.insert(name.to_owned());
                    }
                }
            } else {
                let name: String = rest
                    .chars()
                    .take_while(|c| c.is_alphanumeric() || *c == '_')
                    .collect();
                if !name.is_empty() {
                    named.insert(name);
                }
            }
        }
    }
    named
}

fn layer(module: &str) -> Option<usize> {
    [KERNEL, DOMAIN, FLOWS, STATE, EDGES]
        .iter()
        .position(|layer| layer.contains(&module))
}

#[test]
fn modules_import_only_their_own_layer_and_those_below() {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let mut files = Vec::new();
    source_files(&src, &mut files);
    files.sort();
    let mut problems = Vec::new();
    for file in &files {
        let module = module_of(&src, file);
        if module == "lib" || module == "main" {
            continue;
        }
        let Some(own) = layer(&module) else {
            problems.push(format!(
                "{}: module `{module}` is in no layer",
                file.display()
            ));
            continue;
        };
        let text = std::fs::read_to_string(file).unwrap();
        for named in imports(&text) {
            if named == module || named == "self" || named == "super" {
                continue;
            }
            match layer(&named) {
                Some(theirs) if theirs <= own => {}
                Some(_) => problems.push(format!(
                    "{}: `{module}` imports `{named}`, a layer above it",
                    file.display()
                )),
                None => problems.push(format!(
                    "{}: `{module}` imports `{named}`, which is in no layer",
                    file.display()
                )),
            }
        }
        if own < layer("state").unwrap() && text.contains("AppState") {
            problems.push(format!(
                "{}: `{module}` names the app state; pass the parts it needs",
                file.display()
            ));
        }
    }
    assert!(problems.is_empty(), "\n{}", problems.join("\n"));
}

#[test]
fn the_reader_of_imports_sees_lists_paths_and_skips_comments() {
    let text = "use crate::{auth::Actor, db::Sql, error};\nlet x = crate::time::today_in(tz);\n// crate::http is named in a comment only\n";
    let named: Vec<_> = imports(text).into_iter().collect();
    assert_eq!(named, ["auth", "db", "error", "time"]);
}
