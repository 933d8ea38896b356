//! The host's modules form no import cycle: every file is read (with `syn`), every path it
//! names through `use` or `crate::`/`super::`/`self::` is followed to the module that defines
//! the item (through `pub use` re-exports), and the graph of those uses between modules that
//! do not contain one another must be acyclic. A module that uses its own parent's items, or
//! a parent that re-exports its children, is how Rust folders work and is not counted.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

use syn::visit::Visit;

type ModPath = Vec<String>;

/// One file's module, its `pub use` re-exports and the paths it names.
struct Module {
    file: PathBuf,
    /// Exported name → the absolute path it stands for.
    exports: BTreeMap<String, ModPath>,
    /// Absolute paths named, with the line that names them.
    uses: Vec<(ModPath, usize)>,
}

fn is_test_only(attrs: &[syn::Attribute]) -> bool {
    attrs
        .iter()
        .any(|a| a.path().is_ident("cfg") && a.parse_args::<syn::Meta>().is_ok_and(|m| m.path().is_ident("test")))
}

/// The files of every (non-test) module, found from `lib.rs` through `mod` items.
fn discover(src: &Path) -> BTreeMap<ModPath, (PathBuf, syn::File)> {
    let mut found = BTreeMap::new();
    let mut pending = vec![(ModPath::new(), src.join("lib.rs"), src.to_path_buf())];
    while let Some((path, file, dir)) = pending.pop() {
        let text = std::fs::read_to_string(&file).unwrap_or_else(|e| panic!("{}: {e}", file.display()));
        let ast = syn::parse_file(&text).unwrap_or_else(|e| panic!("{}: {e}", file.display()));
        for item in &ast.items {
            let syn::Item::Mod(m) = item else { continue };
            if m.content.is_some() || is_test_only(&m.attrs) {
                continue;
            }
            let name = m.ident.to_string();
            let flat = dir.join(format!("{name}.rs"));
            let (child_file, child_dir) =
                if flat.exists() { (flat, dir.join(&name)) } else { (dir.join(&name).join("mod.rs"), dir.join(&name)) };
            let mut child = path.clone();
            child.push(name);
            pending.push((child, child_file, child_dir));
        }
        found.insert(path, (file, ast));
    }
    found
}

/// Collects what one file names, resolving `super`/`self`/child names against where each
/// path is written (inline modules included).
struct Collector<'a> {
    /// The module path at the current point (the file's, then any inline modules).
    at: ModPath,
    children: &'a BTreeSet<ModPath>,
    exports: BTreeMap<String, ModPath>,
    uses: Vec<(ModPath, usize)>,
    depth: usize,
}

impl Collector<'_> {
    /// The absolute form of `segments` as written at the current point, if it is this crate's.
    fn absolute(&self, segments: &[String]) -> Option<ModPath> {
        let mut base = self.at.clone();
        let mut rest = segments;
        match rest.first().map(String::as_str) {
            Some("crate") => {
                base.clear();
                rest = &rest[1..];
            }
            Some("self") => rest = &rest[1..],
            Some("super") => {
                while rest.first().map(String::as_str) == Some("super") {
                    base.pop()?;
                    rest = &rest[1..];
                }
            }
            Some(first) => {
                // A name of a child module of where it is written; anything else is another
                // crate or a local item.
                let mut child = base.clone();
                child.push(first.to_string());
                if !self.children.contains(&child) {
                    return None;
                }
            }
            None => return None,
        }
        base.extend(rest.iter().cloned());
        Some(base)
    }

    fn use_tree(&mut self, prefix: &mut Vec<String>, tree: &syn::UseTree, public: bool, line: usize) {
        match tree {
            syn::UseTree::Path(p) => {
                prefix.push(p.ident.to_string());
                self.use_tree(prefix, &p.tree, public, line);
                prefix.pop();
            }
            syn::UseTree::Name(n) => self.named(prefix, &n.ident.to_string(), None, public, line),
            syn::UseTree::Rename(r) => {
                self.named(prefix, &r.ident.to_string(), Some(r.rename.to_string()), public, line)
            }
            syn::UseTree::Glob(_) => {
                if let Some(path) = self.absolute(prefix) {
                    self.uses.push((path, line));
                }
            }
            syn::UseTree::Group(g) => {
                for tree in &g.items {
                    self.use_tree(prefix, tree, public, line);
                }
            }
        }
    }

    fn named(&mut self, prefix: &[String], name: &str, rename: Option<String>, public: bool, line: usize) {
        let mut segments = prefix.to_vec();
        if name != "self" {
            segments.push(name.to_string());
        }
        let Some(path) = self.absolute(&segments) else { return };
        if public && self.depth == 0 {
            let exported = rename.unwrap_or_else(|| segments.last().cloned().unwrap_or_default());
            self.exports.insert(exported, path.clone());
        }
        self.uses.push((path, line));
    }
}

impl<'ast> Visit<'ast> for Collector<'_> {
    fn visit_item_use(&mut self, item: &'ast syn::ItemUse) {
        let public = !matches!(item.vis, syn::Visibility::Inherited);
        let line = item.use_token.span.start().line;
        let mut prefix = Vec::new();
        self.use_tree(&mut prefix, &item.tree, public, line);
    }

    fn visit_item_mod(&mut self, item: &'ast syn::ItemMod) {
        if is_test_only(&item.attrs) || item.content.is_none() {
            return;
        }
        self.at.push(item.ident.to_string());
        self.depth += 1;
        syn::visit::visit_item_mod(self, item);
        self.depth -= 1;
        self.at.pop();
    }

    fn visit_item_fn(&mut self, item: &'ast syn::ItemFn) {
        if !is_test_only(&item.attrs) {
            syn::visit::visit_item_fn(self, item);
        }
    }

    fn visit_path(&mut self, path: &'ast syn::Path) {
        let segments: Vec<String> = path.segments.iter().map(|s| s.ident.to_string()).collect();
        if matches!(segments.first().map(String::as_str), Some("crate" | "super" | "self"))
            && let Some(absolute) = self.absolute(&segments)
        {
            let line = path.segments.first().map_or(0, |s| s.ident.span().start().line);
            self.uses.push((absolute, line));
        }
        syn::visit::visit_path(self, path);
    }
}

/// The module that defines what `path` names: its longest module prefix, followed through
/// that module's re-exports.
fn defining_module(modules: &BTreeMap<ModPath, Module>, path: &[String], hops: usize) -> ModPath {
    let mut at = path.len();
    while at > 0 && !modules.contains_key(&path[..at]) {
        at -= 1;
    }
    let module = path[..at].to_vec();
    if hops < 16
        && let Some(name) = path.get(at)
        && let Some(target) = modules.get(&module).and_then(|m| m.exports.get(name))
        && target.as_slice() != path
    {
        let mut next = target.clone();
        next.extend(path[at + 1..].iter().cloned());
        return defining_module(modules, &next, hops + 1);
    }
    module
}

fn name(path: &[String]) -> String {
    if path.is_empty() { "crate".into() } else { path.join("::") }
}

/// Strongly connected components with more than one module (Tarjan's algorithm).
fn cycles(edges: &BTreeMap<ModPath, BTreeSet<ModPath>>) -> Vec<Vec<ModPath>> {
    struct Walk<'a> {
        edges: &'a BTreeMap<ModPath, BTreeSet<ModPath>>,
        index: BTreeMap<ModPath, usize>,
        low: BTreeMap<ModPath, usize>,
        stack: Vec<ModPath>,
        on_stack: BTreeSet<ModPath>,
        found: Vec<Vec<ModPath>>,
    }
    impl Walk<'_> {
        fn visit(&mut self, node: &ModPath) {
            let i = self.index.len();
            self.index.insert(node.clone(), i);
            self.low.insert(node.clone(), i);
            self.stack.push(node.clone());
            self.on_stack.insert(node.clone());
            for next in self.edges.get(node).into_iter().flatten() {
                if !self.index.contains_key(next) {
                    self.visit(next);
                    let low = self.low[node].min(self.low[next]);
                    self.low.insert(node.clone(), low);
                } else if self.on_stack.contains(next) {
                    let low = self.low[node].min(self.index[next]);
                    self.low.insert(node.clone(), low);
                }
            }
            if self.low[node] == self.index[node] {
                let mut component = Vec::new();
                while let Some(top) = self.stack.pop() {
                    self.on_stack.remove(&top);
                    let done = &top == node;
                    component.push(top);
                    if done {
                        break;
                    }
                }
                if component.len() > 1 {
                    component.sort();
                    self.found.push(component);
                }
            }
        }
    }
    let mut walk = Walk {
        edges,
        index: BTreeMap::new(),
        low: BTreeMap::new(),
        stack: Vec::new(),
        on_stack: BTreeSet::new(),
        found: Vec::new(),
    };
    for node in edges.keys() {
        if !walk.index.contains_key(node) {
            walk.visit(node);
        }
    }
    walk.found
}

#[test]
fn the_host_modules_import_one_another_without_cycles() {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let files = discover(&src);
    let known: BTreeSet<ModPath> = files.keys().cloned().collect();
    let mut modules = BTreeMap::new();
    for (path, (file, ast)) in &files {
        let mut collector =
            Collector { at: path.clone(), children: &known, exports: BTreeMap::new(), uses: Vec::new(), depth: 0 };
        collector.visit_file(ast);
        modules.insert(path.clone(), Module { file: file.clone(), exports: collector.exports, uses: collector.uses });
    }
    assert!(modules.len() > 50, "only {} modules found under {}", modules.len(), src.display());

    // Edges between modules neither of which contains the other, with where each is named.
    let mut edges: BTreeMap<ModPath, BTreeSet<ModPath>> = BTreeMap::new();
    let mut witness: BTreeMap<(ModPath, ModPath), String> = BTreeMap::new();
    for (from, module) in &modules {
        for (path, line) in &module.uses {
            let to = defining_module(&modules, path, 0);
            if to.starts_with(from) || from.starts_with(&to) {
                continue;
            }
            edges.entry(from.clone()).or_default().insert(to.clone());
            witness
                .entry((from.clone(), to))
                .or_insert_with(|| format!("{}:{line} names {}", module.file.display(), name(path)));
        }
    }
    let found = cycles(&edges);
    let report: Vec<String> = found
        .iter()
        .map(|component| {
            let members: BTreeSet<&ModPath> = component.iter().collect();
            let mut lines =
                vec![format!("cycle among {}", component.iter().map(|m| name(m)).collect::<Vec<_>>().join(", "))];
            for from in component {
                for to in edges.get(from).into_iter().flatten().filter(|to| members.contains(to)) {
                    lines.push(format!("  {} -> {}: {}", name(from), name(to), witness[&(from.clone(), to.clone())]));
                }
            }
            lines.join("\n")
        })
        .collect();
    assert!(found.is_empty(), "the host's modules import one another in cycles:\n{}", report.join("\n"));
}
