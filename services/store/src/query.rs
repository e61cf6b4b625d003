//! Reads for the API and the worker: one workflow with its steps and history, filtered pages of
//! workflows, and the children of a step. Reads never change anything.

use std::collections::BTreeMap;

use drover_workflows::{ChildStatus, State};
use redis::AsyncCommands;
use serde::Serialize;
use serde_json::Value;

use crate::claim::pairs;
use crate::{Result, Store};

/// A workflow as the API shows it.
#[derive(Debug, Clone, Serialize)]
pub struct WorkflowView {
    pub id: String,
    pub kind: String,
    pub state: State,
    pub paused: bool,
    pub cancel_requested: bool,
    pub priority: i32,
    pub labels: BTreeMap<String, String>,
    /// The cluster it acts on (`None`: the `[kube]` cluster).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub cluster: Option<String>,
    pub input: Value,
    pub step: usize,
    pub attempt: u32,
    pub phase: String,
    /// Where the current task is: ready, delayed, leased, paused, sem:NAME, signal:NAME, children.
    pub waiting_on: Option<String>,
    pub lease_worker: Option<String>,
    pub error: Option<Value>,
    pub progress: Option<Value>,
    pub result: Option<Value>,
    pub resume_from: Option<usize>,
    pub parent: Option<String>,
    pub created_ms: u64,
    pub updated_ms: u64,
    pub finished_ms: Option<u64>,
    /// Step outputs by step index (detail view only).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub outputs: Option<BTreeMap<usize, Value>>,
    /// Every recorded attempt, oldest first (detail view only).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub history: Option<Vec<Value>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub children: Option<Vec<String>>,
    /// The step names it was submitted with (the API shows them in its step rows).
    #[serde(skip)]
    pub step_names: Option<Vec<String>>,
}

/// Which workflows to list.
#[derive(Debug, Clone, Default)]
pub struct Filter {
    pub state: Option<State>,
    pub paused: Option<bool>,
    pub kind: Option<String>,
    pub label: Option<(String, String)>,
    /// Workflows acting on this cluster.
    pub cluster: Option<String>,
    /// Top-level workflows only (no children).
    pub top_level: bool,
}

/// Index entries one listing call reads at most while filling a page.
pub const LIST_SCAN_BUDGET: usize = 5000;

impl Filter {
    fn matches(&self, v: &WorkflowView) -> bool {
        self.state.is_none_or(|s| s == v.state)
            && self.paused.is_none_or(|p| p == v.paused)
            && self.kind.as_ref().is_none_or(|k| *k == v.kind)
            && self
                .label
                .as_ref()
                .is_none_or(|(k, val)| v.labels.get(k) == Some(val))
            && self
                .cluster
                .as_ref()
                .is_none_or(|c| v.cluster.as_ref() == Some(c))
            && (!self.top_level || v.parent.is_none())
    }
}

/// One page of a listing, newest first.
#[derive(Debug, Clone, Serialize)]
pub struct Page {
    pub items: Vec<WorkflowView>,
    /// Pass back as `cursor` for the next page; absent on the last page.
    pub next_cursor: Option<String>,
}

fn json_field(rec: &BTreeMap<String, String>, name: &str) -> Option<Value> {
    rec.get(name).and_then(|s| serde_json::from_str(s).ok())
}

fn num<T: std::str::FromStr>(rec: &BTreeMap<String, String>, name: &str) -> Option<T> {
    rec.get(name).and_then(|s| s.parse().ok())
}

fn view(rec: &BTreeMap<String, String>) -> Option<WorkflowView> {
    Some(WorkflowView {
        id: rec.get("id")?.clone(),
        kind: rec.get("kind")?.clone(),
        state: State::parse(rec.get("state")?)?,
        paused: rec.get("paused").map(String::as_str) == Some("1"),
        cancel_requested: rec.get("cancel").map(String::as_str) == Some("1"),
        priority: num(rec, "priority").unwrap_or(0),
        labels: json_field(rec, "labels")
            .and_then(|v| serde_json::from_value(v).ok())
            .unwrap_or_default(),
        cluster: rec.get("cluster").cloned(),
        input: json_field(rec, "input").unwrap_or(Value::Null),
        step: num(rec, "step").unwrap_or(0),
        attempt: num(rec, "attempt").unwrap_or(1),
        phase: rec.get("phase").cloned().unwrap_or_default(),
        waiting_on: rec.get("loc").filter(|l| !l.is_empty()).cloned(),
        lease_worker: rec.get("lease_worker").cloned(),
        error: json_field(rec, "error"),
        progress: json_field(rec, "progress"),
        result: json_field(rec, "result"),
        resume_from: num(rec, "resume_from"),
        parent: rec.get("parent").cloned(),
        created_ms: num(rec, "created_ms").unwrap_or(0),
        updated_ms: num(rec, "updated_ms").unwrap_or(0),
        finished_ms: num(rec, "finished_ms"),
        outputs: None,
        history: None,
        children: None,
        step_names: json_field(rec, "steps").and_then(|v| serde_json::from_value(v).ok()),
    })
}

const SUMMARY_FIELDS: [&str; 22] = [
    "id",
    "cluster",
    "parent",
    "steps",
    "kind",
    "state",
    "paused",
    "cancel",
    "priority",
    "labels",
    "input",
    "step",
    "attempt",
    "phase",
    "loc",
    "lease_worker",
    "error",
    "progress",
    "result",
    "created_ms",
    "updated_ms",
    "finished_ms",
];

/// A place in a listing index: creation time (its score) and id.
type Position = (u64, String);

impl Store {
    /// One workflow with its outputs, history and children.
    pub async fn get(&self, id: &str) -> Result<Option<WorkflowView>> {
        if !crate::plausible_id(id) {
            return Ok(None);
        }
        let s = self.at(id);
        let mut conn = s.connection();
        let wk = s.wf_key(id);
        let (rec, out, hist, kids): (redis::Value, redis::Value, Vec<String>, Vec<String>) =
            redis::pipe()
                .hgetall(&wk)
                .hgetall(format!("{wk}:out"))
                .lrange(format!("{wk}:hist"), 0, -1)
                .lrange(format!("{wk}:kids"), 0, -1)
                .query_async(&mut conn)
                .await?;
        let Some(mut v) = view(&pairs(&rec)).filter(|v| v.id == id) else {
            return Ok(None);
        };
        v.outputs = Some(
            pairs(&out)
                .into_iter()
                .filter_map(|(k, v)| Some((k.parse().ok()?, serde_json::from_str(&v).ok()?)))
                .collect(),
        );
        v.history = Some(
            hist.iter()
                .filter_map(|h| serde_json::from_str(h).ok())
                .collect(),
        );
        v.children = Some(kids);
        Ok(Some(v))
    }

    /// The ids of the children each of `ids` started, in order (one pipelined round trip).
    pub async fn kids(&self, ids: &[String]) -> Result<Vec<Vec<String>>> {
        self.read_each(ids, |pipe, wk| {
            pipe.lrange(format!("{wk}:kids"), 0, -1);
        })
        .await
    }

    /// One command per id (`add` is given the pipeline and the id's record key), in one
    /// pipelined round trip per shard the ids live on (a pipeline may only read one shard's
    /// slot); the replies in the order of `ids`.
    async fn read_each<T: redis::FromRedisValue + Default + Clone>(
        &self,
        ids: &[String],
        add: impl Fn(&mut redis::Pipeline, &str),
    ) -> Result<Vec<T>> {
        let mut groups: BTreeMap<u16, Vec<usize>> = BTreeMap::new();
        for (i, id) in ids.iter().enumerate() {
            groups.entry(self.shard_of(id)).or_default().push(i);
        }
        let mut out = vec![T::default(); ids.len()];
        for (shard, at) in groups {
            let s = self.on(shard);
            let mut pipe = redis::pipe();
            for i in &at {
                add(&mut pipe, &s.wf_key(&ids[*i]));
            }
            let replies: Vec<T> = pipe.query_async(&mut s.connection()).await?;
            for (i, reply) in at.into_iter().zip(replies) {
                out[i] = reply;
            }
        }
        Ok(out)
    }

    /// The children a workflow started, with their states and results.
    pub async fn children(&self, id: &str) -> Result<Vec<ChildStatus>> {
        // Children live on their parent's shard (their ids begin with its top-level id).
        let s = self.at(id);
        let mut conn = s.connection();
        let kids: Vec<String> = conn.lrange(format!("{}:kids", s.wf_key(id)), 0, -1).await?;
        if kids.is_empty() {
            return Ok(Vec::new());
        }
        let mut pipe = redis::pipe();
        for kid in &kids {
            pipe.cmd("HMGET")
                .arg(s.wf_key(kid))
                .arg(&["kind", "state", "result", "error", "input", "updated_ms"][..]);
        }
        type Row = (
            Option<String>,
            Option<String>,
            Option<String>,
            Option<String>,
            Option<String>,
            Option<u64>,
        );
        let rows: Vec<Row> = pipe.query_async(&mut conn).await?;
        Ok(kids
            .into_iter()
            .zip(rows)
            .map(
                |(id, (kind, state, result, error, input, updated_ms))| ChildStatus {
                    id,
                    kind: kind.unwrap_or_default(),
                    input: input
                        .and_then(|i| serde_json::from_str(&i).ok())
                        .unwrap_or(Value::Null),
                    state: state
                        .as_deref()
                        .and_then(State::parse)
                        .unwrap_or(State::Cancelled),
                    result: result.and_then(|r| serde_json::from_str(&r).ok()),
                    error: error
                        .and_then(|e| serde_json::from_str::<Value>(&e).ok())
                        .and_then(|e| e.get("message").and_then(Value::as_str).map(str::to_string)),
                    updated_ms: updated_ms.unwrap_or(0),
                },
            )
            .collect())
    }

    /// A page of workflows matching `filter`, newest first. The most selective index is scanned and
    /// the other conditions are checked on the records, batch after batch, until the page is full or
    /// [`LIST_SCAN_BUDGET`] index entries were read: a page holds fewer than `limit` items with
    /// `next_cursor` still set only when that many entries in a row did not match.
    ///
    /// With several shards, each is read from the cursor and the pages are merged: the cursor is
    /// a position in the one order all shards share (creation time, then id, both descending), so
    /// it carries over from shard to shard. Items past the point where a shard stopped reading are
    /// left for the next page, so nothing is skipped.
    pub async fn list(&self, filter: &Filter, limit: usize, cursor: Option<&str>) -> Result<Page> {
        let at: Option<Position> = cursor
            .and_then(|c| c.split_once(':'))
            .and_then(|(score, id)| Some((score.parse().ok()?, id.to_string())));
        let mut items = Vec::new();
        let mut frontier: Option<Position> = None;
        for s in self.shards() {
            let (found, next) = s.list_shard(filter, limit, at.clone()).await?;
            items.extend(found);
            frontier = frontier.max(next);
        }
        items.sort_by(|a, b| b.1.cmp(&a.1));
        if let Some(f) = &frontier {
            items.retain(|(_, pos)| pos >= f);
        }
        let next = if items.len() > limit {
            items.truncate(limit);
            items.last().map(|(_, pos)| pos.clone())
        } else {
            frontier
        };
        Ok(Page {
            items: items.into_iter().map(|(v, _)| v).collect(),
            next_cursor: next.map(|(s, id)| format!("{s}:{id}")),
        })
    }

    /// One shard's part of [`Store::list`]: up to `limit` matching items after `at` with their
    /// positions, and where to go on from if the shard may hold more.
    async fn list_shard(
        &self,
        filter: &Filter,
        limit: usize,
        mut at: Option<Position>,
    ) -> Result<(Vec<(WorkflowView, Position)>, Option<Position>)> {
        let mut conn = self.connection();
        let index = if let Some((k, v)) = &filter.label {
            self.key(&format!("idx:label:{k}={v}"))
        } else if let Some(cluster) = &filter.cluster {
            self.key(&format!("idx:cluster:{cluster}"))
        } else if let Some(kind) = &filter.kind {
            self.key(&format!("idx:kind:{kind}"))
        } else if filter.paused == Some(true) {
            self.key("idx:paused")
        } else if let Some(state) = filter.state {
            self.key(&format!("idx:state:{}", state.as_str()))
        } else if filter.top_level {
            self.key("idx:top")
        } else {
            self.key("idx:all")
        };
        // Where the scan stands (`at`): entries at this score and id or after it were read
        // already.
        // Members with equal scores (created in the same ms) come in reverse id order; SLACK extra
        // rows per read step over those at the cursor's score already read.
        const SLACK: usize = 64;
        let batch = (limit + 1).max(50);
        let mut items: Vec<(WorkflowView, (u64, String))> = Vec::new();
        let mut scanned = 0;
        let mut exhausted = false;
        while items.len() <= limit && scanned < LIST_SCAN_BUDGET {
            let max = at
                .as_ref()
                .map_or("+inf".to_string(), |(score, _)| score.to_string());
            let fetched: Vec<(String, f64)> = redis::cmd("ZREVRANGEBYSCORE")
                .arg(&index)
                .arg(&max)
                .arg("-inf")
                .arg("WITHSCORES")
                .arg("LIMIT")
                .arg(0)
                .arg(batch + SLACK)
                .query_async(&mut conn)
                .await?;
            let full = fetched.len() == batch + SLACK;
            let rows: Vec<(String, u64)> = fetched
                .into_iter()
                .map(|(id, score)| (id, score as u64))
                .filter(|(id, score)| match &at {
                    Some((s, after)) => score < s || id < after,
                    None => true,
                })
                .take(batch)
                .collect();
            if rows.is_empty() {
                if full {
                    // More than SLACK members share the cursor's score: step past that score.
                    if let Some((s, _)) = &at
                        && *s > 0
                    {
                        at = Some((s - 1, String::from("\u{10ffff}")));
                        continue;
                    }
                }
                exhausted = true;
                break;
            }
            scanned += rows.len();
            let ids: Vec<String> = rows.iter().map(|(id, _)| id.clone()).collect();
            let positions: BTreeMap<&str, u64> =
                rows.iter().map(|(id, s)| (id.as_str(), *s)).collect();
            for v in self.summaries(&ids).await? {
                if filter.matches(&v) {
                    let pos = (positions[v.id.as_str()], v.id.clone());
                    items.push((v, pos));
                }
            }
            at = rows.last().map(|(id, s)| (*s, id.clone()));
            if rows.len() < batch && !full {
                exhausted = true;
                break;
            }
        }
        let next = if items.len() > limit {
            items.truncate(limit);
            items.last().map(|(_, pos)| pos.clone())
        } else if exhausted {
            None
        } else {
            at
        };
        Ok((items, next))
    }

    /// Summaries (no outputs, history or children) of the workflows `ids` that exist, in order.
    pub async fn summaries(&self, ids: &[String]) -> Result<Vec<WorkflowView>> {
        let records: Vec<Vec<Option<String>>> = self
            .read_each(ids, |pipe, wk| {
                pipe.cmd("HMGET").arg(wk).arg(&SUMMARY_FIELDS[..]);
            })
            .await?;
        Ok(records
            .into_iter()
            .filter_map(|fields| {
                let rec: BTreeMap<String, String> = SUMMARY_FIELDS
                    .iter()
                    .zip(fields)
                    .filter_map(|(k, v)| Some((k.to_string(), v?)))
                    .collect();
                view(&rec)
            })
            .collect())
    }
}
