//! Group commit. The commits of attempts that end at about the same time go to Redis together: one
//! `drover_commit_batch` call per shard applies them all, each exactly as `drover_commit` would.
//! Each shard has a queue and a task that sends whatever has queued up (at most [`MAX_BATCH`]) as
//! soon as fewer than [`IN_FLIGHT`] of its batches are out, so a lone commit waits for nothing, and
//! under load a call carries more commits: the cost of a call (the round trip, Redis's command
//! dispatch and function set-up, the worker's request and reply handling) is shared between them.
//! A batch that fails as a whole (the connection dropped) fails each of its commits with the same
//! error; their committers retry them as they retry any commit (a commit is idempotent per token).

use drover_store::{CommitReply, CommitRequest, Error, Result, Store};
use futures::StreamExt;
use tokio::sync::{mpsc, oneshot};

/// Most commits in one call: bounds how long one call keeps Redis (a commit runs in tens of us).
pub const MAX_BATCH: usize = 64;
/// Batches of one shard out at once: while Redis applies one, the next gathers and is sent.
pub const IN_FLIGHT: usize = 2;

struct Pending {
    request: CommitRequest,
    reply: oneshot::Sender<Result<CommitReply>>,
}

/// Each shard's commit queue (its task runs until the committer is dropped).
pub struct Committer {
    store: Store,
    queues: Vec<mpsc::UnboundedSender<Pending>>,
}

impl Committer {
    /// Starts a batching task per shard of `store` (call within the runtime).
    pub fn start(store: &Store) -> Committer {
        let queues = store
            .shards()
            .into_iter()
            .map(|shard| {
                let (tx, rx) = mpsc::unbounded_channel();
                tokio::spawn(run(shard, rx));
                tx
            })
            .collect();
        Committer {
            store: store.clone(),
            queues,
        }
    }

    /// Commits `request` with the others queued on its workflow's shard.
    pub async fn commit(&self, request: CommitRequest) -> Result<CommitReply> {
        let (reply, answer) = oneshot::channel();
        let shard = usize::from(self.store.shard_of(&request.id));
        let gone = || Error::Corrupt {
            id: String::new(),
            reason: "the commit queue stopped".into(),
        };
        self.queues[shard]
            .send(Pending { request, reply })
            .map_err(|_| gone())?;
        answer.await.map_err(|_| gone())?
    }
}

/// One shard's batching loop.
async fn run(shard: Store, mut queue: mpsc::UnboundedReceiver<Pending>) {
    let mut out = futures::stream::FuturesUnordered::new();
    loop {
        tokio::select! {
            Some(()) = out.next(), if !out.is_empty() => {}
            first = queue.recv(), if out.len() < IN_FLIGHT => {
                let Some(first) = first else { break };
                let mut batch = vec![first];
                while batch.len() < MAX_BATCH {
                    match queue.try_recv() {
                        Ok(p) => batch.push(p),
                        Err(_) => break,
                    }
                }
                out.push(send(shard.clone(), batch));
            }
        }
    }
    while out.next().await.is_some() {}
}

/// Sends one batch and hands each committer its reply.
async fn send(shard: Store, batch: Vec<Pending>) {
    let (requests, replies): (Vec<_>, Vec<_>) =
        batch.into_iter().map(|p| (p.request, p.reply)).unzip();
    match shard.commit_batch(&requests).await {
        Ok(results) => {
            for (reply, result) in replies.into_iter().zip(results) {
                let _ = reply.send(result);
            }
        }
        Err(e) => {
            for reply in replies {
                let _ = reply.send(Err(e.duplicate()));
            }
        }
    }
}
