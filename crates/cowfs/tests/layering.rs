//! The engine's fs/ stays in floors: no file imports (through `crate::fs::` paths) a file that
//! imports it back, directly or around a longer circle (docs/DESIGN.md, "Layers of the
//! engine"). Read from the sources, so a new circle fails here, naming it.

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;

/// Every file of fs/ as its module path ("", "engine", "data::io" ...) and its text, tests
/// left out.
fn modules() -> BTreeMap<String, String> {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("src/fs");
    let mut found = BTreeMap::new();
    let mut dirs = vec![root.clone()];
    while let Some(dir) = dirs.pop() {
        for entry in std::fs::read_dir(&dir).unwrap() {
            let path = entry.unwrap().path();
            if path.is_dir() {
                dirs.push(path);
                continue;
            }
            let relative = path.strip_prefix(&root).unwrap().with_extension("");
            let mut parts: Vec<String> = relative
                .iter()
                .map(|p| p.to_string_lossy().into_owned())
                .collect();
            if parts.last().is_some_and(|p| p == "mod") {
                parts.pop();
            }
            let text = std::fs::read_to_string(&path).unwrap();
            let code = text.split("#[cfg(test)]").next().unwrap().to_string();
            found.insert(parts.join("::"), code);
        }
    }
    found
}

/// Which module defines each public item name (the first one found).
fn definitions(modules: &BTreeMap<String, String>) -> BTreeMap<String, String> {
    let mut defs = BTreeMap::new();
    for (module, code) in modules {
        for line in code.lines() {
            let words: Vec<&str> = line.split_whitespace().collect();
            if let [first, kind, name, ..] = words[..] {
                let item = ["struct", "enum", "fn", "const", "type", "trait"].contains(&kind);
                if first.starts_with("pub") && item {
                    let name: String = name
                        .chars()
                        .take_while(|c| c.is_alphanumeric() || *c == '_')
                        .collect();
                    defs.entry(name).or_insert_with(|| module.clone());
                }
            }
        }
    }
    defs
}

/// The modules `code` imports through `crate::fs::` paths.
fn imports(
    code: &str,
    modules: &BTreeMap<String, String>,
    defs: &BTreeMap<String, String>,
) -> BTreeSet<String> {
    let mut used = BTreeSet::new();
    for (at, _) in code.match_indices("crate::fs::") {
        let rest = &code[at + "crate::fs::".len()..];
        let path: String = rest
            .chars()
            .take_while(|c| c.is_alphanumeric() || *c == '_' || *c == ':')
            .collect();
        let path = path.trim_end_matches(':');
        let parts: Vec<&str> = path.split("::").filter(|p| !p.is_empty()).collect();
        let module = (0..=parts.len())
            .rev()
            .map(|n| parts[..n].join("::"))
            .find(|m| modules.contains_key(m))
            .unwrap_or_default();
        let tail = &rest[path.len()..];
        let list = tail.strip_prefix("::{").or_else(|| tail.strip_prefix('{'));
        let depth = module.split("::").filter(|p| !p.is_empty()).count();
        let named: Vec<String> = match list {
            Some(list) => list[..list.find('}').unwrap()]
                .split(',')
                .map(|n| n.trim().to_string())
                .filter(|n| !n.is_empty())
                .collect(),
            None => parts
                .get(depth)
                .map(|n| n.to_string())
                .into_iter()
                .collect(),
        };
        if named.is_empty() {
            used.insert(module.clone());
        }
        for name in named {
            let sub = [module.as_str(), name.as_str()]
                .iter()
                .filter(|p| !p.is_empty())
                .copied()
                .collect::<Vec<_>>()
                .join("::");
            // An item re-exported by an index (mod.rs) is imported from where it is defined.
            let defined = defs
                .get(&name)
                .filter(|m| module.is_empty() || m.starts_with(&module));
            match (modules.contains_key(&sub), defined) {
                (true, _) => used.insert(sub),
                (false, Some(m)) => used.insert(m.clone()),
                (false, None) if !module.is_empty() => used.insert(module.clone()),
                (false, None) => false,
            };
        }
    }
    used
}

/// A circle through `from`, if any: the modules along it.
fn circle(graph: &BTreeMap<String, BTreeSet<String>>, from: &str) -> Option<Vec<String>> {
    let mut stack = vec![(from.to_string(), vec![from.to_string()])];
    let mut seen = BTreeSet::new();
    while let Some((node, trail)) = stack.pop() {
        for next in graph.get(&node).into_iter().flatten() {
            if next == from {
                return Some([trail.clone(), vec![from.to_string()]].concat());
            }
            if seen.insert(next.clone()) {
                stack.push((next.clone(), [trail.clone(), vec![next.clone()]].concat()));
            }
        }
    }
    None
}

#[test]
fn no_file_of_fs_imports_one_that_imports_it() {
    let modules = modules();
    let defs = definitions(&modules);
    let graph: BTreeMap<String, BTreeSet<String>> = modules
        .iter()
        .map(|(m, code)| {
            let mut deps = imports(code, &modules, &defs);
            deps.remove(m);
            (m.clone(), deps)
        })
        .collect();
    assert!(
        graph["engine"].contains("alloc::groups"),
        "the graph is read: {graph:?}"
    );
    assert!(
        graph["data::write"].contains("engine"),
        "the graph is read: {graph:?}"
    );
    for module in graph.keys() {
        if let Some(circle) = circle(&graph, module) {
            panic!("an import circle in fs/: {}", circle.join(" -> "));
        }
    }
}
