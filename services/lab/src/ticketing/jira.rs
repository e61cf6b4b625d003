//! A Jira Cloud site's issues, comments, workflow and admin webhooks: the model behind the REST
//! API (`api`), pure (time comes in as `now`). Every change returns the webhook events it fires,
//! built from the issue as it is right after the change; the caller queues them before it lets go
//! of the site's lock.
//!
//! The workflow (statuses and transitions) is the table in `workflow`; rendering as JSON is in
//! `render`, field edits in `fields`, Atlassian Document Format in `adf`.

pub mod adf;
pub mod api;
mod fields;
pub mod jql;
mod render;
pub mod workflow;

use std::collections::{BTreeMap, HashMap};
use std::time::SystemTime;

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value, json};

use super::{text_markers, unix_ms};
use fields::{apply, comment_body, item};

pub use adf::{adf_from_text, adf_text, adf_valid};
pub use workflow::{ISSUE_TYPES, STATUSES, Status, TRANSITIONS, Transition, available, status};

/// A Jira account.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Account {
    pub account_id: String,
    pub display_name: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub email_address: Option<String>,
}

/// The REST API version a request used: v3 speaks ADF for rich text, v2 plain strings.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Version {
    V2,
    V3,
}

impl Version {
    fn n(self) -> u8 {
        match self {
            Version::V2 => 2,
            Version::V3 => 3,
        }
    }
}

/// A refused request: the status and Jira's `{"errorMessages": [...], "errors": {...}}`.
#[derive(Debug, Clone, PartialEq)]
pub struct Refusal {
    pub status: u16,
    pub messages: Vec<String>,
    pub errors: Map<String, Value>,
}

impl Refusal {
    fn message(status: u16, message: impl Into<String>) -> Self {
        Refusal {
            status,
            messages: vec![message.into()],
            errors: Map::new(),
        }
    }

    fn fields(errors: Map<String, Value>) -> Self {
        Refusal {
            status: 400,
            messages: Vec::new(),
            errors,
        }
    }

    fn field(name: &str, message: &str) -> Self {
        let mut errors = Map::new();
        errors.insert(name.into(), json!(message));
        Refusal::fields(errors)
    }

    fn no_issue() -> Self {
        Refusal::message(404, ISSUE_NOT_FOUND)
    }

    /// The JSON body.
    pub fn body(&self) -> Value {
        json!({"errorMessages": self.messages, "errors": self.errors})
    }
}

/// Jira's 404 for an issue.
pub const ISSUE_NOT_FOUND: &str = "Issue does not exist or you do not have permission to see it.";
/// Most characters of text a comment may hold.
pub const MAX_COMMENT_CHARS: usize = 32_767;

/// An issue.
#[derive(Debug, Clone)]
pub struct Issue {
    pub id: u64,
    pub key: String,
    pub project: String,
    pub issuetype: &'static str,
    pub summary: String,
    /// Status id.
    pub status: &'static str,
    pub labels: Vec<String>,
    /// Other fields as stored: `description` (ADF), `priority`, `assignee`, `duedate`,
    /// `customfield_*`.
    pub other: BTreeMap<String, Value>,
    pub reporter: Account,
    pub created: SystemTime,
    pub updated: SystemTime,
    pub status_changed: SystemTime,
    pub resolved: Option<SystemTime>,
    pub comments: Vec<Comment>,
    pub histories: Vec<History>,
}

/// A comment.
#[derive(Debug, Clone)]
pub struct Comment {
    pub id: u64,
    pub author: Account,
    pub update_author: Account,
    /// ADF.
    pub body: Value,
    pub created: SystemTime,
    pub updated: SystemTime,
    pub visibility: Option<Value>,
    pub properties: BTreeMap<String, Value>,
}

/// One changelog entry.
#[derive(Debug, Clone)]
pub struct History {
    pub id: u64,
    pub author: Account,
    pub created: SystemTime,
    pub items: Vec<Value>,
}

/// An admin webhook.
#[derive(Debug, Clone)]
pub struct Webhook {
    pub id: u64,
    pub name: String,
    pub url: String,
    pub events: Vec<String>,
    pub filter: String,
    jql: jql::Jql,
    pub exclude_body: bool,
    pub secret: Option<String>,
    pub enabled: bool,
    pub last_updated: SystemTime,
    pub last_updated_user: Account,
}

/// A webhook event: its name and its payload (everything but delivery headers).
#[derive(Debug, Clone)]
pub struct Event {
    pub name: &'static str,
    pub issue_id: u64,
    pub issue_key: String,
    pub payload: Value,
}

/// What a change did.
#[derive(Debug, Default)]
pub struct Change {
    pub events: Vec<Event>,
    pub comments_created: u64,
    /// Comments carrying a Drover marker an earlier comment of the issue carried.
    pub duplicate_markers: u64,
}

/// The site.
#[derive(Debug)]
pub struct Site {
    base: String,
    projects: Vec<String>,
    issues: BTreeMap<u64, Issue>,
    next_issue_id: u64,
    project_seq: HashMap<String, u64>,
    next_comment_id: u64,
    next_changelog_id: u64,
    webhooks: BTreeMap<u64, Webhook>,
    next_webhook_id: u64,
}

impl Site {
    /// An empty site at `base` with these projects.
    pub fn new(base: String, projects: Vec<String>) -> Self {
        Site {
            base,
            projects,
            issues: BTreeMap::new(),
            next_issue_id: 10000,
            project_seq: HashMap::new(),
            next_comment_id: 10000,
            next_changelog_id: 10100,
            webhooks: BTreeMap::new(),
            next_webhook_id: 1,
        }
    }

    fn id_of(&self, id_or_key: &str) -> Option<u64> {
        if !id_or_key.is_empty() && id_or_key.bytes().all(|b| b.is_ascii_digit()) {
            let id = id_or_key.parse().ok()?;
            return self.issues.contains_key(&id).then_some(id);
        }
        self.issues
            .values()
            .find(|i| i.key.eq_ignore_ascii_case(id_or_key))
            .map(|i| i.id)
    }

    /// An issue by id or key.
    pub fn find(&self, id_or_key: &str) -> Option<&Issue> {
        self.id_of(id_or_key).and_then(|id| self.issues.get(&id))
    }

    /// The issue a comment belongs to.
    pub fn comment_issue(&self, comment_id: u64) -> Option<&Issue> {
        self.issues
            .values()
            .find(|i| i.comments.iter().any(|c| c.id == comment_id))
    }

    /// Create an issue from `{"fields": {...}}`; returns its id.
    pub fn create(
        &mut self,
        body: &Value,
        v: Version,
        actor: &Account,
        now: SystemTime,
    ) -> Result<(u64, Change), Refusal> {
        let empty = Map::new();
        let body = body.as_object().ok_or_else(invalid_payload)?;
        let fields = match body.get("fields") {
            Some(Value::Object(f)) => f,
            None => &empty,
            Some(_) => return Err(invalid_payload()),
        };
        let update = match body.get("update") {
            Some(Value::Object(u)) => u,
            None => &empty,
            Some(_) => return Err(invalid_payload()),
        };
        let mut errors = Map::new();
        let project = fields.get("project").and_then(|p| {
            let by_key = p["key"].as_str().or(p.as_str()).and_then(|k| {
                self.projects
                    .iter()
                    .find(|x| x.eq_ignore_ascii_case(k))
                    .cloned()
            });
            let by_id = p["id"].as_str().and_then(|id| {
                self.projects
                    .iter()
                    .enumerate()
                    .find(|(i, _)| project_id(*i) == id)
                    .map(|(_, k)| k.clone())
            });
            by_key.or(by_id)
        });
        if project.is_none() {
            errors.insert("project".into(), json!("Specify a valid project ID or key"));
        }
        let issuetype = match fields.get("issuetype") {
            None => {
                errors.insert("issuetype".into(), json!("Specify an issue type"));
                None
            }
            Some(t) => {
                let found = ISSUE_TYPES.iter().find(|(id, name)| {
                    t["name"]
                        .as_str()
                        .is_some_and(|n| n.eq_ignore_ascii_case(name))
                        || t["id"].as_str() == Some(id)
                });
                if found.is_none() {
                    errors.insert(
                        "issuetype".into(),
                        json!("The issue type selected is invalid."),
                    );
                }
                found.map(|(_, name)| *name)
            }
        };
        if !fields.get("summary").is_some_and(|s| s.is_string()) {
            errors.insert(
                "summary".into(),
                json!("You must specify a summary of the issue."),
            );
        }
        let mut draft = Issue {
            id: 0,
            key: String::new(),
            project: project.clone().unwrap_or_default(),
            issuetype: issuetype.unwrap_or("Task"),
            summary: String::new(),
            status: STATUSES[0].id,
            labels: Vec::new(),
            other: BTreeMap::new(),
            reporter: actor.clone(),
            created: now,
            updated: now,
            status_changed: now,
            resolved: None,
            comments: Vec::new(),
            histories: Vec::new(),
        };
        if let Err(more) = apply(&mut draft, fields, update, v, true) {
            for (k, e) in more {
                errors.entry(k).or_insert(e);
            }
        }
        if !errors.is_empty() {
            return Err(Refusal::fields(errors));
        }
        let project = project.unwrap_or_default();
        let seq = self.project_seq.entry(project.clone()).or_insert(0);
        *seq += 1;
        draft.key = format!("{project}-{seq}");
        draft.id = self.next_issue_id;
        self.next_issue_id += 1;
        let id = draft.id;
        self.issues.insert(id, draft);
        let issue = &self.issues[&id];
        let event = self.issue_event(
            "jira:issue_created",
            "issue_created",
            issue,
            actor,
            None,
            None,
            now,
        );
        Ok((
            id,
            Change {
                events: vec![event],
                ..Change::default()
            },
        ))
    }

    /// Edit an issue with `{"fields": {...}, "update": {...}}`.
    pub fn edit(
        &mut self,
        id_or_key: &str,
        body: &Value,
        v: Version,
        actor: &Account,
        now: SystemTime,
    ) -> Result<Change, Refusal> {
        let id = self.id_of(id_or_key).ok_or_else(Refusal::no_issue)?;
        let empty = Map::new();
        let body = body.as_object().ok_or_else(invalid_payload)?;
        let fields = match body.get("fields") {
            Some(Value::Object(f)) => f,
            None => &empty,
            Some(_) => return Err(invalid_payload()),
        };
        let update = match body.get("update") {
            Some(Value::Object(u)) => u,
            None => &empty,
            Some(_) => return Err(invalid_payload()),
        };
        let mut issue = self.issues[&id].clone();
        let items = apply(&mut issue, fields, update, v, false).map_err(Refusal::fields)?;
        if items.is_empty() {
            return Ok(Change::default());
        }
        let changelog = self.record(&mut issue, items, actor, now);
        self.issues.insert(id, issue);
        let issue = &self.issues[&id];
        let event = self.issue_event(
            "jira:issue_updated",
            "issue_updated",
            issue,
            actor,
            Some(changelog),
            None,
            now,
        );
        Ok(Change {
            events: vec![event],
            ..Change::default()
        })
    }

    /// The id of the transition `name` (an id, a transition name or a target status name)
    /// available for an issue.
    pub fn resolve_transition(&self, id_or_key: &str, name: &str) -> Result<String, Refusal> {
        let issue = self.find(id_or_key).ok_or_else(Refusal::no_issue)?;
        available(issue.status)
            .find(|t| {
                t.id == name
                    || t.name.eq_ignore_ascii_case(name)
                    || status(t.to).name.eq_ignore_ascii_case(name)
            })
            .map(|t| t.id.to_string())
            .ok_or_else(|| {
                Refusal::message(
                    400,
                    format!(
                        "Transition '{name}' is not valid for this issue (status {}).",
                        status(issue.status).name
                    ),
                )
            })
    }

    /// Perform `{"transition": {"id": "21"}, "fields"?: {...}, "update"?: {...}}`.
    pub fn transition(
        &mut self,
        id_or_key: &str,
        body: &Value,
        v: Version,
        actor: &Account,
        now: SystemTime,
    ) -> Result<Change, Refusal> {
        let id = self.id_of(id_or_key).ok_or_else(Refusal::no_issue)?;
        let tid = match &body["transition"]["id"] {
            Value::String(s) => s.clone(),
            Value::Number(n) => n.to_string(),
            _ => {
                return Err(Refusal::message(400, "Missing 'transition' identifier"));
            }
        };
        let mut issue = self.issues[&id].clone();
        let t = available(issue.status)
            .find(|t| t.id == tid)
            .ok_or_else(|| {
                Refusal::message(
                    400,
                    format!("Transition id '{tid}' is not valid for this issue."),
                )
            })?;
        let empty = Map::new();
        let fields = body["fields"].as_object().unwrap_or(&empty);
        let update = body["update"].as_object().unwrap_or(&empty);
        let mut items = apply(&mut issue, fields, update, v, false).map_err(Refusal::fields)?;
        let (from, to) = (status(issue.status), status(t.to));
        items.insert(
            0,
            item(
                "status",
                "jira",
                Some(from.id),
                Some(from.name),
                Some(to.id),
                Some(to.name),
            ),
        );
        if from.resolution != to.resolution {
            let (old, new) = (from.resolution, to.resolution);
            items.push(item(
                "resolution",
                "jira",
                old.map(|r| r.0),
                old.map(|r| r.1),
                new.map(|r| r.0),
                new.map(|r| r.1),
            ));
            issue.resolved = new.map(|_| now);
        }
        issue.status = to.id;
        issue.status_changed = now;
        let changelog = self.record(&mut issue, items, actor, now);
        self.issues.insert(id, issue);
        let issue = &self.issues[&id];
        let event = self.issue_event(
            "jira:issue_updated",
            "issue_generic",
            issue,
            actor,
            Some(changelog),
            None,
            now,
        );
        Ok(Change {
            events: vec![event],
            ..Change::default()
        })
    }

    /// Add a comment (`{"body": ADF | "text", "visibility"?, "properties"?: [{key, value}]}`);
    /// returns its id.
    pub fn add_comment(
        &mut self,
        id_or_key: &str,
        body: &Value,
        v: Version,
        actor: &Account,
        now: SystemTime,
    ) -> Result<(u64, Change), Refusal> {
        let id = self.id_of(id_or_key).ok_or_else(Refusal::no_issue)?;
        let adf = comment_body(body, v)?;
        let mut properties = BTreeMap::new();
        match &body["properties"] {
            Value::Null => {}
            Value::Array(list) => {
                for p in list {
                    let key = p["key"]
                        .as_str()
                        .filter(|k| !k.is_empty() && k.len() <= 255);
                    let Some(key) = key else {
                        return Err(Refusal::message(
                            400,
                            "The property key must be between 1 and 255 characters.",
                        ));
                    };
                    properties.insert(key.to_string(), p["value"].clone());
                }
            }
            _ => return Err(invalid_payload()),
        }
        let comment = Comment {
            id: self.next_comment_id,
            author: actor.clone(),
            update_author: actor.clone(),
            body: adf,
            created: now,
            updated: now,
            visibility: body.get("visibility").filter(|v| !v.is_null()).cloned(),
            properties,
        };
        self.next_comment_id += 1;
        let cid = comment.id;
        let issue = self.issues.get_mut(&id).ok_or_else(Refusal::no_issue)?;
        let duplicate = repeats_marker(issue, &comment);
        issue.comments.push(comment);
        issue.updated = now;
        let issue = &self.issues[&id];
        let comment = issue.comments.last().ok_or_else(Refusal::no_issue)?;
        let events = vec![
            self.comment_event("comment_created", issue, comment, now),
            self.issue_event(
                "jira:issue_updated",
                "issue_commented",
                issue,
                actor,
                None,
                Some(comment),
                now,
            ),
        ];
        Ok((
            cid,
            Change {
                events,
                comments_created: 1,
                duplicate_markers: u64::from(duplicate),
            },
        ))
    }

    /// Replace a comment's body.
    pub fn update_comment(
        &mut self,
        id_or_key: &str,
        comment_id: u64,
        body: &Value,
        v: Version,
        actor: &Account,
        now: SystemTime,
    ) -> Result<Change, Refusal> {
        let id = self.id_of(id_or_key).ok_or_else(Refusal::no_issue)?;
        let adf = comment_body(body, v)?;
        let issue = self.issues.get_mut(&id).ok_or_else(Refusal::no_issue)?;
        let comment = issue
            .comments
            .iter_mut()
            .find(|c| c.id == comment_id)
            .ok_or_else(|| no_comment(comment_id))?;
        comment.body = adf;
        comment.updated = now;
        comment.update_author = actor.clone();
        issue.updated = now;
        let issue = &self.issues[&id];
        let comment = issue
            .comments
            .iter()
            .find(|c| c.id == comment_id)
            .ok_or_else(|| no_comment(comment_id))?;
        let events = vec![
            self.comment_event("comment_updated", issue, comment, now),
            self.issue_event(
                "jira:issue_updated",
                "issue_comment_edited",
                issue,
                actor,
                None,
                Some(comment),
                now,
            ),
        ];
        Ok(Change {
            events,
            ..Change::default()
        })
    }

    /// Delete a comment.
    pub fn delete_comment(
        &mut self,
        id_or_key: &str,
        comment_id: u64,
        actor: &Account,
        now: SystemTime,
    ) -> Result<Change, Refusal> {
        let id = self.id_of(id_or_key).ok_or_else(Refusal::no_issue)?;
        let issue = self.issues.get_mut(&id).ok_or_else(Refusal::no_issue)?;
        let pos = issue
            .comments
            .iter()
            .position(|c| c.id == comment_id)
            .ok_or_else(|| no_comment(comment_id))?;
        let comment = issue.comments.remove(pos);
        issue.updated = now;
        let issue = &self.issues[&id];
        let events = vec![
            self.comment_event("comment_deleted", issue, &comment, now),
            self.issue_event(
                "jira:issue_updated",
                "issue_comment_deleted",
                issue,
                actor,
                None,
                Some(&comment),
                now,
            ),
        ];
        Ok(Change {
            events,
            ..Change::default()
        })
    }

    /// Set a comment property; `Ok(true)` when it was created, `false` when replaced. Comment
    /// properties fire no webhook.
    pub fn set_comment_property(
        &mut self,
        comment_id: u64,
        key: &str,
        value: Value,
    ) -> Result<(bool, Change), Refusal> {
        if key.is_empty() || key.len() > 255 {
            return Err(Refusal::message(
                400,
                "The property key must be between 1 and 255 characters.",
            ));
        }
        let issue_id = self
            .comment_issue(comment_id)
            .map(|i| i.id)
            .ok_or_else(|| no_comment(comment_id))?;
        let issue = self
            .issues
            .get_mut(&issue_id)
            .ok_or_else(|| no_comment(comment_id))?;
        let pos = issue
            .comments
            .iter()
            .position(|c| c.id == comment_id)
            .ok_or_else(|| no_comment(comment_id))?;
        let mut comment = issue.comments.remove(pos);
        let had = markers(&comment);
        let created = comment.properties.insert(key.into(), value).is_none();
        let gained: Vec<String> = markers(&comment)
            .into_iter()
            .filter(|m| !had.contains(m))
            .collect();
        let duplicate = issue
            .comments
            .iter()
            .any(|c| markers(c).iter().any(|m| gained.contains(m)));
        issue.comments.insert(pos, comment);
        Ok((
            created,
            Change {
                duplicate_markers: u64::from(duplicate),
                ..Change::default()
            },
        ))
    }

    /// Delete a comment property; false when there was none.
    pub fn delete_comment_property(&mut self, comment_id: u64, key: &str) -> Result<bool, Refusal> {
        let issue_id = self
            .comment_issue(comment_id)
            .map(|i| i.id)
            .ok_or_else(|| no_comment(comment_id))?;
        let issue = self
            .issues
            .get_mut(&issue_id)
            .ok_or_else(|| no_comment(comment_id))?;
        let comment = issue
            .comments
            .iter_mut()
            .find(|c| c.id == comment_id)
            .ok_or_else(|| no_comment(comment_id))?;
        Ok(comment.properties.remove(key).is_some())
    }

    /// Register a webhook from the REST body; returns its id.
    pub fn add_webhook(
        &mut self,
        body: &Value,
        actor: &Account,
        now: SystemTime,
    ) -> Result<u64, Refusal> {
        let mut errors = Map::new();
        let name = body["name"].as_str().unwrap_or("").trim().to_string();
        if name.is_empty() {
            errors.insert("name".into(), json!("A webhook name is required."));
        }
        let url = body["url"].as_str().unwrap_or("").trim().to_string();
        if !(url.starts_with("http://") || url.starts_with("https://")) {
            errors.insert("url".into(), json!("A valid http(s) URL is required."));
        }
        let events: Vec<String> = match &body["events"] {
            Value::Array(list) if !list.is_empty() && list.iter().all(|e| e.is_string()) => list
                .iter()
                .filter_map(|e| e.as_str().map(str::to_string))
                .collect(),
            _ => {
                errors.insert("events".into(), json!("At least one event is required."));
                Vec::new()
            }
        };
        let filter = body["filters"]["issue-related-events-section"]
            .as_str()
            .unwrap_or("")
            .to_string();
        let jql = match jql::parse(&filter) {
            Ok(j) => j,
            Err(e) => {
                errors.insert("filters".into(), json!(format!("Invalid JQL: {e}")));
                jql::Jql::default()
            }
        };
        if !errors.is_empty() {
            return Err(Refusal::fields(errors));
        }
        let id = self.next_webhook_id;
        self.next_webhook_id += 1;
        self.webhooks.insert(
            id,
            Webhook {
                id,
                name,
                url,
                events,
                filter,
                jql,
                exclude_body: body["excludeBody"].as_bool().unwrap_or(false),
                secret: body["secret"]
                    .as_str()
                    .filter(|s| !s.is_empty())
                    .map(str::to_string),
                enabled: body["enabled"].as_bool().unwrap_or(true),
                last_updated: now,
                last_updated_user: actor.clone(),
            },
        );
        Ok(id)
    }

    /// Remove a webhook; false when there was none.
    pub fn remove_webhook(&mut self, id: u64) -> bool {
        self.webhooks.remove(&id).is_some()
    }

    /// The webhooks an event goes to: enabled, subscribed to its name, whose filter matches the
    /// issue.
    pub fn subscribers(&self, event: &Event) -> Vec<&Webhook> {
        let Some(issue) = self.issues.get(&event.issue_id) else {
            return Vec::new();
        };
        self.webhooks
            .values()
            .filter(|h| h.enabled && h.events.iter().any(|e| e == event.name))
            .filter(|h| {
                h.jql.matches(|field| match field {
                    "project" => vec![issue.project.clone()],
                    "issuetype" => vec![issue.issuetype.to_string()],
                    "status" => vec![status(issue.status).name.to_string()],
                    "labels" => issue.labels.clone(),
                    _ => vec![issue.key.clone()],
                })
            })
            .collect()
    }

    /// The custom fields set on any issue.
    pub fn custom_fields(&self) -> Vec<String> {
        self.issues
            .values()
            .flat_map(|i| i.other.keys())
            .filter(|k| k.starts_with("customfield_"))
            .cloned()
            .collect()
    }

    /// The site's base URL.
    pub fn base(&self) -> &str {
        &self.base
    }

    fn record(
        &mut self,
        issue: &mut Issue,
        items: Vec<Value>,
        actor: &Account,
        now: SystemTime,
    ) -> Value {
        let id = self.next_changelog_id;
        self.next_changelog_id += 1;
        issue.updated = now;
        issue.histories.push(History {
            id,
            author: actor.clone(),
            created: now,
            items: items.clone(),
        });
        json!({"id": id.to_string(), "items": items})
    }

    #[allow(clippy::too_many_arguments)]
    fn issue_event(
        &self,
        name: &'static str,
        type_name: &str,
        issue: &Issue,
        actor: &Account,
        changelog: Option<Value>,
        comment: Option<&Comment>,
        now: SystemTime,
    ) -> Event {
        let mut payload = json!({
            "timestamp": unix_ms(now),
            "webhookEvent": name,
            "issue_event_type_name": type_name,
            "user": self.account_json(actor),
            "issue": self.webhook_issue(issue),
        });
        if let Some(c) = changelog {
            payload["changelog"] = c;
        }
        if let Some(c) = comment {
            payload["comment"] = self.comment_json(issue, c, Version::V2, false);
        }
        Event {
            name,
            issue_id: issue.id,
            issue_key: issue.key.clone(),
            payload,
        }
    }

    fn comment_event(
        &self,
        name: &'static str,
        issue: &Issue,
        c: &Comment,
        now: SystemTime,
    ) -> Event {
        Event {
            name,
            issue_id: issue.id,
            issue_key: issue.key.clone(),
            payload: json!({
                "timestamp": unix_ms(now),
                "webhookEvent": name,
                "comment": self.comment_json(issue, c, Version::V2, false),
                "issue": self.webhook_issue(issue),
            }),
        }
    }
}

fn project_id(index: usize) -> String {
    (10000 + index).to_string()
}

fn invalid_payload() -> Refusal {
    Refusal::message(
        400,
        "Invalid request payload. Refer to the REST API documentation and try again.",
    )
}

fn no_comment(id: u64) -> Refusal {
    Refusal::message(404, format!("Can not find a comment for the id: {id}."))
}

/// The Drover markers a comment carries: its `drover` property's `marker` (or `key`) and every
/// `[drover:<key>]` in its text.
pub fn markers(c: &Comment) -> Vec<String> {
    let mut out: Vec<String> = c
        .properties
        .get("drover")
        .and_then(|p| p["marker"].as_str().or(p["key"].as_str()))
        .map(|k| vec![k.to_string()])
        .unwrap_or_default();
    for m in text_markers(&adf_text(&c.body)) {
        if !out.contains(&m) {
            out.push(m);
        }
    }
    out
}

/// Whether a new comment repeats a marker an earlier comment of the issue carries.
fn repeats_marker(issue: &Issue, new: &Comment) -> bool {
    let mine = markers(new);
    !mine.is_empty()
        && issue
            .comments
            .iter()
            .any(|c| markers(c).iter().any(|m| mine.contains(m)))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::{Duration, UNIX_EPOCH};

    fn alice() -> Account {
        Account {
            account_id: "5b10ac8d82e05b22cc7d4ef5".into(),
            display_name: "Alice".into(),
            email_address: None,
        }
    }

    fn at(s: u64) -> SystemTime {
        UNIX_EPOCH + Duration::from_secs(1_800_000_000 + s)
    }

    fn site_with_issue() -> Site {
        let mut site = Site::new("http://jira".into(), vec!["OPS".into()]);
        let body = json!({"fields": {"project": {"key": "OPS"}, "summary": "Patch", "issuetype": {"name": "Change"}, "labels": ["drover"]}});
        let (id, change) = site
            .create(&body, Version::V3, &alice(), at(0))
            .expect("created");
        assert_eq!(id, 10000);
        assert_eq!(change.events[0].name, "jira:issue_created");
        site
    }

    #[test]
    fn walks_the_workflow_with_changelog_ids() {
        let mut site = site_with_issue();
        let ids = |site: &Site| -> Vec<String> {
            let issue = site.find("OPS-1").expect("issue");
            site.transitions_json(issue, Version::V3)["transitions"]
                .as_array()
                .expect("list")
                .iter()
                .map(|t| t["id"].as_str().unwrap_or("").to_string())
                .collect()
        };
        assert_eq!(ids(&site), ["11", "21", "41"]);
        let bad = site
            .transition(
                "OPS-1",
                &json!({"transition": {"id": "31"}}),
                Version::V3,
                &alice(),
                at(1),
            )
            .expect_err("not from To Do");
        assert_eq!(
            bad.messages,
            ["Transition id '31' is not valid for this issue."]
        );
        let c1 = site
            .transition(
                "OPS-1",
                &json!({"transition": {"id": "11"}}),
                Version::V3,
                &alice(),
                at(1),
            )
            .expect("start");
        let c2 = site
            .transition(
                "ops-1",
                &json!({"transition": {"id": 31}}),
                Version::V3,
                &alice(),
                at(2),
            )
            .expect("done");
        let p1 = &c1.events[0].payload;
        let p2 = &c2.events[0].payload;
        assert_eq!(p1["issue_event_type_name"], "issue_generic");
        assert_eq!(p1["changelog"]["items"][0]["fromString"], "To Do");
        assert_eq!(p1["changelog"]["items"][0]["to"], "3");
        assert_eq!(p2["changelog"]["items"][1]["field"], "resolution");
        assert_eq!(p2["issue"]["fields"]["status"]["name"], "Done");
        let (a, b) = (
            p1["changelog"]["id"].as_str().unwrap_or(""),
            p2["changelog"]["id"].as_str().unwrap_or(""),
        );
        assert!(a.parse::<u64>().unwrap_or(0) < b.parse::<u64>().unwrap_or(0));
        assert_eq!(ids(&site), ["51"]);
    }

    #[test]
    fn edits_record_only_real_changes() {
        let mut site = site_with_issue();
        let same = site
            .edit(
                "OPS-1",
                &json!({"fields": {"summary": "Patch"}}),
                Version::V3,
                &alice(),
                at(1),
            )
            .expect("edit");
        assert!(same.events.is_empty());
        let changed = site
            .edit(
                "OPS-1",
                &json!({"fields": {"customfield_10050": "2026-01-01"}, "update": {"labels": [{"add": "maintenance"}]}}),
                Version::V3,
                &alice(),
                at(2),
            )
            .expect("edit");
        let items = &changed.events[0].payload["changelog"]["items"];
        assert_eq!(items[0]["fieldtype"], "custom");
        assert_eq!(items[1]["toString"], "drover maintenance");
        let refused = site
            .edit(
                "OPS-1",
                &json!({"fields": {"status": "Done", "labels": ["a b"]}}),
                Version::V3,
                &alice(),
                at(3),
            )
            .expect_err("refused");
        assert!(refused.errors.contains_key("status") && refused.errors.contains_key("labels"));
    }

    #[test]
    fn comments_validate_adf_and_count_duplicate_markers() {
        let mut site = site_with_issue();
        let not_adf = site.add_comment(
            "OPS-1",
            &json!({"body": "plain"}),
            Version::V3,
            &alice(),
            at(1),
        );
        assert_eq!(
            not_adf.expect_err("v3 needs ADF").errors["comment"],
            "Comment body is not valid!"
        );
        let long = adf_from_text(&"x".repeat(MAX_COMMENT_CHARS + 1));
        assert!(
            site.add_comment(
                "OPS-1",
                &json!({"body": long}),
                Version::V3,
                &alice(),
                at(1)
            )
            .is_err()
        );
        let with_marker = json!({"body": adf_from_text("Drained.\nNext: node-b"), "properties": [{"key": "drover", "value": {"key": "wf-1/step-2"}}]});
        let (_, first) = site
            .add_comment("OPS-1", &with_marker, Version::V3, &alice(), at(2))
            .expect("first");
        assert_eq!((first.comments_created, first.duplicate_markers), (1, 0));
        assert_eq!(
            first.events[1].payload["comment"]["body"],
            "Drained.\nNext: node-b"
        );
        let (_, again) = site
            .add_comment(
                "OPS-1",
                &json!({"body": "[drover:wf-1/step-2] again"}),
                Version::V2,
                &alice(),
                at(3),
            )
            .expect("second");
        assert_eq!(again.duplicate_markers, 1);
        let (cid, plain) = site
            .add_comment(
                "OPS-1",
                &json!({"body": "no marker"}),
                Version::V2,
                &alice(),
                at(4),
            )
            .expect("third");
        assert_eq!(plain.duplicate_markers, 0);
        let (created, change) = site
            .set_comment_property(cid, "drover", json!({"key": "wf-1/step-2"}))
            .expect("property");
        assert!(created);
        assert_eq!(change.duplicate_markers, 1);
    }
}
