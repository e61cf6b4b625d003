//! The site's objects as the REST API shows them: accounts, statuses, issues (with their
//! fields, comments and changelog), comments, transitions, projects and webhooks; REST v3 with
//! rich text as ADF, v2 as plain strings (what webhook payloads carry).

use serde_json::{Map, Value, json};

use super::adf::adf_text;
use super::{Account, Comment, ISSUE_TYPES, Issue, Site, Version, available, project_id, status};
use crate::ticketing::{jira_time, unix_ms};

impl Site {
    /// A webhook as the REST API shows it (the secret is never shown).
    pub fn webhook_json(&self, id: u64) -> Option<Value> {
        let h = self.webhooks.get(&id)?;
        Some(json!({
            "self": format!("{}/rest/webhooks/1.0/webhook/{}", self.base, h.id),
            "name": h.name,
            "url": h.url,
            "excludeBody": h.exclude_body,
            "filters": {"issue-related-events-section": h.filter},
            "events": h.events,
            "enabled": h.enabled,
            "lastUpdatedUser": h.last_updated_user.account_id,
            "lastUpdatedDisplayName": h.last_updated_user.display_name,
            "lastUpdated": unix_ms(h.last_updated),
        }))
    }

    /// Every webhook.
    pub fn webhooks_json(&self) -> Vec<Value> {
        self.webhooks
            .keys()
            .filter_map(|id| self.webhook_json(*id))
            .collect()
    }

    /// An account as Jira shows it.
    pub fn account_json(&self, a: &Account) -> Value {
        let mut v = json!({
            "self": format!("{}/rest/api/3/user?accountId={}", self.base, a.account_id),
            "accountId": a.account_id,
            "displayName": a.display_name,
            "active": true,
            "accountType": "atlassian",
            "timeZone": "Etc/UTC",
        });
        if let Some(e) = &a.email_address {
            v["emailAddress"] = json!(e);
        }
        v
    }

    /// A status as Jira shows it.
    pub fn status_json(&self, id: &str, v: Version) -> Value {
        let s = status(id);
        json!({
            "self": format!("{}/rest/api/{}/status/{}", self.base, v.n(), s.id),
            "description": "",
            "iconUrl": format!("{}/images/icons/statuses/generic.png", self.base),
            "name": s.name,
            "id": s.id,
            "statusCategory": {
                "self": format!("{}/rest/api/{}/statuscategory/{}", self.base, v.n(), s.category.id),
                "id": s.category.id,
                "key": s.category.key,
                "colorName": s.category.color,
                "name": s.category.name,
            },
        })
    }

    /// The transitions available for an issue, as `GET .../transitions` lists them.
    pub fn transitions_json(&self, issue: &Issue, v: Version) -> Value {
        let list: Vec<Value> = available(issue.status)
            .map(|t| {
                json!({
                    "id": t.id,
                    "name": t.name,
                    "to": self.status_json(t.to, v),
                    "hasScreen": false,
                    "isGlobal": false,
                    "isInitial": false,
                    "isAvailable": true,
                    "isConditional": false,
                    "isLooped": false,
                })
            })
            .collect();
        json!({"expand": "transitions", "transitions": list})
    }

    /// An issue as `GET /rest/api/{2,3}/issue/{key}` returns it. `only`: the `fields` parameter
    /// (names to keep; `-name` to drop); `changelog`: `expand=changelog`.
    pub fn issue_json(
        &self,
        issue: &Issue,
        v: Version,
        only: Option<&[String]>,
        changelog: bool,
    ) -> Value {
        let mut fields = self.fields_json(issue, v, true);
        if let Some(only) = only {
            let keep: Vec<&str> = only
                .iter()
                .map(String::as_str)
                .filter(|f| !f.starts_with('-') && !f.starts_with('*'))
                .collect();
            let all = only.iter().any(|f| f == "*all" || f == "*navigable");
            if !keep.is_empty() && !all {
                fields.retain(|k, _| keep.contains(&k.as_str()));
            }
            for drop in only.iter().filter_map(|f| f.strip_prefix('-')) {
                fields.remove(drop);
            }
        }
        let mut out = json!({
            "expand": "renderedFields,names,schema,operations,editmeta,changelog,versionedRepresentations",
            "id": issue.id.to_string(),
            "self": format!("{}/rest/api/{}/issue/{}", self.base, v.n(), issue.id),
            "key": issue.key,
            "fields": fields,
        });
        if changelog {
            let histories: Vec<Value> = issue
                .histories
                .iter()
                .map(|h| {
                    json!({
                        "id": h.id.to_string(),
                        "author": self.account_json(&h.author),
                        "created": jira_time(h.created),
                        "items": h.items,
                    })
                })
                .collect();
            out["changelog"] = json!({
                "startAt": 0,
                "maxResults": histories.len(),
                "total": histories.len(),
                "histories": histories,
            });
        }
        out
    }

    fn fields_json(&self, issue: &Issue, v: Version, with_comments: bool) -> Map<String, Value> {
        let project_index = self
            .projects
            .iter()
            .position(|p| *p == issue.project)
            .unwrap_or(0);
        let (type_id, type_name) = ISSUE_TYPES
            .iter()
            .find(|(_, n)| *n == issue.issuetype)
            .copied()
            .unwrap_or(ISSUE_TYPES[0]);
        let s = status(issue.status);
        let mut f = Map::new();
        f.insert("summary".into(), json!(issue.summary));
        f.insert("status".into(), self.status_json(issue.status, v));
        f.insert(
            "issuetype".into(),
            json!({
                "self": format!("{}/rest/api/{}/issuetype/{type_id}", self.base, v.n()),
                "id": type_id,
                "name": type_name,
                "subtask": false,
            }),
        );
        f.insert(
            "project".into(),
            json!({
                "self": format!("{}/rest/api/{}/project/{}", self.base, v.n(), project_id(project_index)),
                "id": project_id(project_index),
                "key": issue.project,
                "name": issue.project,
                "projectTypeKey": "software",
            }),
        );
        f.insert("labels".into(), json!(issue.labels));
        f.insert("created".into(), json!(jira_time(issue.created)));
        f.insert("updated".into(), json!(jira_time(issue.updated)));
        f.insert(
            "statuscategorychangedate".into(),
            json!(jira_time(issue.status_changed)),
        );
        f.insert("reporter".into(), self.account_json(&issue.reporter));
        f.insert("creator".into(), self.account_json(&issue.reporter));
        f.insert(
            "resolution".into(),
            match s.resolution {
                Some((id, name)) => json!({
                    "self": format!("{}/rest/api/{}/resolution/{id}", self.base, v.n()),
                    "id": id,
                    "name": name,
                }),
                None => Value::Null,
            },
        );
        f.insert(
            "resolutiondate".into(),
            issue.resolved.map_or(Value::Null, |t| json!(jira_time(t))),
        );
        for name in [
            "description",
            "environment",
            "assignee",
            "priority",
            "duedate",
        ] {
            f.insert(name.into(), Value::Null);
        }
        for (k, value) in &issue.other {
            let rendered = match (k.as_str(), v) {
                ("description" | "environment", Version::V2) => json!(adf_text(value)),
                _ => value.clone(),
            };
            f.insert(k.clone(), rendered);
        }
        if with_comments {
            let comments: Vec<Value> = issue
                .comments
                .iter()
                .map(|c| self.comment_json(issue, c, v, false))
                .collect();
            f.insert(
                "comment".into(),
                json!({
                    "comments": comments,
                    "self": format!("{}/rest/api/{}/issue/{}/comment", self.base, v.n(), issue.id),
                    "maxResults": comments.len(),
                    "total": comments.len(),
                    "startAt": 0,
                }),
            );
        }
        f
    }

    /// A comment as the comment endpoints return it; `properties` with `expand=properties`.
    pub fn comment_json(&self, issue: &Issue, c: &Comment, v: Version, properties: bool) -> Value {
        let mut out = json!({
            "self": format!("{}/rest/api/{}/issue/{}/comment/{}", self.base, v.n(), issue.id, c.id),
            "id": c.id.to_string(),
            "author": self.account_json(&c.author),
            "body": match v {
                Version::V3 => c.body.clone(),
                Version::V2 => json!(adf_text(&c.body)),
            },
            "updateAuthor": self.account_json(&c.update_author),
            "created": jira_time(c.created),
            "updated": jira_time(c.updated),
            "jsdPublic": true,
        });
        if let Some(vis) = &c.visibility {
            out["visibility"] = vis.clone();
        }
        if properties {
            out["properties"] = Value::Array(
                c.properties
                    .iter()
                    .map(|(k, v)| json!({"key": k, "value": v}))
                    .collect(),
            );
        }
        out
    }

    /// A project by id or key, as `GET /rest/api/{2,3}/project/{idOrKey}` returns it.
    pub fn project_json(&self, id_or_key: &str, v: Version) -> Option<Value> {
        let (i, key) = self
            .projects
            .iter()
            .enumerate()
            .find(|(i, k)| k.eq_ignore_ascii_case(id_or_key) || project_id(*i) == id_or_key)?;
        let types: Vec<Value> = ISSUE_TYPES
            .iter()
            .map(|(id, name)| {
                json!({
                    "self": format!("{}/rest/api/{}/issuetype/{id}", self.base, v.n()),
                    "id": id,
                    "name": name,
                    "subtask": false,
                })
            })
            .collect();
        Some(json!({
            "self": format!("{}/rest/api/{}/project/{}", self.base, v.n(), project_id(i)),
            "id": project_id(i),
            "key": key,
            "name": key,
            "projectTypeKey": "software",
            "simplified": false,
            "style": "classic",
            "isPrivate": false,
            "issueTypes": types,
        }))
    }

    /// Every project.
    pub fn projects_json(&self, v: Version) -> Vec<Value> {
        self.projects
            .iter()
            .filter_map(|k| self.project_json(k, v))
            .collect()
    }

    /// An issue in a webhook payload: REST v2's representation, without comments.
    pub(super) fn webhook_issue(&self, issue: &Issue) -> Value {
        json!({
            "id": issue.id.to_string(),
            "self": format!("{}/rest/api/2/issue/{}", self.base, issue.id),
            "key": issue.key,
            "fields": self.fields_json(issue, Version::V2, false),
        })
    }
}
