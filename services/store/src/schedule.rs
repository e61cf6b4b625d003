//! Schedules in Redis (`lua/schedule.lua`): the store keeps a schedule's specification as the caller
//! wrote it (JSON it does not read), its next fire time, the overlap policy and the log of what
//! each fire time became. Fire times are computed by the caller; claiming one and starting its
//! workflow is one function call, refused when another scheduler claimed that time first.

use std::collections::HashMap;

use drover_workflows::NewWorkflow;
use redis::AsyncCommands;
use serde::Serialize;
use serde_json::Value;

use crate::{Result, Store};

/// Entries kept in a schedule's log (newest first).
pub const LOG_MAX: usize = 1000;

/// A schedule as stored.
#[derive(Debug, Clone, Serialize)]
pub struct ScheduleRecord {
    pub id: String,
    /// The specification as written (JSON text, returned parsed).
    pub spec: Value,
    pub overlap: String,
    pub paused: bool,
    pub note: Option<String>,
    /// The next fire time (Unix ms), none when the schedule has no more.
    pub next_ms: Option<i64>,
    /// When a scheduler acts on it: the next fire time plus its jitter.
    pub due_ms: Option<i64>,
    pub last_fire_ms: Option<i64>,
    pub last_workflow: Option<String>,
    /// A fire time held by the buffer-one policy until the previous run ends.
    pub buffered_ms: Option<i64>,
    pub version: u64,
    pub created_ms: u64,
    pub updated_ms: u64,
}

impl ScheduleRecord {
    fn from_hash(h: HashMap<String, String>) -> Option<ScheduleRecord> {
        let num = |k: &str| h.get(k).and_then(|v| v.parse::<i64>().ok());
        Some(ScheduleRecord {
            id: h.get("id")?.clone(),
            spec: serde_json::from_str(h.get("spec")?).ok()?,
            overlap: h.get("overlap").cloned().unwrap_or_default(),
            paused: h.get("paused").map(String::as_str) == Some("1"),
            note: h.get("note").filter(|n| !n.is_empty()).cloned(),
            next_ms: num("next_ms"),
            due_ms: num("next_ms").and(num("due_ms")),
            last_fire_ms: num("last_fire_ms"),
            last_workflow: h.get("last_wf").filter(|n| !n.is_empty()).cloned(),
            buffered_ms: num("buffered_ms"),
            version: num("version").unwrap_or(0) as u64,
            created_ms: num("created_ms").unwrap_or(0) as u64,
            updated_ms: num("updated_ms").unwrap_or(0) as u64,
        })
    }
}

/// A schedule's state without its spec ([`Store::schedule_head`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Head {
    pub version: u64,
    pub next_ms: Option<i64>,
    pub due_ms: Option<i64>,
    pub paused: bool,
    pub buffered: bool,
}

/// How a schedule is written.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PutMode {
    /// Refused when the id exists.
    Create,
    /// Refused when the id does not exist; keeps the log, pause state and last run.
    Replace,
}

/// What a put did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Put {
    Created,
    Replaced,
    Exists,
    NotFound,
    /// The schedule exists on this other shard: its spec names a cluster on another shard than
    /// the one it was created for. Nothing written.
    OtherShard(u16),
}

/// The next fire time and when to act on it (with jitter), or none.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Next {
    pub fire_ms: i64,
    pub due_ms: i64,
}

/// Why a fire call is made.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FireMode {
    /// The schedule's next fire time: claimed by compare-and-set and moved on.
    Due,
    /// An operator's "trigger now".
    Trigger,
    /// A past fire time of a backfill range.
    Backfill,
}

impl FireMode {
    fn as_str(self) -> &'static str {
        match self {
            FireMode::Due => "due",
            FireMode::Trigger => "trigger",
            FireMode::Backfill => "backfill",
        }
    }
}

/// What to do with a fire time.
#[derive(Debug, Clone)]
pub enum Verdict<'a> {
    /// Start this workflow (its id derived from the schedule and the fire time), subject to the
    /// overlap policy.
    Start(&'a NewWorkflow),
    /// Record the fire time (or `count` fire times up to `until_ms`) as skipped.
    Skip {
        reason: String,
        count: u64,
        until_ms: i64,
    },
}

/// One fire call.
#[derive(Debug, Clone)]
pub struct Fire<'a> {
    pub mode: FireMode,
    pub fire_ms: i64,
    /// The fire time plus its jitter: when it was due.
    pub due_ms: i64,
    /// The schedule's next fire time after this one (mode `Due` only).
    pub next: Option<Next>,
    pub verdict: Verdict<'a>,
    /// Overrides the schedule's overlap policy (triggers and backfills may give one).
    pub overlap: Option<&'a str>,
    /// Who asked (triggers and backfills), for the log.
    pub actor: Option<&'a str>,
}

/// What became of a fire time.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Fired {
    Started {
        id: String,
        cancelled: Option<String>,
    },
    Buffered {
        id: String,
    },
    Skipped {
        reason: String,
    },
    /// Its workflow exists already (a backfill of a time that fired, a replayed buffer).
    Existing {
        id: String,
    },
    /// Another scheduler claimed it, or the schedule changed: nothing written.
    Stale,
    Paused,
    NotFound,
}

impl Store {
    fn sched_key(&self, id: &str) -> String {
        self.key(&format!("sched:{id}"))
    }

    /// The handle on the shard that holds schedule `id`: a schedule lives on its cluster's shard
    /// (the workflows it starts are created with it, in one call). A schedule found nowhere:
    /// this handle (calls on it then find nothing).
    async fn sched_home(&self, id: &str) -> Result<Store> {
        Ok(self.sched_find(id).await?.unwrap_or_else(|| self.clone()))
    }

    /// The shard that holds schedule `id`, if any. This handle's shard is looked at first (a
    /// scheduler's own); with one shard, no look at all (it can only be there).
    async fn sched_find(&self, id: &str) -> Result<Option<Store>> {
        if self.shard_count() == 1 {
            return Ok(Some(self.clone()));
        }
        let mut order = vec![self.clone()];
        order.extend(self.shards().into_iter().filter(|s| s.shard != self.shard));
        for s in order {
            let mut conn = s.connection();
            let found: bool = conn.exists(s.sched_key(id)).await?;
            if found {
                return Ok(Some(s));
            }
        }
        Ok(None)
    }

    /// Writes a schedule (its spec JSON, overlap policy and first fire time).
    #[allow(clippy::too_many_arguments)]
    pub async fn schedule_put(
        &self,
        id: &str,
        spec: &Value,
        overlap: &str,
        next: Option<Next>,
        mode: PutMode,
        paused: bool,
        note: Option<&str>,
        now_ms: u64,
    ) -> Result<Put> {
        let target = self.on(self.shard_for(spec.get("cluster").and_then(Value::as_str)));
        if let Some(s) = self.sched_find(id).await?
            && s.shard() != target.shard()
        {
            return Ok(Put::OtherShard(s.shard()));
        }
        let s = target;
        let reply: Vec<String> = s
            .fcall("drover_sched_put", &s.sched_key(id))
            .arg(id)
            .arg(spec.to_string())
            .arg(overlap)
            .arg(next.map(|n| n.fire_ms.to_string()).unwrap_or_default())
            .arg(next.map(|n| n.due_ms).unwrap_or(0))
            .arg(match mode {
                PutMode::Create => "create",
                PutMode::Replace => "replace",
            })
            .arg(if paused { "1" } else { "0" })
            .arg(note.unwrap_or(""))
            .arg(now_ms)
            .run()
            .await?;
        Ok(match reply.first().map(String::as_str) {
            Some("created") => Put::Created,
            Some("replaced") => Put::Replaced,
            Some("exists") => Put::Exists,
            _ => Put::NotFound,
        })
    }

    /// Pauses or unpauses a schedule with a note; unpausing sets the next fire time (after now:
    /// fire times that passed while paused do not start). False when there is no such schedule.
    pub async fn schedule_pause(
        &self,
        id: &str,
        paused: bool,
        note: Option<&str>,
        next: Option<Next>,
        now_ms: u64,
    ) -> Result<bool> {
        let s = self.sched_home(id).await?;
        let reply: Vec<String> = s
            .fcall("drover_sched_pause", &s.sched_key(id))
            .arg(id)
            .arg(if paused { "1" } else { "0" })
            .arg(note.unwrap_or(""))
            .arg(next.map(|n| n.fire_ms.to_string()).unwrap_or_default())
            .arg(next.map(|n| n.due_ms).unwrap_or(0))
            .arg(now_ms)
            .arg(LOG_MAX)
            .run()
            .await?;
        Ok(reply.first().map(String::as_str) == Some("ok"))
    }

    /// Deletes a schedule and its log (the workflows it started stay). False when absent.
    pub async fn schedule_delete(&self, id: &str) -> Result<bool> {
        let s = self.sched_home(id).await?;
        let n: i64 = s
            .fcall("drover_sched_delete", &s.sched_key(id))
            .arg(id)
            .run()
            .await?;
        Ok(n == 1)
    }

    pub async fn schedule_get(&self, id: &str) -> Result<Option<ScheduleRecord>> {
        let s = self.sched_home(id).await?;
        let mut conn = s.connection();
        let key = s.sched_key(id);
        let kind: String = redis::cmd("TYPE").arg(&key).query_async(&mut conn).await?;
        if kind != "hash" {
            return Ok(None);
        }
        let h: HashMap<String, String> = conn.hgetall(&key).await?;
        Ok(ScheduleRecord::from_hash(h).filter(|r| r.id == id))
    }

    /// What the scheduler needs to decide whether a schedule is due, in one read (the spec is
    /// read only when the scheduler's compiled copy is older than `version`).
    pub async fn schedule_head(&self, id: &str) -> Result<Option<Head>> {
        let s = self.sched_home(id).await?;
        let mut conn = s.connection();
        let f: Vec<Option<String>> = redis::cmd("HMGET")
            .arg(s.sched_key(id))
            .arg(&[
                "id",
                "version",
                "next_ms",
                "due_ms",
                "paused",
                "buffered_ms",
            ])
            .query_async(&mut conn)
            .await?;
        let num = |i: usize| {
            f.get(i)
                .cloned()
                .flatten()
                .and_then(|v| v.parse::<i64>().ok())
        };
        if f.first().cloned().flatten().as_deref() != Some(id) {
            return Ok(None);
        }
        Ok(Some(Head {
            version: num(1).unwrap_or(0) as u64,
            next_ms: num(2),
            due_ms: num(2).and(num(3)),
            paused: f.get(4).cloned().flatten().as_deref() == Some("1"),
            buffered: num(5).is_some(),
        }))
    }

    /// A page of schedules by creation time (then id), oldest first, after the id `cursor`,
    /// over every shard.
    pub async fn schedule_list(
        &self,
        limit: usize,
        cursor: Option<&str>,
    ) -> Result<(Vec<ScheduleRecord>, Option<String>)> {
        // Where the cursor's schedule sits in the order all shards share.
        let mut after: Option<(u64, String)> = None;
        if let Some(c) = cursor {
            for s in self.shards() {
                let mut conn = s.connection();
                let score: Option<f64> = conn.zscore(s.key("idx:sched"), c).await?;
                if let Some(score) = score {
                    after = Some((score as u64, c.to_string()));
                    break;
                }
            }
            if after.is_none() {
                return Ok((Vec::new(), None));
            }
        }
        // Members of equal score come in id order; SLACK extra rows step over those at the
        // cursor's score already shown.
        const SLACK: usize = 64;
        let mut rows: Vec<(u64, String, Store)> = Vec::new();
        for s in self.shards() {
            let mut conn = s.connection();
            let min = after
                .as_ref()
                .map_or("-inf".to_string(), |(sc, _)| sc.to_string());
            let found: Vec<(String, f64)> = redis::cmd("ZRANGEBYSCORE")
                .arg(s.key("idx:sched"))
                .arg(&min)
                .arg("+inf")
                .arg("WITHSCORES")
                .arg("LIMIT")
                .arg(0)
                .arg(limit + 1 + SLACK)
                .query_async(&mut conn)
                .await?;
            rows.extend(
                found
                    .into_iter()
                    .map(|(id, sc)| (sc as u64, id))
                    .filter(|pos| after.as_ref().is_none_or(|a| pos > a))
                    .take(limit + 1)
                    .map(|(sc, id)| (sc, id, s.clone())),
            );
        }
        rows.sort_by(|a, b| (a.0, &a.1).cmp(&(b.0, &b.1)));
        let more = rows.len() > limit;
        rows.truncate(limit);
        let mut out = Vec::with_capacity(rows.len());
        for (_, id, s) in &rows {
            let mut conn = s.connection();
            let h: HashMap<String, String> = conn.hgetall(s.sched_key(id)).await?;
            if let Some(r) = ScheduleRecord::from_hash(h).filter(|r| &r.id == id) {
                out.push(r);
            }
        }
        let next = if more {
            rows.last().map(|(_, id, _)| id.clone())
        } else {
            None
        };
        Ok((out, next))
    }

    /// The schedule's log, newest first.
    pub async fn schedule_log(&self, id: &str, limit: usize) -> Result<Vec<Value>> {
        let s = self.sched_home(id).await?;
        let mut conn = s.connection();
        let rows: Vec<String> = conn
            .lrange(
                format!("{}:log", s.sched_key(id)),
                0,
                limit.max(1) as isize - 1,
            )
            .await?;
        Ok(rows
            .iter()
            .filter_map(|r| serde_json::from_str(r).ok())
            .collect())
    }

    /// Takes up to `limit` schedules due at `now_ms` for this scheduler (with their due times):
    /// each is moved `lease` ahead in the due index so other schedulers skip it, until its fire
    /// call or [`Store::schedule_requeue`] puts it back at its next due time.
    pub async fn schedules_take(
        &self,
        now_ms: u64,
        limit: usize,
        lease: std::time::Duration,
    ) -> Result<Vec<(String, i64)>> {
        let rows: Vec<String> = self
            .fcall("drover_sched_take", &self.key("sched:due"))
            .arg(now_ms)
            .arg(limit)
            .arg(lease.as_millis() as u64)
            .run()
            .await?;
        Ok(rows
            .chunks(2)
            .filter_map(|c| Some((c.first()?.clone(), c.get(1)?.parse::<f64>().ok()? as i64)))
            .collect())
    }

    /// Puts a taken schedule back in the due index where its state says.
    pub async fn schedule_requeue(&self, id: &str, now_ms: u64) -> Result<()> {
        let s = self.sched_home(id).await?;
        let _: i64 = s
            .fcall("drover_sched_requeue", &s.sched_key(id))
            .arg(id)
            .arg(now_ms)
            .run()
            .await?;
        Ok(())
    }

    /// When the earliest schedule is due, if any.
    pub async fn schedules_next_due(&self) -> Result<Option<i64>> {
        let mut conn = self.connection();
        let rows: Vec<(String, f64)> = conn.zrange_withscores(self.key("sched:due"), 0, 0).await?;
        Ok(rows.first().map(|(_, s)| *s as i64))
    }

    /// Claims a fire time and acts on it in one call (see `lua/schedule.lua`).
    pub async fn schedule_fire(&self, id: &str, fire: &Fire<'_>, now_ms: u64) -> Result<Fired> {
        let s = self.sched_home(id).await?;
        let (verdict, reason, record, count, until) = match &fire.verdict {
            Verdict::Start(wf) => {
                let rec = crate::submit::record(wf, None)?;
                ("start", String::new(), rec.to_string(), 1, 0)
            }
            Verdict::Skip {
                reason,
                count,
                until_ms,
            } => ("skip", reason.clone(), String::new(), *count, *until_ms),
        };
        let reply: Vec<String> = s
            .fcall("drover_sched_fire", &s.sched_key(id))
            .arg(id)
            .arg(fire.mode.as_str())
            .arg(fire.fire_ms.to_string())
            .arg(fire.next.map(|n| n.fire_ms.to_string()).unwrap_or_default())
            .arg(fire.next.map(|n| n.due_ms).unwrap_or(0))
            .arg(now_ms)
            .arg(verdict)
            .arg(reason)
            .arg(record)
            .arg(fire.overlap.unwrap_or(""))
            .arg(count)
            .arg(until)
            .arg(fire.due_ms)
            .arg(LOG_MAX)
            .arg(fire.actor.unwrap_or(""))
            .run()
            .await?;
        let arg = |i: usize| reply.get(i).cloned().unwrap_or_default();
        Ok(match reply.first().map(String::as_str) {
            Some("started") => Fired::Started {
                id: arg(1),
                cancelled: Some(arg(2)).filter(|c| !c.is_empty()),
            },
            Some("buffered") => Fired::Buffered { id: arg(1) },
            Some("skipped") => Fired::Skipped { reason: arg(1) },
            Some("existing") => Fired::Existing { id: arg(1) },
            Some("stale") => Fired::Stale,
            Some("paused") => Fired::Paused,
            _ => Fired::NotFound,
        })
    }

    /// Starts the schedule's buffered run if its previous run has ended (and puts the schedule
    /// back where schedulers find it). Returns the workflow started, if any.
    pub async fn schedule_buffer(&self, id: &str, now_ms: u64) -> Result<Option<String>> {
        let s = self.sched_home(id).await?;
        let reply: Vec<String> = s
            .fcall("drover_sched_buffer", &s.sched_key(id))
            .arg(id)
            .arg(now_ms)
            .arg(LOG_MAX)
            .run()
            .await?;
        Ok(match reply.first().map(String::as_str) {
            Some("started") => reply.get(1).cloned(),
            _ => None,
        })
    }

    /// A dedicated connection on which schedulers wait for a schedule change.
    pub async fn schedule_waiter(&self, block: std::time::Duration) -> Result<crate::Waiter> {
        let mut w = self.waiter(block).await?;
        w.key = self.key("sched:wake");
        Ok(w)
    }
}

/// The id of the workflow a schedule starts for a fire time: a name-based UUID (version 5) of the
/// schedule and the time, so every scheduler that races for the fire time builds the same id, and
/// a backfill of a time that already fired finds its workflow. `tag` tells apart starts that are
/// not the schedule's own fire times ("trigger" for an operator's trigger now).
pub fn fire_workflow_id(schedule: &str, fire_ms: i64, tag: &str) -> String {
    const NAMESPACE: uuid::Uuid = uuid::Uuid::from_u128(0x6d1f_0c2e_4b8a_4f0e_9a57_3c1d_d20e_5e11);
    uuid::Uuid::new_v5(
        &NAMESPACE,
        format!("{schedule}\n{fire_ms}\n{tag}").as_bytes(),
    )
    .to_string()
}

/// The label every workflow a schedule starts carries (value: the schedule's id).
pub const SCHEDULE_LABEL: &str = "drover.io/schedule";

/// Whether `s` may name a schedule: 1-63 letters, digits, `-`, `_` and `.`, starting with a letter
/// or digit (it is a path segment and a Redis key part).
pub fn is_schedule_id(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 63
        && s.as_bytes()[0].is_ascii_alphanumeric()
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.'))
}

/// The workflow a schedule starts at `fire_ms`: the spec's kind, input, priority and labels, plus
/// the schedule's label and, when the schedule has a maintenance window, the input's `window`
/// (`{schedule, start_ms, end_ms}`: the kinds that take one start no new work after its end).
/// Checked by the registry like any submission, so a refusal says what is wrong.
///
/// `store` is the handle on the schedule's shard: the workflow is created there, and its id names
/// that shard.
pub fn fire_workflow(
    registry: &drover_workflows::Registry,
    store: &Store,
    schedule: &str,
    compiled: &drover_workflows::schedule::Compiled,
    fire_ms: i64,
    tag: &str,
    now_ms: u64,
) -> std::result::Result<NewWorkflow, drover_workflows::registry::Error> {
    let spec = compiled.spec();
    let mut input = match &spec.input {
        Value::Null => Value::Object(Default::default()),
        other => other.clone(),
    };
    if let (Some(end), Value::Object(map)) = (compiled.window_end(fire_ms), &mut input) {
        map.insert(
            "window".into(),
            serde_json::json!({"schedule": schedule, "start_ms": fire_ms, "end_ms": end}),
        );
    }
    let mut labels = spec.labels.clone();
    labels.insert(SCHEDULE_LABEL.into(), schedule.into());
    let submission = drover_workflows::Submission {
        kind: spec.kind.clone(),
        input,
        priority: spec.priority.unwrap_or(0),
        labels,
        trace: None,
        cluster: spec.cluster.clone(),
    };
    registry.prepare(
        store.stamp(fire_workflow_id(schedule, fire_ms, tag)),
        submission,
        now_ms,
    )
}

/// The fire time after `after_ms` with the time it is due (jitter added).
pub fn next_fire(
    schedule: &str,
    compiled: &drover_workflows::schedule::Compiled,
    after_ms: i64,
) -> Option<Next> {
    compiled.next_after(after_ms).map(|f| Next {
        fire_ms: f.at_ms,
        due_ms: f.at_ms + compiled.jitter_ms(schedule, f.at_ms),
    })
}
