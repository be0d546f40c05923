//! FNMATCH: what a pattern means, decided once and compiled into one globset.
//!
//! Semantics (documented in docs/objectives.md, tested below):
//! - PATH is the path relative to the mount root, without a leading `/`:
//!   `project/PRJ/flame/SH010.clip`. NAME is its last component: `SH010.clip`.
//! - A pattern's leading `./` or `/` is dropped, and so is a leading share name the
//!   deployment declares (`./hs-mount/project/...` with share `hs-mount`), so objectives
//!   written for Hammerspace shares work unchanged.
//! - `*` matches any run of characters *including* `/`, as fnmatch(3) without FNM_PATHNAME
//!   does (what Hammerspace evaluates): `project/*/flame/*.clip` matches
//!   `project/PRJ/flame/SH010.clip` and also clips in folders below `flame`, which is what a
//!   TD means by it. `**` means the same as `*`. `?` is any one character, `[...]` a class,
//!   `\` escapes. Matching is case-sensitive and anchored at both ends.
//!
//! Owns: [`normalize`] and [`PatternSet`]: every pattern of every objective is translated
//! by globset (so the syntax is globset's) and the translations compiled together into one
//! multi-pattern automaton per subject, so matching a path is one pass over it however many
//! rules there are (globset's own `GlobSet` runs one regex per pattern that shares an
//! extension, which grows with the rules).

use crate::ast::Subject;
use crate::error::ObjectiveError;
use globset::GlobBuilder;
use regex_automata::meta::Regex;
use regex_automata::{Input, MatchKind, PatternSet as Hits};

/// The pattern as it is matched against a mount-relative path.
pub fn normalize<'a>(pattern: &'a str, shares: &[String]) -> &'a str {
    let mut p = pattern;
    loop {
        let before = p;
        p = p.strip_prefix("./").unwrap_or(p);
        p = p.trim_start_matches('/');
        if before == p {
            break;
        }
    }
    for s in shares {
        if let Some(rest) = p.strip_prefix(s.as_str()).and_then(|r| r.strip_prefix('/')) {
            return rest;
        }
    }
    p
}

fn glob(pattern: &str) -> Result<globset::Glob, ObjectiveError> {
    GlobBuilder::new(pattern)
        .literal_separator(false)
        .backslash_escape(true)
        .case_insensitive(false)
        .build()
        .map_err(|e| ObjectiveError::Pattern {
            pattern: pattern.to_string(),
            why: e.kind().to_string(),
        })
}

/// Checks that a pattern compiles.
pub fn validate(pattern: &str) -> Result<(), ObjectiveError> {
    glob(pattern).map(|_| ())
}

/// All patterns, indexed in the order they were added.
pub struct PatternSet {
    path: Option<Regex>,
    name: Option<Regex>,
    /// Pattern index of each regex in the PATH set and in the NAME set.
    by_path: Vec<usize>,
    by_name: Vec<usize>,
    slots: usize,
}

/// Which patterns a path matched (one bit per pattern index).
#[derive(Clone, Debug, Default)]
pub struct Matched(Vec<u64>);

impl Matched {
    pub fn get(&self, i: usize) -> bool {
        self.0.get(i / 64).is_some_and(|w| w & (1 << (i % 64)) != 0)
    }
    fn set(&mut self, i: usize) {
        if self.0.len() <= i / 64 {
            self.0.resize(i / 64 + 1, 0);
        }
        self.0[i / 64] |= 1 << (i % 64);
    }
}

fn automaton(regexes: &[String]) -> Result<Option<Regex>, ObjectiveError> {
    if regexes.is_empty() {
        return Ok(None);
    }
    Regex::builder()
        .configure(Regex::config().match_kind(MatchKind::All))
        .syntax(regex_automata::util::syntax::Config::new().utf8(false))
        .build_many(regexes)
        .map(Some)
        .map_err(|e| ObjectiveError::Pattern {
            pattern: String::new(),
            why: e.to_string(),
        })
}

fn hits_into(re: &Option<Regex>, hay: &str, map: &[usize], m: &mut Matched) {
    let Some(re) = re else { return };
    let mut hits = Hits::new(re.pattern_len());
    re.which_overlapping_matches(&Input::new(hay), &mut hits);
    for k in hits.iter() {
        m.set(map[k.as_usize()]);
    }
}

impl PatternSet {
    /// Compiles already-normalized patterns.
    pub fn new(patterns: &[(String, Subject)]) -> Result<PatternSet, ObjectiveError> {
        let (mut path, mut name) = (Vec::new(), Vec::new());
        let (mut by_path, mut by_name) = (Vec::new(), Vec::new());
        for (i, (p, s)) in patterns.iter().enumerate() {
            let re = glob(p)?.regex().to_string();
            match s {
                Subject::Path => {
                    path.push(re);
                    by_path.push(i);
                }
                Subject::Name => {
                    name.push(re);
                    by_name.push(i);
                }
            }
        }
        Ok(PatternSet {
            path: automaton(&path)?,
            name: automaton(&name)?,
            by_path,
            by_name,
            slots: patterns.len(),
        })
    }

    /// Matches `path` (mount-relative) against every pattern at once.
    pub fn matches(&self, path: &str) -> Matched {
        let mut m = Matched(vec![0; self.slots.div_ceil(64)]);
        hits_into(&self.path, path, &self.by_path, &mut m);
        let name = path.rsplit('/').next().unwrap_or(path);
        hits_into(&self.name, name, &self.by_name, &mut m);
        m
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn one(p: &str, subject: Subject, path: &str) -> bool {
        let set = PatternSet::new(&[(normalize(p, &["hs-mount".into()]).into(), subject)]).unwrap();
        set.matches(path).get(0)
    }

    #[test]
    fn the_semantics_in_the_docs() {
        let clip = "./hs-mount/project/*/flame/*.clip";
        assert!(one(clip, Subject::Path, "project/PRJ/flame/SH010.clip"));
        assert!(one(
            clip,
            Subject::Path,
            "project/PRJ/flame/SH010/v002/SH010.clip"
        ));
        assert!(one(
            "project/*/flame/*.clip",
            Subject::Path,
            "project/PRJ/flame/SH010.clip"
        ));
        assert!(!one(
            clip,
            Subject::Path,
            "project/PRJ/flame/SH010.clip.bak"
        ));
        assert!(!one(
            clip,
            Subject::Path,
            "old/project/PRJ/flame/SH010.clip"
        ));
        assert!(!one(clip, Subject::Path, "project/PRJ/nuke/SH010.clip"));
        assert!(!one(
            "project/*/FLAME/*.clip",
            Subject::Path,
            "project/PRJ/flame/a.clip"
        ));
        assert!(one(
            "/project/**/*.exr",
            Subject::Path,
            "project/PRJ/renders/a.1001.exr"
        ));
        assert!(one(
            "*.exr",
            Subject::Name,
            "project/PRJ/renders/a.1001.exr"
        ));
        assert!(!one(
            "renders/*.exr",
            Subject::Name,
            "project/PRJ/renders/a.1001.exr"
        ));
        assert!(one("shot.100?.exr", Subject::Name, "a/shot.1001.exr"));
        assert!(one("shot.[0-9]*.dpx", Subject::Name, "a/shot.1001.dpx"));
        assert!(one("a\\*b", Subject::Name, "x/a*b"));
        assert!(!one("a\\*b", Subject::Name, "x/axxb"));
    }

    #[test]
    fn normalization() {
        let shares = ["hs-mount".to_string()];
        assert_eq!(normalize("./hs-mount/p/*.clip", &shares), "p/*.clip");
        assert_eq!(normalize("/p/x", &shares), "p/x");
        assert_eq!(normalize("././p", &shares), "p");
        assert_eq!(normalize("hs-mountain/p", &shares), "hs-mountain/p");
    }
}
