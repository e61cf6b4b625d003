//! The JQL a webhook's filter (`filters["issue-related-events-section"]`) may hold, in the lab's
//! subset: clauses `field = value`, `field != value`, `field in (a, b)`, `field not in (a, b)`
//! joined by `AND`, over `project`, `issuetype` (`type`), `status`, `labels` and `key`
//! (`issuekey`); a trailing `ORDER BY` is ignored. Values compare case-insensitively. Anything
//! else is refused when the webhook is registered, as Jira refuses JQL it cannot parse.

/// A parsed filter; the empty filter matches every issue.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Jql {
    clauses: Vec<Clause>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
struct Clause {
    field: &'static str,
    negated: bool,
    values: Vec<String>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum Token {
    Word(String),
    Quoted(String),
    Eq,
    NotEq,
    Open,
    Close,
    Comma,
}

fn tokens(text: &str) -> Result<Vec<Token>, String> {
    let mut out = Vec::new();
    let mut chars = text.chars().peekable();
    while let Some(&c) = chars.peek() {
        match c {
            c if c.is_whitespace() => {
                chars.next();
            }
            '=' => {
                chars.next();
                out.push(Token::Eq);
            }
            '!' => {
                chars.next();
                if chars.next() != Some('=') {
                    return Err("expected '=' after '!'".into());
                }
                out.push(Token::NotEq);
            }
            '(' | ')' | ',' => {
                chars.next();
                out.push(match c {
                    '(' => Token::Open,
                    ')' => Token::Close,
                    _ => Token::Comma,
                });
            }
            '"' | '\'' => {
                chars.next();
                let mut s = String::new();
                loop {
                    match chars.next() {
                        Some(q) if q == c => break,
                        Some('\\') => s.extend(chars.next()),
                        Some(x) => s.push(x),
                        None => return Err("unterminated string".into()),
                    }
                }
                out.push(Token::Quoted(s));
            }
            c if c.is_alphanumeric() || "_-.:".contains(c) => {
                let mut s = String::new();
                while let Some(&x) = chars.peek() {
                    if x.is_alphanumeric() || "_-.:".contains(x) {
                        s.push(x);
                        chars.next();
                    } else {
                        break;
                    }
                }
                out.push(Token::Word(s));
            }
            other => return Err(format!("unexpected character '{other}'")),
        }
    }
    Ok(out)
}

fn field(name: &str) -> Option<&'static str> {
    Some(match name.to_ascii_lowercase().as_str() {
        "project" => "project",
        "issuetype" | "type" => "issuetype",
        "status" => "status",
        "labels" => "labels",
        "key" | "issuekey" => "key",
        _ => return None,
    })
}

fn is_word(t: Option<&Token>, word: &str) -> bool {
    matches!(t, Some(Token::Word(w)) if w.eq_ignore_ascii_case(word))
}

/// Parse a filter. `Err` says what Jira would say is wrong.
pub fn parse(text: &str) -> Result<Jql, String> {
    let toks = tokens(text)?;
    let mut clauses = Vec::new();
    let mut i = 0;
    while i < toks.len() {
        if is_word(toks.get(i), "order") && is_word(toks.get(i + 1), "by") {
            break;
        }
        let name = match toks.get(i) {
            Some(Token::Word(w)) | Some(Token::Quoted(w)) => w,
            other => return Err(format!("expected a field name, found {other:?}")),
        };
        let field = field(name).ok_or_else(|| {
            format!("Field '{name}' does not exist or you do not have permission to view it.")
        })?;
        i += 1;
        let (negated, list) = match toks.get(i) {
            Some(Token::Eq) => (false, false),
            Some(Token::NotEq) => (true, false),
            t if is_word(t, "in") => (false, true),
            t if is_word(t, "not") && is_word(toks.get(i + 1), "in") => {
                i += 1;
                (true, true)
            }
            other => {
                return Err(format!(
                    "expected an operator after '{name}', found {other:?}"
                ));
            }
        };
        i += 1;
        let mut values = Vec::new();
        if list {
            if toks.get(i) != Some(&Token::Open) {
                return Err("expected '(' after 'in'".into());
            }
            i += 1;
            loop {
                match toks.get(i) {
                    Some(Token::Word(w)) | Some(Token::Quoted(w)) => values.push(w.clone()),
                    other => return Err(format!("expected a value, found {other:?}")),
                }
                i += 1;
                match toks.get(i) {
                    Some(Token::Comma) => i += 1,
                    Some(Token::Close) => {
                        i += 1;
                        break;
                    }
                    other => return Err(format!("expected ',' or ')', found {other:?}")),
                }
            }
        } else {
            match toks.get(i) {
                Some(Token::Word(w)) | Some(Token::Quoted(w)) => values.push(w.clone()),
                other => return Err(format!("expected a value, found {other:?}")),
            }
            i += 1;
        }
        clauses.push(Clause {
            field,
            negated,
            values,
        });
        if i < toks.len() && !is_word(toks.get(i), "order") {
            if !is_word(toks.get(i), "and") {
                return Err(format!(
                    "the lab's JQL joins clauses with AND only, found {:?}",
                    toks[i]
                ));
            }
            i += 1;
        }
    }
    Ok(Jql { clauses })
}

impl Jql {
    /// Whether an issue matches; `attr` gives an issue's values of a field (`project`,
    /// `issuetype`, `status`, `labels`, `key`).
    pub fn matches(&self, attr: impl Fn(&str) -> Vec<String>) -> bool {
        self.clauses.iter().all(|c| {
            let have = attr(c.field);
            let any = have
                .iter()
                .any(|h| c.values.iter().any(|v| v.eq_ignore_ascii_case(h)));
            any != c.negated
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn issue(field: &str) -> Vec<String> {
        match field {
            "project" => vec!["OPS".into()],
            "issuetype" => vec!["Change".into()],
            "status" => vec!["In Progress".into()],
            "labels" => vec!["drover".into(), "maintenance".into()],
            _ => vec!["OPS-1".into()],
        }
    }

    #[test]
    fn filters_match_as_jira_would() {
        let cases = [
            ("", true),
            ("project = OPS", true),
            ("project = ops", true),
            ("project = DEV", false),
            ("project in (DEV, OPS)", true),
            ("project not in (DEV, OPS)", false),
            ("project = OPS AND issuetype = Change", true),
            ("project = OPS and type != Change", false),
            ("status = \"In Progress\"", true),
            ("labels = drover", true),
            ("labels != drover", false),
            ("issuekey = OPS-1 ORDER BY created DESC", true),
        ];
        for (text, want) in cases {
            let jql = parse(text).unwrap_or_else(|e| panic!("{text}: {e}"));
            assert_eq!(jql.matches(issue), want, "{text}");
        }
    }

    #[test]
    fn refuses_what_it_cannot_evaluate() {
        for text in [
            "assignee = bob",
            "project = OPS OR project = DEV",
            "project",
            "project in OPS",
            "summary ~ \"x\"",
            "project = \"OPS",
        ] {
            assert!(parse(text).is_err(), "{text}");
        }
    }
}
