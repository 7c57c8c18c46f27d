//! The layers, checked: reads every `crate::` and `super::` path in
//! `src/` and fails on an import that points up the order written in
//! `docs/architecture.md` (its `layers` block, bottom first), and on any
//! import cycle between modules, naming the file and line of each.
//!
//! Rules, as the document states them: a module is placed by the longest
//! prefix the order names; it may import its own layer and those below;
//! test code (`#[cfg(test)]` items and modules) is above every layer and is
//! not read; a module's own children are not edges (a folder's `mod.rs`
//! declares and re-exports them).

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::path::{Path, PathBuf};

/// One module's imports of another, with where each is written.
#[derive(Default)]
struct Graph {
    /// module → (imported module → first line importing it).
    edges: BTreeMap<String, BTreeMap<String, usize>>,
    /// module → its file, for messages.
    files: BTreeMap<String, PathBuf>,
}

/// The order of `docs/architecture.md`: one line per layer, bottom first,
/// each naming its modules.
fn documented_layers(root: &Path) -> Vec<Vec<String>> {
    let doc = std::fs::read_to_string(root.join("docs/architecture.md"))
        .expect("docs/architecture.md is readable");
    let block = doc
        .split("```layers\n")
        .nth(1)
        .and_then(|rest| rest.split("```").next())
        .expect("docs/architecture.md has a ```layers block");
    block
        .lines()
        .map(|line| line.split('#').next().unwrap_or_default())
        .filter(|line| !line.trim().is_empty())
        .map(|line| {
            let modules = line.split_once(": ").map_or(line, |(_, m)| m);
            modules.split_whitespace().map(str::to_owned).collect()
        })
        .collect()
}

/// The layer of `module`: the one naming its longest prefix.
fn layer_of(layers: &[Vec<String>], module: &str) -> Option<(usize, usize)> {
    let mut best: Option<(usize, usize)> = None;
    for (i, names) in layers.iter().enumerate() {
        for name in names {
            let fits = module == name
                || module.starts_with(&format!("{name}::"))
                || (name == "crate" && module == "crate");
            if fits && best.is_none_or(|(_, len)| name.len() > len) {
                best = Some((i, name.len()));
            }
        }
    }
    best
}

/// `text` with comments, string and char literals blanked (newlines
/// kept, so offsets still give lines).
fn code_only(text: &str) -> String {
    let b = text.as_bytes();
    let mut out = b.to_vec();
    let mut i = 0;
    let blank = |out: &mut Vec<u8>, from: usize, to: usize| {
        for c in &mut out[from..to] {
            if *c != b'\n' {
                *c = b' ';
            }
        }
    };
    while i < b.len() {
        match b[i] {
            b'/' if b.get(i + 1) == Some(&b'/') => {
                let end = text[i..].find('\n').map_or(b.len(), |n| i + n);
                blank(&mut out, i, end);
                i = end;
            }
            b'/' if b.get(i + 1) == Some(&b'*') => {
                let end = text[i + 2..].find("*/").map_or(b.len(), |n| i + n + 4);
                blank(&mut out, i, end);
                i = end;
            }
            b'r' if matches!(b.get(i + 1), Some(b'"' | b'#'))
                && (i == 0 || !(b[i - 1].is_ascii_alphanumeric() || b[i - 1] == b'_')) =>
            {
                let hashes = b[i + 1..].iter().take_while(|&&c| c == b'#').count();
                if b.get(i + 1 + hashes) != Some(&b'"') {
                    i += 1;
                    continue;
                }
                let close = format!("\"{}", "#".repeat(hashes));
                let start = i + 2 + hashes;
                let end = text[start..]
                    .find(&close)
                    .map_or(b.len(), |n| start + n + close.len());
                blank(&mut out, i, end);
                i = end;
            }
            b'"' => {
                let mut j = i + 1;
                while j < b.len() && b[j] != b'"' {
                    j += if b[j] == b'\\' { 2 } else { 1 };
                }
                let end = (j + 1).min(b.len());
                blank(&mut out, i, end);
                i = end;
            }
            // A char literal ('x', '\n', '\''), not a lifetime ('a).
            b'\'' if b.get(i + 2) == Some(&b'\'') || b.get(i + 1) == Some(&b'\\') => {
                let end = text[i + 2..].find('\'').map_or(b.len(), |n| i + n + 3);
                blank(&mut out, i, end);
                i = end;
            }
            _ => i += 1,
        }
    }
    String::from_utf8(out).expect("blanking keeps UTF-8")
}

/// The end of the item starting at `from`: its `;` or its closing brace.
fn item_end(code: &[u8], from: usize) -> usize {
    let mut depth = 0usize;
    for (i, &c) in code.iter().enumerate().skip(from) {
        match c {
            b'{' => depth += 1,
            b'}' => {
                depth = depth.saturating_sub(1);
                if depth == 0 {
                    return i + 1;
                }
            }
            b';' if depth == 0 => return i + 1,
            _ => {}
        }
    }
    code.len()
}

/// `code` without its `#[cfg(test)]` items, and the names of the
/// test-only child modules declared there (`#[cfg(test)] mod tests;`).
fn without_tests(code: &str) -> (String, Vec<String>) {
    let mut out = code.as_bytes().to_vec();
    let mut test_modules = Vec::new();
    let mut at = 0;
    while let Some(n) = code[at..].find("#[cfg(test)]") {
        let start = at + n;
        let end = item_end(code.as_bytes(), start);
        let item = code[start + "#[cfg(test)]".len()..end].trim();
        if let Some(name) = item
            .strip_prefix("mod ")
            .or_else(|| item.strip_prefix("pub mod "))
            .and_then(|rest| rest.strip_suffix(';'))
        {
            test_modules.push(name.trim().to_owned());
        }
        for c in &mut out[start..end] {
            if *c != b'\n' {
                *c = b' ';
            }
        }
        at = end;
    }
    (
        String::from_utf8(out).expect("blanking keeps UTF-8"),
        test_modules,
    )
}

/// The paths a `use` tree or an inline path names, from just after
/// `crate::` (or `super::`): `a::b::{c, d::e}` gives `a::b::c`, `a::b::d::e`.
fn paths_at(code: &str, from: usize) -> Vec<String> {
    fn tree(s: &[u8], i: &mut usize, prefix: &str, out: &mut Vec<String>) {
        let mut path = prefix.to_owned();
        loop {
            while *i < s.len() && s[*i].is_ascii_whitespace() {
                *i += 1;
            }
            if s.get(*i) == Some(&b'{') {
                *i += 1;
                loop {
                    tree(s, i, &path, out);
                    while *i < s.len() && s[*i].is_ascii_whitespace() {
                        *i += 1;
                    }
                    match s.get(*i) {
                        Some(b',') => *i += 1,
                        Some(b'}') => {
                            *i += 1;
                            return;
                        }
                        _ => return,
                    }
                    while *i < s.len() && s[*i].is_ascii_whitespace() {
                        *i += 1;
                    }
                    if s.get(*i) == Some(&b'}') {
                        *i += 1;
                        return;
                    }
                }
            }
            let start = *i;
            while *i < s.len() && (s[*i].is_ascii_alphanumeric() || s[*i] == b'_' || s[*i] == b'*')
            {
                *i += 1;
            }
            let ident = std::str::from_utf8(&s[start..*i]).unwrap_or_default();
            if !ident.is_empty() && ident != "self" && ident != "*" {
                if !path.is_empty() {
                    path.push_str("::");
                }
                path.push_str(ident);
            }
            if s.get(*i..*i + 2) == Some(b"::") {
                *i += 2;
                continue;
            }
            out.push(path);
            // Skip an `as name`, so a group goes on to its next item.
            let mut j = *i;
            while j < s.len() && s[j].is_ascii_whitespace() {
                j += 1;
            }
            if s.get(j..j + 3) == Some(b"as ") {
                j += 3;
                while j < s.len() && s[j].is_ascii_whitespace() {
                    j += 1;
                }
                while j < s.len() && (s[j].is_ascii_alphanumeric() || s[j] == b'_') {
                    j += 1;
                }
                *i = j;
            }
            return;
        }
    }
    let mut out = Vec::new();
    let mut i = from;
    tree(code.as_bytes(), &mut i, "", &mut out);
    out
}

/// The module a path names: its longest prefix that is a module file.
fn module_of(src: &Path, segments: &[&str]) -> String {
    for n in (1..=segments.len()).rev() {
        let rel = segments[..n].join("/");
        if src.join(format!("{rel}.rs")).is_file() || src.join(&rel).join("mod.rs").is_file() {
            return segments[..n].join("::");
        }
    }
    "crate".to_owned()
}

/// The module a file holds: `src/config/mod.rs` → `config`.
fn module_name(src: &Path, file: &Path) -> String {
    let rel = file.strip_prefix(src).expect("file under src");
    let mut parts: Vec<String> = rel
        .iter()
        .map(|p| p.to_string_lossy().trim_end_matches(".rs").to_owned())
        .collect();
    if parts.last().is_some_and(|p| p == "mod" || p == "lib") {
        parts.pop();
    }
    if parts.is_empty() {
        "crate".to_owned()
    } else {
        parts.join("::")
    }
}

fn rust_files(dir: &Path, out: &mut Vec<PathBuf>) {
    let mut entries: Vec<_> = std::fs::read_dir(dir)
        .expect("src is readable")
        .flatten()
        .map(|e| e.path())
        .collect();
    entries.sort();
    for path in entries {
        if path.is_dir() {
            rust_files(&path, out);
        } else if path.extension().is_some_and(|e| e == "rs") {
            out.push(path);
        }
    }
}

/// Every module's imports of the crate's other modules (test code left out).
fn read_graph(src: &Path) -> Graph {
    let mut files = Vec::new();
    rust_files(src, &mut files);
    let mut texts = HashMap::new();
    let mut test_files = BTreeSet::new();
    for file in &files {
        let text = std::fs::read_to_string(file).expect("source is readable");
        let (code, tests) = without_tests(&code_only(&text));
        let dir = if file
            .file_name()
            .is_some_and(|n| n == "mod.rs" || n == "lib.rs")
        {
            file.parent().expect("has a parent").to_owned()
        } else {
            file.with_extension("")
        };
        for name in tests {
            test_files.insert(dir.join(format!("{name}.rs")));
            test_files.insert(dir.join(&name).join("mod.rs"));
        }
        texts.insert(file.clone(), code);
    }
    let mut graph = Graph::default();
    for file in files.iter().filter(|f| !test_files.contains(*f)) {
        if file.file_name().is_some_and(|n| n == "main.rs") {
            continue; // the binary's crate: `robeing_gateway::`, not `crate::`
        }
        let module = module_name(src, file);
        graph.files.insert(module.clone(), file.clone());
        let code = &texts[file];
        let edges = graph.edges.entry(module.clone()).or_default();
        for (anchor, base) in [("crate::", String::new()), ("super::", parent(&module))] {
            let mut at = 0;
            while let Some(n) = code[at..].find(anchor) {
                let start = at + n;
                at = start + anchor.len();
                let before = code[..start].chars().next_back();
                if before.is_some_and(|c| c.is_ascii_alphanumeric() || c == '_' || c == ':') {
                    continue;
                }
                let line = code[..start].matches('\n').count() + 1;
                for path in paths_at(code, at) {
                    let full = match (base.as_str(), path.as_str()) {
                        ("", p) => p.to_owned(),
                        (b, "") => b.to_owned(),
                        (b, p) => format!("{b}::{p}"),
                    };
                    let segments: Vec<&str> = full.split("::").filter(|s| !s.is_empty()).collect();
                    let target = module_of(src, &segments);
                    let is_child = target.starts_with(&format!("{module}::"))
                        || (module == "crate" && target != "crate");
                    if target != module && !is_child {
                        edges.entry(target).or_insert(line);
                    }
                }
            }
        }
    }
    graph
}

/// The module `super::` names from `module`'s file.
fn parent(module: &str) -> String {
    module
        .rsplit_once("::")
        .map_or(String::new(), |(p, _)| p.to_owned())
}

/// Modules in an import cycle, each cycle's members sorted (Tarjan's
/// strongly connected components of more than one module).
fn cycles(graph: &Graph) -> Vec<Vec<String>> {
    struct Walk<'a> {
        graph: &'a Graph,
        index: HashMap<&'a str, usize>,
        low: HashMap<&'a str, usize>,
        stack: Vec<&'a str>,
        on_stack: BTreeSet<&'a str>,
        found: Vec<Vec<String>>,
    }
    impl<'a> Walk<'a> {
        fn visit(&mut self, v: &'a str) {
            let n = self.index.len();
            self.index.insert(v, n);
            self.low.insert(v, n);
            self.stack.push(v);
            self.on_stack.insert(v);
            let targets: Vec<&'a str> = self
                .graph
                .edges
                .get(v)
                .map(|e| e.keys().map(String::as_str).collect())
                .unwrap_or_default();
            for w in targets {
                if !self.index.contains_key(w) {
                    self.visit(w);
                    let low = self.low[v].min(self.low[w]);
                    self.low.insert(v, low);
                } else if self.on_stack.contains(w) {
                    let low = self.low[v].min(self.index[w]);
                    self.low.insert(v, low);
                }
            }
            if self.low[v] == self.index[v] {
                let mut members = Vec::new();
                while let Some(w) = self.stack.pop() {
                    self.on_stack.remove(w);
                    members.push(w.to_owned());
                    if w == v {
                        break;
                    }
                }
                if members.len() > 1 {
                    members.sort();
                    self.found.push(members);
                }
            }
        }
    }
    let mut walk = Walk {
        graph,
        index: HashMap::new(),
        low: HashMap::new(),
        stack: Vec::new(),
        on_stack: BTreeSet::new(),
        found: Vec::new(),
    };
    for v in graph.edges.keys() {
        if !walk.index.contains_key(v.as_str()) {
            walk.visit(v);
        }
    }
    walk.found
}

/// Every import against the order, as `file:line: message`.
fn violations(graph: &Graph, layers: &[Vec<String>]) -> Vec<String> {
    let mut found = Vec::new();
    for (module, targets) in &graph.edges {
        let file = graph.files[module].display();
        let Some((from, _)) = layer_of(layers, module) else {
            found.push(format!(
                "{file}: module {module} is in no layer of docs/architecture.md"
            ));
            continue;
        };
        for (target, line) in targets {
            match layer_of(layers, target) {
                Some((to, _)) if to > from => found.push(format!(
                    "{file}:{line}: {module} (layer {}) imports {target} (layer {}), a layer above it",
                    from + 1,
                    to + 1
                )),
                Some(_) => {}
                None => found.push(format!(
                    "{file}:{line}: imports {target}, which is in no layer of docs/architecture.md"
                )),
            }
        }
    }
    found
}

#[test]
fn imports_follow_the_documented_layers_and_form_no_cycle() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let layers = documented_layers(root);
    assert!(
        layers.len() >= 5,
        "the layers block names {} layers",
        layers.len()
    );
    let graph = read_graph(&root.join("src"));
    assert!(
        graph.edges.values().map(BTreeMap::len).sum::<usize>() > 50,
        "the reader found too few imports to be reading the code"
    );
    let mut problems = violations(&graph, &layers);
    let files = &graph.files;
    for cycle in cycles(&graph) {
        let lines: Vec<String> = cycle
            .iter()
            .flat_map(|m| {
                graph.edges[m]
                    .iter()
                    .filter(|(t, _)| cycle.contains(t))
                    .map(move |(t, line)| format!("{}:{line} → {t}", files[m].display()))
            })
            .collect();
        problems.push(format!(
            "import cycle of {} modules: {}",
            cycle.len(),
            lines.join("; ")
        ));
    }
    assert!(problems.is_empty(), "\n{}", problems.join("\n"));
}

#[test]
fn the_reader_sees_use_trees_inline_paths_and_skips_tests() {
    let text = "use crate::a::{b, c::{d as x, e as f}};\n// crate::x\nlet s = \"crate::y\";\nlet v = crate::g::h(1);\n#[cfg(test)]\nmod tests { use crate::z; }\n#[cfg(test)]\nmod more;\nfn l<'a>(c: char) -> bool { c == 'x' }\n";
    let (code, tests) = without_tests(&code_only(text));
    assert_eq!(tests, ["more"]);
    let mut found = Vec::new();
    let mut at = 0;
    while let Some(n) = code[at..].find("crate::") {
        at += n + "crate::".len();
        found.extend(paths_at(&code, at));
    }
    assert_eq!(found, ["a::b", "a::c::d", "a::c::e", "g::h"]);
}

#[test]
fn cycles_and_upward_imports_are_found() {
    let mut graph = Graph::default();
    for (from, to) in [("low", "high"), ("high", "low"), ("high", "mid")] {
        graph
            .files
            .insert(from.into(), PathBuf::from(format!("src/{from}.rs")));
        graph
            .edges
            .entry(from.into())
            .or_default()
            .insert(to.into(), 3);
    }
    graph
        .files
        .insert("mid".into(), PathBuf::from("src/mid.rs"));
    let layers = vec![
        vec!["low".to_owned()],
        vec!["mid".to_owned(), "high".to_owned()],
    ];
    assert_eq!(cycles(&graph), [["high", "low"]]);
    assert_eq!(
        violations(&graph, &layers),
        ["src/low.rs:3: low (layer 1) imports high (layer 2), a layer above it"]
    );
}
