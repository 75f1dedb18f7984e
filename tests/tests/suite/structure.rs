//! The architecture's rules, checked on the source tree (docs/architecture.md):
//! - no import cycle between the files of `api/src`;
//! - the read models (`rm_…` tables) are named, and rows are read by column, only in
//!   `projections/` (the API asks its typed functions);
//! - the application layer knows no HTTP (no axum);
//! - no file of the pure domain (`aggregates/src`) grows past about 1,200 lines.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

fn workspace() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("the tests crate sits in the workspace")
        .to_path_buf()
}

fn rust_files(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for entry in std::fs::read_dir(&d).unwrap_or_else(|e| panic!("{}: {e}", d.display())) {
            let path = entry.expect("dir entry").path();
            if path.is_dir() {
                stack.push(path);
            } else if path.extension().is_some_and(|e| e == "rs") {
                out.push(path);
            }
        }
    }
    out.sort();
    out
}

/// `a/b.rs` → `["a","b"]`, `a/mod.rs` → `["a"]`, `lib.rs`/`main.rs` → `[]`.
fn module_of(src: &Path, file: &Path) -> Vec<String> {
    let rel = file.strip_prefix(src).expect("under src");
    let mut parts: Vec<String> = rel
        .iter()
        .map(|p| p.to_string_lossy().trim_end_matches(".rs").to_string())
        .collect();
    if matches!(
        parts.last().map(String::as_str),
        Some("mod" | "lib" | "main")
    ) {
        parts.pop();
    }
    parts
}

/// Source without comments (line comments, doc comments and block comments).
fn strip_comments(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut chars = text.chars().peekable();
    let mut in_str = false;
    while let Some(c) = chars.next() {
        if in_str {
            out.push(c);
            if c == '\\' {
                if let Some(n) = chars.next() {
                    out.push(n);
                }
            } else if c == '"' {
                in_str = false;
            }
            continue;
        }
        match (c, chars.peek()) {
            ('"', _) => {
                in_str = true;
                out.push(c);
            }
            ('/', Some('/')) => {
                for n in chars.by_ref() {
                    if n == '\n' {
                        out.push('\n');
                        break;
                    }
                }
            }
            ('/', Some('*')) => {
                chars.next();
                let mut prev = ' ';
                for n in chars.by_ref() {
                    if prev == '*' && n == '/' {
                        break;
                    }
                    prev = n;
                }
            }
            _ => out.push(c),
        }
    }
    out
}

/// Expands `a::{b, c::{d, e}}` into full paths (`self` keeps the prefix).
fn expand(prefix: &str, tree: &str, out: &mut Vec<String>) {
    let tree = tree.trim();
    match tree.find('{') {
        None => {
            let item = tree.split(" as ").next().unwrap_or("").trim();
            if item.is_empty() {
                return;
            }
            out.push(if item == "self" {
                prefix.trim_end_matches("::").to_string()
            } else {
                format!("{prefix}{item}")
            });
        }
        Some(open) => {
            let head = &tree[..open];
            let inner = &tree[open + 1..tree.rfind('}').unwrap_or(tree.len())];
            let mut depth = 0;
            let mut start = 0;
            for (i, ch) in inner.char_indices() {
                match ch {
                    '{' => depth += 1,
                    '}' => depth -= 1,
                    ',' if depth == 0 => {
                        expand(&format!("{prefix}{head}"), &inner[start..i], out);
                        start = i + 1;
                    }
                    _ => {}
                }
            }
            expand(&format!("{prefix}{head}"), &inner[start..], out);
        }
    }
}

/// Every module path a file refers to through `crate::` or `super::`, resolved to absolute
/// segments.
fn references(module: &[String], is_mod_file: bool, text: &str) -> Vec<Vec<String>> {
    let mut paths = Vec::new();
    // `use` trees (possibly grouped).
    for stmt in text.split(';') {
        if let Some(pos) = stmt.find("use ") {
            let tree = stmt[pos + 4..].trim();
            // `use super::*` is how an inline `mod tests` sees its own file: not an import.
            if tree == "super::*" {
                continue;
            }
            if tree.starts_with("crate::") || tree.starts_with("super::") {
                expand("", tree, &mut paths);
            }
        }
    }
    // Inline paths in code.
    for (i, _) in text.match_indices("crate::") {
        let rest: String = text[i..]
            .chars()
            .take_while(|c| c.is_alphanumeric() || *c == '_' || *c == ':')
            .collect();
        paths.push(rest);
    }
    // `super` of `a/b.rs` (module a::b) is `a`; of `a/mod.rs` (module a) the crate root: the
    // module minus its last segment in both cases.
    let _ = is_mod_file;
    let parent: Vec<String> = module[..module.len().saturating_sub(1)].to_vec();
    paths
        .into_iter()
        .filter_map(|p| {
            let segs: Vec<&str> = p.split("::").filter(|s| !s.is_empty()).collect();
            match segs.first() {
                Some(&"crate") => Some(segs[1..].iter().map(|s| s.to_string()).collect()),
                Some(&"super") => {
                    let mut base = parent.clone();
                    let mut rest = &segs[1..];
                    while rest.first() == Some(&"super") {
                        base.pop();
                        rest = &rest[1..];
                    }
                    base.extend(rest.iter().map(|s| s.to_string()));
                    Some(base)
                }
                _ => None,
            }
        })
        .collect()
}

/// Strongly connected components of more than one file (Tarjan).
fn cycles(graph: &BTreeMap<String, BTreeSet<String>>) -> Vec<Vec<String>> {
    struct T<'a> {
        g: &'a BTreeMap<String, BTreeSet<String>>,
        index: BTreeMap<&'a str, usize>,
        low: BTreeMap<&'a str, usize>,
        stack: Vec<&'a str>,
        on: BTreeSet<&'a str>,
        next: usize,
        out: Vec<Vec<String>>,
    }
    fn visit<'a>(t: &mut T<'a>, v: &'a str) {
        t.index.insert(v, t.next);
        t.low.insert(v, t.next);
        t.next += 1;
        t.stack.push(v);
        t.on.insert(v);
        for w in t.g.get(v).into_iter().flatten() {
            let w = w.as_str();
            if !t.index.contains_key(w) {
                visit(t, w);
                let lw = t.low[w];
                let lv = t.low[v];
                t.low.insert(v, lv.min(lw));
            } else if t.on.contains(w) {
                let iw = t.index[w];
                let lv = t.low[v];
                t.low.insert(v, lv.min(iw));
            }
        }
        if t.low[v] == t.index[v] {
            let mut comp = Vec::new();
            while let Some(w) = t.stack.pop() {
                t.on.remove(w);
                comp.push(w.to_string());
                if w == v {
                    break;
                }
            }
            if comp.len() > 1 {
                comp.sort();
                t.out.push(comp);
            }
        }
    }
    let mut t = T {
        g: graph,
        index: BTreeMap::new(),
        low: BTreeMap::new(),
        stack: Vec::new(),
        on: BTreeSet::new(),
        next: 0,
        out: Vec::new(),
    };
    for v in graph.keys() {
        if !t.index.contains_key(v.as_str()) {
            visit(&mut t, v);
        }
    }
    t.out
}

#[test]
fn the_files_of_api_src_import_each_other_in_no_circle() {
    let src = workspace().join("api/src");
    let files = rust_files(&src);
    let modules: BTreeMap<Vec<String>, String> = files
        .iter()
        .map(|f| {
            (
                module_of(&src, f),
                f.strip_prefix(&src).unwrap().display().to_string(),
            )
        })
        .collect();
    let mut graph: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    for f in &files {
        let module = module_of(&src, f);
        let name = modules[&module].clone();
        let is_mod = matches!(
            f.file_name().and_then(|n| n.to_str()),
            Some("mod.rs" | "lib.rs" | "main.rs")
        );
        let text = strip_comments(&std::fs::read_to_string(f).expect("readable"));
        let edges = graph.entry(name.clone()).or_default();
        for path in references(&module, is_mod, &text) {
            // The longest prefix that is a module file is what is imported.
            let target = (1..=path.len())
                .rev()
                .find_map(|n| modules.get(&path[..n]))
                .cloned();
            if let Some(t) = target.filter(|t| *t != name) {
                edges.insert(t);
            }
        }
    }
    assert!(
        graph.values().map(BTreeSet::len).sum::<usize>() > 50,
        "the import graph looks empty: the parser found too few imports"
    );
    let found = cycles(&graph);
    assert!(
        found.is_empty(),
        "import cycles in api/src (each line: files that import each other): {found:#?}"
    );
}

fn offending_lines(dir: &Path, is_bad: impl Fn(&str) -> bool) -> Vec<String> {
    let mut bad = Vec::new();
    for f in rust_files(dir) {
        let text = strip_comments(&std::fs::read_to_string(&f).expect("readable"));
        for (n, line) in text.lines().enumerate() {
            if is_bad(line) {
                bad.push(format!("{}:{}: {}", f.display(), n + 1, line.trim()));
            }
        }
    }
    bad
}

#[test]
fn read_models_are_queried_only_through_projections() {
    let api = workspace().join("api/src");
    let names_a_read_model = |line: &str| {
        line.match_indices("rm_").any(|(i, _)| {
            let before = line[..i].chars().last();
            let after = line[i + 3..].chars().next();
            !before.is_some_and(|c| c.is_alphanumeric() || c == '_')
                && after.is_some_and(|c| c.is_ascii_lowercase())
        })
    };
    let bad = offending_lines(&api, names_a_read_model);
    assert!(
        bad.is_empty(),
        "read-model tables named outside projections/:\n{}",
        bad.join("\n")
    );
    let reads_columns_by_name = |line: &str| {
        line.contains("sqlx::Row") || line.contains("use sqlx::{") && line.contains("Row")
    };
    let bad = offending_lines(&api, reads_columns_by_name);
    assert!(
        bad.is_empty(),
        "rows read by column name outside projections/ (use a typed query there):\n{}",
        bad.join("\n")
    );
}

#[test]
fn the_application_layer_knows_no_http() {
    let bad = offending_lines(&workspace().join("api/src/application"), |l| {
        l.contains("axum::") || l.contains("utoipa")
    });
    assert!(
        bad.is_empty(),
        "HTTP types in use cases:\n{}",
        bad.join("\n")
    );
}

#[test]
fn no_file_of_the_domain_grows_past_about_1200_lines() {
    let long: Vec<String> = rust_files(&workspace().join("aggregates/src"))
        .into_iter()
        .filter_map(|f| {
            let n = std::fs::read_to_string(&f)
                .expect("readable")
                .lines()
                .count();
            (n > 1_250).then(|| format!("{}: {n} lines", f.display()))
        })
        .collect();
    assert!(long.is_empty(), "split these along their seams: {long:#?}");
}

#[test]
fn the_import_parser_resolves_grouped_and_relative_paths() {
    let mut out = Vec::new();
    expand("", "crate::a::{b::{C, d}, self, e as f}", &mut out);
    assert_eq!(
        out,
        vec![
            "crate::a::b::C",
            "crate::a::b::d",
            "crate::a",
            "crate::a::e"
        ]
    );
    let refs = references(
        &["workers".to_string(), "placer".to_string()],
        false,
        "use super::reaper::Reaper; use crate::store::{CommandBus, ExecError};",
    );
    assert!(refs.contains(&vec![
        "workers".to_string(),
        "reaper".to_string(),
        "Reaper".to_string()
    ]));
    assert!(refs.contains(&vec!["store".to_string(), "CommandBus".to_string()]));
    let mut g = BTreeMap::new();
    g.insert("a".to_string(), BTreeSet::from(["b".to_string()]));
    g.insert("b".to_string(), BTreeSet::from(["a".to_string()]));
    g.insert("c".to_string(), BTreeSet::from(["a".to_string()]));
    assert_eq!(cycles(&g), vec![vec!["a".to_string(), "b".to_string()]]);
}
