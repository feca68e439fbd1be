//! The proxy's modules import each other without a cycle, and nothing
//! imports the pipeline (the stage list) but the crate root: read from the
//! `crate::` paths of every source file, tests left out.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

fn sources(dir: &Path, out: &mut Vec<PathBuf>) {
    for entry in std::fs::read_dir(dir).into_iter().flatten().flatten() {
        let p = entry.path();
        if p.is_dir() {
            sources(&p, out);
        } else if p.extension().is_some_and(|e| e == "rs") {
            out.push(p);
        }
    }
}

/// Module (first path segment under src/) -> modules it names as `crate::m`.
fn graph() -> BTreeMap<String, BTreeSet<String>> {
    let src = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("src");
    let mut files = Vec::new();
    sources(&src, &mut files);
    let mut g: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    for f in &files {
        let rel = f.strip_prefix(&src).unwrap_or(f);
        let first = rel
            .components()
            .next()
            .map(|c| c.as_os_str().to_string_lossy().to_string());
        let Some(first) = first else { continue };
        let module = first.trim_end_matches(".rs").to_string();
        if module == "main" || rel.file_name().is_some_and(|n| n == "tests.rs") {
            continue;
        }
        let text = std::fs::read_to_string(f).unwrap_or_default();
        // Unit tests may reach anywhere.
        let code = text.split("#[cfg(test)]").next().unwrap_or("");
        let deps = g.entry(module.clone()).or_default();
        for (i, _) in code.match_indices("crate::") {
            let rest = &code[i + "crate::".len()..];
            let name: String = rest
                .chars()
                .take_while(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || *c == '_')
                .collect();
            // `crate::{a, b}` and `crate::Type` (the root's re-exports).
            if rest.starts_with('{') {
                let group = &rest[1..rest.find('}').unwrap_or(rest.len())];
                for part in group.split(',') {
                    let part = part.trim();
                    let m = part.split("::").next().unwrap_or("");
                    if m.chars().next().is_some_and(|c| c.is_ascii_lowercase()) {
                        deps.insert(m.to_string());
                    } else if !m.is_empty() {
                        deps.insert("lib".to_string());
                    }
                }
            } else if name.is_empty() {
                deps.insert("lib".to_string());
            } else if name != module {
                deps.insert(name);
            }
        }
    }
    g
}

fn find_cycle(g: &BTreeMap<String, BTreeSet<String>>) -> Option<Vec<String>> {
    fn visit(
        m: &str,
        g: &BTreeMap<String, BTreeSet<String>>,
        path: &mut Vec<String>,
        done: &mut BTreeSet<String>,
    ) -> Option<Vec<String>> {
        if let Some(i) = path.iter().position(|p| p == m) {
            let mut cycle = path[i..].to_vec();
            cycle.push(m.to_string());
            return Some(cycle);
        }
        if done.contains(m) {
            return None;
        }
        path.push(m.to_string());
        for d in g.get(m).into_iter().flatten() {
            if g.contains_key(d) {
                if let Some(c) = visit(d, g, path, done) {
                    return Some(c);
                }
            }
        }
        path.pop();
        done.insert(m.to_string());
        None
    }
    let mut done = BTreeSet::new();
    g.keys()
        .find_map(|m| visit(m, g, &mut Vec::new(), &mut done))
}

#[test]
fn the_modules_import_each_other_without_a_cycle() {
    let g = graph();
    assert!(g.len() > 25, "only {} modules read", g.len());
    assert!(
        g["pipeline"].contains("attempts") && g["attempts"].contains("plan"),
        "the graph reader missed imports: {g:?}"
    );
    assert_eq!(find_cycle(&g), None, "an import cycle");
}

#[test]
fn only_the_crate_root_uses_the_pipeline_and_nothing_uses_the_root() {
    let g = graph();
    let users: Vec<_> = g
        .iter()
        .filter(|(m, deps)| *m != "lib" && (deps.contains("pipeline") || deps.contains("lib")))
        .map(|(m, _)| m.clone())
        .collect();
    assert!(
        users.is_empty(),
        "{users:?} import the pipeline or the crate root"
    );
}
