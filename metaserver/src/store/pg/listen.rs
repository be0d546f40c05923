//! Wake-ups between metaservers sharing one PostgreSQL database.
//!
//! A write that other live metaservers should see at once names its instance in a
//! `NOTIFY` sent with its COMMIT ([`notify_then_commit`]); PostgreSQL delivers it to every
//! listening connection when the transaction commits, never before, and not if it rolls
//! back. [`follow_announcements`] keeps one listening connection per metaserver (on the
//! caller's tokio runtime) and wakes the feed follower, which then reads the change feed
//! instead of waiting for its next poll.
//!
//! Invariants: a notification is a hint, never data. Losing one (the listening connection
//! drops; it is made again every [`RETRY`]) only delays invalidations to the next poll.

use super::tls::Target;
use std::sync::Arc;
use std::time::Duration;
use tokio_postgres::AsyncMessage;

/// The notification channel.
pub const CHANNEL: &str = "meridian_feed";
/// Wait between attempts to listen again after the connection failed.
pub const RETRY: Duration = Duration::from_secs(1);

/// The statements that end a transaction announcing instance `from`'s write.
pub(super) fn notify_then_commit(from: u64) -> String {
    format!("NOTIFY {CHANNEL}, '{from}'; COMMIT")
}

/// Listens on `url` for writes announced by instances other than `me` and wakes `wake`
/// for each; connects again after any failure. Runs until dropped.
pub async fn follow_announcements(url: String, me: u64, wake: Arc<tokio::sync::Notify>) {
    loop {
        if let Err(e) = listen(&url, me, &wake).await {
            tracing::warn!(error = %e, "postgresql: listening for other metaservers' changes");
        }
        wake.notify_one(); // whatever was missed meanwhile
        tokio::time::sleep(RETRY).await;
    }
}

async fn listen(url: &str, me: u64, wake: &tokio::sync::Notify) -> Result<(), String> {
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
        tracing::info!("postgresql: listening for other metaservers' changes");
        std::future::pending::<Result<(), String>>().await
    };
    tokio::select! {
        r = messages => r,
        r = subscribe => r,
    }
}
