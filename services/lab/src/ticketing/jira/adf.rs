//! Atlassian Document Format, as much as comments need: whether a value is a document, its
//! text, and a document made from plain text (one paragraph per line).

use serde_json::{Value, json};

/// Whether a value is an ADF document (`type` doc, `version` 1, well-formed nodes).
pub fn adf_valid(v: &Value) -> bool {
    fn node(n: &Value) -> bool {
        let Some(kind) = n["type"].as_str() else {
            return false;
        };
        if kind == "text" && !n["text"].is_string() {
            return false;
        }
        match &n["content"] {
            Value::Null => true,
            Value::Array(children) => children.iter().all(node),
            _ => false,
        }
    }
    v["type"] == "doc" && v["version"] == 1 && v["content"].is_array() && node(v)
}

/// The text of an ADF document: blocks on lines of their own.
pub fn adf_text(v: &Value) -> String {
    fn walk(n: &Value, out: &mut String) {
        match n["type"].as_str() {
            Some("text") => out.push_str(n["text"].as_str().unwrap_or("")),
            Some("hardBreak") => out.push('\n'),
            _ => {
                if let Some(children) = n["content"].as_array() {
                    let block = |c: &Value| {
                        !matches!(
                            c["type"].as_str(),
                            Some("text" | "hardBreak" | "mention" | "emoji" | "inlineCard")
                        )
                    };
                    for (i, c) in children.iter().enumerate() {
                        if i > 0 && block(c) {
                            out.push('\n');
                        }
                        walk(c, out);
                    }
                }
            }
        }
    }
    if let Value::String(s) = v {
        return s.clone();
    }
    let mut out = String::new();
    walk(v, &mut out);
    out
}

/// An ADF document with one paragraph per line of `text`.
pub fn adf_from_text(text: &str) -> Value {
    let paragraphs: Vec<Value> = text
        .split('\n')
        .map(|line| {
            if line.is_empty() {
                json!({"type": "paragraph", "content": []})
            } else {
                json!({"type": "paragraph", "content": [{"type": "text", "text": line}]})
            }
        })
        .collect();
    json!({"type": "doc", "version": 1, "content": paragraphs})
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn adf_text_round_trips_lines() {
        let doc = adf_from_text("one\n\nthree");
        assert!(adf_valid(&doc));
        assert_eq!(adf_text(&doc), "one\n\nthree");
        assert!(!adf_valid(
            &json!({"type": "doc", "version": 2, "content": []})
        ));
        assert!(!adf_valid(
            &json!({"type": "doc", "version": 1, "content": [{"type": "text"}]})
        ));
    }
}
