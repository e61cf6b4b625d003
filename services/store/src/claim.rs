//! The lease cycle of a task: claim (with permits and a fencing token), renew, commit.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use drover_workflows::{Cause, ErrorInfo, Phase, Snapshot, State, Task, Transition, Wait};
use redis::Value as RValue;
use serde::Serialize;
use serde_json::Value;

use crate::submit::record;
use crate::{Error, NewWorkflow, Result, Store};

/// A task handed to a worker, with what its step needs to run.
#[derive(Debug, Clone)]
pub struct Claim {
    pub id: String,
    pub token: u64,
    pub kind: String,
    /// (Shared with the claims that continue this one, as are `outputs`' values and `steps`.)
    pub input: Arc<Value>,
    pub state: State,
    pub step: usize,
    pub attempt: u32,
    pub phase: Phase,
    pub cause: Option<Cause>,
    pub cancel_requested: bool,
    pub error: Option<ErrorInfo>,
    pub task: Task,
    /// Outputs of completed steps by step index.
    pub outputs: BTreeMap<usize, Arc<Value>>,
    /// Signals delivered to the current step, by name.
    pub signals: BTreeMap<String, Value>,
    /// Every signal delivered to any step so far (the record's `<id>:rx`, `"<step>:<name>"` to the
    /// payload's JSON), as the claim read it: a continued claim takes its step's signals from here,
    /// since nothing writes `<id>:rx` while the workflow is leased (a signal reaches it only while
    /// it waits for one, and a wait ends the chain of continued leases).
    pub delivered: BTreeMap<String, String>,
    /// The step that started children, if any.
    pub kids_step: Option<usize>,
    pub lease_start_ms: u64,
    /// When the lease runs out unless renewed (a continued step may keep its predecessor's lease:
    /// see `grant` in `lua/lib.lua`).
    pub lease_until_ms: u64,
    pub priority: i32,
    /// How many times an operator resumed the workflow.
    pub resumes: u32,
    /// The step names the workflow was submitted with (None for workflows from before names were
    /// recorded).
    pub steps: Option<Arc<[String]>>,
    /// The W3C traceparent of the span that created the workflow (its submission, or the step
    /// that started it), if traces were on: each attempt's span is its child.
    pub trace: Option<String>,
    /// The cluster the workflow acts on (`None`: the `[kube]` cluster).
    pub cluster: Option<String>,
}

impl Claim {
    /// The engine core's view of the workflow.
    pub fn snapshot(&self) -> Snapshot {
        Snapshot {
            id: self.id.clone(),
            kind: self.kind.clone(),
            input: Value::clone(&self.input),
            state: self.state,
            step: self.step,
            attempt: self.attempt,
            phase: self.phase,
            cause: self.cause,
            completed: self.outputs.keys().copied().collect(),
            cancel_requested: self.cancel_requested,
            error: self.error.clone(),
        }
    }
}

/// What a claim found.
#[derive(Debug, Default)]
pub struct Claimed {
    pub claims: Vec<Claim>,
    /// When a delayed task or a lease next falls due, if any.
    pub next_due_ms: Option<u64>,
    /// Expired leases this claim reclaimed (their workers died or stalled).
    pub expired: u64,
}

/// Whether a lease is still held.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Renewal {
    Held { cancel_requested: bool },
    Lost,
}

/// What a commit did.
#[derive(Debug)]
pub enum CommitResult {
    Applied,
    /// Applied, and the workflow's next task was leased straight back to the committer.
    Continued(Box<Claim>),
    /// The same commit had already been applied (a retry after a lost reply).
    Duplicate,
    /// The lease moved on: the attempt's result was discarded.
    Stale,
    /// The children would take the top-level workflow past its `max_descendants`; nothing was
    /// written (the committer commits a failure instead).
    DescendantLimit {
        /// Workflows the top-level workflow has created so far.
        created: u64,
        /// New children this commit would have created.
        asked: u64,
    },
    Gone,
}

/// A child workflow to create in the commit that spawns it.
#[derive(Debug, Clone)]
pub struct CommitChild(pub NewWorkflow);

/// The commit of one attempt, as `drover_commit` reads it: its small fields as one line of words
/// (see [`Commit::line`]), and the strings that are JSON documents themselves (history entry,
/// output, result, next task, progress, error, permits) as arguments of their own, so Redis neither
/// parses nor copies them ("" when absent; each is a JSON document, never empty).
#[derive(Debug, Clone)]
pub struct Commit {
    state: &'static str,
    step: usize,
    attempt: u32,
    phase: &'static str,
    cause: Option<&'static str>,
    output_step: Option<usize>,
    output: Option<String>,
    progress: Option<String>,
    error: Option<String>,
    task: Option<String>,
    permits: Option<String>,
    due: u64,
    wait: &'static str,
    signal: Option<String>,
    join: Option<&'static str>,
    children: Vec<Value>,
    history: String,
    resume_from: Option<usize>,
    handles_cancel: bool,
    result: Option<String>,
    /// The most workflows the top-level workflow may create in all (0: no limit).
    max_descendants: u64,
}

/// What a commit that waits on a signal or on children adds to its line.
#[derive(Serialize)]
struct WaitDetail<'a> {
    #[serde(skip_serializing_if = "Option::is_none")]
    signal: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    join: Option<&'static str>,
    #[serde(skip_serializing_if = "<[Value]>::is_empty")]
    children: &'a [Value],
}

impl Commit {
    /// Bounds the workflows the top-level workflow may create in all, this commit's children
    /// included (0: no limit).
    pub fn with_max_descendants(mut self, max: u64) -> Commit {
        self.max_descendants = max;
        self
    }

    /// The line `drover_commit` reads (lua/commit.lua): `state step attempt phase due wait
    /// handles_cancel cause output_step resume_from max_descendants`, single spaces, an absent
    /// word empty, then for a wait on a signal or on children a space and a JSON object of the
    /// signal's name, the join policy and the children. No word can hold a space: the states,
    /// phases, waits and causes are fixed words, the rest numbers. Redis reads it with one
    /// pattern match where a JSON object cost it a parse per commit.
    fn line(&self) -> Result<String> {
        let word = |n: Option<usize>| n.map(|n| n.to_string()).unwrap_or_default();
        let mut line = format!(
            "{} {} {} {} {} {} {} {} {} {} {}",
            self.state,
            self.step,
            self.attempt,
            self.phase,
            self.due,
            self.wait,
            u8::from(self.handles_cancel),
            self.cause.unwrap_or(""),
            word(self.output_step),
            word(self.resume_from),
            self.max_descendants,
        );
        if self.signal.is_some() || self.join.is_some() || !self.children.is_empty() {
            line.push(' ');
            line.push_str(&serde_json::to_string(&WaitDetail {
                signal: self.signal.as_deref(),
                join: self.join,
                children: &self.children,
            })?);
        }
        Ok(line)
    }
}

fn phase_str(p: Phase) -> &'static str {
    match p {
        Phase::Forward => "forward",
        Phase::Compensate => "compensate",
    }
}

fn cause_str(c: Cause) -> &'static str {
    match c {
        Cause::Failed => "failed",
        Cause::Cancelled => "cancelled",
    }
}

impl Commit {
    /// Builds the commit of a transition; `history` is the attempt's history entry and `children`
    /// the records of the children it spawns (ids already chosen, deterministically).
    pub fn new(
        t: &Transition,
        history: &impl Serialize,
        children: Vec<CommitChild>,
        parent: &str,
    ) -> Result<Commit> {
        let (wait, signal, join) = match &t.wait {
            Wait::None => ("none", None, None),
            Wait::Pause => ("pause", None, None),
            Wait::Signal { name } => ("signal", Some(name.clone()), None),
            Wait::Children { join } => (
                "children",
                None,
                Some(match join {
                    drover_workflows::JoinPolicy::All => "all",
                    drover_workflows::JoinPolicy::FailFast => "fail-fast",
                }),
            ),
        };
        let result = match (&t.output, t.state) {
            (Some((_, v)), State::Succeeded) => Some(serde_json::to_string(v)?),
            _ => None,
        };
        Ok(Commit {
            state: t.state.as_str(),
            step: t.step,
            attempt: t.attempt,
            phase: phase_str(t.phase),
            cause: t.cause.map(cause_str),
            output_step: t.output.as_ref().map(|(s, _)| *s),
            output: t
                .output
                .as_ref()
                .map(|(_, v)| serde_json::to_string(v))
                .transpose()?,
            progress: t.progress.as_ref().map(serde_json::to_string).transpose()?,
            error: t.error.as_ref().map(serde_json::to_string).transpose()?,
            task: t.next.as_ref().map(serde_json::to_string).transpose()?,
            permits: t
                .next
                .as_ref()
                .filter(|n| !n.permits.is_empty())
                .map(|n| serde_json::to_string(&n.permits))
                .transpose()?,
            due: t.next.as_ref().map(|n| n.due_ms).unwrap_or(0),
            wait,
            signal,
            join,
            children: children
                .iter()
                .map(|c| record(&c.0, Some(parent)))
                .collect::<Result<Vec<_>>>()?,
            history: serde_json::to_string(history)?,
            resume_from: t.resume_from,
            handles_cancel: t.handles_cancel,
            result,
            max_descendants: 0,
        })
    }
}

impl Store {
    /// Claims up to `max` of the most urgent runnable tasks, promoting due timers and reclaiming
    /// expired leases first (each bounded by `batch`). A claim that finds nothing enters the caller
    /// as sleeping for `block` (enqueues then wake it); pass zero for a caller that does not block.
    pub async fn claim(
        &self,
        worker: &str,
        now_ms: u64,
        lease: Duration,
        batch: u32,
        max: u32,
        block: Duration,
    ) -> Result<Claimed> {
        let reply: RValue = self
            .fcall("drover_claim", &self.key("ready"))
            .arg(worker)
            .arg(now_ms)
            .arg(lease.as_millis() as u64)
            .arg(batch)
            .arg(max + 16)
            .arg(self.history_max())
            .arg(max.max(1))
            .arg(block.as_millis() as u64)
            .run()
            .await?;
        let RValue::Array(items) = reply else {
            return Err(Error::Corrupt {
                id: String::new(),
                reason: "claim reply is not an array".into(),
            });
        };
        let mut items = items.into_iter();
        let next_due_ms = items
            .next()
            .as_ref()
            .and_then(text)
            .and_then(|s| s.parse().ok());
        let expired = items
            .next()
            .as_ref()
            .and_then(text)
            .and_then(|s| s.parse().ok())
            .unwrap_or(0);
        let claims = items.map(parse_claim).collect::<Result<Vec<_>>>()?;
        Ok(Claimed {
            claims,
            next_due_ms,
            expired,
        })
    }

    /// Extends the lease of a running attempt, storing the progress its step reported meanwhile.
    pub async fn renew(
        &self,
        id: &str,
        token: u64,
        now_ms: u64,
        lease: Duration,
        progress: Option<&str>,
    ) -> Result<Renewal> {
        let reply: Vec<i64> = self
            .wf_call("drover_renew", id)
            .arg(id)
            .arg(token)
            .arg(now_ms)
            .arg(lease.as_millis() as u64)
            .arg(progress.unwrap_or(""))
            .run()
            .await?;
        Ok(match reply.as_slice() {
            [1, cancel, ..] => Renewal::Held {
                cancel_requested: *cancel == 1,
            },
            _ => Renewal::Lost,
        })
    }

    /// Commits an attempt, fenced by its token.
    ///
    /// With `continue_as`, a next task that is runnable now is leased straight back to that worker,
    /// unless a workflow of higher priority waits or a permit is taken; the next claim is built from
    /// the committed one and the transition, so the reply stays small.
    pub async fn commit(
        &self,
        id: &str,
        token: u64,
        now_ms: u64,
        commit: &Commit,
        continue_as: Option<Continue<'_>>,
    ) -> Result<CommitResult> {
        let request = CommitRequest::new(id, token, now_ms, commit, continue_as.as_ref())?;
        let reply: RValue = self
            .wf_call("drover_commit", id)
            .arg(request.args(self.history_max()))
            .run()
            .await?;
        CommitReply(reply).result(now_ms, continue_as)
    }

    /// Applies several commits of workflows on this handle's shard in one call (one round trip;
    /// group commit), each as [`Store::commit`] applies it and in order. The outer error is the
    /// call's (nothing of it was applied); each commit has its own reply or error (a commit that
    /// raised an error does not stop the ones after it).
    pub async fn commit_batch(
        &self,
        requests: &[CommitRequest],
    ) -> Result<Vec<Result<CommitReply>>> {
        if requests.is_empty() {
            return Ok(Vec::new());
        }
        if let Some(r) = requests.iter().find(|r| self.shard_of(&r.id) != self.shard) {
            return Err(Error::Misplaced {
                id: r.id.clone(),
                shard: self.shard,
            });
        }
        let mut cmd = redis::cmd("FCALL");
        cmd.arg("drover_commit_batch").arg(requests.len());
        for r in requests {
            cmd.arg(self.wf_key(&r.id));
        }
        cmd.arg(self.prefix());
        for r in requests {
            cmd.arg(r.args(self.history_max()));
        }
        let reply: RValue = crate::Call {
            cmd,
            store: self.clone(),
        }
        .run()
        .await?;
        let RValue::Array(items) = reply else {
            return Err(Error::Corrupt {
                id: requests.first().map_or_else(String::new, |r| r.id.clone()),
                reason: "the batch commit did not reply with an array".into(),
            });
        };
        if items.len() != requests.len() {
            return Err(Error::Corrupt {
                id: requests.first().map_or_else(String::new, |r| r.id.clone()),
                reason: format!(
                    "{} replies to a batch of {} commits",
                    items.len(),
                    requests.len()
                ),
            });
        }
        Ok(items.into_iter().map(batch_item).collect())
    }
}

/// One commit's part of a batch's reply: its reply, or the error it raised (sent as
/// `{"error", message}`, which becomes the error Redis would have replied with on its own).
fn batch_item(item: RValue) -> Result<CommitReply> {
    if let RValue::Array(parts) = &item
        && let [first, message] = parts.as_slice()
        && text(first).as_deref() == Some("error")
    {
        let message = text(message).unwrap_or_default().replace(['\r', '\n'], " ");
        let error = redis::parse_redis_value(format!("-{message}\r\n").as_bytes())
            .and_then(RValue::extract_error)
            .err()
            .unwrap_or_else(|| {
                redis::RedisError::from((redis::ErrorKind::Parse, "unreadable error reply"))
            });
        return Err(error.into());
    }
    Ok(CommitReply(item))
}

/// One commit as `drover_commit` takes it: what [`Store::commit_batch`] sends, built where the
/// attempt ended.
#[derive(Debug, Clone)]
pub struct CommitRequest {
    pub id: String,
    pub token: u64,
    pub now_ms: u64,
    commit: String,
    /// The commit's own JSON documents, in `drover_commit`'s order (see [`Commit`]).
    documents: [String; 7],
    /// The worker the next task is leased back to, and for how long ("" and 0: not continuing).
    worker: String,
    lease_ms: u64,
}

impl CommitRequest {
    pub fn new(
        id: &str,
        token: u64,
        now_ms: u64,
        commit: &Commit,
        continue_as: Option<&Continue<'_>>,
    ) -> Result<CommitRequest> {
        let (worker, lease) = continue_as.map_or(("", Duration::ZERO), |c| (c.worker, c.lease));
        Ok(CommitRequest {
            id: id.to_string(),
            token,
            now_ms,
            commit: commit.line()?,
            documents: [
                Some(&commit.history),
                commit.output.as_ref(),
                commit.result.as_ref(),
                commit.task.as_ref(),
                commit.progress.as_ref(),
                commit.error.as_ref(),
                commit.permits.as_ref(),
            ]
            .map(|d| d.cloned().unwrap_or_default()),
            worker: worker.to_string(),
            lease_ms: lease.as_millis() as u64,
        })
    }

    /// Its arguments after the shard prefix, in `drover_commit`'s order.
    fn args(&self, history_max: u32) -> impl redis::ToRedisArgs + '_ {
        (
            self.id.as_str(),
            self.token,
            self.now_ms,
            history_max,
            self.commit.as_str(),
            self.worker.as_str(),
            self.lease_ms,
            // "2": continue, and the worker knows the signals delivered so far (the claim's
            // `delivered`); "1", from workers of the release before, asks for them in the reply.
            if self.worker.is_empty() { "0" } else { "2" },
            &self.documents,
        )
    }
}

/// A commit's reply as Redis gave it; [`CommitReply::result`] reads it.
#[derive(Debug)]
pub struct CommitReply(RValue);

impl CommitReply {
    /// What the commit did. `now_ms` and `continue_as` are the ones the commit was made with
    /// (the next claim is built from them).
    pub fn result(self, now_ms: u64, continue_as: Option<Continue<'_>>) -> Result<CommitResult> {
        let RValue::Array(items) = self.0 else {
            return Ok(CommitResult::Gone);
        };
        let word = |i: usize| items.get(i).and_then(text);
        Ok(
            match (word(0).as_deref(), word(1).as_deref(), continue_as) {
                (Some("ok"), Some("duplicate"), _) => CommitResult::Duplicate,
                (Some("ok"), Some("continued"), Some(from)) => {
                    let granted = match items.get(2) {
                        // A library of the release before nested the claim: {id, token, signals,
                        // kids_step, lease_until}.
                        Some(RValue::Array(entry)) => Granted {
                            token: entry.get(1),
                            signals: match entry.get(2) {
                                Some(RValue::Array(flat)) => flat,
                                _ => &[],
                            },
                            kids_step: entry.get(3),
                            until: entry.get(4),
                        },
                        Some(_) => Granted {
                            token: items.get(3),
                            kids_step: items.get(4),
                            until: items.get(5),
                            signals: items.get(6..).unwrap_or(&[]),
                        },
                        None => return Ok(CommitResult::Applied),
                    };
                    CommitResult::Continued(Box::new(from.next(granted, now_ms)?))
                }
                (Some("ok"), _, _) => CommitResult::Applied,
                (Some("stale"), _, _) => CommitResult::Stale,
                (Some("limit"), created, _) => CommitResult::DescendantLimit {
                    created: created.and_then(|c| c.parse().ok()).unwrap_or(0),
                    asked: word(2).and_then(|c| c.parse().ok()).unwrap_or(0),
                },
                _ => CommitResult::Gone,
            },
        )
    }
}

/// A committer's request to run the workflow's next step itself.
pub struct Continue<'a> {
    pub worker: &'a str,
    pub lease: Duration,
    /// The claim being committed.
    pub from: &'a Claim,
    /// The transition being committed.
    pub transition: &'a Transition,
}

/// What a continued commit's reply says of the new lease: `drover_commit`'s reply
/// `{"ok", "continued", id, token, kids_step, lease_until, signals (flat pairs)...}`, the signals
/// only for a commit that asked for them (`continue` 1, as workers of the release before ask; this
/// worker asks with 2 and keeps them itself, see [`Claim::delivered`]).
struct Granted<'a> {
    token: Option<&'a RValue>,
    kids_step: Option<&'a RValue>,
    until: Option<&'a RValue>,
    signals: &'a [RValue],
}

impl Continue<'_> {
    /// The next claim: the committed one moved on by the transition, with the new token, the
    /// signals already delivered to the new step and the step that started children.
    fn next(&self, granted: Granted<'_>, now_ms: u64) -> Result<Claim> {
        let t = self.transition;
        let corrupt = |reason: &str| Error::Corrupt {
            id: self.from.id.clone(),
            reason: reason.into(),
        };
        let token = granted
            .token
            .and_then(text)
            .and_then(|s| s.parse().ok())
            .ok_or_else(|| corrupt("token"))?;
        let task = t
            .next
            .clone()
            .ok_or_else(|| corrupt("continued without a next task"))?;
        let mut outputs = self.from.outputs.clone();
        if let Some((step, value)) = &t.output {
            outputs.insert(*step, Arc::new(value.clone()));
        }
        // (Signals in the reply, which only a commit with `continue` 1 gets, are taken too.)
        let mut delivered = self.from.delivered.clone();
        delivered.extend(pairs_of(granted.signals));
        let signals = signals_of(&delivered, t.step);
        Ok(Claim {
            id: self.from.id.clone(),
            token,
            kind: self.from.kind.clone(),
            input: self.from.input.clone(),
            state: t.state,
            step: t.step,
            attempt: t.attempt,
            phase: t.phase,
            cause: t.cause,
            cancel_requested: false,
            error: t.error.clone(),
            task,
            outputs,
            signals,
            delivered,
            kids_step: granted
                .kids_step
                .and_then(text)
                .and_then(|s| s.parse().ok()),
            lease_start_ms: now_ms,
            // (A library from before kept leases sends none: renewed at once.)
            lease_until_ms: granted
                .until
                .and_then(text)
                .and_then(|s| s.parse().ok())
                .unwrap_or(now_ms),
            priority: self.from.priority,
            resumes: self.from.resumes,
            steps: self.from.steps.clone(),
            trace: self.from.trace.clone(),
            cluster: self.from.cluster.clone(),
        })
    }
}

pub(crate) fn text(v: &RValue) -> Option<String> {
    match v {
        RValue::BulkString(b) => Some(String::from_utf8_lossy(b).into_owned()),
        RValue::SimpleString(s) => Some(s.clone()),
        RValue::Int(i) => Some(i.to_string()),
        _ => None,
    }
}

/// The signals of `delivered` (`"<step>:<name>"` to JSON) that went to `step`, by name.
fn signals_of(delivered: &BTreeMap<String, String>, step: usize) -> BTreeMap<String, Value> {
    if delivered.is_empty() {
        return BTreeMap::new();
    }
    let prefix = format!("{step}:");
    delivered
        .iter()
        .filter_map(|(k, v)| {
            Some((
                k.strip_prefix(&prefix)?.to_string(),
                serde_json::from_str(v).ok()?,
            ))
        })
        .collect()
}

/// Flat key-value pairs as a map.
fn pairs_of(items: &[RValue]) -> BTreeMap<String, String> {
    items
        .chunks(2)
        .filter_map(|kv| match kv {
            [k, v] => Some((text(k)?, text(v)?)),
            _ => None,
        })
        .collect()
}

/// A flat HGETALL reply as a map.
pub(crate) fn pairs(v: &RValue) -> BTreeMap<String, String> {
    match v {
        RValue::Array(items) => pairs_of(items),
        RValue::Map(items) => items
            .iter()
            .filter_map(|(k, v)| Some((text(k)?, text(v)?)))
            .collect(),
        _ => BTreeMap::new(),
    }
}

fn parse_claim(reply: RValue) -> Result<Claim> {
    let RValue::Array(items) = reply else {
        return Err(Error::Corrupt {
            id: String::new(),
            reason: "claim entry is not an array".into(),
        });
    };
    let Some(id) = items.first().and_then(text) else {
        return Err(Error::Corrupt {
            id: String::new(),
            reason: "claim entry without an id".into(),
        });
    };
    let corrupt = |reason: String| Error::Corrupt {
        id: id.clone(),
        reason,
    };
    let token: u64 = items
        .get(1)
        .and_then(text)
        .and_then(|s| s.parse().ok())
        .ok_or_else(|| corrupt("token".into()))?;
    let rec = items.get(2).map(pairs).unwrap_or_default();
    let field = |name: &str| {
        rec.get(name)
            .cloned()
            .ok_or_else(|| corrupt(format!("missing field {name}")))
    };
    let task: Task = serde_json::from_str(&field("task")?)?;
    let step: usize = field("step")?.parse().map_err(|_| corrupt("step".into()))?;
    let outputs = items
        .get(3)
        .map(pairs)
        .unwrap_or_default()
        .into_iter()
        .filter_map(|(k, v)| {
            let value: Value = serde_json::from_str(&v).ok()?;
            Some((k.parse().ok()?, Arc::new(value)))
        })
        .collect();
    let delivered = items.get(4).map(pairs).unwrap_or_default();
    let signals = signals_of(&delivered, step);
    let claim = Claim {
        token,
        kind: field("kind")?,
        input: Arc::new(serde_json::from_str(&field("input")?)?),
        state: State::parse(&field("state")?).ok_or_else(|| corrupt("state".into()))?,
        step,
        attempt: field("attempt")?
            .parse()
            .map_err(|_| corrupt("attempt".into()))?,
        phase: if rec.get("phase").map(String::as_str) == Some("compensate") {
            Phase::Compensate
        } else {
            Phase::Forward
        },
        cause: match rec.get("cause").map(String::as_str) {
            Some("failed") => Some(Cause::Failed),
            Some("cancelled") => Some(Cause::Cancelled),
            _ => None,
        },
        cancel_requested: rec.get("cancel").map(String::as_str) == Some("1"),
        error: rec.get("error").and_then(|e| serde_json::from_str(e).ok()),
        task,
        outputs,
        signals,
        delivered,
        kids_step: rec.get("kids_step").and_then(|s| s.parse().ok()),
        lease_start_ms: rec
            .get("lease_start")
            .and_then(|s| s.parse().ok())
            .unwrap_or(0),
        // (A library from before kept leases writes none: renewed at once.)
        lease_until_ms: rec
            .get("lease_until")
            .or(rec.get("lease_start"))
            .and_then(|s| s.parse().ok())
            .unwrap_or(0),
        priority: rec
            .get("priority")
            .and_then(|s| s.parse().ok())
            .unwrap_or(0),
        resumes: rec.get("resumes").and_then(|s| s.parse().ok()).unwrap_or(0),
        steps: rec
            .get("steps")
            .and_then(|s| serde_json::from_str::<Vec<String>>(s).ok())
            .map(Arc::from),
        trace: rec.get("trace").cloned(),
        cluster: rec.get("cluster").cloned(),
        id,
    };
    Ok(claim)
}
