//! The syntax tree of one objective, and how it prints.
//!
//! Invariant: printing then parsing gives back an equal tree (property-tested), so an
//! objective stored as text and one built in memory are interchangeable.

use std::fmt;

/// What `FNMATCH` matches its pattern against.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Subject {
    /// The path relative to the mount root, e.g. `project/PRJ/flame/SH010.clip`.
    Path,
    /// The last component only, e.g. `SH010.clip`.
    Name,
}

/// A numeric fact of a file.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum NumVar {
    Size,
    LastUseAge,
    LastModifiedAge,
}

/// A yes/no fact of a file.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum BoolVar {
    IsLive,
    IsFile,
    IsDirectory,
}

/// Size and time units: bytes (binary multiples) and seconds.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Unit {
    B,
    Kb,
    Mb,
    Gb,
    Tb,
    Seconds,
    Minutes,
    Hours,
    Days,
    Weeks,
}

impl Unit {
    pub const ALL: [Unit; 10] = [
        Unit::B,
        Unit::Kb,
        Unit::Mb,
        Unit::Gb,
        Unit::Tb,
        Unit::Seconds,
        Unit::Minutes,
        Unit::Hours,
        Unit::Days,
        Unit::Weeks,
    ];

    pub fn name(self) -> &'static str {
        match self {
            Unit::B => "B",
            Unit::Kb => "KB",
            Unit::Mb => "MB",
            Unit::Gb => "GB",
            Unit::Tb => "TB",
            Unit::Seconds => "SECONDS",
            Unit::Minutes => "MINUTES",
            Unit::Hours => "HOURS",
            Unit::Days => "DAYS",
            Unit::Weeks => "WEEKS",
        }
    }

    /// Bytes or seconds in one unit. KB is 1024 bytes (as `ls -h` and Flame count).
    pub fn factor(self) -> f64 {
        match self {
            Unit::B | Unit::Seconds => 1.0,
            Unit::Kb => 1024.0,
            Unit::Mb => 1024.0 * 1024.0,
            Unit::Gb => 1024.0 * 1024.0 * 1024.0,
            Unit::Tb => 1024.0 * 1024.0 * 1024.0 * 1024.0,
            Unit::Minutes => 60.0,
            Unit::Hours => 3600.0,
            Unit::Days => 86400.0,
            Unit::Weeks => 7.0 * 86400.0,
        }
    }

    /// The unit a name spells (case-insensitive; singular time units too).
    pub fn parse(s: &str) -> Option<Unit> {
        let up = s.to_ascii_uppercase();
        Unit::ALL.into_iter().find(|u| {
            u.name() == up
                || (u.factor() > 1.0
                    && u.name().len() > 2
                    && u.name().strip_suffix('S') == Some(up.as_str()))
                || (*u == Unit::Seconds && up == "SECOND")
        })
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum CmpOp {
    Lt,
    Le,
    Gt,
    Ge,
    Eq,
    Ne,
}

impl CmpOp {
    pub fn apply(self, a: f64, b: f64) -> bool {
        match self {
            CmpOp::Lt => a < b,
            CmpOp::Le => a <= b,
            CmpOp::Gt => a > b,
            CmpOp::Ge => a >= b,
            CmpOp::Eq => a == b,
            CmpOp::Ne => a != b,
        }
    }

    pub fn symbol(self) -> &'static str {
        match self {
            CmpOp::Lt => "<",
            CmpOp::Le => "<=",
            CmpOp::Gt => ">",
            CmpOp::Ge => ">=",
            CmpOp::Eq => "==",
            CmpOp::Ne => "!=",
        }
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ArOp {
    Add,
    Sub,
    Mul,
    Div,
}

impl ArOp {
    pub fn apply(self, a: f64, b: f64) -> f64 {
        match self {
            ArOp::Add => a + b,
            ArOp::Sub => a - b,
            ArOp::Mul => a * b,
            ArOp::Div => a / b,
        }
    }

    pub fn symbol(self) -> &'static str {
        match self {
            ArOp::Add => "+",
            ArOp::Sub => "-",
            ArOp::Mul => "*",
            ArOp::Div => "/",
        }
    }
}

/// A number-valued expression.
#[derive(Clone, Debug, PartialEq)]
pub enum Num {
    Lit(f64),
    /// A literal written with its unit, `10GB`.
    WithUnit(f64, Unit),
    /// A unit alone, as in `90*DAYS`.
    Unit(Unit),
    Var(NumVar),
    Neg(Box<Num>),
    Arith(ArOp, Box<Num>, Box<Num>),
}

/// A condition.
#[derive(Clone, Debug, PartialEq)]
pub enum Cond {
    Const(bool),
    Var(BoolVar),
    FnMatch(String, Subject),
    HasKeyword(String),
    HasLabel(String),
    Cmp(CmpOp, Num, Num),
    Not(Box<Cond>),
    And(Box<Cond>, Box<Cond>),
    Or(Box<Cond>, Box<Cond>),
}

/// One objective: `IF … THEN {…} [ELSE {…}]`, or SLOs that always apply.
#[derive(Clone, Debug, PartialEq)]
pub enum Stmt {
    If {
        cond: Cond,
        then: Vec<String>,
        els: Option<Vec<String>>,
    },
    Always(Vec<String>),
}

fn quoted(s: &str, q: char) -> String {
    let mut out = String::from(q);
    for c in s.chars() {
        if c == q || c == '\\' {
            out.push('\\');
        }
        out.push(c);
    }
    out.push(q);
    out
}

fn fmt_num(n: f64) -> String {
    if n.fract() == 0.0 && n.abs() < 1e15 {
        format!("{}", n as i64)
    } else {
        format!("{n}")
    }
}

impl fmt::Display for Num {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Num::Lit(n) => write!(f, "{}", fmt_num(*n)),
            Num::WithUnit(n, u) => write!(f, "{}{}", fmt_num(*n), u.name()),
            Num::Unit(u) => write!(f, "{}", u.name()),
            Num::Var(NumVar::Size) => write!(f, "SIZE"),
            Num::Var(NumVar::LastUseAge) => write!(f, "LAST_USE_AGE"),
            Num::Var(NumVar::LastModifiedAge) => write!(f, "LAST_MODIFIED_AGE"),
            Num::Neg(n) => write!(f, "-({n})"),
            Num::Arith(op, a, b) => write!(f, "({a} {} {b})", op.symbol()),
        }
    }
}

impl fmt::Display for Cond {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Cond::Const(b) => write!(f, "{}", if *b { "TRUE" } else { "FALSE" }),
            Cond::Var(BoolVar::IsLive) => write!(f, "IS_LIVE"),
            Cond::Var(BoolVar::IsFile) => write!(f, "IS_FILE"),
            Cond::Var(BoolVar::IsDirectory) => write!(f, "IS_DIRECTORY"),
            Cond::FnMatch(p, s) => {
                let subject = if *s == Subject::Path { "PATH" } else { "NAME" };
                write!(f, "FNMATCH({}, {subject})", quoted(p, '"'))
            }
            Cond::HasKeyword(k) => write!(f, "HAS_KEYWORD({})", quoted(k, '"')),
            Cond::HasLabel(l) => write!(f, "HAS_LABEL({})", quoted(l, '"')),
            Cond::Cmp(op, a, b) => write!(f, "{a} {} {b}", op.symbol()),
            Cond::Not(c) => write!(f, "!({c})"),
            Cond::And(a, b) => write!(f, "({a} && {b})"),
            Cond::Or(a, b) => write!(f, "({a} || {b})"),
        }
    }
}

fn fmt_slos(f: &mut fmt::Formatter<'_>, slos: &[String]) -> fmt::Result {
    let list: Vec<String> = slos
        .iter()
        .map(|s| format!("SLO({})", quoted(s, '\'')))
        .collect();
    write!(f, "{{{}}}", list.join(", "))
}

impl fmt::Display for Stmt {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Stmt::If { cond, then, els } => {
                write!(f, "IF {cond} THEN ")?;
                fmt_slos(f, then)?;
                if let Some(e) = els {
                    write!(f, " ELSE ")?;
                    fmt_slos(f, e)?;
                }
                Ok(())
            }
            Stmt::Always(slos) => {
                let list: Vec<String> = slos
                    .iter()
                    .map(|s| format!("SLO({})", quoted(s, '\'')))
                    .collect();
                write!(f, "{}", list.join(", "))
            }
        }
    }
}
