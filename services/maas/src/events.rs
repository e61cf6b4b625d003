//! A machine's events (`GET events/?op=query&id=<system_id>&limit=N`, MAAS's `EventsHandler`):
//! newest first, at INFO level and above, at most 1000 per call as MAAS allows. Workflows read
//! them for a failed deployment's reason (`failure_reason` in the port).

use drover_workflows::ports::maas::{Event, MaasError};

use crate::Client;
use crate::model;
use crate::request::Call;

/// MAAS refuses a larger `limit` with 400.
const MAX_LIMIT: u32 = 1000;

pub async fn query(c: &Client, system_id: &str, limit: u32) -> Result<Vec<Event>, MaasError> {
    let call = Call::get(
        format!("read events of machine {system_id}"),
        &["events"],
        Some("query"),
    )
    .param("id", system_id)
    .param("limit", limit.clamp(1, MAX_LIMIT));
    let page: model::Events = c.call(call).await?;
    Ok(page.events.into_iter().map(Into::into).collect())
}
