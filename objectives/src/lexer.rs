//! Tokens of the objective language, each with the line and column where it starts.
//!
//! Owns: splitting source text into [`Token`]s. Keywords and identifiers are
//! case-insensitive (`if`, `If`, `IF`); strings take single or double quotes with `\` escaping
//! the quote and itself; a number may carry a unit directly (`10GB`, `30DAYS`).
//! Invariant: never panics on any input (fuzzed with the parser).

use crate::error::{ParseError, Pos};

#[derive(Clone, Debug, PartialEq)]
pub enum Tok {
    Ident(String),
    Str(String),
    Num(f64),
    /// A number written with a unit, e.g. `10GB`: (number, unit as written).
    NumUnit(f64, String),
    LParen,
    RParen,
    LBrace,
    RBrace,
    Comma,
    Op(&'static str),
    Eof,
}

impl Tok {
    /// How the token is named in "expected …, found …".
    pub fn describe(&self) -> String {
        match self {
            Tok::Ident(s) => format!("`{s}`"),
            Tok::Str(s) => format!("string {s:?}"),
            Tok::Num(n) => format!("number {n}"),
            Tok::NumUnit(n, u) => format!("`{n}{u}`"),
            Tok::LParen => "`(`".into(),
            Tok::RParen => "`)`".into(),
            Tok::LBrace => "`{`".into(),
            Tok::RBrace => "`}`".into(),
            Tok::Comma => "`,`".into(),
            Tok::Op(o) => format!("`{o}`"),
            Tok::Eof => "the end of the objective".into(),
        }
    }
}

#[derive(Clone, Debug, PartialEq)]
pub struct Token {
    pub tok: Tok,
    pub pos: Pos,
}

const OPS: [&str; 13] = [
    "&&", "||", "<=", ">=", "==", "!=", "<", ">", "!", "+", "-", "*", "/",
];

/// Splits `src` into tokens, ending with [`Tok::Eof`].
pub fn lex(src: &str) -> Result<Vec<Token>, ParseError> {
    let mut out = Vec::new();
    let chars: Vec<char> = src.chars().collect();
    let (mut i, mut line, mut col) = (0usize, 1u32, 1u32);
    while i < chars.len() {
        let c = chars[i];
        let pos = Pos { line, col };
        let start = i;
        let tok = match c {
            '\n' => {
                i += 1;
                line += 1;
                col = 1;
                continue;
            }
            c if c.is_whitespace() => {
                i += 1;
                col += 1;
                continue;
            }
            '(' | ')' | '{' | '}' | ',' => {
                i += 1;
                match c {
                    '(' => Tok::LParen,
                    ')' => Tok::RParen,
                    '{' => Tok::LBrace,
                    '}' => Tok::RBrace,
                    _ => Tok::Comma,
                }
            }
            '"' | '\'' => {
                let (s, next) = string(&chars, i, pos)?;
                i = next;
                Tok::Str(s)
            }
            c if c.is_ascii_digit()
                || (c == '.' && chars.get(i + 1).is_some_and(char::is_ascii_digit)) =>
            {
                let (t, next) = number(&chars, i, pos)?;
                i = next;
                t
            }
            c if c.is_alphabetic() || c == '_' => {
                while i < chars.len() && (chars[i].is_alphanumeric() || chars[i] == '_') {
                    i += 1;
                }
                Tok::Ident(chars[start..i].iter().collect())
            }
            _ => {
                let rest: String = chars[i..chars.len().min(i + 2)].iter().collect();
                match OPS.iter().find(|op| rest.starts_with(*op)) {
                    Some(op) => {
                        i += op.len();
                        Tok::Op(op)
                    }
                    None => {
                        return Err(ParseError::new(
                            pos,
                            "an operator, a name, a number or a string",
                            format!("`{c}`"),
                        ));
                    }
                }
            }
        };
        col += chars[start..i].iter().filter(|c| **c != '\n').count() as u32;
        line += chars[start..i].iter().filter(|c| **c == '\n').count() as u32;
        out.push(Token { tok, pos });
    }
    out.push(Token {
        tok: Tok::Eof,
        pos: Pos { line, col },
    });
    Ok(out)
}

fn string(chars: &[char], start: usize, pos: Pos) -> Result<(String, usize), ParseError> {
    let quote = chars[start];
    let mut s = String::new();
    let mut i = start + 1;
    while i < chars.len() {
        match chars[i] {
            '\\' if i + 1 < chars.len() && (chars[i + 1] == quote || chars[i + 1] == '\\') => {
                s.push(chars[i + 1]);
                i += 2;
            }
            c if c == quote => return Ok((s, i + 1)),
            c => {
                s.push(c);
                i += 1;
            }
        }
    }
    Err(ParseError::new(
        pos,
        format!("a closing {quote} for this string"),
        "the end of the objective".into(),
    ))
}

fn number(chars: &[char], start: usize, pos: Pos) -> Result<(Tok, usize), ParseError> {
    let mut i = start;
    while i < chars.len() && (chars[i].is_ascii_digit() || chars[i] == '.' || chars[i] == '_') {
        i += 1;
    }
    let text: String = chars[start..i].iter().filter(|c| **c != '_').collect();
    let n: f64 = text
        .parse()
        .map_err(|_| ParseError::new(pos, "a number", format!("`{text}`")))?;
    let unit_start = i;
    while i < chars.len() && chars[i].is_ascii_alphabetic() {
        i += 1;
    }
    if i == unit_start {
        return Ok((Tok::Num(n), i));
    }
    Ok((Tok::NumUnit(n, chars[unit_start..i].iter().collect()), i))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokens_and_positions() {
        let t = lex("IF SIZE >= 10GB\n  THEN {SLO('a\\'b')}").unwrap();
        let toks: Vec<&Tok> = t.iter().map(|t| &t.tok).collect();
        assert_eq!(toks[0], &Tok::Ident("IF".into()));
        assert_eq!(toks[2], &Tok::Op(">="));
        assert_eq!(toks[3], &Tok::NumUnit(10.0, "GB".into()));
        assert_eq!(t[4].pos, Pos { line: 2, col: 3 });
        assert_eq!(toks[8], &Tok::Str("a'b".into()));
        assert_eq!(toks.last().unwrap(), &&Tok::Eof);
    }

    #[test]
    fn bad_characters_and_open_strings_are_located() {
        let e = lex("SIZE > 3 # 4").unwrap_err();
        assert_eq!((e.pos.line, e.pos.col), (1, 10));
        let e = lex("FNMATCH(\"abc").unwrap_err();
        assert!(e.expected.contains("closing"), "{e:?}");
    }
}
