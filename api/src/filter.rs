//! Consul's `?filter=` expression language (HashiCorp go-bexpr), evaluated against the JSON
//! form of each result row.
//!
//! ```text
//! expr     = and ("or" and)*
//! and      = unary ("and" unary)*
//! unary    = "not" unary | "(" expr ")" | match
//! match    = selector ("==" | "!=") value
//!          | selector "is" ["not"] "empty"
//!          | value ["not"] "in" selector
//!          | selector ["not"] ("contains" | "matches") value
//! selector = ident ("." ident | "[" string "]")*
//! value    = "string" | `raw string` | number | true | false | ident
//! ```
//!
//! A selector that passes through a list (`Checks.Status`) yields every element's value, and a
//! match holds when it holds for any of them, as go-bexpr does for slices.

use regex::Regex;
use serde::Serialize;
use serde_json::Value;

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[error("Failed to create boolean expression evaluator: {0}")]
pub struct FilterError(pub String);

#[derive(Debug, Clone)]
pub struct Filter {
    expr: Expr,
}

#[derive(Debug, Clone)]
enum Expr {
    Or(Box<Expr>, Box<Expr>),
    And(Box<Expr>, Box<Expr>),
    Not(Box<Expr>),
    Match(Match),
}

#[derive(Debug, Clone)]
enum Match {
    Equal(Vec<String>, String),
    NotEqual(Vec<String>, String),
    Empty(Vec<String>),
    NotEmpty(Vec<String>),
    In(String, Vec<String>),
    NotIn(String, Vec<String>),
    Matches(Vec<String>, Box<Regex>),
    NotMatches(Vec<String>, Box<Regex>),
}

#[derive(Debug, Clone, PartialEq)]
enum Tok {
    Ident(String),
    Str(String),
    Num(String),
    Eq,
    Ne,
    LParen,
    RParen,
    LBracket,
    RBracket,
    Dot,
}

fn err(pos: usize, msg: impl std::fmt::Display) -> FilterError {
    FilterError(format!("1:{} ({pos}): {msg}", pos + 1))
}

fn tokenize(src: &str) -> Result<Vec<(usize, Tok)>, FilterError> {
    let b: Vec<char> = src.chars().collect();
    let mut out = Vec::new();
    let mut i = 0;
    while i < b.len() {
        let c = b[i];
        let start = i;
        match c {
            ' ' | '\t' | '\n' | '\r' => {
                i += 1;
                continue;
            }
            '(' => out.push((start, Tok::LParen)),
            ')' => out.push((start, Tok::RParen)),
            '[' => out.push((start, Tok::LBracket)),
            ']' => out.push((start, Tok::RBracket)),
            '.' => out.push((start, Tok::Dot)),
            '=' if b.get(i + 1) == Some(&'=') => {
                i += 1;
                out.push((start, Tok::Eq));
            }
            '!' if b.get(i + 1) == Some(&'=') => {
                i += 1;
                out.push((start, Tok::Ne));
            }
            '"' => {
                let mut s = String::new();
                i += 1;
                loop {
                    match b.get(i) {
                        None => return Err(err(start, "unterminated string")),
                        Some('"') => break,
                        Some('\\') => {
                            i += 1;
                            match b.get(i) {
                                Some('n') => s.push('\n'),
                                Some('t') => s.push('\t'),
                                Some(&c) => s.push(c),
                                None => return Err(err(start, "unterminated string")),
                            }
                        }
                        Some(&c) => s.push(c),
                    }
                    i += 1;
                }
                out.push((start, Tok::Str(s)));
            }
            '`' => {
                let mut s = String::new();
                i += 1;
                loop {
                    match b.get(i) {
                        None => return Err(err(start, "unterminated raw string")),
                        Some('`') => break,
                        Some(&c) => s.push(c),
                    }
                    i += 1;
                }
                out.push((start, Tok::Str(s)));
            }
            c if c.is_ascii_digit()
                || (c == '-' && b.get(i + 1).is_some_and(char::is_ascii_digit)) =>
            {
                let mut s = String::from(c);
                while let Some(&d) = b.get(i + 1) {
                    if d.is_ascii_digit() || d == '.' {
                        s.push(d);
                        i += 1;
                    } else {
                        break;
                    }
                }
                out.push((start, Tok::Num(s)));
            }
            c if c.is_alphanumeric() || c == '_' || c == '-' || c == '/' || c == ':' => {
                let mut s = String::from(c);
                while let Some(&d) = b.get(i + 1) {
                    if d.is_alphanumeric() || d == '_' || d == '-' || d == '/' || d == ':' {
                        s.push(d);
                        i += 1;
                    } else {
                        break;
                    }
                }
                out.push((start, Tok::Ident(s)));
            }
            other => return Err(err(start, format!("unexpected character {other:?}"))),
        }
        i += 1;
    }
    Ok(out)
}

struct Parser {
    toks: Vec<(usize, Tok)>,
    pos: usize,
    end: usize,
}

impl Parser {
    fn peek(&self) -> Option<&Tok> {
        self.toks.get(self.pos).map(|(_, t)| t)
    }

    fn offset(&self) -> usize {
        self.toks.get(self.pos).map_or(self.end, |(o, _)| *o)
    }

    fn keyword(&self, k: &str) -> bool {
        matches!(self.peek(), Some(Tok::Ident(s)) if s == k)
    }

    fn keyword_at(&self, ahead: usize, k: &str) -> bool {
        matches!(self.toks.get(self.pos + ahead), Some((_, Tok::Ident(s))) if s == k)
    }

    fn expect_keyword(&mut self, k: &str) -> Result<(), FilterError> {
        if self.keyword(k) {
            self.pos += 1;
            Ok(())
        } else {
            Err(self.unexpected(&format!("\"{k}\"")))
        }
    }

    fn unexpected(&self, wanted: &str) -> FilterError {
        match self.toks.get(self.pos) {
            None => err(
                self.end,
                format!("no match found, expected: {wanted}, got end of input"),
            ),
            Some((o, t)) => err(*o, format!("no match found, expected: {wanted}, got {t:?}")),
        }
    }

    fn or(&mut self) -> Result<Expr, FilterError> {
        let mut left = self.and()?;
        while self.keyword("or") {
            self.pos += 1;
            let right = self.and()?;
            left = Expr::Or(Box::new(left), Box::new(right));
        }
        Ok(left)
    }

    fn and(&mut self) -> Result<Expr, FilterError> {
        let mut left = self.unary()?;
        while self.keyword("and") {
            self.pos += 1;
            let right = self.unary()?;
            left = Expr::And(Box::new(left), Box::new(right));
        }
        Ok(left)
    }

    fn unary(&mut self) -> Result<Expr, FilterError> {
        // `not` followed by `in` is the `value not in selector` form, not negation; that form
        // starts with a value, so a leading `not` is always negation.
        if self.keyword("not") {
            self.pos += 1;
            return Ok(Expr::Not(Box::new(self.unary()?)));
        }
        if self.peek() == Some(&Tok::LParen) {
            self.pos += 1;
            let e = self.or()?;
            if self.peek() != Some(&Tok::RParen) {
                return Err(self.unexpected("\")\""));
            }
            self.pos += 1;
            return Ok(e);
        }
        self.matcher().map(Expr::Match)
    }

    fn value(&mut self) -> Result<String, FilterError> {
        match self.toks.get(self.pos).map(|(_, t)| t.clone()) {
            Some(Tok::Str(s) | Tok::Num(s) | Tok::Ident(s)) => {
                self.pos += 1;
                Ok(s)
            }
            _ => Err(self.unexpected("a value")),
        }
    }

    fn selector(&mut self) -> Result<Vec<String>, FilterError> {
        let mut path = match self.toks.get(self.pos).map(|(_, t)| t.clone()) {
            Some(Tok::Ident(s)) if !is_keyword(&s) => {
                self.pos += 1;
                vec![s]
            }
            _ => return Err(self.unexpected("a selector")),
        };
        loop {
            match self.peek() {
                Some(Tok::Dot) => {
                    self.pos += 1;
                    match self.toks.get(self.pos).map(|(_, t)| t.clone()) {
                        Some(Tok::Ident(s)) => {
                            self.pos += 1;
                            path.push(s);
                        }
                        _ => return Err(self.unexpected("a field name after \".\"")),
                    }
                }
                Some(Tok::LBracket) => {
                    self.pos += 1;
                    let key = match self.toks.get(self.pos).map(|(_, t)| t.clone()) {
                        Some(Tok::Str(s) | Tok::Ident(s) | Tok::Num(s)) => s,
                        _ => return Err(self.unexpected("a quoted key")),
                    };
                    self.pos += 1;
                    if self.peek() != Some(&Tok::RBracket) {
                        return Err(self.unexpected("\"]\""));
                    }
                    self.pos += 1;
                    path.push(key);
                }
                _ => return Ok(path),
            }
        }
    }

    fn regex(&mut self) -> Result<Box<Regex>, FilterError> {
        let at = self.offset();
        let pattern = self.value()?;
        Regex::new(&pattern)
            .map(Box::new)
            .map_err(|e| err(at, format!("invalid regular expression {pattern:?}: {e}")))
    }

    fn matcher(&mut self) -> Result<Match, FilterError> {
        // `value [not] in selector` starts with a literal, or with a bare word followed by
        // `in` / `not in`.
        let value_first = match self.peek() {
            Some(Tok::Str(_) | Tok::Num(_)) => true,
            Some(Tok::Ident(_)) => {
                self.keyword_at(1, "in") || (self.keyword_at(1, "not") && self.keyword_at(2, "in"))
            }
            _ => false,
        };
        if value_first {
            let v = self.value()?;
            let negate = self.keyword("not");
            if negate {
                self.pos += 1;
            }
            self.expect_keyword("in")?;
            let sel = self.selector()?;
            return Ok(if negate {
                Match::NotIn(v, sel)
            } else {
                Match::In(v, sel)
            });
        }
        let sel = self.selector()?;
        match self.peek() {
            Some(Tok::Eq) => {
                self.pos += 1;
                Ok(Match::Equal(sel, self.value()?))
            }
            Some(Tok::Ne) => {
                self.pos += 1;
                Ok(Match::NotEqual(sel, self.value()?))
            }
            Some(Tok::Ident(k)) if k == "is" => {
                self.pos += 1;
                let negate = self.keyword("not");
                if negate {
                    self.pos += 1;
                }
                self.expect_keyword("empty")?;
                Ok(if negate {
                    Match::NotEmpty(sel)
                } else {
                    Match::Empty(sel)
                })
            }
            Some(Tok::Ident(k)) if k == "contains" => {
                self.pos += 1;
                Ok(Match::In(self.value()?, sel))
            }
            Some(Tok::Ident(k)) if k == "matches" => {
                self.pos += 1;
                Ok(Match::Matches(sel, self.regex()?))
            }
            Some(Tok::Ident(k)) if k == "not" => {
                self.pos += 1;
                if self.keyword("contains") {
                    self.pos += 1;
                    Ok(Match::NotIn(self.value()?, sel))
                } else if self.keyword("matches") {
                    self.pos += 1;
                    Ok(Match::NotMatches(sel, self.regex()?))
                } else {
                    Err(self.unexpected("\"contains\" or \"matches\""))
                }
            }
            _ => {
                Err(self.unexpected("\"==\", \"!=\", \"is\", \"contains\", \"matches\" or \"not\""))
            }
        }
    }
}

fn is_keyword(s: &str) -> bool {
    matches!(
        s,
        "and" | "or" | "not" | "in" | "is" | "empty" | "contains" | "matches"
    )
}

/// The values a selector reaches in `row`; lists along the way are walked element-wise.
fn resolve<'a>(row: &'a Value, path: &[String]) -> Vec<&'a Value> {
    let mut cur = vec![row];
    // A list at the end stays one value, so that `Tags contains x` looks inside it.
    for seg in path {
        let mut next = Vec::new();
        for v in cur {
            collect(v, seg, &mut next);
        }
        cur = next;
    }
    cur
}

fn collect<'a>(v: &'a Value, seg: &str, out: &mut Vec<&'a Value>) {
    match v {
        Value::Object(m) => {
            if let Some(x) = m.get(seg) {
                out.push(x);
            }
        }
        Value::Array(items) => {
            for item in items {
                collect(item, seg, out);
            }
        }
        _ => {}
    }
}

fn scalar_eq(v: &Value, want: &str) -> bool {
    match v {
        Value::String(s) => s == want,
        Value::Bool(b) => want.parse::<bool>().is_ok_and(|w| w == *b),
        Value::Number(n) => match (n.as_f64(), want.parse::<f64>()) {
            (Some(a), Ok(b)) => a == b,
            _ => n.to_string() == want,
        },
        Value::Null => want.is_empty(),
        Value::Array(items) => items.iter().any(|x| scalar_eq(x, want)),
        Value::Object(_) => false,
    }
}

fn is_empty(v: &Value) -> bool {
    match v {
        Value::Null => true,
        Value::String(s) => s.is_empty(),
        Value::Array(a) => a.is_empty(),
        Value::Object(m) => m.is_empty(),
        _ => false,
    }
}

fn contains(v: &Value, want: &str) -> bool {
    match v {
        Value::Array(items) => items.iter().any(|x| scalar_eq(x, want)),
        Value::Object(m) => m.contains_key(want),
        Value::String(s) => s.contains(want),
        _ => false,
    }
}

fn regex_match(v: &Value, re: &Regex) -> bool {
    match v {
        Value::String(s) => re.is_match(s),
        Value::Array(items) => items.iter().any(|x| regex_match(x, re)),
        Value::Number(n) => re.is_match(&n.to_string()),
        Value::Bool(b) => re.is_match(&b.to_string()),
        _ => false,
    }
}

impl Match {
    fn eval(&self, row: &Value) -> bool {
        match self {
            Match::Equal(sel, want) => resolve(row, sel).iter().any(|v| scalar_eq(v, want)),
            Match::NotEqual(sel, want) => !resolve(row, sel).iter().any(|v| scalar_eq(v, want)),
            Match::Empty(sel) => resolve(row, sel).iter().all(|v| is_empty(v)),
            Match::NotEmpty(sel) => !resolve(row, sel).iter().all(|v| is_empty(v)),
            Match::In(want, sel) => resolve(row, sel).iter().any(|v| contains(v, want)),
            Match::NotIn(want, sel) => !resolve(row, sel).iter().any(|v| contains(v, want)),
            Match::Matches(sel, re) => resolve(row, sel).iter().any(|v| regex_match(v, re)),
            Match::NotMatches(sel, re) => !resolve(row, sel).iter().any(|v| regex_match(v, re)),
        }
    }
}

impl Expr {
    fn eval(&self, row: &Value) -> bool {
        match self {
            Expr::Or(a, b) => a.eval(row) || b.eval(row),
            Expr::And(a, b) => a.eval(row) && b.eval(row),
            Expr::Not(e) => !e.eval(row),
            Expr::Match(m) => m.eval(row),
        }
    }
}

impl Filter {
    pub fn parse(src: &str) -> Result<Filter, FilterError> {
        let toks = tokenize(src)?;
        if toks.is_empty() {
            return Err(err(0, "empty expression"));
        }
        let mut p = Parser {
            toks,
            pos: 0,
            end: src.chars().count(),
        };
        let expr = p.or()?;
        if p.pos != p.toks.len() {
            return Err(p.unexpected("\"and\", \"or\" or end of input"));
        }
        Ok(Filter { expr })
    }

    /// `None` when the query has no filter; an empty filter parameter filters nothing.
    pub fn from_query(param: Option<&str>) -> Result<Option<Filter>, FilterError> {
        match param.map(str::trim) {
            None | Some("") => Ok(None),
            Some(src) => Filter::parse(src).map(Some),
        }
    }

    pub fn matches(&self, row: &Value) -> bool {
        self.expr.eval(row)
    }

    pub fn matches_row<T: Serialize>(&self, row: &T) -> bool {
        serde_json::to_value(row).is_ok_and(|v| self.matches(&v))
    }
}

/// Keeps the rows that `filter` (if any) matches.
pub fn retain<T: Serialize>(filter: Option<&Filter>, rows: &mut Vec<T>) {
    if let Some(f) = filter {
        rows.retain(|r| f.matches_row(r));
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn row() -> Value {
        json!({
            "Node": {"Node": "n-1", "Meta": {"rack": "r1", "env": ""}},
            "Service": {"Service": "web", "Tags": ["prod", "v2"], "Port": 8080, "EnableTagOverride": false},
            "Checks": [{"Status": "passing", "Name": "a"}, {"Status": "critical", "Name": "b"}],
            "ServiceTags": ["prod"],
            "Empty": []
        })
    }

    fn eval(src: &str) -> bool {
        Filter::parse(src)
            .unwrap_or_else(|e| panic!("{src}: {e}"))
            .matches(&row())
    }

    #[test]
    fn operators_follow_bexpr() {
        for (src, want) in [
            (r#"Node.Node == "n-1""#, true),
            (r#"Node.Node != "n-1""#, false),
            ("Node.Node == `n-1`", true),
            (r#""prod" in Service.Tags"#, true),
            (r#""qa" not in Service.Tags"#, true),
            (r#"Service.Tags contains "v2""#, true),
            (r#"Service.Tags not contains "v2""#, false),
            (r#"Service.Service matches "^w.b$""#, true),
            (r#"Service.Service not matches "^api""#, true),
            ("Service.Port == 8080", true),
            ("Service.EnableTagOverride == false", true),
            ("Empty is empty", true),
            ("Service.Tags is not empty", true),
            ("Node.Meta.env is empty", true),
            ("Node.Meta.missing is empty", true),
            (r#"Node.Meta.rack == "r1""#, true),
            (r#"Node.Meta["rack"] == "r1""#, true),
            (r#""rack" in Node.Meta"#, true),
            (r#"Checks.Status == "critical""#, true),
            (r#"Checks.Status != "warning""#, true),
            (r#"not Checks.Status == "critical""#, false),
            (
                r#"Service.Service == "web" and (Node.Node == "x" or "prod" in ServiceTags)"#,
                true,
            ),
            (
                r#"Service.Service == "web" and Node.Node == "x" or Empty is empty"#,
                true,
            ),
            (r#"Service.Service == "api" or Node.Node == "x""#, false),
            (r#"not (Service.Service == "api")"#, true),
        ] {
            assert_eq!(eval(src), want, "{src}");
        }
    }

    #[test]
    fn bad_expressions_name_the_problem() {
        for (src, needle) in [
            ("not a valid expression((", "no match found"),
            (r#"Node == "unterminated"#, "unterminated string"),
            (r#"Node.Node =="#, "expected: a value"),
            (r#"(Node.Node == "a""#, "\")\""),
            (r#"Node.Node == "a" extra"#, "end of input"),
            (r#"Node.Node matches "(""#, "invalid regular expression"),
            ("Node.Node ~ 1", "unexpected character"),
            ("   ", "empty expression"),
        ] {
            let e = Filter::parse(src).unwrap_err();
            assert!(e.to_string().contains(needle), "{src}: {e}");
            assert!(
                e.to_string()
                    .starts_with("Failed to create boolean expression evaluator")
            );
        }
    }

    #[test]
    fn retain_keeps_matching_rows() {
        let f = Filter::parse(r#"Name == "b""#).unwrap();
        let mut rows = vec![json!({"Name": "a"}), json!({"Name": "b"})];
        retain(Some(&f), &mut rows);
        assert_eq!(rows, vec![json!({"Name": "b"})]);
        assert!(Filter::from_query(Some("")).unwrap().is_none());
    }
}
