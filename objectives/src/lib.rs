//! Meridian's objective language: Hammerspace-style placement rules, pure (no I/O, no
//! async), so the client, the metaserver and the command line share one implementation.
//!
//! ```text
//! IF FNMATCH("project/*/flame/*.clip", PATH) THEN {SLO('place-on-local-volumes')}
//! IF LAST_MODIFIED_AGE > 30*DAYS && FNMATCH("*.exr", NAME)
//!     THEN {SLO('place-on-shared-object-volumes')} ELSE {SLO('keep-online')}
//! ```
//!
//! Layout: [`lexer`] → [`parser`] (typed recursive descent, errors with line, column and
//! caret) → [`ast`] (prints back to source); [`slo`] (the catalogue of known SLOs);
//! [`pattern`] (FNMATCH semantics, one globset for all patterns); [`eval`] (precedence and
//! explanations); [`lint`] (`meridian objective check`).

pub mod ast;
pub mod error;
pub mod eval;
pub mod lexer;
pub mod lint;
pub mod parser;
pub mod pattern;
pub mod slo;

pub use error::{ObjectiveError, ParseError, Pos};
pub use eval::{Clause, Decision, Engine, Facts, InForce, Level, Placement};
pub use slo::{Catalogue, Slo};

/// A named, parsed objective whose SLOs are all known.
#[derive(Clone, Debug, PartialEq)]
pub struct Objective {
    pub name: String,
    pub stmt: ast::Stmt,
    /// SLOs when the condition holds (or always, for a bare statement).
    pub then: Vec<Slo>,
    /// SLOs when it does not.
    pub els: Vec<Slo>,
}

/// Whether `name` can name an objective: letters, digits, `-`, `_`, `.`; 1 to 64 long.
pub fn valid_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 64
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'))
}

impl Objective {
    /// Parses `src` and checks its SLOs and patterns against the catalogue.
    pub fn parse(
        name: &str,
        src: &str,
        catalogue: &Catalogue,
    ) -> Result<Objective, ObjectiveError> {
        if !valid_name(name) {
            return Err(ObjectiveError::BadName(name.to_string()));
        }
        let parsed = parser::parse(src)?;
        for (slo, pos) in &parsed.slo_positions {
            if catalogue.lookup(slo).is_none() {
                return Err(ObjectiveError::UnknownSlo {
                    name: slo.clone(),
                    pos: *pos,
                    known: catalogue.known(),
                });
            }
        }
        lint::patterns(&parsed.stmt).try_for_each(|(p, _)| pattern::validate(p))?;
        let resolve = |names: &[String]| -> Vec<Slo> {
            names.iter().filter_map(|n| catalogue.lookup(n)).collect()
        };
        let (then, els) = match &parsed.stmt {
            ast::Stmt::If { then, els, .. } => (
                resolve(then),
                els.as_deref().map(resolve).unwrap_or_default(),
            ),
            ast::Stmt::Always(slos) => (resolve(slos), Vec::new()),
        };
        Ok(Objective {
            name: name.to_string(),
            stmt: parsed.stmt,
            then,
            els,
        })
    }

    /// The objective as source text (parses back to the same objective).
    pub fn source(&self) -> String {
        self.stmt.to_string()
    }
}

#[cfg(test)]
mod tests;
