//! Evaluation: from the facts of a file and the objectives in force, its placement and why.
//!
//! Precedence (docs/objectives.md):
//! 1. Objectives attached to the file come first, then those of its directory, then of each
//!    ancestor up to the share root (inherited below where they are attached).
//! 2. At one level, objectives apply in the order they were attached.
//! 3. Each objective yields its THEN SLOs if its condition holds, its ELSE SLOs if not (none
//!    without ELSE); a bare `SLO(...)` always yields.
//! 4. An SLO is kept unless it conflicts with one kept before it (see
//!    [`Slo::conflicts`](crate::Slo::conflicts)): so a nearer level overrides a farther one
//!    and, at one level, the earlier attachment wins. An SLO already kept is not repeated.
//!
//! Owns: [`Engine`] (every known objective compiled, all patterns in one globset) and
//! [`Placement`] (the SLOs with the objective, level and clause that decided each).
//! Invariant: pure; evaluating never fails and never allocates per objective.

use crate::Objective;
use crate::ast::{ArOp, BoolVar, CmpOp, Cond, Num, NumVar, Stmt, Subject};
use crate::error::ObjectiveError;
use crate::pattern::{Matched, PatternSet, normalize};
use crate::slo::Slo;
use std::collections::HashMap;

/// The facts an objective can test, for one file or directory.
#[derive(Clone, Debug, Default)]
pub struct Facts<'a> {
    /// Relative to the mount root, no leading `/`.
    pub path: &'a str,
    pub size: u64,
    /// Seconds since last read or write.
    pub last_use_age: f64,
    /// Seconds since last modification.
    pub last_modified_age: f64,
    pub keywords: &'a [String],
    pub labels: &'a [String],
    /// In the live namespace (not a snapshot).
    pub is_live: bool,
    pub is_directory: bool,
}

/// Where an objective is attached.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Level {
    File,
    /// A directory, by its mount-relative path (`""` is the share root).
    Directory(String),
}

impl std::fmt::Display for Level {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Level::File => write!(f, "the file itself"),
            Level::Directory(d) if d.is_empty() => write!(f, "the share root"),
            Level::Directory(d) => write!(f, "directory {d}/"),
        }
    }
}

/// Which clause of an objective produced an SLO.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Clause {
    Then,
    Else,
    Always,
}

/// One SLO and what decided it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Decision {
    pub slo: Slo,
    pub objective: String,
    pub level: Level,
    pub clause: Clause,
}

/// The effective placement of a file and its explanation.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Placement {
    /// The SLOs that apply, in precedence order.
    pub slos: Vec<Decision>,
    /// SLOs an objective yielded but a kept one overrode: (yielded, the kept one).
    pub overridden: Vec<(Decision, Slo)>,
    /// Every objective evaluated: (name, level, the clause taken; `None` if it yielded
    /// nothing).
    pub evaluated: Vec<(String, Level, Option<Clause>)>,
}

/// Compiled form of a condition: patterns by index, units folded.
enum C {
    Const(bool),
    Var(BoolVar),
    Pat(usize),
    Kw(String),
    Label(String),
    Cmp(CmpOp, N, N),
    Not(Box<C>),
    And(Box<C>, Box<C>),
    Or(Box<C>, Box<C>),
}

enum N {
    Lit(f64),
    Var(NumVar),
    Neg(Box<N>),
    Ar(ArOp, Box<N>, Box<N>),
}

struct Compiled {
    name: String,
    cond: Option<C>,
    /// A pattern that must match for the condition to hold (a positive FNMATCH in its
    /// top-level conjunction): when it did not, the condition is false without evaluation.
    guard: Option<usize>,
    then: Vec<Slo>,
    els: Vec<Slo>,
}

/// The objectives in force for a file, resolved to the engine's indices: nearest level
/// first, each with its objectives in attachment order. Build it once per directory and
/// reuse it for every file below.
#[derive(Clone, Debug, Default)]
pub struct InForce(Vec<(Level, Vec<usize>)>);

/// Every known objective, compiled.
pub struct Engine {
    objectives: Vec<Compiled>,
    by_name: HashMap<String, usize>,
    patterns: PatternSet,
}

fn compile_num(n: &Num) -> N {
    match n {
        Num::Lit(v) => N::Lit(*v),
        Num::WithUnit(v, u) => N::Lit(v * u.factor()),
        Num::Unit(u) => N::Lit(u.factor()),
        Num::Var(v) => N::Var(*v),
        Num::Neg(a) => N::Neg(Box::new(compile_num(a))),
        Num::Arith(op, a, b) => N::Ar(*op, Box::new(compile_num(a)), Box::new(compile_num(b))),
    }
}

struct Patterns<'a> {
    list: Vec<(String, Subject)>,
    index: HashMap<(String, Subject), usize>,
    shares: &'a [String],
}

impl Patterns<'_> {
    fn add(&mut self, p: &str, s: Subject) -> usize {
        let p = normalize(p, self.shares).to_string();
        let next = self.list.len();
        *self.index.entry((p.clone(), s)).or_insert_with(|| {
            self.list.push((p, s));
            next
        })
    }
}

fn compile_cond(c: &Cond, pats: &mut Patterns) -> C {
    match c {
        Cond::Const(b) => C::Const(*b),
        Cond::Var(v) => C::Var(*v),
        Cond::FnMatch(p, s) => C::Pat(pats.add(p, *s)),
        Cond::HasKeyword(k) => C::Kw(k.clone()),
        Cond::HasLabel(l) => C::Label(l.clone()),
        Cond::Cmp(op, a, b) => C::Cmp(*op, compile_num(a), compile_num(b)),
        Cond::Not(a) => C::Not(Box::new(compile_cond(a, pats))),
        Cond::And(a, b) => C::And(
            Box::new(compile_cond(a, pats)),
            Box::new(compile_cond(b, pats)),
        ),
        Cond::Or(a, b) => C::Or(
            Box::new(compile_cond(a, pats)),
            Box::new(compile_cond(b, pats)),
        ),
    }
}

fn guard_of(c: &C) -> Option<usize> {
    match c {
        C::Pat(i) => Some(*i),
        C::And(a, b) => guard_of(a).or_else(|| guard_of(b)),
        _ => None,
    }
}

impl Engine {
    /// Compiles objectives; `shares` are the share names a pattern may start with.
    pub fn new(objectives: &[Objective], shares: &[String]) -> Result<Engine, ObjectiveError> {
        let mut pats = Patterns {
            list: Vec::new(),
            index: HashMap::new(),
            shares,
        };
        let mut compiled = Vec::with_capacity(objectives.len());
        let mut by_name = HashMap::new();
        for o in objectives {
            let (cond, then, els) = match &o.stmt {
                Stmt::If { cond, .. } => (Some(compile_cond(cond, &mut pats)), &o.then, &o.els),
                Stmt::Always(_) => (None, &o.then, &o.els),
            };
            by_name.insert(o.name.clone(), compiled.len());
            compiled.push(Compiled {
                name: o.name.clone(),
                guard: cond.as_ref().and_then(guard_of),
                cond,
                then: then.clone(),
                els: els.clone(),
            });
        }
        Ok(Engine {
            objectives: compiled,
            by_name,
            patterns: PatternSet::new(&pats.list)?,
        })
    }

    /// Whether an objective of this name is known.
    pub fn knows(&self, name: &str) -> bool {
        self.by_name.contains_key(name)
    }

    /// Resolves attachments: nearest level first, each level with the names of the
    /// objectives attached there in attachment order. Unknown names are skipped (an
    /// objective removed while still attached).
    pub fn in_force(&self, attached: &[(Level, Vec<String>)]) -> InForce {
        InForce(
            attached
                .iter()
                .map(|(level, names)| {
                    let ids = names.iter().filter_map(|n| self.by_name.get(n).copied());
                    (level.clone(), ids.collect())
                })
                .collect(),
        )
    }

    /// The placement of a file, with its explanation.
    pub fn evaluate(&self, facts: &Facts, in_force: &InForce) -> Placement {
        let matched = self.patterns.matches(facts.path);
        let mut out = Placement::default();
        for (level, ids) in &in_force.0 {
            for &i in ids {
                let o = &self.objectives[i];
                let (clause, slos) = self.outcome(o, facts, &matched);
                out.evaluated.push((o.name.clone(), level.clone(), clause));
                let Some(clause) = clause else { continue };
                for slo in slos {
                    keep(
                        &mut out,
                        Decision {
                            slo: slo.clone(),
                            objective: o.name.clone(),
                            level: level.clone(),
                            clause,
                        },
                    );
                }
            }
        }
        out
    }

    /// Just the SLOs, for hot paths (no explanation is built).
    pub fn slos(&self, facts: &Facts, in_force: &InForce) -> Vec<&Slo> {
        let matched = self.patterns.matches(facts.path);
        let mut kept: Vec<&Slo> = Vec::new();
        for (_, ids) in &in_force.0 {
            for &i in ids {
                let (_, slos) = self.outcome(&self.objectives[i], facts, &matched);
                for slo in slos {
                    if !kept.iter().any(|k| *k == slo || k.conflicts(slo)) {
                        kept.push(slo);
                    }
                }
            }
        }
        kept
    }

    fn outcome<'e>(&self, o: &'e Compiled, f: &Facts, m: &Matched) -> (Option<Clause>, &'e [Slo]) {
        let Some(cond) = &o.cond else {
            return (Some(Clause::Always), &o.then);
        };
        let holds = o.guard.is_none_or(|g| m.get(g)) && eval(cond, f, m);
        match (holds, o.els.is_empty()) {
            (true, _) => (Some(Clause::Then), &o.then),
            (false, false) => (Some(Clause::Else), &o.els),
            (false, true) => (None, &[]),
        }
    }
}

fn keep(out: &mut Placement, d: Decision) {
    if out.slos.iter().any(|k| k.slo == d.slo) {
        return;
    }
    if let Some(k) = out.slos.iter().find(|k| k.slo.conflicts(&d.slo)) {
        let by = k.slo.clone();
        out.overridden.push((d, by));
        return;
    }
    out.slos.push(d);
}

fn eval(c: &C, f: &Facts, m: &Matched) -> bool {
    match c {
        C::Const(b) => *b,
        C::Var(BoolVar::IsLive) => f.is_live,
        C::Var(BoolVar::IsFile) => !f.is_directory,
        C::Var(BoolVar::IsDirectory) => f.is_directory,
        C::Pat(i) => m.get(*i),
        C::Kw(k) => f.keywords.iter().any(|x| x == k),
        C::Label(l) => f.labels.iter().any(|x| x == l),
        C::Cmp(op, a, b) => op.apply(num(a, f), num(b, f)),
        C::Not(a) => !eval(a, f, m),
        C::And(a, b) => eval(a, f, m) && eval(b, f, m),
        C::Or(a, b) => eval(a, f, m) || eval(b, f, m),
    }
}

fn num(n: &N, f: &Facts) -> f64 {
    match n {
        N::Lit(v) => *v,
        N::Var(NumVar::Size) => f.size as f64,
        N::Var(NumVar::LastUseAge) => f.last_use_age,
        N::Var(NumVar::LastModifiedAge) => f.last_modified_age,
        N::Neg(a) => -num(a, f),
        N::Ar(op, a, b) => op.apply(num(a, f), num(b, f)),
    }
}
