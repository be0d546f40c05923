//! `meridian objective check`: warnings about objectives that parse but cannot do what
//! their author meant: an ELSE (or THEN) that can never apply, and FNMATCH patterns that can
//! never match a path under the mount.
//!
//! Owns: constant folding of conditions (facts are unknown, but sizes and ages are never
//! negative) and the pattern checks. Pure; warnings only, never errors.

use crate::ast::{CmpOp, Cond, Num, Stmt, Subject};
use crate::pattern::normalize;

/// Every FNMATCH pattern of a statement, in source order.
pub fn patterns(stmt: &Stmt) -> impl Iterator<Item = (&str, Subject)> {
    let mut out = Vec::new();
    if let Stmt::If { cond, .. } = stmt {
        collect(cond, &mut out);
    }
    out.into_iter()
}

fn collect<'a>(c: &'a Cond, out: &mut Vec<(&'a str, Subject)>) {
    match c {
        Cond::FnMatch(p, s) => out.push((p, *s)),
        Cond::Not(a) => collect(a, out),
        Cond::And(a, b) | Cond::Or(a, b) => {
            collect(a, out);
            collect(b, out);
        }
        _ => {}
    }
}

/// The value of a number if it does not depend on the file.
fn const_num(n: &Num) -> Option<f64> {
    match n {
        Num::Lit(v) => Some(*v),
        Num::WithUnit(v, u) => Some(v * u.factor()),
        Num::Unit(u) => Some(u.factor()),
        Num::Var(_) => None,
        Num::Neg(a) => const_num(a).map(|v| -v),
        Num::Arith(op, a, b) => Some(op.apply(const_num(a)?, const_num(b)?)),
    }
}

/// The value of a condition if it is the same for every file.
pub fn constant(c: &Cond) -> Option<bool> {
    match c {
        Cond::Const(b) => Some(*b),
        Cond::Not(a) => constant(a).map(|v| !v),
        Cond::And(a, b) => match (constant(a), constant(b)) {
            (Some(false), _) | (_, Some(false)) => Some(false),
            (Some(true), Some(true)) => Some(true),
            _ => None,
        },
        Cond::Or(a, b) => match (constant(a), constant(b)) {
            (Some(true), _) | (_, Some(true)) => Some(true),
            (Some(false), Some(false)) => Some(false),
            _ => None,
        },
        Cond::Cmp(op, a, b) => match (const_num(a), const_num(b)) {
            (Some(a), Some(b)) => Some(op.apply(a, b)),
            // A fact (never negative) against a constant at or below zero.
            (None, Some(k)) if matches!(a, Num::Var(_)) => match op {
                CmpOp::Ge if k <= 0.0 => Some(true),
                CmpOp::Gt if k < 0.0 => Some(true),
                CmpOp::Lt if k <= 0.0 => Some(false),
                CmpOp::Le if k < 0.0 => Some(false),
                _ => None,
            },
            _ => None,
        },
        _ => None,
    }
}

/// Warnings for one objective. `shares` are the declared share names; `mountpoint` is where
/// the namespace is mounted on this host, if known (to catch host paths in patterns).
pub fn check(stmt: &Stmt, shares: &[String], mountpoint: Option<&str>) -> Vec<String> {
    let mut out = Vec::new();
    if let Stmt::If { cond, els, .. } = stmt {
        match constant(cond) {
            Some(true) if els.is_some() => {
                out.push("the ELSE can never apply: the condition holds for every file".into())
            }
            Some(true) => out.push(
                "the condition holds for every file: write the SLOs alone, without IF".into(),
            ),
            Some(false) => {
                out.push("the THEN can never apply: the condition holds for no file".into())
            }
            None => {}
        }
    }
    for (p, subject) in patterns(stmt) {
        out.extend(check_pattern(p, subject, shares, mountpoint));
    }
    out
}

fn check_pattern(
    p: &str,
    subject: Subject,
    shares: &[String],
    mountpoint: Option<&str>,
) -> Vec<String> {
    let mut out = Vec::new();
    let n = normalize(p, shares);
    if subject == Subject::Name && p.contains('/') {
        out.push(format!(
            "FNMATCH({p:?}, NAME) can never match: a name has no '/'; match PATH instead"
        ));
        return out;
    }
    if let Some(mp) = mountpoint
        .map(|m| m.trim_matches('/'))
        .filter(|m| !m.is_empty())
        && n.starts_with(&format!("{mp}/"))
    {
        out.push(format!(
            "{p:?} names this host's mount point: PATH is relative to the mount root, write {:?}",
            &n[mp.len() + 1..]
        ));
    }
    if n.starts_with("../") || n.contains("/../") || n == ".." {
        out.push(format!(
            "{p:?} can never match: paths under the mount have no '..'"
        ));
    }
    if n.contains("//") || (n.ends_with('/') && !n.is_empty()) {
        out.push(format!(
            "{p:?} can never match: paths have no empty components or trailing '/'"
        ));
    }
    if let Some(first) = p.strip_prefix("./").and_then(|r| r.split('/').next())
        && !first.contains(['*', '?', '['])
        && !shares.iter().any(|s| s == first)
        && p.matches('/').count() > 1
    {
        out.push(format!(
            "{first:?} is not a declared share name, so {p:?} only matches under a directory \
             named {first:?} at the mount root (declare the share to strip it)"
        ));
    }
    out
}
