//! ServiceNow's encoded queries (`sysparm_query`), the lab's subset: conditions joined by `^`
//! (AND), `^OR` (OR with the previous condition) and `^NQ` (a new query, OR'd with the others),
//! `^^` for a literal `^`, `ORDERBY<field>` and `ORDERBYDESC<field>`. Operators: `=`, `!=`, `>`,
//! `>=`, `<`, `<=`, `LIKE`, `NOT LIKE`, `STARTSWITH`, `ENDSWITH`, `IN`, `NOT IN`, `ISEMPTY`,
//! `ISNOTEMPTY`. String comparisons ignore case (as ServiceNow's database collation does); two
//! numbers compare as numbers. A condition on a field the table does not have, or one the lab
//! cannot read, matches nothing (ServiceNow's `glide.invalid_query.returns_no_rows` behaviour).

use std::cmp::Ordering;

/// A parsed query.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Query {
    /// `^NQ`-separated queries; each a conjunction of terms, each term a disjunction.
    groups: Vec<Vec<Vec<Cond>>>,
    /// (field, descending), most significant first.
    pub order: Vec<(String, bool)>,
}

#[derive(Debug, Clone, PartialEq)]
struct Cond {
    field: String,
    op: Op,
    value: String,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Op {
    Eq,
    Ne,
    Gt,
    Ge,
    Lt,
    Le,
    Like,
    NotLike,
    StartsWith,
    EndsWith,
    In,
    NotIn,
    Empty,
    NotEmpty,
    /// A condition the lab cannot read: matches nothing.
    Never,
}

/// Operators by their text, longest first where one is a prefix of another.
const OPS: &[(&str, Op)] = &[
    ("ISNOTEMPTY", Op::NotEmpty),
    ("ISEMPTY", Op::Empty),
    ("NOT LIKE", Op::NotLike),
    ("NOT IN", Op::NotIn),
    ("STARTSWITH", Op::StartsWith),
    ("ENDSWITH", Op::EndsWith),
    ("LIKE", Op::Like),
    ("IN", Op::In),
    ("!=", Op::Ne),
    (">=", Op::Ge),
    ("<=", Op::Le),
    ("=", Op::Eq),
    (">", Op::Gt),
    ("<", Op::Lt),
];

/// Split on `^`, keeping `^^` as a literal `^`.
fn split(text: &str) -> Vec<String> {
    let mut out = vec![String::new()];
    let mut chars = text.chars().peekable();
    while let Some(c) = chars.next() {
        if c == '^' {
            if chars.peek() == Some(&'^') {
                chars.next();
                if let Some(s) = out.last_mut() {
                    s.push('^');
                }
            } else {
                out.push(String::new());
            }
        } else if let Some(s) = out.last_mut() {
            s.push(c);
        }
    }
    out
}

fn cond(text: &str) -> Cond {
    let end = text
        .find(|c: char| !(c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_' || c == '.'))
        .unwrap_or(text.len());
    let (field, rest) = text.split_at(end);
    let found = OPS.iter().find(|(t, _)| rest.starts_with(t));
    match found {
        Some((t, op)) if !field.is_empty() => Cond {
            field: field.to_string(),
            op: *op,
            value: rest[t.len()..].to_string(),
        },
        _ => Cond {
            field: field.to_string(),
            op: Op::Never,
            value: String::new(),
        },
    }
}

/// Parse a `sysparm_query`.
pub fn parse(text: &str) -> Query {
    let mut q = Query::default();
    let mut group: Vec<Vec<Cond>> = Vec::new();
    for part in split(text) {
        if part.is_empty() || part == "EQ" {
            continue;
        }
        if let Some(f) = part.strip_prefix("ORDERBYDESC") {
            q.order.push((f.to_string(), true));
        } else if let Some(f) = part.strip_prefix("ORDERBY") {
            q.order.push((f.to_string(), false));
        } else if let Some(rest) = part.strip_prefix("NQ") {
            if !group.is_empty() {
                q.groups.push(std::mem::take(&mut group));
            }
            group.push(vec![cond(rest)]);
        } else if let Some(rest) = part.strip_prefix("OR")
            && let Some(last) = group.last_mut()
        {
            last.push(cond(rest));
        } else {
            group.push(vec![cond(&part)]);
        }
    }
    if !group.is_empty() {
        q.groups.push(group);
    }
    q
}

fn compare(a: &str, b: &str) -> Ordering {
    match (a.trim().parse::<f64>(), b.trim().parse::<f64>()) {
        (Ok(x), Ok(y)) => x.partial_cmp(&y).unwrap_or(Ordering::Equal),
        _ => a.to_lowercase().cmp(&b.to_lowercase()),
    }
}

impl Cond {
    fn matches(&self, have: Option<&str>) -> bool {
        let Some(have) = have else {
            return false;
        };
        let (h, v) = (have.to_lowercase(), self.value.to_lowercase());
        let list = || v.split(',').map(str::trim).any(|x| x == h);
        match self.op {
            Op::Eq => compare(have, &self.value) == Ordering::Equal,
            Op::Ne => compare(have, &self.value) != Ordering::Equal,
            Op::Gt => !have.is_empty() && compare(have, &self.value) == Ordering::Greater,
            Op::Ge => !have.is_empty() && compare(have, &self.value) != Ordering::Less,
            Op::Lt => !have.is_empty() && compare(have, &self.value) == Ordering::Less,
            Op::Le => !have.is_empty() && compare(have, &self.value) != Ordering::Greater,
            Op::Like => h.contains(&v),
            Op::NotLike => !h.contains(&v),
            Op::StartsWith => h.starts_with(&v),
            Op::EndsWith => h.ends_with(&v),
            Op::In => list(),
            Op::NotIn => !list(),
            Op::Empty => have.is_empty(),
            Op::NotEmpty => !have.is_empty(),
            Op::Never => false,
        }
    }
}

impl Query {
    /// Whether a record matches; `get` gives a field's value, `None` when the table has no such
    /// field.
    pub fn matches<'a>(&self, get: impl Fn(&str) -> Option<&'a str>) -> bool {
        self.groups.is_empty()
            || self.groups.iter().any(|terms| {
                terms
                    .iter()
                    .all(|any| any.iter().any(|c| c.matches(get(&c.field))))
            })
    }

    /// Sort records by the query's `ORDERBY`s (stable: ties keep their order).
    pub fn sort<T>(&self, rows: &mut [T], get: impl Fn(&T, &str) -> String) {
        for (field, desc) in self.order.iter().rev() {
            rows.sort_by(|a, b| {
                let o = compare(&get(a, field), &get(b, field));
                if *desc { o.reverse() } else { o }
            });
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    fn row(pairs: &[(&str, &str)]) -> HashMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    #[test]
    fn conditions_match_as_servicenow_would() {
        let r = row(&[
            ("number", "CHG0030001"),
            ("state", "-2"),
            ("short_description", "Patch rack A^B"),
            ("value", "Drained node-a [drover:wf-1/drain]"),
            ("cmdb_ci", ""),
        ]);
        let cases = [
            ("", true),
            ("number=CHG0030001", true),
            ("number=chg0030001^state=-2", true),
            ("number=CHG0030001^state=-1", false),
            ("state!=-1", true),
            ("state>=-3^state<0", true),
            ("state>-2", false),
            ("valueLIKE[drover:wf-1/drain]", true),
            ("valueLIKE[drover:wf-2/drain]", false),
            ("valueNOT LIKE[drover:wf-2", true),
            ("short_descriptionLIKErack a^^b", true),
            ("numberSTARTSWITHCHG^numberENDSWITH0001", true),
            ("stateIN-1,-2,0", true),
            ("stateNOT IN-1,-2", false),
            ("cmdb_ciISEMPTY", true),
            ("cmdb_ciISNOTEMPTY", false),
            ("state=-1^ORstate=-2", true),
            ("state=-1^NQnumber=CHG0030001", true),
            ("state=-1^NQnumber=CHG0030002", false),
            ("u_unknown=x", false),
            ("number=CHG0030001^ORDERBYsys_created_on", true),
            ("numberBOGUSx", false),
        ];
        for (text, want) in cases {
            let q = parse(text);
            assert_eq!(q.matches(|f| r.get(f).map(String::as_str)), want, "{text}");
        }
    }

    #[test]
    fn orders_by_several_fields() {
        let q = parse("ORDERBYDESCstate^ORDERBYnumber");
        assert_eq!(q.order, [("state".into(), true), ("number".into(), false)]);
        let mut rows = vec![
            ("CHG2", "-2"),
            ("CHG1", "-2"),
            ("CHG3", "0"),
            ("CHG4", "-5"),
        ];
        q.sort(&mut rows, |r, f| {
            if f == "state" { r.1.into() } else { r.0.into() }
        });
        assert_eq!(
            rows,
            [
                ("CHG3", "0"),
                ("CHG1", "-2"),
                ("CHG2", "-2"),
                ("CHG4", "-5")
            ]
        );
    }
}
