//! The direction of dependency in `src/`, read from the `crate::…` paths each file names
//! (comments left out). Modules stand in layers, lowest first; a module imports its own layer
//! and those below, never above. The domain's peers (appointments, exams, refusals, contact,
//! the outbox) never import each other: where a change in one reaches another, a flow in
//! `flows/` does it. Writing transactions begin only in flows, workers, the scheduler and the
//! command line; only the edges name the app state; the edges build no SQL of their own.
//!
//! A module added to `src/` must be placed in a layer here, or this test fails.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

/// The layers, lowest first. Each names module paths (`workers::dispatch`); a file or an
/// import belongs to the longest path that prefixes its own.
const LAYERS: &[(&str, &[&str])] = &[
    // Shared by everything, depending on nothing above: errors, configuration, time, text,
    // validation, paging and vocabulary helpers, the database, privacy, who is acting, areas, the audit
    // log, file readers and writers, signatures, client keys, telemetry.
    (
        "kernel",
        &[
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
            "validate",
            "vocabulary",
        ],
    ),
    // The providers' side: channels, message templates, signing, callbacks read.
    (
        "adapters",
        &[
            "outreach::callbacks",
            "outreach::channel",
            "outreach::cloud",
            "outreach::http_client",
            "outreach::signing",
            "outreach::templates",
            "outreach::webhooks",
        ],
    ),
    // The domain, each module owning its tables, in a fixed order.
    ("users", &["users"]),
    ("registry", &["registry"]),
    ("institution", &["institution"]),
    ("campaign", &["campaign"]),
    // Peers: none imports another.
    (
        "peers",
        &["appointment", "contact", "exam", "outreach", "refusal"],
    ),
    // Above the peers, reading several of them: the resident's link and the reports.
    ("links", &["outreach::links"]),
    ("report", &["report"]),
    // Where transactions begin and peers meet.
    ("flows", &["flows"]),
    // The dispatch worker: lease, route, send, record.
    ("workers", &["workers"]),
    // What the edges share.
    ("state", &["state"]),
    // The edges, on top.
    (
        "edges",
        &["cli", "demo", "http", "scheduler", "startup", "web"],
    ),
];

/// Where a writing transaction may begin.
const BEGIN_IN: &[&str] = &[
    "flows",
    "workers",
    "edges:cli",
    "edges:scheduler",
    "edges:demo",
];

fn source_files(dir: &Path, out: &mut Vec<PathBuf>) {
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.is_dir() {
            source_files(&path, out);
        } else if path.extension().is_some_and(|e| e == "rs") {
            out.push(path);
        }
    }
}

/// The module path of a file (`src/outreach/outbox.rs` → `outreach::outbox`,
/// `src/campaign/mod.rs` → `campaign`).
fn module_of(src: &Path, file: &Path) -> String {
    let relative = file.strip_prefix(src).unwrap().with_extension("");
    let parts: Vec<String> = relative
        .components()
        .map(|c| c.as_os_str().to_string_lossy().into_owned())
        .filter(|c| c != "mod")
        .collect();
    parts.join("::")
}

/// The layer of a module path, and the entry that placed it (the longest prefix).
fn place(path: &str) -> Option<(usize, &'static str)> {
    let mut best: Option<(usize, &'static str)> = None;
    for (index, (_, entries)) in LAYERS.iter().enumerate() {
        for entry in *entries {
            let fits = path == *entry || path.starts_with(&format!("{entry}::"));
            if fits && best.is_none_or(|(_, b)| entry.len() > b.len()) {
                best = Some((index, entry));
            }
        }
    }
    best
}

/// Splits `a, b::{c, d}, e` at the commas outside braces.
fn split_top(list: &str) -> Vec<&str> {
    let (mut depth, mut start, mut parts) = (0, 0, Vec::new());
    for (i, c) in list.char_indices() {
        match c {
            '{' => depth += 1,
            '}' => depth -= 1,
            ',' if depth == 0 => {
                parts.push(&list[start..i]);
                start = i + 1;
            }
            _ => {}
        }
    }
    parts.push(&list[start..]);
    parts
}

/// The paths a `use` tree names, as far as module paths go (`a::{b, c::d}` → `a::b`, `a::c::d`).
fn expand(prefix: &str, tree: &str, out: &mut BTreeSet<String>) {
    let tree = tree.trim();
    if tree.is_empty() || tree == "self" {
        if !prefix.is_empty() {
            out.insert(prefix.to_owned());
        }
        return;
    }
    if let Some(inner) = tree.strip_prefix('{') {
        let inner = inner.strip_suffix('}').unwrap_or(inner);
        for part in split_top(inner) {
            expand(prefix, part, out);
        }
        return;
    }
    let (head, rest) = match tree.find("::") {
        Some(at) => (&tree[..at], Some(&tree[at + 2..])),
        None => (tree, None),
    };
    let head = head.split_whitespace().next().unwrap_or_default();
    let path = if prefix.is_empty() {
        head.to_owned()
    } else {
        format!("{prefix}::{head}")
    };
    match rest {
        Some(rest) => expand(&path, rest, out),
        None if head == "self" => {
            out.insert(prefix.to_owned());
        }
        None => {
            out.insert(path);
        }
    }
}

/// The module paths a file of `module` names through `crate::…` and `super::…`, comments
/// left out.
fn imports(module: &str, text: &str) -> BTreeSet<String> {
    let parent = match module.rsplit_once("::") {
        Some((parent, _)) => format!("crate::{parent}::"),
        None => "crate::".to_owned(),
    };
    let code: String = text
        .lines()
        .map(|line| line.split("//").next().unwrap_or_default())
        .collect::<Vec<_>>()
        .join("\n")
        .replace("super::", &parent);
    let mut named = BTreeSet::new();
    let mut rest = code.as_str();
    while let Some(at) = rest.find("crate::") {
        rest = &rest[at + "crate::".len()..];
        // The path runs to the end of its `use` tree: a balanced `{…}`, or the first
        // character that cannot be in a path.
        let mut depth = 0;
        let mut end = rest.len();
        for (i, c) in rest.char_indices() {
            match c {
                '{' => depth += 1,
                '}' if depth == 0 => {
                    end = i;
                    break;
                }
                '}' => {
                    depth -= 1;
                    if depth == 0 {
                        end = i + 1;
                        break;
                    }
                }
                c if depth == 0 && !(c.is_alphanumeric() || c == '_' || c == ':') => {
                    end = i;
                    break;
                }
                _ => {}
            }
        }
        expand("", &rest[..end], &mut named);
        rest = &rest[end..];
    }
    named
}

/// The text of a file without its `#[cfg(test)] mod tests { … }` block, wherever it stands.
fn without_tests(text: &str) -> String {
    let Some(start) = text.find("#[cfg(test)]\nmod tests {") else {
        return text.to_owned();
    };
    let body = start + text[start..].find('{').unwrap_or(0);
    let mut depth = 0;
    for (i, c) in text[body..].char_indices() {
        match c {
            '{' => depth += 1,
            '}' => {
                depth -= 1;
                if depth == 0 {
                    return format!("{}{}", &text[..start], &text[body + i + 1..]);
                }
            }
            _ => {}
        }
    }
    text[..start].to_owned()
}

/// Whether a file of `module` (placed in `layer`) may begin a transaction.
fn may_begin(layer: &str, module: &str) -> bool {
    let top = module.split("::").next().unwrap_or_default();
    BEGIN_IN.contains(&layer) || BEGIN_IN.contains(&format!("{layer}:{top}").as_str())
}

/// What begins a transaction, as written in this code base.
const BEGINS: &[&str] = &[
    "begin_write(",
    ".begin()",
    "begin_with_config(",
    "begin_with_options(",
];

/// What builds or runs SQL, or queries an entity.
const SQL: &[&str] = &[
    "Sql::new(",
    "execute_raw(",
    "query_all_raw(",
    "query_one_raw(",
    "execute_unprepared(",
    "Entity::find",
    "Entity::insert",
    "Entity::update",
    "Entity::delete",
];

#[test]
fn modules_import_only_their_own_layer_and_those_below() {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let mut files = Vec::new();
    source_files(&src, &mut files);
    files.sort();
    let peers = LAYERS
        .iter()
        .position(|(name, _)| *name == "peers")
        .unwrap();
    let state = LAYERS
        .iter()
        .position(|(name, _)| *name == "state")
        .unwrap();
    let mut problems = Vec::new();
    for file in &files {
        let module = module_of(&src, file);
        if module == "lib" || module == "main" {
            continue;
        }
        let Some((own, own_entry)) = place(&module) else {
            problems.push(format!("{}: `{module}` is in no layer", file.display()));
            continue;
        };
        let layer = LAYERS[own].0;
        let whole = std::fs::read_to_string(file).unwrap();
        // A file's own tests (`mod tests { use super::*; }`) are not its imports.
        let text = &without_tests(&whole);
        for named in imports(&module, text) {
            let Some((theirs, their_entry)) = place(&named) else {
                problems.push(format!(
                    "{}: `{module}` imports `{named}`, which is in no layer",
                    file.display()
                ));
                continue;
            };
            if theirs > own {
                problems.push(format!(
                    "{}: `{module}` ({layer}) imports `{named}` ({}), a layer above it",
                    file.display(),
                    LAYERS[theirs].0
                ));
            } else if own == peers && theirs == peers && their_entry != own_entry {
                problems.push(format!(
                    "{}: `{module}` imports its peer `{named}`; a flow joins them",
                    file.display()
                ));
            }
        }
        if own < state && text.contains("AppState") {
            problems.push(format!(
                "{}: `{module}` names the app state; pass the parts it needs",
                file.display()
            ));
        }
        let code: String = text
            .lines()
            .filter(|l| !l.trim_start().starts_with("//"))
            .collect::<Vec<_>>()
            .join("\n");
        // `db` defines `begin_write` and `savepoint`.
        if module != "db" && !may_begin(layer, &module) {
            for begin in BEGINS {
                if code.contains(begin) {
                    problems.push(format!(
                        "{}: `{module}` begins a transaction (`{begin}`); flows begin them",
                        file.display()
                    ));
                }
            }
        }
        if module.starts_with("http") || module.starts_with("web") {
            for sql in SQL {
                if code.contains(sql) {
                    problems.push(format!(
                        "{}: `{module}` runs SQL of its own (`{sql}`); call the domain",
                        file.display()
                    ));
                }
            }
        }
    }
    assert!(problems.is_empty(), "\n{}", problems.join("\n"));
}

#[test]
fn the_reader_of_imports_sees_lists_paths_and_skips_comments() {
    let text = "use crate::{auth::Actor, db::Sql, error};\n\
                use crate::outreach::{self, outbox::{Planned, insert}, MessageKind};\n\
                let x = crate::time::today_in(tz);\n\
                use super::Campaign;\n\
                // crate::http is named in a comment only\n";
    let named: Vec<_> = imports("campaign::enrol", text).into_iter().collect();
    assert_eq!(
        named,
        [
            "auth::Actor",
            "campaign::Campaign",
            "db::Sql",
            "error",
            "outreach",
            "outreach::MessageKind",
            "outreach::outbox::Planned",
            "outreach::outbox::insert",
            "time::today_in",
        ]
    );
}

#[test]
fn a_files_tests_are_left_out_wherever_they_stand() {
    let text = "use crate::a;\n#[cfg(test)]\nmod tests {\n    fn f() { use super::*; }\n}\nuse crate::b;\n";
    assert_eq!(without_tests(text), "use crate::a;\n\nuse crate::b;\n");
}

#[test]
fn a_path_belongs_to_the_longest_entry_that_prefixes_it() {
    let name = |path: &str| place(path).map(|(layer, _)| LAYERS[layer].0);
    assert_eq!(name("workers::dispatch::Round"), Some("workers"));
    assert_eq!(name("outreach::outbox"), Some("peers"));
    assert_eq!(name("outreach::links::url"), Some("links"));
    assert_eq!(name("outreach::channel::Route"), Some("adapters"));
    assert_eq!(name("registry::ResidentId"), Some("registry"));
    assert_eq!(name("nowhere"), None);
}
