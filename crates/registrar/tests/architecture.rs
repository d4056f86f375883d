//! Architecture tests: the layering ARCHITECTURE.md states, checked against `cargo metadata`, and
//! a repository that explains itself without documents from outside it.
//!
//! The Cargo dependency graph is the fence between layers: a crate can only use what it depends
//! on. These tests read the graph with `cargo metadata --format-version 1 --no-deps` and fail on:
//! - any edge between workspace crates that the layering does not allow,
//! - the dev-only crates (test toolkit, benchmarks) anywhere but under `[dev-dependencies]`
//!   (and the benchmarks' own use of the toolkit),
//! - any dependency the domain or the application must not have,
//! - any crate or module that skips the workspace hygiene rules,
//! - any tracked file that names a markdown document the repository does not hold, or a path
//!   outside the repository.
//!
//! `deny.toml` is the second fence: it keeps third-party infrastructure crates inside the
//! crate that owns them. It ignores dev-dependencies (see its `[graph]` section), so the
//! dev-dependency rules and the dependency sources are checked here.

use std::collections::BTreeSet;
use std::fmt;
use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::OnceLock;

use serde_json::Value;

const DOMAIN: &str = "registrar-domain";
const APPLICATION: &str = "registrar-application";
const API: &str = "registrar-api";
const BIN: &str = "registrar";
const ADAPTER_PREFIX: &str = "registrar-adapters-";
const MEMORY_STORE: &str = "registrar-adapters-memory";
/// The test toolkit: fake SMTP server, throw-away PostgreSQL, process spawner.
const TESTING: &str = "registrar-testing";
/// The load drivers; a leaf nobody depends on.
const BENCH: &str = "registrar-bench";
/// The one edge between the dev-only crates: the capacity run is a program, not a test, so it
/// takes the toolkit's throw-away PostgreSQL and process spawner as a normal dependency rather
/// than keep copies of them. Neither crate ships, so the edge cannot reach the binary.
const DEV_ONLY_EDGE: (&str, &str) = (BENCH, TESTING);
const CRATES_IO: &str = "registry+https://github.com/rust-lang/crates.io-index";

/// Everything `registrar-domain` may depend on. It is meant for reuse by other services, so
/// every new dependency is a decision, made here.
const DOMAIN_ALLOWLIST: &[(Kind, &str)] = &[
    (Kind::Normal, "thiserror"),
    (Kind::Normal, "unicode-normalization"),
    (Kind::Normal, "zxcvbn"),
    (Kind::Normal, "uuid"),
    (Kind::Normal, "hmac"),
    (Kind::Normal, "sha2"),
    (Kind::Normal, "subtle"),
    (Kind::Dev, "proptest"),
];

/// Crates `registrar-application` must not depend on, in any kind of dependency. It knows no
/// HTTP, SQL, mail, password hashing, JSON or command line. A trailing `*` matches a prefix.
const APPLICATION_DENYLIST: &[&str] = &[
    "actix*",
    "tokio-postgres",
    "deadpool*",
    "refinery*",
    "lettre",
    "argon2",
    "paperclip*",
    "serde_json",
    "clap*",
];

/// The layer of a workspace crate, read from its package name (ARCHITECTURE.md, "Layering").
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Layer {
    Domain,
    Application,
    Adapter,
    Api,
    Bin,
    /// Test toolkit and benchmarks: never part of what ships.
    DevOnly,
}

impl Layer {
    fn of(package: &str) -> Option<Self> {
        match package {
            DOMAIN => Some(Self::Domain),
            APPLICATION => Some(Self::Application),
            API => Some(Self::Api),
            BIN => Some(Self::Bin),
            TESTING | BENCH => Some(Self::DevOnly),
            _ if package.starts_with(ADAPTER_PREFIX) => Some(Self::Adapter),
            _ => None,
        }
    }

    /// Whether a crate of this layer may depend on a crate of layer `to` in the code that ships.
    /// registrar ──► api ──► application ──► domain, and registrar ──► adapters-* ──► application.
    /// Nothing that ships may depend on a dev-only crate (the one edge between the two dev-only
    /// crates is [`DEV_ONLY_EDGE`], allowed by name, not by layer). The dev-only crates drive the built
    /// binary; the only code of ours they may link is below the API (the benchmark measures the
    /// Argon2 bound with the server's own hasher), never the API or the bin.
    fn may_depend_on(self, to: Self) -> bool {
        if to == Self::DevOnly {
            return false;
        }
        match self {
            Self::Bin => true,
            Self::Api | Self::Adapter => matches!(to, Self::Application | Self::Domain),
            Self::Application => to == Self::Domain,
            Self::DevOnly => matches!(to, Self::Adapter | Self::Application | Self::Domain),
            Self::Domain => false,
        }
    }
}

/// The kind of a dependency, as `cargo metadata` reports it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Kind {
    Normal,
    Dev,
    Build,
}

impl fmt::Display for Kind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::Normal => "normal",
            Self::Dev => "dev",
            Self::Build => "build",
        })
    }
}

struct Dependency {
    /// The package name (not the name it may be renamed to).
    name: String,
    /// The key in the manifest: the rename if there is one, else the package name.
    key: String,
    kind: Kind,
    /// `None` for path dependencies.
    source: Option<String>,
    path: Option<PathBuf>,
}

struct Package {
    name: String,
    manifest_path: PathBuf,
    dependencies: Vec<Dependency>,
}

struct Workspace {
    root: PathBuf,
    members: Vec<Package>,
}

impl Workspace {
    fn member(&self, name: &str) -> &Package {
        self.members
            .iter()
            .find(|package| package.name == name)
            .unwrap_or_else(|| panic!("`{name}` is not a workspace member"))
    }

    fn is_member(&self, name: &str) -> bool {
        self.members.iter().any(|package| package.name == name)
    }
}

/// The workspace as `cargo metadata` sees it, read once for all tests.
fn workspace() -> &'static Workspace {
    static WORKSPACE: OnceLock<Workspace> = OnceLock::new();
    WORKSPACE.get_or_init(read_workspace)
}

fn read_workspace() -> Workspace {
    let output = Command::new(env!("CARGO"))
        .args(["metadata", "--format-version", "1", "--no-deps"])
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .output()
        .unwrap_or_else(|error| panic!("cannot run cargo metadata: {error}"));
    assert!(
        output.status.success(),
        "cargo metadata failed:\n{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let metadata: Value = serde_json::from_slice(&output.stdout)
        .unwrap_or_else(|error| panic!("cargo metadata printed invalid JSON: {error}"));

    let member_ids: BTreeSet<&str> = array(&metadata, "workspace_members")
        .iter()
        .filter_map(Value::as_str)
        .collect();
    let members = array(&metadata, "packages")
        .iter()
        .filter(|package| member_ids.contains(text(package, "id")))
        .map(|package| Package {
            name: text(package, "name").to_owned(),
            manifest_path: PathBuf::from(text(package, "manifest_path")),
            dependencies: array(package, "dependencies")
                .iter()
                .map(|dependency| {
                    let name = text(dependency, "name").to_owned();
                    Dependency {
                        key: optional_text(dependency, "rename")
                            .map_or_else(|| name.clone(), str::to_owned),
                        name,
                        kind: match optional_text(dependency, "kind") {
                            None => Kind::Normal,
                            Some("dev") => Kind::Dev,
                            Some("build") => Kind::Build,
                            Some(other) => panic!("unknown dependency kind `{other}`"),
                        },
                        source: optional_text(dependency, "source").map(str::to_owned),
                        path: optional_text(dependency, "path").map(PathBuf::from),
                    }
                })
                .collect(),
        })
        .collect();

    let workspace = Workspace {
        root: PathBuf::from(text(&metadata, "workspace_root")),
        members,
    };
    // Guard against a vacuous pass if the metadata format ever changes under us.
    for expected in [DOMAIN, APPLICATION, API, BIN] {
        assert!(
            workspace.is_member(expected),
            "`{expected}` not found in cargo metadata"
        );
    }
    workspace
}

fn array<'a>(value: &'a Value, key: &str) -> &'a [Value] {
    value[key]
        .as_array()
        .unwrap_or_else(|| panic!("cargo metadata: `{key}` is not an array"))
}

fn text<'a>(value: &'a Value, key: &str) -> &'a str {
    optional_text(value, key).unwrap_or_else(|| panic!("cargo metadata: `{key}` is not a string"))
}

fn optional_text<'a>(value: &'a Value, key: &str) -> Option<&'a str> {
    value[key].as_str()
}

fn bullet_list(items: &[String]) -> String {
    items
        .iter()
        .map(|item| format!("  - {item}"))
        .collect::<Vec<_>>()
        .join("\n")
}

#[test]
fn workspace_edges_follow_the_layering() {
    let workspace = workspace();
    let mut forbidden = Vec::new();
    let mut checked = 0;

    for package in &workspace.members {
        let Some(from) = Layer::of(&package.name) else {
            forbidden.push(format!(
                "{}: not a known layer; add it to ARCHITECTURE.md and to `Layer::of` in this test",
                package.name
            ));
            continue;
        };
        for dependency in &package.dependencies {
            if dependency.kind == Kind::Dev || !workspace.is_member(&dependency.name) {
                continue;
            }
            checked += 1;
            let allowed = Layer::of(&dependency.name).is_some_and(|to| from.may_depend_on(to))
                || (package.name.as_str(), dependency.name.as_str()) == DEV_ONLY_EDGE;
            if !allowed {
                forbidden.push(format!(
                    "{} -> {} ({} dependency)",
                    package.name, dependency.name, dependency.kind
                ));
            }
        }
    }

    assert!(checked > 0, "no edge between workspace crates was found");
    assert!(
        forbidden.is_empty(),
        "workspace edges outside the layering of ARCHITECTURE.md \
         (domain -> nothing internal; application -> domain; adapters-* -> application, domain; \
         api -> application, domain; registrar -> anything):\n{}",
        bullet_list(&forbidden)
    );
}

#[test]
fn test_only_edges_reach_only_the_memory_store_the_application_and_the_toolkit() {
    let workspace = workspace();
    let mut forbidden = Vec::new();

    for package in &workspace.members {
        for dependency in &package.dependencies {
            if dependency.kind != Kind::Dev || !workspace.is_member(&dependency.name) {
                continue;
            }
            // The domain stays testable on its own (`cargo test -p registrar-domain`); the
            // benchmarks are a leaf.
            let allowed = package.name != DOMAIN
                && [MEMORY_STORE, APPLICATION, TESTING].contains(&dependency.name.as_str());
            if !allowed {
                forbidden.push(format!(
                    "{} -> {} (dev dependency)",
                    package.name, dependency.name
                ));
            }
        }
    }

    assert!(
        forbidden.is_empty(),
        "dev-dependency edges may only point at {MEMORY_STORE} (the test double), \
         {APPLICATION} (its `testing` feature) or {TESTING} (the test toolkit), and never leave \
         {DOMAIN}:\n{}",
        bullet_list(&forbidden)
    );
}

#[test]
fn dev_only_crates_are_only_ever_dev_dependencies() {
    let workspace = workspace();
    for dev_only in [TESTING, BENCH] {
        assert!(
            workspace.is_member(dev_only),
            "`{dev_only}` is not a workspace member"
        );
    }
    let misplaced: Vec<String> = workspace
        .members
        .iter()
        .flat_map(|package| {
            package
                .dependencies
                .iter()
                .filter(|dependency| {
                    (dependency.name == TESTING
                        && dependency.kind != Kind::Dev
                        && (package.name.as_str(), TESTING) != DEV_ONLY_EDGE)
                        || dependency.name == BENCH
                })
                .map(|dependency| {
                    format!(
                        "{} -> {} ({} dependency)",
                        package.name, dependency.name, dependency.kind
                    )
                })
        })
        .collect();

    assert!(
        misplaced.is_empty(),
        "{TESTING} may only be a dev-dependency (or {BENCH}'s dependency) and {BENCH} nobody's \
         dependency; neither may reach the shipped binary:\n{}",
        bullet_list(&misplaced)
    );
}

#[test]
fn domain_depends_only_on_its_allowlist() {
    let domain = workspace().member(DOMAIN);
    let outside: Vec<String> = domain
        .dependencies
        .iter()
        .filter(|dependency| {
            !DOMAIN_ALLOWLIST.contains(&(dependency.kind, dependency.name.as_str()))
        })
        .map(|dependency| format!("{} ({} dependency)", dependency.name, dependency.kind))
        .collect();

    assert!(
        outside.is_empty(),
        "{DOMAIN} depends on crates outside its allowlist; it must stay free of I/O, async, \
         frameworks and drivers (ARCHITECTURE.md). Remove them, or widen DOMAIN_ALLOWLIST in \
         this test as a deliberate decision:\n{}",
        bullet_list(&outside)
    );
}

#[test]
fn application_depends_on_no_infrastructure_crate() {
    let application = workspace().member(APPLICATION);
    let denied: Vec<String> = application
        .dependencies
        .iter()
        .filter_map(|dependency| {
            APPLICATION_DENYLIST
                .iter()
                .find(|pattern| match pattern.strip_suffix('*') {
                    Some(prefix) => dependency.name.starts_with(prefix),
                    None => dependency.name == **pattern,
                })
                .map(|pattern| {
                    format!(
                        "{} ({} dependency, denied by `{pattern}`)",
                        dependency.name, dependency.kind
                    )
                })
        })
        .collect();

    assert!(
        denied.is_empty(),
        "{APPLICATION} depends on infrastructure crates; they belong in an adapter, \
         registrar-api or the bin, behind a port:\n{}",
        bullet_list(&denied)
    );
}

#[test]
fn every_dependency_comes_from_crates_io_or_the_workspace() {
    let workspace = workspace();
    let mut foreign = Vec::new();

    for package in &workspace.members {
        for dependency in &package.dependencies {
            let from_crates_io = dependency.source.as_deref() == Some(CRATES_IO);
            let from_workspace = dependency.source.is_none()
                && dependency
                    .path
                    .as_ref()
                    .is_some_and(|path| path.starts_with(&workspace.root))
                && workspace.is_member(&dependency.name);
            if !from_crates_io && !from_workspace {
                foreign.push(format!(
                    "{} -> {} ({} dependency) from {}",
                    package.name,
                    dependency.name,
                    dependency.kind,
                    dependency.source.as_deref().unwrap_or_else(|| {
                        dependency
                            .path
                            .as_deref()
                            .and_then(Path::to_str)
                            .unwrap_or("an unknown place")
                    })
                ));
            }
        }
    }

    assert!(
        foreign.is_empty(),
        "dependencies must come from crates.io or be workspace members (cargo-deny's `sources` \
         check does not see dev-dependencies here):\n{}",
        bullet_list(&foreign)
    );
}

#[test]
fn every_workspace_dependency_is_used() {
    let workspace = workspace();
    let manifest = fs::read_to_string(workspace.root.join("Cargo.toml")).unwrap();
    let used: BTreeSet<&str> = workspace
        .members
        .iter()
        .flat_map(|package| &package.dependencies)
        .map(|dependency| dependency.key.as_str())
        .collect();

    let declared = workspace_dependency_keys(&manifest);
    assert!(
        !declared.is_empty(),
        "no [workspace.dependencies] found in the root Cargo.toml"
    );
    let unused: Vec<String> = declared
        .into_iter()
        .filter(|key| !used.contains(key.as_str()))
        .collect();

    assert!(
        unused.is_empty(),
        "[workspace.dependencies] entries that no crate uses (any dependency kind); remove them:\n{}",
        bullet_list(&unused)
    );
}

/// The keys of `[workspace.dependencies]` in the root manifest, from `key = …` lines and
/// `[workspace.dependencies.key]` tables. Indented lines are taken as continuations.
fn workspace_dependency_keys(manifest: &str) -> Vec<String> {
    let mut keys = Vec::new();
    let mut in_section = false;
    for line in manifest.lines() {
        if line.trim_start().starts_with('[') {
            let header = line.trim();
            in_section = header == "[workspace.dependencies]";
            if let Some(key) = header
                .strip_prefix("[workspace.dependencies.")
                .and_then(|rest| rest.strip_suffix(']'))
            {
                keys.push(key.trim_matches('"').to_owned());
            }
        } else if in_section
            && !line.starts_with([' ', '\t', '#'])
            && let Some((key, _)) = line.split_once('=')
        {
            keys.push(key.trim().trim_matches('"').to_owned());
        }
    }
    keys
}

#[test]
fn every_crate_inherits_the_workspace_lints() {
    let mut missing = Vec::new();
    for package in &workspace().members {
        let manifest = fs::read_to_string(&package.manifest_path).unwrap();
        if !inherits_workspace_lints(&manifest) {
            missing.push(format!(
                "{} ({})",
                package.name,
                package.manifest_path.display()
            ));
        }
    }

    assert!(
        missing.is_empty(),
        "every crate needs `[lints]` with `workspace = true` in its Cargo.toml:\n{}",
        bullet_list(&missing)
    );
}

fn inherits_workspace_lints(manifest: &str) -> bool {
    let mut in_lints = false;
    for line in manifest.lines() {
        let line = line.split('#').next().unwrap_or_default().trim();
        if line.starts_with('[') {
            in_lints = line == "[lints]";
        } else if in_lints && line.replace(' ', "") == "workspace=true" {
            return true;
        }
    }
    false
}

#[test]
fn every_module_starts_with_a_doc_header() {
    let crates = workspace().root.join("crates");
    let mut sources = Vec::new();
    for entry in fs::read_dir(&crates).unwrap() {
        let src = entry.unwrap().path().join("src");
        if src.is_dir() {
            collect_rust_files(&src, &mut sources);
        }
    }
    sources.sort();
    assert!(
        !sources.is_empty(),
        "no .rs file found under {}",
        crates.display()
    );

    let headless: Vec<String> = sources
        .iter()
        .filter(|path| {
            let text = fs::read_to_string(path).unwrap();
            !text
                .lines()
                .find(|line| !line.trim().is_empty())
                .is_some_and(|line| line.trim_start().starts_with("//!"))
        })
        .map(|path| {
            path.strip_prefix(&workspace().root)
                .unwrap_or(path)
                .display()
                .to_string()
        })
        .collect();

    assert!(
        headless.is_empty(),
        "every module must start with a `//!` doc comment saying what it is for:\n{}",
        bullet_list(&headless)
    );
}

fn collect_rust_files(dir: &Path, into: &mut Vec<PathBuf>) {
    let entries =
        fs::read_dir(dir).unwrap_or_else(|error| panic!("cannot read {}: {error}", dir.display()));
    for entry in entries {
        let path = entry
            .unwrap_or_else(|error| panic!("cannot read {}: {error}", dir.display()))
            .path();
        if path.is_dir() {
            collect_rust_files(&path, into);
        } else if path.extension().is_some_and(|extension| extension == "rs") {
            into.push(path);
        }
    }
}

/// Tracked paths the reference check does not read: third-party files vendored as they are.
const UNREAD_PREFIXES: &[&str] = &["target/", "crates/api/assets/swagger-ui/"];

/// The one path outside the repository that may be named, and where: CI reads the snapshot of
/// the advisory database from beside the checkout (`ADVISORY_DB_SNAPSHOT` overrides it). Built
/// with `concat!` so that this file does not name it itself.
const OUTSIDE_PATHS_ALLOWED: &[(&str, &str)] = &[
    (".ci/run", concat!("..", "/shared/advisory-db")),
    ("justfile", concat!("..", "/shared/advisory-db")),
];

#[test]
fn every_file_names_only_documents_and_paths_inside_the_repository() {
    let root = &workspace().root;
    let files = tracked_files(root);
    assert!(
        files.iter().any(|file| file == "README.md"),
        "git ls-files did not list README.md"
    );
    let basenames: BTreeSet<&str> = files
        .iter()
        .map(|file| file.rsplit('/').next().unwrap_or(file))
        .collect();

    let mut dangling = Vec::new();
    let mut read = 0;
    for file in &files {
        if UNREAD_PREFIXES
            .iter()
            .any(|prefix| file.starts_with(prefix))
        {
            continue;
        }
        let Ok(text) = fs::read_to_string(root.join(file)) else {
            continue; // not UTF-8: not a text file
        };
        read += 1;
        for reference in dangling_references(root, file, &text, &basenames) {
            dangling.push(format!("{file}: {reference}"));
        }
    }

    assert!(read > 50, "only {read} tracked text files were read");
    assert!(
        dangling.is_empty(),
        "files name markdown documents the repository does not hold, or paths outside it; \
         state the point in the repository's own words (docs/, ARCHITECTURE.md) instead:\n{}",
        bullet_list(&dangling)
    );
}

#[test]
fn the_reference_check_flags_outside_documents_and_paths_but_not_relative_links() {
    let root = &workspace().root;
    let files = tracked_files(root);
    let basenames: BTreeSet<&str> = files
        .iter()
        .map(|file| file.rsplit('/').next().unwrap_or(file))
        .collect();
    // The samples spell `.md` as `{md}` and `../` as `{up}`, or this file would name them itself.
    let check = |file: &str, sample: &str| {
        let text = sample.replace("{md}", ".md").replace("{up}", "../");
        dangling_references(root, file, &text, &basenames)
    };

    // Documents that exist: by path from the root, relative to the file, or by name; URLs.
    for (file, sample) in [
        (
            "crates/api/src/lib.rs",
            "see docs/api{md} and `README{md}`.",
        ),
        (
            "docs/api.md",
            "[overload](overload{md}#figures), [up]({up}README{md})",
        ),
        (
            "crates/api/src/openapi.rs",
            "include_bytes!(\"{up}assets/swagger-ui/swagger-ui.css\")",
        ),
        (
            "README.md",
            "<https://example.com/guide/SETUP{md}>, *{md}, `{md}`",
        ),
        (
            "crates/adapters-postgres/src/migrate.rs",
            "embed_migrations!(\"{up}{up}migrations\")",
        ),
        (
            "crates/registrar/tests/malformed.rs",
            "GET /v1/users/{up}{up}etc/passwd HTTP/1.1",
        ),
        ("crates/registrar/src/main.rs", "/proc/.../stat"),
    ] {
        assert_eq!(
            check(file, sample),
            Vec::<String>::new(),
            "{file}: {sample}"
        );
    }
    // Documents that do not exist, and paths that leave the repository.
    for (file, sample) in [
        ("crates/api/src/lib.rs", "as CONTRACT{md} says"),
        ("docs/api.md", "[the rules](rules{md})"),
        ("README.md", "[the API](api{md})"),
        ("crates/api/src/lib.rs", "/work/notes/PLAN{md}"),
        ("deny.toml", "# see {up}shared/advisory-db"),
        ("docs/api.md", "[x]({up}{up}elsewhere/)"),
        (".ci/run", "${SNAPSHOT:-{up}shared/advisory-db-2}"),
    ] {
        assert_eq!(
            check(file, sample).len(),
            1,
            "{file}: {sample} was not flagged"
        );
    }
    // The one allowed outside path, only where it is allowed.
    assert!(check(".ci/run", "${ADVISORY_DB_SNAPSHOT:-{up}shared/advisory-db}").is_empty());
    assert!(check("justfile", "\"{up}shared/advisory-db\"").is_empty());
}

/// The files git tracks, as paths relative to the repository root.
fn tracked_files(root: &Path) -> Vec<String> {
    let output = Command::new("git")
        .args(["ls-files", "-z"])
        .current_dir(root)
        .output()
        .unwrap_or_else(|error| panic!("cannot run git ls-files: {error}"));
    assert!(
        output.status.success(),
        "git ls-files failed:\n{}",
        String::from_utf8_lossy(&output.stderr)
    );
    String::from_utf8(output.stdout)
        .unwrap_or_else(|error| panic!("git ls-files printed a path that is not UTF-8: {error}"))
        .split('\0')
        .filter(|file| !file.is_empty())
        .map(str::to_owned)
        .collect()
}

/// The references in `text` (the content of `file`, relative to `root`) that point nowhere in
/// the repository: a markdown document's name that is neither a path from the root, nor a path
/// from the file's folder, nor (without a folder) the name of a tracked file; a markdown link
/// that does not resolve from the file's folder; a path going up (`../`) that leaves the
/// repository or reaches nothing in it. URLs are not references.
fn dangling_references(
    root: &Path,
    file: &str,
    text: &str,
    basenames: &BTreeSet<&str>,
) -> Vec<String> {
    let folder = root
        .join(file)
        .parent()
        .map(Path::to_path_buf)
        .unwrap_or_default();
    let exists_inside = |path: &Path| {
        let path = normalize(path);
        path.starts_with(root) && !path.starts_with(root.join("target")) && path.exists()
    };
    let mut dangling = Vec::new();
    for (start, token) in path_tokens(text) {
        let before = &text[..start];
        let word_start = before
            .rfind(|c: char| c.is_whitespace() || "\"'`(<[".contains(c))
            .map_or(0, |i| i + 1);
        if text[word_start..]
            .split_whitespace()
            .next()
            .is_some_and(|word| word.contains("://"))
        {
            continue; // part of a URL
        }
        if token.contains("../") {
            // Relative to the file's folder or to a folder above it (a crate's root, for
            // `embed_migrations!`, or the repository's, for scripts); a leading `/` joins the
            // path to a folder named before it (`concat!(env!("CARGO_MANIFEST_DIR"), "/..")`).
            let relative = token.trim_start_matches('/');
            let allowed = OUTSIDE_PATHS_ALLOWED
                .iter()
                .any(|(where_, path)| *where_ == file && token == *path);
            let found = folder
                .ancestors()
                .take_while(|base| base.starts_with(root))
                .any(|base| exists_inside(&base.join(relative)));
            if climbs(relative) && !allowed && !found {
                dangling.push(format!(
                    "`{token}` leaves the repository or names nothing in it"
                ));
            }
        } else if let Some(stem) = token.strip_suffix(".md") {
            if stem.is_empty() || stem.ends_with('/') {
                continue; // `*.md`, `.md`: a pattern, not a document
            }
            let linked = before.ends_with("](");
            let found = if linked {
                exists_inside(&folder.join(token))
            } else if let Some(absolute) = token.strip_prefix('/') {
                exists_inside(&root.join(absolute))
            } else {
                exists_inside(&root.join(token))
                    || exists_inside(&folder.join(token))
                    || (!token.contains('/') && basenames.contains(token))
            };
            if !found {
                dangling.push(format!("`{token}` is not a document of the repository"));
            }
        }
    }
    dangling
}

/// Runs of path characters that go up a folder or end in `.md` (not `.mdx`), with their byte
/// offsets. A run going up starts at its first `../` unless a folder name comes before it.
fn path_tokens(text: &str) -> Vec<(usize, &str)> {
    let is_path = |c: char| c.is_ascii_alphanumeric() || "_-./".contains(c);
    let mut tokens = Vec::new();
    let mut start = None;
    for (i, c) in text.char_indices().chain([(text.len(), ' ')]) {
        match (is_path(c), start) {
            (true, None) => start = Some(i),
            (false, Some(from)) => {
                let token = &text[from..i];
                // A sentence may end right after a name.
                let token = token.strip_suffix('.').unwrap_or(token);
                if let Some(up) = token.find("../") {
                    // In a shell default the path starts after the `-`; `/proc/.../stat` and
                    // `a/../b` are one path each.
                    let skip = if token[..up].ends_with(['/', '.']) {
                        0
                    } else {
                        up
                    };
                    tokens.push((from + skip, &token[skip..]));
                } else if Path::new(token)
                    .extension()
                    .is_some_and(|extension| extension == "md")
                {
                    tokens.push((from, token));
                }
                start = None;
            }
            _ => {}
        }
    }
    tokens
}

/// Whether a relative path climbs above the folder it starts from, rather than only back down
/// its own way (`/v1/users/../../etc/passwd`, a hostile URL in a test, climbs nowhere).
fn climbs(path: &str) -> bool {
    let mut depth = 0_i32;
    for segment in path.split('/') {
        match segment {
            ".." => depth -= 1,
            "" | "." => {}
            _ => depth += 1,
        }
        if depth < 0 {
            return true;
        }
    }
    false
}

/// `path` with `.` and `..` resolved lexically (the target need not exist).
fn normalize(path: &Path) -> PathBuf {
    let mut normal = PathBuf::new();
    for component in path.components() {
        match component {
            std::path::Component::ParentDir => {
                normal.pop();
            }
            std::path::Component::CurDir => {}
            other => normal.push(other),
        }
    }
    normal
}
