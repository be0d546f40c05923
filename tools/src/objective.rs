//! `meridian objective …`, `meridian keyword …`, `meridian label …`: placement objectives,
//! managed through a mounted namespace.
//!
//! Storage (all in the namespace, so the metaserver's store persists it):
//! - the catalogue: one xattr per objective on the share root,
//!   `user.meridian.objective.<NAME>` = its source text;
//! - the places `place-on-…`/`exclude-from-…` may name: `user.meridian.places` on the root;
//! - attachments: `user.meridian.objectives` on a file or directory, one name per line, in
//!   attachment order;
//! - keywords and labels: `user.meridian.keywords` / `user.meridian.labels`, one per line
//!   (readable and writable with getfattr/setfattr too).
//!
//! Owns: finding the mount root of a path (the top directory on the same device), reading
//! and writing those xattrs, and printing placements and explanations. The language itself
//! is `meridian-objectives`.

use anyhow::{Context, Result, bail};
use clap::{Args, Subcommand};
use meridian_objectives::{Catalogue, Clause, Engine, Facts, Level, Objective, lint};
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

const OBJ_PREFIX: &str = "user.meridian.objective.";
const PLACES: &str = "user.meridian.places";
const ATTACHED: &str = "user.meridian.objectives";
pub const KEYWORDS: &str = "user.meridian.keywords";
pub const LABELS: &str = "user.meridian.labels";

#[derive(Subcommand)]
pub enum ObjectiveCmd {
    /// Add a named objective to the catalogue: meridian objective add NAME -e EXPR
    Add {
        name: String,
        #[arg(short = 'e', long = "expr")]
        expr: String,
        /// Replace an objective of the same name
        #[arg(long)]
        replace: bool,
        #[command(flatten)]
        at: At,
    },
    /// List the catalogue's objectives
    List {
        #[command(flatten)]
        at: At,
    },
    /// Remove an objective from the catalogue
    Remove {
        name: String,
        #[command(flatten)]
        at: At,
    },
    /// Attach an objective to a file or directory (a directory's apply to everything below)
    Apply {
        name: String,
        path: PathBuf,
        /// Also attach it to every file and directory below PATH
        #[arg(long)]
        recursive: bool,
    },
    /// Detach an objective from a file or directory
    Detach {
        name: String,
        path: PathBuf,
        #[arg(long)]
        recursive: bool,
    },
    /// Show the effective placement of PATH and which objective decided each SLO
    Explain { path: PathBuf },
    /// Parse and lint an expression without adding it
    Check {
        expr: String,
        #[command(flatten)]
        at: At,
    },
    /// Show or set the site and volume names that place-on-… and exclude-from-… accept
    Places {
        /// Names to declare (replacing the list); none prints it
        names: Vec<String>,
        #[command(flatten)]
        at: At,
    },
}

/// Which mount to work on.
#[derive(Args)]
pub struct At {
    /// A path inside the mounted namespace (default: the current directory)
    #[arg(long, default_value = ".")]
    mount: PathBuf,
}

/// The top directory of the filesystem holding `path`.
pub fn mount_root(path: &Path) -> Result<PathBuf> {
    let mut p = std::fs::canonicalize(path).with_context(|| format!("{}", path.display()))?;
    let dev = std::fs::metadata(&p)?.dev();
    while let Some(parent) = p.parent() {
        if std::fs::metadata(parent).map(|m| m.dev()).ok() != Some(dev) {
            break;
        }
        p = parent.to_path_buf();
    }
    if p.parent().is_none() {
        bail!(
            "{} is not inside a mounted Meridian namespace",
            path.display()
        );
    }
    Ok(p)
}

/// An xattr holding one item per line.
pub fn get_list(path: &Path, attr: &str) -> Result<Vec<String>> {
    let v =
        xattr::get(path, attr).with_context(|| format!("reading {attr} of {}", path.display()))?;
    Ok(v.map(|b| {
        String::from_utf8_lossy(&b)
            .lines()
            .filter(|l| !l.is_empty())
            .map(String::from)
            .collect()
    })
    .unwrap_or_default())
}

pub fn set_list(path: &Path, attr: &str, items: &[String]) -> Result<()> {
    let r = if items.is_empty() {
        match xattr::remove(path, attr) {
            Err(e) if e.raw_os_error() == Some(libc::ENODATA) => Ok(()),
            r => r,
        }
    } else {
        xattr::set(path, attr, items.join("\n").as_bytes())
    };
    r.with_context(|| format!("writing {attr} of {}", path.display()))
}

fn catalogue(root: &Path) -> Result<Catalogue> {
    Ok(Catalogue::new(get_list(root, PLACES)?))
}

/// Every objective in the catalogue, parsed.
fn objectives(root: &Path, cat: &Catalogue) -> Result<Vec<Objective>> {
    let mut out = Vec::new();
    for name in xattr::list(root)? {
        let name = name.to_string_lossy();
        let Some(short) = name.strip_prefix(OBJ_PREFIX) else {
            continue;
        };
        let src =
            String::from_utf8_lossy(&xattr::get(root, &*name)?.unwrap_or_default()).into_owned();
        match Objective::parse(short, &src, cat) {
            Ok(o) => out.push(o),
            Err(e) => eprintln!("meridian: objective {short} no longer parses, skipped: {e}"),
        }
    }
    out.sort_by(|a, b| a.name.cmp(&b.name));
    Ok(out)
}

fn parse_or_explain(name: &str, expr: &str, cat: &Catalogue) -> Result<Objective> {
    Objective::parse(name, expr, cat).map_err(|e| anyhow::anyhow!("{}", e.render(expr)))
}

pub fn run(cmd: ObjectiveCmd) -> Result<()> {
    match cmd {
        ObjectiveCmd::Add {
            name,
            expr,
            replace,
            at,
        } => {
            let root = mount_root(&at.mount)?;
            let o = parse_or_explain(&name, &expr, &catalogue(&root)?)?;
            let key = format!("{OBJ_PREFIX}{name}");
            if !replace && xattr::get(&root, &key)?.is_some() {
                bail!("objective {name} exists; remove it first or pass --replace");
            }
            xattr::set(&root, &key, o.source().as_bytes())?;
            println!("added {name}: {}", o.source());
        }
        ObjectiveCmd::List { at } => {
            let root = mount_root(&at.mount)?;
            for o in objectives(&root, &catalogue(&root)?)? {
                println!("{}\t{}", o.name, o.source());
            }
        }
        ObjectiveCmd::Remove { name, at } => {
            let root = mount_root(&at.mount)?;
            xattr::remove(&root, format!("{OBJ_PREFIX}{name}")).map_err(|_| {
                anyhow::anyhow!("no objective named {name} (see `meridian objective list`)")
            })?;
        }
        ObjectiveCmd::Apply {
            name,
            path,
            recursive,
        } => attach(&name, &path, recursive, true)?,
        ObjectiveCmd::Detach {
            name,
            path,
            recursive,
        } => attach(&name, &path, recursive, false)?,
        ObjectiveCmd::Explain { path } => explain(&path)?,
        ObjectiveCmd::Check { expr, at } => {
            let root = mount_root(&at.mount).ok();
            let cat = match &root {
                Some(r) => catalogue(r)?,
                None => Catalogue::default(),
            };
            let o = parse_or_explain("check", &expr, &cat)?;
            let shares = shares(root.as_deref());
            let warnings = lint::check(&o.stmt, &shares, root.as_deref().and_then(Path::to_str));
            println!("parses: {}", o.source());
            for w in &warnings {
                println!("warning: {w}");
            }
        }
        ObjectiveCmd::Places { names, at } => {
            let root = mount_root(&at.mount)?;
            if names.is_empty() {
                get_list(&root, PLACES)?
                    .iter()
                    .for_each(|p| println!("{p}"));
            } else {
                set_list(&root, PLACES, &names)?;
            }
        }
    }
    Ok(())
}

/// Share names a pattern may start with: `hs-mount` (Hammerspace's examples) and the
/// mount directory's own name.
fn shares(root: Option<&Path>) -> Vec<String> {
    let mut out = vec!["hs-mount".to_string()];
    if let Some(n) = root.and_then(Path::file_name) {
        out.push(n.to_string_lossy().into_owned());
    }
    out
}

fn attach(name: &str, path: &Path, recursive: bool, on: bool) -> Result<()> {
    let root = mount_root(path)?;
    if on && xattr::get(&root, format!("{OBJ_PREFIX}{name}"))?.is_none() {
        bail!(
            "no objective named {name}: add it first with `meridian objective add {name} -e EXPR`"
        );
    }
    let mut todo = vec![path.to_path_buf()];
    while let Some(p) = todo.pop() {
        let mut list = get_list(&p, ATTACHED)?;
        let had = list.iter().any(|n| n == name);
        if on && !had {
            list.push(name.to_string());
        }
        if !on {
            list.retain(|n| n != name);
        }
        if on != had {
            set_list(&p, ATTACHED, &list)?;
        }
        if recursive && std::fs::symlink_metadata(&p)?.is_dir() {
            for e in std::fs::read_dir(&p)? {
                let e = e?;
                if !e.file_type()?.is_symlink() {
                    todo.push(e.path());
                }
            }
        }
    }
    Ok(())
}

fn age(t: std::io::Result<std::time::SystemTime>) -> f64 {
    t.ok()
        .and_then(|t| t.elapsed().ok())
        .map_or(0.0, |d| d.as_secs_f64())
}

fn explain(path: &Path) -> Result<()> {
    let root = mount_root(path)?;
    let abs = std::fs::canonicalize(path)?;
    let rel = abs
        .strip_prefix(&root)
        .unwrap_or(Path::new(""))
        .to_string_lossy()
        .into_owned();
    let cat = catalogue(&root)?;
    let objs = objectives(&root, &cat)?;
    let engine = Engine::new(&objs, &shares(Some(&root))).map_err(|e| anyhow::anyhow!("{e}"))?;
    let md = std::fs::metadata(&abs)?;
    // Nearest level first: the file (or directory) itself, then each directory up to the root.
    let mut attached = vec![(Level::File, get_list(&abs, ATTACHED)?)];
    let mut dir = abs.parent().filter(|_| abs != root).map(Path::to_path_buf);
    if md.is_dir() {
        attached[0].0 = Level::Directory(rel.clone());
    }
    while let Some(d) = dir {
        let drel = d
            .strip_prefix(&root)
            .unwrap_or(Path::new(""))
            .to_string_lossy()
            .into_owned();
        attached.push((Level::Directory(drel), get_list(&d, ATTACHED)?));
        dir = if d == root {
            None
        } else {
            d.parent().map(Path::to_path_buf)
        };
    }
    let (keywords, labels) = (get_list(&abs, KEYWORDS)?, get_list(&abs, LABELS)?);
    let facts = Facts {
        path: &rel,
        size: md.len(),
        last_use_age: age(md.accessed()).min(age(md.modified())),
        last_modified_age: age(md.modified()),
        keywords: &keywords,
        labels: &labels,
        is_live: true,
        is_directory: md.is_dir(),
    };
    let p = engine.evaluate(&facts, &engine.in_force(&attached));
    println!("{rel}");
    if p.slos.is_empty() {
        println!("  placement: none (no objective in force yields an SLO)");
    }
    for d in &p.slos {
        println!(
            "  {}  ← {} ({}, attached at {})",
            d.slo,
            d.objective,
            clause(d.clause),
            d.level
        );
    }
    for (d, by) in &p.overridden {
        println!(
            "  overridden: {} from {} (attached at {}), by {by}",
            d.slo, d.objective, d.level
        );
    }
    for (name, level, c) in &p.evaluated {
        let what = c.map_or("nothing (condition false, no ELSE)", clause);
        println!("  evaluated: {name} at {level}: {what}");
    }
    if let Ok(Some(v)) = xattr::get(&abs, "user.meridian.placement") {
        let recorded = String::from_utf8_lossy(&v)
            .lines()
            .collect::<Vec<_>>()
            .join(", ");
        println!(
            "  recorded by the metaserver: {}",
            if recorded.is_empty() {
                "none"
            } else {
                &recorded
            }
        );
    }
    Ok(())
}

fn clause(c: Clause) -> &'static str {
    match c {
        Clause::Then => "THEN: condition held",
        Clause::Else => "ELSE: condition did not hold",
        Clause::Always => "always",
    }
}

#[derive(Subcommand)]
pub enum TagCmd {
    /// Add words to each PATH
    Add {
        #[arg(required = true)]
        words: Vec<String>,
        #[arg(long = "path", short = 'p', required = true)]
        paths: Vec<PathBuf>,
    },
    /// Remove words from each PATH
    Remove {
        #[arg(required = true)]
        words: Vec<String>,
        #[arg(long = "path", short = 'p', required = true)]
        paths: Vec<PathBuf>,
    },
    /// Print each PATH's words
    List {
        #[arg(required = true)]
        paths: Vec<PathBuf>,
    },
}

/// `meridian keyword …` (attr = KEYWORDS) and `meridian label …` (attr = LABELS).
pub fn tags(cmd: TagCmd, attr: &str) -> Result<()> {
    let check = |w: &String| {
        if w.is_empty() || w.contains(['\n', '\0']) {
            bail!("invalid word {w:?}: words are non-empty and on one line");
        }
        Ok(())
    };
    match cmd {
        TagCmd::Add { words, paths } => {
            words.iter().try_for_each(check)?;
            for p in paths {
                let mut list = get_list(&p, attr)?;
                for w in &words {
                    if !list.contains(w) {
                        list.push(w.clone());
                    }
                }
                set_list(&p, attr, &list)?;
            }
        }
        TagCmd::Remove { words, paths } => {
            for p in paths {
                let mut list = get_list(&p, attr)?;
                list.retain(|w| !words.contains(w));
                set_list(&p, attr, &list)?;
            }
        }
        TagCmd::List { paths } => {
            for p in paths {
                println!("{}: {}", p.display(), get_list(&p, attr)?.join(", "));
            }
        }
    }
    Ok(())
}
