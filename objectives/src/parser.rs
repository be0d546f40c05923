//! Recursive-descent parser with types: conditions and numbers are told apart while parsing,
//! so `SIZE && IS_FILE` or `IF 3 THEN …` is refused with the position of the culprit.
//!
//! Grammar (keywords case-insensitive; `||` binds loosest):
//!
//! ```text
//! stmt   := IF cond THEN slos [ELSE slos] | slo {, slo}
//! slos   := '{' slo {',' slo} '}' | slo
//! slo    := SLO '(' string ')'
//! cond   := and {'||' and}
//! and    := not {'&&' not}
//! not    := '!' not | cmp
//! cmp    := sum [('<'|'<='|'>'|'>='|'=='|'!=') sum]
//! sum    := prod {('+'|'-') prod}
//! prod   := neg {('*'|'/') neg}
//! neg    := '-' neg | atom
//! atom   := '(' cond ')' | number | UNIT | TRUE | FALSE | SIZE
//!         | number UNIT (also with a space: 30 DAYS) | LAST_USE_AGE | LAST_MODIFIED_AGE | IS_LIVE | IS_FILE | IS_DIRECTORY
//!         | FNMATCH '(' string ',' (PATH|NAME) ')' | HAS_KEYWORD '(' string ')'
//!         | HAS_LABEL '(' string ')'
//! ```
//!
//! Invariant: never panics, and nests at most [`MAX_DEPTH`] deep (fuzzed).

use crate::ast::*;
use crate::error::{ParseError, Pos};
use crate::lexer::{Tok, Token, lex};

/// Deepest nesting accepted (parentheses, `!`, unary minus), so the parser's recursion is
/// bounded whatever the input.
pub const MAX_DEPTH: u32 = 64;

/// A parsed objective and where each SLO name was written (to report unknown ones).
pub struct Parsed {
    pub stmt: Stmt,
    pub slo_positions: Vec<(String, Pos)>,
}

/// Parses one objective.
pub fn parse(src: &str) -> Result<Parsed, ParseError> {
    let toks = lex(src)?;
    let mut p = Parser {
        toks,
        i: 0,
        depth: 0,
        slos: Vec::new(),
    };
    let stmt = p.stmt()?;
    p.expect_eof()?;
    Ok(Parsed {
        stmt,
        slo_positions: p.slos,
    })
}

enum Val {
    C(Cond),
    N(Num),
}

struct Parser {
    toks: Vec<Token>,
    i: usize,
    depth: u32,
    slos: Vec<(String, Pos)>,
}

impl Parser {
    fn peek(&self) -> &Token {
        &self.toks[self.i.min(self.toks.len() - 1)]
    }

    fn next(&mut self) -> Token {
        let t = self.peek().clone();
        if self.i < self.toks.len() - 1 {
            self.i += 1;
        }
        t
    }

    fn err<T>(&self, expected: &str) -> Result<T, ParseError> {
        let t = self.peek();
        Err(ParseError::new(t.pos, expected, t.tok.describe()))
    }

    fn is_word(&self, w: &str) -> bool {
        matches!(&self.peek().tok, Tok::Ident(s) if s.eq_ignore_ascii_case(w))
    }

    fn word(&mut self, w: &str, expected: &str) -> Result<(), ParseError> {
        if self.is_word(w) {
            self.next();
            Ok(())
        } else {
            self.err(expected)
        }
    }

    fn punct(&mut self, t: Tok, expected: &str) -> Result<(), ParseError> {
        if self.peek().tok == t {
            self.next();
            Ok(())
        } else {
            self.err(expected)
        }
    }

    fn string(&mut self, expected: &str) -> Result<String, ParseError> {
        match &self.peek().tok {
            Tok::Str(s) => {
                let s = s.clone();
                self.next();
                Ok(s)
            }
            _ => self.err(expected),
        }
    }

    fn op(&mut self, ops: &[&'static str]) -> Option<&'static str> {
        match self.peek().tok {
            Tok::Op(o) if ops.contains(&o) => {
                self.next();
                Some(o)
            }
            _ => None,
        }
    }

    fn expect_eof(&mut self) -> Result<(), ParseError> {
        if self.peek().tok == Tok::Eof {
            Ok(())
        } else {
            self.err("the end of the objective")
        }
    }

    fn stmt(&mut self) -> Result<Stmt, ParseError> {
        if self.is_word("IF") {
            self.next();
            let cond = self.cond()?;
            self.word("THEN", "THEN")?;
            let then = self.slos()?;
            let els = if self.is_word("ELSE") {
                self.next();
                Some(self.slos()?)
            } else {
                None
            };
            return Ok(Stmt::If { cond, then, els });
        }
        if !self.is_word("SLO") {
            return self.err("IF or SLO(...)");
        }
        let mut slos = vec![self.slo()?];
        while self.peek().tok == Tok::Comma {
            self.next();
            slos.push(self.slo()?);
        }
        Ok(Stmt::Always(slos))
    }

    fn slos(&mut self) -> Result<Vec<String>, ParseError> {
        if self.peek().tok != Tok::LBrace {
            return Ok(vec![self.slo()?]);
        }
        self.next();
        let mut out = vec![self.slo()?];
        while self.peek().tok == Tok::Comma {
            self.next();
            out.push(self.slo()?);
        }
        self.punct(Tok::RBrace, "`,` or `}`")?;
        Ok(out)
    }

    fn slo(&mut self) -> Result<String, ParseError> {
        self.word("SLO", "SLO('name')")?;
        self.punct(Tok::LParen, "`(` after SLO")?;
        let pos = self.peek().pos;
        let name = self.string("the SLO's name in quotes, e.g. SLO('keep-online')")?;
        self.punct(Tok::RParen, "`)`")?;
        self.slos.push((name.clone(), pos));
        Ok(name)
    }

    fn cond(&mut self) -> Result<Cond, ParseError> {
        let pos = self.peek().pos;
        let v = self.or()?;
        self.want_cond(v, pos)
    }

    fn want_cond(&self, v: Val, pos: Pos) -> Result<Cond, ParseError> {
        match v {
            Val::C(c) => Ok(c),
            Val::N(n) => Err(ParseError::new(
                pos,
                "a condition (a comparison such as SIZE > 1GB, FNMATCH(...), IS_FILE, ...)",
                format!("the number `{n}`"),
            )),
        }
    }

    fn want_num(&self, v: Val, pos: Pos) -> Result<Num, ParseError> {
        match v {
            Val::N(n) => Ok(n),
            Val::C(c) => Err(ParseError::new(
                pos,
                "a number (SIZE, an age, or a number with a unit)",
                format!("the condition `{c}`"),
            )),
        }
    }

    fn or(&mut self) -> Result<Val, ParseError> {
        let pos = self.peek().pos;
        let mut v = self.and()?;
        while self.op(&["||"]).is_some() {
            let a = self.want_cond(v, pos)?;
            let rpos = self.peek().pos;
            let r = self.and()?;
            let b = self.want_cond(r, rpos)?;
            v = Val::C(Cond::Or(Box::new(a), Box::new(b)));
        }
        Ok(v)
    }

    fn and(&mut self) -> Result<Val, ParseError> {
        let pos = self.peek().pos;
        let mut v = self.not()?;
        while self.op(&["&&"]).is_some() {
            let a = self.want_cond(v, pos)?;
            let rpos = self.peek().pos;
            let r = self.not()?;
            let b = self.want_cond(r, rpos)?;
            v = Val::C(Cond::And(Box::new(a), Box::new(b)));
        }
        Ok(v)
    }

    fn deeper(&mut self) -> Result<(), ParseError> {
        self.depth += 1;
        if self.depth > MAX_DEPTH {
            return self.err("less nesting (at most 64 levels)");
        }
        Ok(())
    }

    fn not(&mut self) -> Result<Val, ParseError> {
        if self.op(&["!"]).is_some() {
            self.deeper()?;
            let pos = self.peek().pos;
            let v = self.not()?;
            self.depth -= 1;
            return Ok(Val::C(Cond::Not(Box::new(self.want_cond(v, pos)?))));
        }
        self.cmp()
    }

    fn cmp(&mut self) -> Result<Val, ParseError> {
        let pos = self.peek().pos;
        let v = self.sum()?;
        let Some(op) = self.op(&["<=", ">=", "==", "!=", "<", ">"]) else {
            return Ok(v);
        };
        let a = self.want_num(v, pos)?;
        let rpos = self.peek().pos;
        let r = self.sum()?;
        let b = self.want_num(r, rpos)?;
        let op = match op {
            "<" => CmpOp::Lt,
            "<=" => CmpOp::Le,
            ">" => CmpOp::Gt,
            ">=" => CmpOp::Ge,
            "==" => CmpOp::Eq,
            _ => CmpOp::Ne,
        };
        Ok(Val::C(Cond::Cmp(op, a, b)))
    }

    fn sum(&mut self) -> Result<Val, ParseError> {
        self.arith(&["+", "-"], Self::prod)
    }

    fn prod(&mut self) -> Result<Val, ParseError> {
        self.arith(&["*", "/"], Self::neg)
    }

    fn arith(
        &mut self,
        ops: &[&'static str],
        operand: fn(&mut Self) -> Result<Val, ParseError>,
    ) -> Result<Val, ParseError> {
        let pos = self.peek().pos;
        let mut v = operand(self)?;
        while let Some(op) = self.op(ops) {
            let a = self.want_num(v, pos)?;
            let rpos = self.peek().pos;
            let r = operand(self)?;
            let b = self.want_num(r, rpos)?;
            let op = match op {
                "+" => ArOp::Add,
                "-" => ArOp::Sub,
                "*" => ArOp::Mul,
                _ => ArOp::Div,
            };
            v = Val::N(Num::Arith(op, Box::new(a), Box::new(b)));
        }
        Ok(v)
    }

    fn neg(&mut self) -> Result<Val, ParseError> {
        if self.op(&["-"]).is_some() {
            self.deeper()?;
            let pos = self.peek().pos;
            let v = self.neg()?;
            self.depth -= 1;
            return Ok(Val::N(Num::Neg(Box::new(self.want_num(v, pos)?))));
        }
        self.atom()
    }

    fn atom(&mut self) -> Result<Val, ParseError> {
        let t = self.peek().clone();
        match t.tok {
            Tok::LParen => {
                self.next();
                self.deeper()?;
                let v = self.or()?;
                self.depth -= 1;
                self.punct(Tok::RParen, "`)`")?;
                Ok(v)
            }
            Tok::Num(n) => {
                self.next();
                // `30 DAYS` reads as `30DAYS`.
                let unit = match &self.peek().tok {
                    Tok::Ident(w) => Unit::parse(w),
                    _ => None,
                };
                if let Some(u) = unit {
                    self.next();
                    return Ok(Val::N(Num::WithUnit(n, u)));
                }
                Ok(Val::N(Num::Lit(n)))
            }
            Tok::NumUnit(n, u) => match Unit::parse(&u) {
                Some(unit) => {
                    self.next();
                    Ok(Val::N(Num::WithUnit(n, unit)))
                }
                None => Err(ParseError::new(
                    t.pos,
                    "a unit (B, KB, MB, GB, TB, SECONDS, MINUTES, HOURS, DAYS, WEEKS)",
                    format!("`{u}`"),
                )),
            },
            Tok::Ident(ref w) => self.named(w.to_ascii_uppercase(), t.pos),
            _ => self.err("a condition or a number"),
        }
    }

    fn named(&mut self, w: String, pos: Pos) -> Result<Val, ParseError> {
        let simple = match w.as_str() {
            "TRUE" => Some(Val::C(Cond::Const(true))),
            "FALSE" => Some(Val::C(Cond::Const(false))),
            "SIZE" => Some(Val::N(Num::Var(NumVar::Size))),
            "LAST_USE_AGE" => Some(Val::N(Num::Var(NumVar::LastUseAge))),
            "LAST_MODIFIED_AGE" => Some(Val::N(Num::Var(NumVar::LastModifiedAge))),
            "IS_LIVE" => Some(Val::C(Cond::Var(BoolVar::IsLive))),
            "IS_FILE" => Some(Val::C(Cond::Var(BoolVar::IsFile))),
            "IS_DIRECTORY" => Some(Val::C(Cond::Var(BoolVar::IsDirectory))),
            _ => Unit::parse(&w).map(|u| Val::N(Num::Unit(u))),
        };
        if let Some(v) = simple {
            self.next();
            return Ok(v);
        }
        match w.as_str() {
            "FNMATCH" => {
                self.next();
                self.punct(Tok::LParen, "`(` after FNMATCH")?;
                let pat = self.string("a pattern in quotes, e.g. \"project/*/flame/*.clip\"")?;
                self.punct(Tok::Comma, "`,` and then PATH or NAME")?;
                let subject = if self.is_word("PATH") {
                    Subject::Path
                } else if self.is_word("NAME") {
                    Subject::Name
                } else {
                    return self.err("PATH or NAME");
                };
                self.next();
                self.punct(Tok::RParen, "`)`")?;
                Ok(Val::C(Cond::FnMatch(pat, subject)))
            }
            "HAS_KEYWORD" | "HAS_LABEL" => {
                self.next();
                self.punct(Tok::LParen, &format!("`(` after {w}"))?;
                let s = self.string("a name in quotes")?;
                self.punct(Tok::RParen, "`)`")?;
                Ok(Val::C(if w == "HAS_KEYWORD" {
                    Cond::HasKeyword(s)
                } else {
                    Cond::HasLabel(s)
                }))
            }
            _ => Err(ParseError::new(
                pos,
                "a condition or a number (FNMATCH, SIZE, LAST_USE_AGE, LAST_MODIFIED_AGE, \
                 HAS_KEYWORD, HAS_LABEL, IS_LIVE, IS_FILE, IS_DIRECTORY, a unit)",
                format!("`{w}`"),
            )),
        }
    }
}
