//! The search expression syntax of `beeline search` (and the web UI's search box):
//!
//! ```text
//! expr    := or
//! or      := and ( '|' and )*
//! and     := unary ( '&'? unary )*      two terms side by side are ANDed too
//! unary   := '!' unary | '(' expr ')' | TAG
//! TAG     := one or more characters other than whitespace and & | ! ( ) " \
//! ```
//!
//! `!` binds tightest, then `&`, then `|`: `type:pdf & (keyword:storage | keyword:disk) &
//! !draft`. A TAG matches files carrying exactly that tag; tag names cannot contain the
//! operators (`crate::metadata::validate_tag`), so no quoting is needed. Bounded: at most
//! [`EXPR_BYTES_MAX`] bytes, [`TERMS_MAX`] tags and [`DEPTH_MAX`] levels of nesting.

use serde::Serialize;

use crate::metadata::TAG_RESERVED;

pub const EXPR_BYTES_MAX: usize = 4096;
pub const TERMS_MAX: usize = 64;
pub const DEPTH_MAX: usize = 32;

/// A parsed search expression.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub enum Expr {
    Tag(String),
    Not(Box<Expr>),
    And(Vec<Expr>),
    Or(Vec<Expr>),
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ParseError {
    #[error("search expression is empty: give tags joined by & (and), | (or), ! (not), e.g. 'type:pdf & !draft'")]
    Empty,
    #[error("search expression is {0} bytes long, more than the {EXPR_BYTES_MAX} allowed: shorten it")]
    TooLong(usize),
    #[error("search expression has more than {TERMS_MAX} tags: narrow it")]
    TooManyTerms,
    #[error("search expression nests deeper than {DEPTH_MAX} parentheses: flatten it")]
    TooDeep,
    #[error(
        "search expression: {what} at byte {at}; write tags joined by & | ! and parentheses, e.g. 'a & (b | c) & !d'"
    )]
    Syntax { what: String, at: usize },
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum Token {
    Tag(String),
    And,
    Or,
    Not,
    Open,
    Close,
}

fn tokens(text: &str) -> Result<Vec<(usize, Token)>, ParseError> {
    let mut out = Vec::new();
    let mut chars = text.char_indices().peekable();
    while let Some(&(at, c)) = chars.peek() {
        let token = match c {
            c if c.is_whitespace() => {
                chars.next();
                continue;
            }
            '&' => Token::And,
            '|' => Token::Or,
            '!' => Token::Not,
            '(' => Token::Open,
            ')' => Token::Close,
            '"' | '\\' => return Err(ParseError::Syntax { what: format!("unexpected '{c}'"), at }),
            _ => {
                let mut tag = String::new();
                while let Some(&(_, c)) = chars.peek() {
                    if c.is_whitespace() || TAG_RESERVED.contains(&c) {
                        break;
                    }
                    tag.push(c);
                    chars.next();
                }
                out.push((at, Token::Tag(tag)));
                if out.len() > EXPR_BYTES_MAX {
                    return Err(ParseError::TooLong(text.len()));
                }
                continue;
            }
        };
        chars.next();
        out.push((at, token));
    }
    Ok(out)
}

struct Parser {
    tokens: Vec<(usize, Token)>,
    at: usize,
    terms: usize,
    end: usize,
}

impl Parser {
    fn peek(&self) -> Option<&Token> {
        self.tokens.get(self.at).map(|(_, token)| token)
    }

    fn position(&self) -> usize {
        self.tokens.get(self.at).map_or(self.end, |(at, _)| *at)
    }

    fn syntax(&self, what: &str) -> ParseError {
        ParseError::Syntax { what: what.to_owned(), at: self.position() }
    }

    fn or(&mut self, depth: usize) -> Result<Expr, ParseError> {
        let mut terms = vec![self.and(depth)?];
        while self.peek() == Some(&Token::Or) {
            self.at += 1;
            terms.push(self.and(depth)?);
        }
        Ok(if terms.len() == 1 { terms.pop().expect("one") } else { Expr::Or(terms) })
    }

    fn and(&mut self, depth: usize) -> Result<Expr, ParseError> {
        let mut terms = vec![self.unary(depth)?];
        loop {
            match self.peek() {
                Some(Token::And) => self.at += 1,
                Some(Token::Tag(_) | Token::Not | Token::Open) => {}
                _ => break,
            }
            terms.push(self.unary(depth)?);
        }
        Ok(if terms.len() == 1 { terms.pop().expect("one") } else { Expr::And(terms) })
    }

    fn unary(&mut self, depth: usize) -> Result<Expr, ParseError> {
        if depth > DEPTH_MAX {
            return Err(ParseError::TooDeep);
        }
        match self.peek().cloned() {
            Some(Token::Not) => {
                self.at += 1;
                Ok(Expr::Not(Box::new(self.unary(depth + 1)?)))
            }
            Some(Token::Open) => {
                self.at += 1;
                let inner = self.or(depth + 1)?;
                if self.peek() != Some(&Token::Close) {
                    return Err(self.syntax("a '(' without its ')'"));
                }
                self.at += 1;
                Ok(inner)
            }
            Some(Token::Tag(tag)) => {
                self.at += 1;
                self.terms += 1;
                if self.terms > TERMS_MAX {
                    return Err(ParseError::TooManyTerms);
                }
                Ok(Expr::Tag(tag))
            }
            Some(Token::Close) => Err(self.syntax("a ')' without its '('")),
            Some(_) => Err(self.syntax("an operator where a tag belongs")),
            None => Err(self.syntax("the expression ends where a tag belongs")),
        }
    }
}

impl Expr {
    /// Parses `text` (see the module documentation for the syntax).
    pub fn parse(text: &str) -> Result<Expr, ParseError> {
        if text.len() > EXPR_BYTES_MAX {
            return Err(ParseError::TooLong(text.len()));
        }
        let tokens = tokens(text)?;
        if tokens.is_empty() {
            return Err(ParseError::Empty);
        }
        let mut parser = Parser { tokens, at: 0, terms: 0, end: text.len() };
        let expr = parser.or(0)?;
        if parser.at < parser.tokens.len() {
            return Err(parser.syntax("unexpected text after a complete expression"));
        }
        Ok(expr)
    }

    /// Every tag the expression names, in order of appearance.
    pub fn tags(&self) -> Vec<&str> {
        match self {
            Expr::Tag(tag) => vec![tag],
            Expr::Not(inner) => inner.tags(),
            Expr::And(terms) | Expr::Or(terms) => terms.iter().flat_map(Expr::tags).collect(),
        }
    }
}

impl std::fmt::Display for Expr {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let join = |f: &mut std::fmt::Formatter<'_>, terms: &[Expr], op: &str| {
            write!(f, "(")?;
            for (index, term) in terms.iter().enumerate() {
                if index > 0 {
                    write!(f, " {op} ")?;
                }
                write!(f, "{term}")?;
            }
            write!(f, ")")
        };
        match self {
            Expr::Tag(tag) => write!(f, "{tag}"),
            Expr::Not(inner) => write!(f, "!{inner}"),
            Expr::And(terms) => join(f, terms, "&"),
            Expr::Or(terms) => join(f, terms, "|"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tag(name: &str) -> Expr {
        Expr::Tag(name.into())
    }

    #[test]
    fn precedence_is_not_then_and_then_or() {
        let parsed = Expr::parse("type:pdf & (keyword:storage | keyword:disk) & !draft").unwrap();
        let expected = Expr::And(vec![
            tag("type:pdf"),
            Expr::Or(vec![tag("keyword:storage"), tag("keyword:disk")]),
            Expr::Not(Box::new(tag("draft"))),
        ]);
        assert_eq!(parsed, expected);
        assert_eq!(Expr::parse("a | b c").unwrap(), Expr::Or(vec![tag("a"), Expr::And(vec![tag("b"), tag("c")])]));
        assert_eq!(Expr::parse("!!a").unwrap(), Expr::Not(Box::new(Expr::Not(Box::new(tag("a"))))));
        assert_eq!(Expr::parse("a&b|c").unwrap().to_string(), "((a & b) | c)");
        assert_eq!(Expr::parse(" x ").unwrap().tags(), ["x"]);
    }

    #[test]
    fn mistakes_say_where() {
        for (text, at) in [("a & ", 4), ("(a | b", 6), ("a )", 2), ("a & | b", 4), ("a \"b\"", 2)] {
            match Expr::parse(text) {
                Err(ParseError::Syntax { at: found, .. }) => assert_eq!(found, at, "{text}"),
                other => panic!("{text}: {other:?}"),
            }
        }
        assert_eq!(Expr::parse("  "), Err(ParseError::Empty));
        assert_eq!(Expr::parse(&"a ".repeat(65)), Err(ParseError::TooManyTerms));
        assert_eq!(Expr::parse(&format!("{}a{}", "(".repeat(40), ")".repeat(40))), Err(ParseError::TooDeep));
        assert!(matches!(Expr::parse(&"a".repeat(5000)), Err(ParseError::TooLong(5000))));
    }
}
