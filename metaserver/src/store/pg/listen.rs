//! Wake-ups between metaservers sharing one PostgreSQL database.
//!
//! A write that other live metaservers should see at once names its instance in a
//! notification (`pg_notify`) sent with its COMMIT ([`notify_then_commit`]); PostgreSQL
//! delivers it to every listening connection when the transaction commits, never before,
//! and not if it rolls back. [`follow_announcements`] keeps one listening connection per
//! metaserver (on the caller's tokio runtime) and wakes the feed follower, which then
//! reads the change feed instead of waiting for its next poll. A database that does not
//! deliver notifications (some PostgreSQL-compatible engines) is found when the store
//! connects (`probe_notify`): then nothing is announced and the follower polls.
//!
//! Invariants: a notification is a hint, never data. Losing one (the listening connection
//! drops; it is made again every [`RETRY`]) only delays invalidations to the next poll.
//! A failure to listen is logged once, until listening works again.

use super::tls::Target;
use std::sync::Arc;
use std::time::Duration;
use tokio_postgres::AsyncMessage;

/// The notification channel.
pub const CHANNEL: &str = "meridian_feed";
/// The channel of the probe that tells whether the database delivers notifications.
pub const PROBE: &str = "meridian_probe";
/// Wait between attempts to listen again after the connection failed.
pub const RETRY: Duration = Duration::from_secs(1);

/// The statements that end a transaction announcing instance `from`'s write.
pub(super) fn notify_then_commit(from: u64) -> String {
    format!("SELECT pg_notify('{CHANNEL}', '{from}'); COMMIT")
}

/// Listens on `url` for writes announced by instances other than `me` and wakes `wake`
/// for each; connects again after any failure. Runs until dropped.
pub async fn follow_announcements(url: String, me: u64, wake: Arc<tokio::sync::Notify>) {
    let mut said = false;
    loop {
        let mut listening = false;
        if let Err(e) = listen(&url, me, &wake, &mut listening).await
            && (listening || !said)
        {
            tracing::warn!(
                error = %e,
                "postgresql: not listening for other metaservers' changes (they are seen at \
                 the change feed's next poll); trying again every {RETRY:?}"
            );
        }
        said = true;
        wake.notify_one(); // whatever was missed meanwhile
        tokio::time::sleep(RETRY).await;
    }
}

/// Listens until the connection fails; `listening` is set once `LISTEN` was answered.
async fn listen(
    url: &str,
    me: u64,
    wake: &tokio::sync::Notify,
    listening: &mut bool,
) -> Result<(), String> {
    let target = Target::parse(url).map_err(|e| e.to_string())?;
    let (client, mut conn) = target.connect().await?;
    let mine = me.to_string();
    let messages = async {
        loop {
            match std::future::poll_fn(|cx| conn.poll_message(cx)).await {
                Some(Ok(AsyncMessage::Notification(n))) if n.payload() != mine => wake.notify_one(),
                Some(Ok(_)) => {}
                Some(Err(e)) => return Err(e.to_string()),
                None => return Err("the connection closed".to_string()),
            }
        }
    };
    let subscribe = async {
        client
            .batch_execute(&format!("LISTEN {CHANNEL}"))
            .await
            .map_err(|e| e.to_string())?;
        *listening = true;
        tracing::info!("postgresql: listening for other metaservers' changes");
        std::future::pending::<Result<(), String>>().await
    };
    tokio::select! {
        r = messages => r,
        r = subscribe => r,
    }
}
