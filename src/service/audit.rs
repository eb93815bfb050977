//! The audit trail: one event per grant decision, admin write and refused
//! admin request. Events are written with the change they record, in the
//! same transaction, and also logged as a JSON line. Never a secret.

use chrono::{DateTime, Utc};
use futures_util::FutureExt;
use futures_util::future::BoxFuture;
use serde::Serialize;
use uuid::Uuid;

use crate::store::audit::{self as rows, AuditRow};
use crate::store::types::{DbTime, DbUuid};
use crate::store::{AnyConnection, Pipelined, users};

/// Longest text kept in an audit field: attacker-chosen strings (a username
/// of 10 KB) must not bloat the log.
pub const MAX_FIELD_CHARS: usize = 256;

/// Who performs an admin action: the token's `sub`, and `act.sub` if any.
#[derive(Debug, Clone, Copy)]
pub struct Caller {
    pub sub: Uuid,
    pub actor: Option<Uuid>,
}

/// Who asks for an admin write.
#[derive(Debug, Clone)]
pub enum Author {
    /// A valid token's subject (and actor). Whether their accounts are still
    /// active is read inside the write's own transaction (`audited_write`):
    /// one database check-out per write instead of two, and no window
    /// between the check and the write. `route` names the request in the
    /// denial event when an account turns out disabled or deleted.
    Caller { caller: Caller, route: String },
    /// The service itself: the bootstrap admin at start, `sts user create`.
    System,
}

impl Author {
    /// `event` with this author as its subject (and actor).
    pub fn stamp(&self, event: AuditEvent) -> AuditEvent {
        match self {
            Self::Caller { caller, .. } => event.subject(caller.sub).actor(caller.actor),
            Self::System => event.subject("system"),
        }
    }
}

/// The refusal of a caller whose account (or whose actor's account) was
/// disabled or deleted after their token was issued.
fn inactive_caller_denied(caller: Caller, route: &str) -> AuditEvent {
    AuditEvent::new("admin.denied", Outcome::Denied)
        .subject(caller.sub)
        .actor(caller.actor)
        .target(route)
        .reason("401: user disabled or deleted")
}

/// Whether the caller's user, and their actor's if any, exist and are not
/// disabled.
async fn accounts_active(conn: &mut AnyConnection, caller: Caller) -> diesel::QueryResult<bool> {
    Ok(users::is_active(conn, DbUuid(caller.sub)).await? && actor_active(conn, caller).await?)
}

/// Whether the caller's actor, if any, exists and is not disabled.
async fn actor_active(conn: &mut AnyConnection, caller: Caller) -> diesel::QueryResult<bool> {
    match caller.actor {
        Some(actor) => users::is_active(conn, DbUuid(actor)).await,
        None => Ok(true),
    }
}

/// Refuses (401, with the denial event) a caller disabled or deleted since
/// their token was issued, on a check-out of its own: for reads, and for
/// writes that do slow or revealing work before their transaction (hashing
/// a password, judging which roles may be granted). A write's own
/// transaction asks again (`audited_write`); that answer decides.
pub async fn refuse_inactive(
    ctx: &super::Context,
    meta: &RequestMeta,
    author: &Author,
) -> Result<(), super::ServiceError> {
    let Author::Caller { caller, route } = author else { return Ok(()) };
    let caller = *caller;
    if ctx
        .store
        .run(move |conn| async move { accounts_active(conn, caller).await.map_err(super::ServiceError::from) }.boxed())
        .await?
    {
        return Ok(());
    }
    record_now(ctx, meta, inactive_caller_denied(caller, route)).await?;
    Err(super::ServiceError::CallerInactive)
}

/// Who asked, from where: taken from the request by the API layer.
#[derive(Debug, Clone, Default)]
pub struct RequestMeta {
    pub request_id: Option<String>,
    pub source_ip: Option<String>,
}

impl RequestMeta {
    /// The client address, for per-source throttling.
    pub fn source(&self) -> Option<std::net::IpAddr> {
        self.source_ip.as_deref().and_then(|ip| ip.parse().ok())
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum Outcome {
    Success,
    Failure,
    Denied,
}

impl Outcome {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Success => "SUCCESS",
            Self::Failure => "FAILURE",
            Self::Denied => "DENIED",
        }
    }
}

/// One event before it is written.
#[derive(Debug, Clone)]
pub struct AuditEvent {
    pub action: &'static str,
    pub outcome: Outcome,
    pub subject: Option<String>,
    pub actor: Option<String>,
    pub organisation_id: Option<Uuid>,
    pub target_id: Option<String>,
    pub reason: Option<String>,
}

impl AuditEvent {
    pub fn new(action: &'static str, outcome: Outcome) -> Self {
        Self { action, outcome, subject: None, actor: None, organisation_id: None, target_id: None, reason: None }
    }

    pub fn subject(mut self, subject: impl ToString) -> Self {
        self.subject = Some(subject.to_string());
        self
    }

    pub fn actor(mut self, actor: Option<Uuid>) -> Self {
        self.actor = actor.map(|a| a.to_string());
        self
    }

    pub fn organisation(mut self, organisation: Option<Uuid>) -> Self {
        self.organisation_id = organisation;
        self
    }

    pub fn target(mut self, target: impl ToString) -> Self {
        self.target_id = Some(target.to_string());
        self
    }

    pub fn reason(mut self, reason: impl ToString) -> Self {
        self.reason = Some(reason.to_string());
        self
    }
}

/// Keeps attacker-chosen text to one bounded line.
fn bounded(text: Option<String>) -> Option<String> {
    text.map(|t| t.chars().map(|c| if c.is_control() { '\u{FFFD}' } else { c }).take(MAX_FIELD_CHARS).collect())
}

/// The audit row could not be written. Whatever the cause, the change it
/// records must not happen: the transaction rolls back and the client is
/// told to retry (503), never that the change was made.
#[derive(Debug, thiserror::Error)]
#[error("audit write failed: {0}")]
pub struct AuditWriteFailed(#[source] pub diesel::result::Error);

impl From<AuditWriteFailed> for super::ServiceError {
    fn from(error: AuditWriteFailed) -> Self {
        Self::Unavailable(error.to_string())
    }
}

impl From<AuditWriteFailed> for super::GrantError {
    fn from(error: AuditWriteFailed) -> Self {
        Self::Unavailable(error.to_string())
    }
}

/// Writes the event on `conn` (inside the caller's transaction) and logs it.
pub async fn record(
    conn: &mut AnyConnection,
    now: DateTime<Utc>,
    meta: &RequestMeta,
    event: AuditEvent,
) -> Result<(), AuditWriteFailed> {
    let row = row(now, meta, event);
    rows::insert(conn, &row).await.map_err(AuditWriteFailed)?;
    log(&row);
    Ok(())
}

/// [`record`], its insert sent together with `statement`'s (one round trip
/// for both on PostgreSQL; `store::Pipelined::both`), `statement` first.
/// If either fails, `statement`'s error is the one returned (the aborted
/// audit insert behind it says nothing more), and the caller's transaction
/// rolls both back. Logs the event once both are written.
pub async fn record_with<T, E>(
    conn: &mut AnyConnection,
    now: DateTime<Utc>,
    meta: &RequestMeta,
    event: AuditEvent,
    statement: impl AsyncFnOnce(Pipelined<'_>) -> Result<T, E>,
) -> Result<T, E>
where
    E: From<AuditWriteFailed>,
{
    let row = row(now, meta, event);
    let audit = async |c: Pipelined<'_>| rows::insert_on(c, &row).await.map_err(|e| E::from(AuditWriteFailed(e)));
    let (value, ()) = conn.pipelined().both(statement, audit).await?;
    log(&row);
    Ok(value)
}

/// The row [`record`] writes.
fn row(now: DateTime<Utc>, meta: &RequestMeta, event: AuditEvent) -> AuditRow {
    AuditRow {
        id: DbUuid(Uuid::new_v4()),
        created_at: DbTime::from(now),
        action: event.action.to_owned(),
        outcome: event.outcome.as_str().to_owned(),
        subject: bounded(event.subject),
        actor: bounded(event.actor),
        organisation_id: event.organisation_id.map(DbUuid),
        target_id: bounded(event.target_id),
        request_id: bounded(meta.request_id.clone()),
        source_ip: bounded(meta.source_ip.clone()),
        reason: bounded(event.reason),
    }
}

/// The JSON log line of a written row.
fn log(row: &AuditRow) {
    tracing::info!(
        target: "audit",
        audit_id = %row.id.0,
        action = %row.action,
        outcome = %row.outcome,
        subject = row.subject.as_deref(),
        actor = row.actor.as_deref(),
        organisation_id = row.organisation_id.map(|o| o.0.to_string()),
        target_id = row.target_id.as_deref(),
        reason = row.reason.as_deref(),
        "audit event"
    );
}

/// An event as the API shows it.
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct AuditView {
    pub id: Uuid,
    pub created_date: DateTime<Utc>,
    pub action: String,
    pub outcome: String,
    pub subject: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub actor: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub organisation_id: Option<Uuid>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub target_id: Option<String>,
    pub request_id: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub source_ip: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
}

impl From<AuditRow> for AuditView {
    fn from(row: AuditRow) -> Self {
        Self {
            id: row.id.0,
            created_date: row.created_at.0,
            action: row.action,
            outcome: row.outcome,
            subject: row.subject,
            actor: row.actor,
            organisation_id: row.organisation_id.map(|o| o.0),
            target_id: row.target_id,
            request_id: row.request_id,
            source_ip: row.source_ip,
            reason: row.reason,
        }
    }
}

/// Filters of the audit list, as the API takes them.
#[derive(Debug, Clone, Default)]
pub struct AuditQuery {
    pub organisation_id: Option<Uuid>,
    pub subject: Option<String>,
    pub action: Option<String>,
    pub from: Option<DateTime<Utc>>,
    pub to: Option<DateTime<Utc>>,
}

/// Newest first; one page and the total under the same filter.
pub async fn list(
    ctx: &super::Context,
    query: AuditQuery,
    page: i64,
    page_size: i64,
) -> Result<(Vec<AuditView>, i64), super::ServiceError> {
    let filter = rows::AuditFilter {
        organisation_id: query.organisation_id.map(DbUuid),
        subject: query.subject,
        action: query.action,
        from: query.from.map(DbTime::from),
        to: query.to.map(DbTime::from),
    };
    let (events, total) = ctx
        .store
        .run(move |conn| {
            async move { rows::list(conn, &filter, page, page_size).await.map_err(super::ServiceError::from) }.boxed()
        })
        .await?;
    Ok((events.into_iter().map(AuditView::from).collect(), total))
}

/// Passes `result` through; when it is an error, first records `event` as a
/// failure with the error as its reason, in a transaction of its own, so a
/// refused or failed change still leaves a trace. If the database itself is
/// gone there is nothing to write to, and the original error is returned.
pub async fn or_failure<T>(
    ctx: &super::Context,
    meta: &RequestMeta,
    mut event: AuditEvent,
    result: Result<T, super::ServiceError>,
) -> Result<T, super::ServiceError> {
    let Err(error) = &result else { return result };
    if matches!(error, super::ServiceError::Unavailable(_)) {
        return result;
    }
    event.outcome = Outcome::Failure;
    event.reason = Some(error.to_string());
    if let Err(e) = record_now(ctx, meta, event).await {
        tracing::warn!(error = %e, "could not record a failure event");
    }
    result
}

/// Deletes events older than the configured retention; returns how many.
/// With a retention of 0 (the default) nothing is ever deleted.
pub async fn purge_expired(ctx: &super::Context) -> Result<usize, super::ServiceError> {
    let days = ctx.config.settings.audit.retention_days;
    if days == 0 {
        return Ok(0);
    }
    let cutoff = ctx.now() - chrono::Duration::days(i64::try_from(days).unwrap_or(i64::MAX / 86_400));
    ctx.store
        .run(move |conn| {
            async move { rows::delete_older_than(conn, DbTime::from(cutoff)).await.map_err(super::ServiceError::from) }
                .boxed()
        })
        .await
}

/// The retention job: runs `purge_expired` every `purge_interval_secs` for
/// as long as the process lives; failures are logged and retried next time.
pub fn spawn_retention(ctx: super::Context) {
    if ctx.config.settings.audit.retention_days == 0 {
        return;
    }
    let every = std::time::Duration::from_secs(ctx.config.settings.audit.purge_interval_secs);
    tokio::spawn(async move {
        let mut ticks = tokio::time::interval(every);
        loop {
            ticks.tick().await;
            match purge_expired(&ctx).await {
                Ok(0) => {}
                Ok(n) => tracing::info!(deleted = n, "audit retention: expired events deleted"),
                Err(e) => {
                    tracing::warn!(error = %e, "audit retention failed; retrying at the next interval")
                }
            }
        }
    });
}

/// Writes one event in a transaction of its own (refusals, failures).
pub async fn record_now(
    ctx: &super::Context,
    meta: &RequestMeta,
    event: AuditEvent,
) -> Result<(), super::ServiceError> {
    let (clock, meta) = (ctx.clock.clone(), meta.clone());
    ctx.store
        .run(move |conn| {
            async move { record(conn, clock.now(), &meta, event).await.map_err(super::ServiceError::from) }.boxed()
        })
        .await
}

/// One audited admin write: `work` runs in a transaction, and `event`,
/// stamped with `author` as its subject (and actor), is written in that same
/// transaction (so a change without its event cannot
/// happen); `work` may add to the event (a reason). If anything fails, the
/// transaction rolls back and the event is recorded as a failure instead.
///
/// A caller's account is read first, in the same transaction: if it has
/// been disabled or deleted since their token was issued, nothing is
/// written but a denial event, and the answer is 401.
pub async fn audited_write<T, F>(
    ctx: &super::Context,
    meta: &RequestMeta,
    author: &Author,
    event: AuditEvent,
    work: F,
) -> Result<T, super::ServiceError>
where
    F: for<'c> FnOnce(
            &'c mut AnyConnection,
            DbTime,
            &'c mut AuditEvent,
        ) -> BoxFuture<'c, Result<T, super::ServiceError>>
        + Send
        + 'static,
    T: Send + 'static,
{
    audited(ctx, meta, author, event, move |conn, now, mut success, meta| {
        async move {
            let value = work(conn, now, &mut success).await?;
            record(conn, now.0, &meta, success).await?;
            Ok(value)
        }
        .boxed()
    })
    .await
}

/// [`audited_write`] for a write that is one statement, known before it is
/// sent and not adding to the event: `statement` is sent together with the
/// audit row's insert (one round trip for both on PostgreSQL). If either
/// fails, both roll back and `statement`'s error is the answer.
pub async fn audited_statement<T, F>(
    ctx: &super::Context,
    meta: &RequestMeta,
    author: &Author,
    event: AuditEvent,
    statement: F,
) -> Result<T, super::ServiceError>
where
    F: for<'c> FnOnce(Pipelined<'c>, DbTime) -> BoxFuture<'c, Result<T, super::ServiceError>> + Send + 'static,
    T: Send + 'static,
{
    audited(ctx, meta, author, event, move |conn, now, success, meta| {
        async move {
            let write = async move |c: Pipelined<'_>| statement(c, now).await;
            record_with(conn, now.0, &meta, success, write).await
        }
        .boxed()
    })
    .await
}

/// The transaction of [`audited_write`] and [`audited_statement`]: the
/// caller's accounts read, then `body`, which writes the change and the
/// success event it is given; the refusal and the failure event after.
async fn audited<T, F>(
    ctx: &super::Context,
    meta: &RequestMeta,
    author: &Author,
    event: AuditEvent,
    body: F,
) -> Result<T, super::ServiceError>
where
    F: for<'c> FnOnce(
            &'c mut AnyConnection,
            DbTime,
            AuditEvent,
            RequestMeta,
        ) -> BoxFuture<'c, Result<T, super::ServiceError>>
        + Send
        + 'static,
    T: Send + 'static,
{
    let event = author.stamp(event);
    let (clock, write_meta, success) = (ctx.clock.clone(), meta.clone(), event.clone());
    let caller = match author {
        Author::Caller { caller, .. } => Some(*caller),
        Author::System => None,
    };
    let result = ctx
        .store
        .run(move |conn| {
            async move {
                // The caller's user is read by the statement that opens the
                // transaction (one round trip on PostgreSQL,
                // `store::transaction_from`).
                let caller_active = async |conn: Pipelined<'_>| match caller {
                    Some(caller) => Ok(users::is_active_on(conn, DbUuid(caller.sub)).await?),
                    None => Ok(true),
                };
                crate::store::transaction_from(conn, caller_active, async |conn, active| {
                    if let Some(caller) = caller
                        && !(active && actor_active(conn, caller).await?)
                    {
                        return Err(super::ServiceError::CallerInactive);
                    }
                    let now = DbTime::from(clock.now());
                    body(conn, now, success, write_meta).await
                })
                .await
            }
            .boxed()
        })
        .await;
    match (result, author) {
        (Err(super::ServiceError::CallerInactive), Author::Caller { caller, route }) => {
            record_now(ctx, meta, inactive_caller_denied(*caller, route)).await?;
            Err(super::ServiceError::CallerInactive)
        }
        (result, _) => or_failure(ctx, meta, event, result).await,
    }
}
