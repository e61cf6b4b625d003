//! MAAS node events: the event types MAAS records (`maascommon/events.py`: description and level),
//! the region's bounded event log, and `GET events/?op=query` with MAAS's filters, ordering,
//! limits, error texts and `prev_uri`/`next_uri` paging (`maasserver/api/events.py`). A machine's
//! `status_message` is its latest event at INFO or above, as `Node.status_message` is: `"<type>"`
//! or `"<type> - <description>"`.

use std::collections::VecDeque;
use std::time::{Duration, SystemTime};

use serde_json::{Value, json};

use crate::clock::SimTime;
use crate::error::{Error, Result};
use crate::maas::form::Params;
use crate::maas::model::ROOT;

/// Event levels: Python's logging levels plus MAAS's AUDIT.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Level {
    Audit = 0,
    Debug = 10,
    Info = 20,
    Warning = 30,
    Error = 40,
    Critical = 50,
}

impl Level {
    /// Every level, lowest first.
    pub const ALL: [Level; 6] = [
        Level::Audit,
        Level::Debug,
        Level::Info,
        Level::Warning,
        Level::Error,
        Level::Critical,
    ];

    /// The name the API shows and the `level` filter takes.
    pub fn name(self) -> &'static str {
        match self {
            Level::Audit => "AUDIT",
            Level::Debug => "DEBUG",
            Level::Info => "INFO",
            Level::Warning => "WARNING",
            Level::Error => "ERROR",
            Level::Critical => "CRITICAL",
        }
    }

    /// Parse a level name.
    pub fn parse(s: &str) -> Option<Level> {
        Level::ALL.into_iter().find(|l| l.name() == s)
    }
}

/// An event type: its description (the API's `type`) and level.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Kind {
    pub description: &'static str,
    pub level: Level,
}

const fn kind(description: &'static str, level: Level) -> Kind {
    Kind { description, level }
}

/// The event types the lab records, named as MAAS's `EventTypeEnum`.
pub mod kinds {
    use super::{Kind, Level, kind};

    pub const NODE_CHANGED_STATUS: Kind = kind("Node changed status", Level::Debug);
    pub const NODE_POWERED_ON: Kind = kind("Node powered on", Level::Debug);
    pub const NODE_POWERED_OFF: Kind = kind("Node powered off", Level::Debug);
    pub const NODE_POWER_ON_FAILED: Kind = kind("Failed to power on node", Level::Error);
    pub const NODE_INSTALL_EVENT_FAILED: Kind = kind("Node installation failure", Level::Error);
    pub const REQUEST_NODE_ACQUIRE: Kind = kind("User acquiring node", Level::Debug);
    pub const REQUEST_NODE_START_DEPLOYMENT: Kind = kind("User starting deployment", Level::Debug);
    pub const REQUEST_NODE_ABORT_DEPLOYMENT: Kind = kind("User aborting deployment", Level::Debug);
    pub const REQUEST_NODE_ABORT_ERASE_DISK: Kind = kind("User aborting disk erase", Level::Debug);
    pub const REQUEST_NODE_RELEASE: Kind = kind("User releasing node", Level::Debug);
    pub const REQUEST_NODE_ERASE_DISK: Kind = kind("User erasing disk", Level::Debug);
    pub const REQUEST_NODE_MARK_BROKEN: Kind = kind("User marking node broken", Level::Debug);
    pub const REQUEST_NODE_MARK_BROKEN_SYSTEM: Kind = kind("Marking node broken", Level::Error);
    pub const REQUEST_NODE_MARK_FIXED: Kind = kind("User marking node fixed", Level::Debug);
    pub const REQUEST_NODE_MARK_FAILED_SYSTEM: Kind = kind("Marking node failed", Level::Error);
    pub const REQUEST_NODE_START: Kind = kind("User powering up node", Level::Debug);
    pub const REQUEST_NODE_STOP: Kind = kind("User powering down node", Level::Debug);
    pub const POWERING_ON: Kind = kind("Powering on", Level::Info);
    pub const DEPLOYING: Kind = kind("Deploying", Level::Info);
    pub const PERFORMING_PXE_BOOT: Kind = kind("Performing PXE boot", Level::Info);
    pub const LOADING_EPHEMERAL: Kind = kind("Loading ephemeral", Level::Info);
    pub const CONFIGURING_STORAGE: Kind = kind("Configuring storage", Level::Info);
    pub const INSTALLING_OS: Kind = kind("Installing OS", Level::Info);
    pub const CONFIGURING_OS: Kind = kind("Configuring OS", Level::Info);
    pub const REBOOTING: Kind = kind("Rebooting", Level::Info);
    pub const DEPLOYED: Kind = kind("Deployed", Level::Info);
    pub const ABORTED_DEPLOYMENT: Kind = kind("Aborted deployment", Level::Info);
    pub const ABORTED_DISK_ERASING: Kind = kind("Aborted disk erasing", Level::Info);
    pub const RELEASING: Kind = kind("Releasing", Level::Info);
    pub const RELEASED: Kind = kind("Released", Level::Info);
    pub const DISKS_ERASED: Kind = kind("Disks erased", Level::Info);
    /// AUDIT events about a node ("Acquired 'host'.", "Started deploying 'host'.").
    pub const NODE: Kind = kind("Node", Level::Audit);
}

/// One recorded event.
#[derive(Debug, Clone, PartialEq)]
pub struct Event {
    pub id: u64,
    pub system_id: String,
    pub hostname: String,
    /// Simulated seconds since the lab started.
    pub at: SimTime,
    pub kind: Kind,
    pub description: String,
    /// Who caused it (`unknown` for the region's own events).
    pub username: String,
}

impl Event {
    /// The `status_message` this event gives its node (INFO and above).
    pub fn status_message(&self) -> Option<String> {
        (self.kind.level >= Level::Info).then(|| {
            if self.description.is_empty() {
                self.kind.description.to_string()
            } else {
                format!("{} - {}", self.kind.description, self.description)
            }
        })
    }
}

/// Events kept per region (the oldest are dropped beyond this).
pub const CAPACITY: usize = 50_000;
/// MAAS's default and largest `limit`.
pub const DEFAULT_LIMIT: i64 = 100;
pub const MAX_LIMIT: i64 = 1000;

/// The region's event log, oldest first, ids increasing.
#[derive(Debug, Clone)]
pub struct Log {
    events: VecDeque<Event>,
    next_id: u64,
    /// Wall time at simulated time 0 (for `created`).
    pub epoch: SystemTime,
}

impl Default for Log {
    fn default() -> Self {
        Log {
            events: VecDeque::new(),
            next_id: 1,
            epoch: SystemTime::UNIX_EPOCH,
        }
    }
}

impl Log {
    /// Append an event and return it.
    pub fn push(
        &mut self,
        system_id: &str,
        hostname: &str,
        at: SimTime,
        kind: Kind,
        description: String,
        username: &str,
    ) -> &Event {
        if self.events.len() >= CAPACITY {
            self.events.pop_front();
        }
        self.events.push_back(Event {
            id: self.next_id,
            system_id: system_id.to_string(),
            hostname: hostname.to_string(),
            at,
            kind,
            description,
            username: username.to_string(),
        });
        self.next_id += 1;
        &self.events[self.events.len() - 1]
    }

    /// Every event, oldest first.
    pub fn iter(&self) -> impl DoubleEndedIterator<Item = &Event> {
        self.events.iter()
    }

    /// The API's rendering of an event.
    pub fn json(&self, e: &Event) -> Value {
        json!({
            "username": e.username,
            "node": e.system_id,
            "hostname": e.hostname,
            "id": e.id,
            "level": e.kind.level.name(),
            "created": created(
                Duration::try_from_secs_f64(e.at)
                    .ok()
                    .and_then(|d| self.epoch.checked_add(d))
                    .unwrap_or(self.epoch)
            ),
            "type": e.kind.description,
            "description": e.description,
        })
    }
}

/// MAAS's `created` format: `Wed, 17 Nov. 2021 00:04:51` (UTC).
pub fn created(t: SystemTime) -> String {
    const DAYS: [&str; 7] = ["Thu", "Fri", "Sat", "Sun", "Mon", "Tue", "Wed"];
    const MONTHS: [&str; 12] = [
        "Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec",
    ];
    let secs = crate::clock::unix(t);
    let rfc = crate::clock::rfc3339(t);
    let (date, time) = rfc.split_once('T').unwrap_or((&rfc, "00:00:00Z"));
    let mut ymd = date.split('-').map(|x| x.parse::<usize>().unwrap_or(1));
    let (y, m, d) = (
        ymd.next().unwrap_or(1970),
        ymd.next().unwrap_or(1),
        ymd.next().unwrap_or(1),
    );
    format!(
        "{}, {d:02} {}. {y:04} {}",
        DAYS[((secs / 86_400) % 7) as usize],
        MONTHS[m.clamp(1, 12) - 1],
        time.trim_end_matches('Z')
    )
}

/// Which nodes a query covers: the `ReadNodesForm` filters the events handler passes on.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct NodeFilter {
    pub hostnames: Vec<String>,
    pub ids: Vec<String>,
    pub zones: Vec<String>,
    pub agent_names: Vec<String>,
    pub mac_addresses: Vec<String>,
}

/// A parsed `events/?op=query`.
#[derive(Debug, Clone, PartialEq)]
pub struct Query {
    pub nodes: NodeFilter,
    pub level: Level,
    pub limit: usize,
    pub before: Option<u64>,
    pub after: Option<u64>,
    pub owner: Option<String>,
}

/// The parameters the handler keeps in `prev_uri`/`next_uri` (`EventsHandler.all_params`;
/// `before` and `after` are replaced, never carried over).
const ALL_PARAMS: &[&str] = &[
    "agent_name",
    "domain",
    "hostname",
    "id",
    "level",
    "limit",
    "mac_address",
    "op",
    "zone",
    "owner",
];

fn int_param(p: &Params, key: &str) -> Result<Option<i64>> {
    match p.get(key) {
        None | Some("") => Ok(None),
        Some(v) => v
            .trim()
            .parse::<i64>()
            .map(Some)
            .map_err(|_| Error::Validation(json!({key: ["Please enter an integer value"]}))),
    }
}

fn list(p: &Params, key: &str) -> Vec<String> {
    p.0.iter()
        .filter(|(k, v)| k == key && !v.is_empty())
        .map(|(_, v)| v.clone())
        .collect()
}

impl Query {
    /// Parse and check the query parameters, with MAAS's error texts.
    pub fn parse(p: &Params) -> Result<Query> {
        let after = int_param(p, "after")?;
        let before = int_param(p, "before")?;
        let level_name = p.get("level").unwrap_or("INFO");
        let limit = int_param(p, "limit")?.unwrap_or(DEFAULT_LIMIT);
        if limit > MAX_LIMIT {
            return Err(Error::BadRequest(format!(
                "Requested number of events {limit} is greater than limit: {MAX_LIMIT}"
            )));
        }
        let level = Level::parse(level_name)
            .ok_or_else(|| Error::BadRequest(format!("Unrecognised log level: {level_name}")))?;
        if after.is_some() && before.is_some() {
            return Err(Error::BadRequest(
                "There is undetermined behaviour when both `after` and `before` are specified."
                    .into(),
            ));
        }
        Ok(Query {
            nodes: NodeFilter {
                hostnames: list(p, "hostname"),
                ids: list(p, "id"),
                zones: list(p, "zone"),
                agent_names: list(p, "agent_name"),
                mac_addresses: list(p, "mac_address"),
            },
            level,
            limit: limit.max(1) as usize,
            before: before.map(|b| b.max(0) as u64),
            after: after.map(|a| a.max(0) as u64),
            owner: p.get("owner").map(String::from),
        })
    }
}

/// Pure: answer a query over `log`, where `node_ok` says whether an event's node passes the node
/// filters. Newest first; `after` pages forwards (the oldest newer ones, still newest first).
pub fn query(log: &Log, q: &Query, p: &Params, node_ok: impl Fn(&str) -> bool) -> Value {
    let level_ok = |e: &Event| {
        if q.level == Level::Audit {
            e.kind.level == Level::Audit
        } else {
            e.kind.level >= q.level
        }
    };
    let candidates = log
        .iter()
        .filter(|e| node_ok(&e.system_id))
        .filter(|e| level_ok(e))
        .filter(|e| q.owner.as_ref().is_none_or(|o| &e.username == o));
    let events: Vec<&Event> = match (q.before, q.after) {
        (_, Some(after)) => {
            let mut v: Vec<&Event> = candidates.filter(|e| e.id > after).take(q.limit).collect();
            v.reverse();
            v
        }
        (Some(before), None) => candidates
            .rev()
            .filter(|e| e.id < before)
            .take(q.limit)
            .collect(),
        (None, None) => candidates.rev().take(q.limit).collect(),
    };
    let kept = |drop: &str| -> Vec<(String, String)> {
        p.0.iter()
            .filter(|(k, _)| ALL_PARAMS.contains(&k.as_str()) && k != drop)
            .cloned()
            .collect()
    };
    let uri = |mut params: Vec<(String, String)>, extra: Option<(&str, String)>| {
        params.extend(extra.map(|(k, v)| (k.to_string(), v)));
        let query = form_urlencoded::Serializer::new(String::new())
            .extend_pairs(params)
            .finish();
        if query.is_empty() {
            format!("{ROOT}events/")
        } else {
            format!("{ROOT}events/?{query}")
        }
    };
    let next_uri = match (events.first(), q.before) {
        (Some(newest), _) => uri(kept("before"), Some(("after", newest.id.to_string()))),
        (None, Some(before)) => uri(
            kept("before"),
            Some(("after", before.saturating_sub(1).to_string())),
        ),
        (None, None) => uri(kept("before"), None),
    };
    let prev_uri = match (events.last(), q.after) {
        (Some(oldest), _) => json!(uri(kept("after"), Some(("before", oldest.id.to_string())))),
        (None, Some(after)) => json!(uri(
            kept("after"),
            Some(("before", (after + 1).to_string()))
        )),
        (None, None) => Value::Null,
    };
    json!({
        "count": events.len(),
        "events": events.iter().map(|e| log.json(e)).collect::<Vec<_>>(),
        "next_uri": next_uri,
        "prev_uri": prev_uri,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn log() -> Log {
        let mut log = Log::default();
        for (i, (sid, kind, desc)) in [
            ("aaaaaa", kinds::REQUEST_NODE_ACQUIRE, "(admin)"),
            ("aaaaaa", kinds::DEPLOYING, ""),
            ("bbbbbb", kinds::DEPLOYING, ""),
            ("aaaaaa", kinds::NODE, "Started deploying 'a'."),
            (
                "aaaaaa",
                kinds::REQUEST_NODE_MARK_FAILED_SYSTEM,
                "Installation failed",
            ),
        ]
        .into_iter()
        .enumerate()
        {
            log.push(sid, sid, i as f64, kind, desc.into(), "admin");
        }
        log
    }

    #[test]
    fn created_matches_maas_format() {
        let t = SystemTime::UNIX_EPOCH + Duration::from_secs(1_637_107_491);
        assert_eq!(created(t), "Wed, 17 Nov. 2021 00:04:51");
        assert_eq!(
            created(SystemTime::UNIX_EPOCH),
            "Thu, 01 Jan. 1970 00:00:00"
        );
    }

    #[test]
    fn query_levels_order_and_paging() {
        let log = log();
        let ids = |v: &Value| -> Vec<u64> {
            v["events"]
                .as_array()
                .unwrap()
                .iter()
                .map(|e| e["id"].as_u64().unwrap())
                .collect()
        };
        let run = |pairs: &[(&str, &str)], node: &'static str| {
            let p = Params::of(pairs);
            let q = Query::parse(&p).unwrap();
            query(&log, &q, &p, |sid| node.is_empty() || sid == node)
        };
        // Default INFO: no DEBUG, no AUDIT; newest first.
        let v = run(&[("op", "query"), ("id", "aaaaaa")], "aaaaaa");
        assert_eq!(ids(&v), vec![5, 2]);
        assert_eq!(v["count"], 2);
        assert_eq!(v["events"][0]["type"], "Marking node failed");
        assert_eq!(v["events"][0]["level"], "ERROR");
        assert_eq!(v["events"][0]["node"], "aaaaaa");
        assert_eq!(
            v["next_uri"],
            "/MAAS/api/2.0/events/?op=query&id=aaaaaa&after=5"
        );
        assert_eq!(
            v["prev_uri"],
            "/MAAS/api/2.0/events/?op=query&id=aaaaaa&before=2"
        );
        assert_eq!(ids(&run(&[("level", "DEBUG")], "")), vec![5, 3, 2, 1]);
        assert_eq!(ids(&run(&[("level", "AUDIT")], "")), vec![4]);
        assert_eq!(ids(&run(&[("level", "ERROR")], "")), vec![5]);
        assert_eq!(ids(&run(&[("limit", "1")], "")), vec![5]);
        assert_eq!(ids(&run(&[("limit", "0")], "")), vec![5]);
        assert_eq!(ids(&run(&[("before", "5")], "")), vec![3, 2]);
        assert_eq!(ids(&run(&[("after", "1"), ("limit", "1")], "")), vec![2]);
        let empty = run(&[("after", "9")], "");
        assert_eq!(empty["prev_uri"], "/MAAS/api/2.0/events/?before=10");
        assert_eq!(empty["next_uri"], "/MAAS/api/2.0/events/");
        assert_eq!(run(&[], "zzzzzz")["prev_uri"], Value::Null);
    }

    #[test]
    fn query_errors_are_maas_texts() {
        let err = |pairs: &[(&str, &str)]| Query::parse(&Params::of(pairs)).unwrap_err();
        assert_eq!(
            err(&[("limit", "1001")]).to_string(),
            "Requested number of events 1001 is greater than limit: 1000"
        );
        assert_eq!(
            err(&[("level", "LOUD")]).to_string(),
            "Unrecognised log level: LOUD"
        );
        assert!(
            matches!(err(&[("limit", "x")]), Error::Validation(v) if v["limit"][0] == "Please enter an integer value")
        );
        assert_eq!(
            err(&[("before", "3"), ("after", "1")]).to_string(),
            "There is undetermined behaviour when both `after` and `before` are specified."
        );
    }
}
