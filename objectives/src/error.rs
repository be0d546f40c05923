//! Errors of the objective language: where (line, column) and what was expected.
//!
//! Owns: [`ParseError`] (with [`ParseError::render`], the message with the source line and a
//! caret under the column) and [`ObjectiveError`], the crate's error enum.

use thiserror::Error;

/// A 1-based line and column (in characters).
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub struct Pos {
    pub line: u32,
    pub col: u32,
}

/// What the parser wanted at `pos`, and what it found there.
#[derive(Clone, Debug, PartialEq, Eq, Error)]
#[error("line {}, column {}: expected {expected}, found {found}", pos.line, pos.col)]
pub struct ParseError {
    pub pos: Pos,
    pub expected: String,
    pub found: String,
}

impl ParseError {
    pub fn new(pos: Pos, expected: impl Into<String>, found: String) -> Self {
        ParseError {
            pos,
            expected: expected.into(),
            found,
        }
    }

    /// The message, the offending source line, and a caret under the column:
    ///
    /// ```text
    /// line 1, column 9: expected `(`, found `SIZE`
    ///   IF FNMATCH SIZE
    ///              ^
    /// ```
    pub fn render(&self, src: &str) -> String {
        let line = src.lines().nth(self.pos.line as usize - 1).unwrap_or("");
        let pad: String = line
            .chars()
            .take(self.pos.col.saturating_sub(1) as usize)
            .map(|c| if c == '\t' { '\t' } else { ' ' })
            .collect();
        format!("{self}\n  {line}\n  {pad}^")
    }
}

#[derive(Clone, Debug, PartialEq, Eq, Error)]
pub enum ObjectiveError {
    #[error(transparent)]
    Parse(#[from] ParseError),
    #[error("unknown SLO '{name}' at line {}, column {}; known: {}", pos.line, pos.col, known.join(", "))]
    UnknownSlo {
        name: String,
        pos: Pos,
        known: Vec<String>,
    },
    #[error("invalid objective name {0:?}: use letters, digits, '-', '_' and '.', at most 64")]
    BadName(String),
    #[error("pattern {pattern:?} is not a valid FNMATCH pattern: {why}")]
    Pattern { pattern: String, why: String },
}

impl ObjectiveError {
    /// The message with the source line and caret where there is a position.
    pub fn render(&self, src: &str) -> String {
        match self {
            ObjectiveError::Parse(p) => p.render(src),
            ObjectiveError::UnknownSlo { pos, .. } => {
                let caret = ParseError::new(*pos, "", String::new()).render(src);
                let (_, lines) = caret.split_once('\n').unwrap_or(("", ""));
                format!("{self}\n{lines}")
            }
            other => other.to_string(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn caret_under_the_column() {
        let e = ParseError::new(Pos { line: 2, col: 4 }, "`)`", "`}`".into());
        assert_eq!(
            e.render("IF\n(a }"),
            "line 2, column 4: expected `)`, found `}`\n  (a }\n     ^"
        );
    }
}
