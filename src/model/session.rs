//! The session record every session backend stores and returns.

use chrono::{DateTime, Utc};
use uuid::Uuid;

use super::Json;

/// A live session.
#[derive(Debug, Clone, PartialEq)]
pub struct Session {
    /// Who the session belongs to, if anyone (a visitor's session has no
    /// user). [`Sessions::delete_user`](crate::Sessions::delete_user) ends every session of one user.
    pub user_id: Option<Uuid>,
    /// The session's data: a JSON object, exactly as stored.
    pub data: Json,
    /// When the session was created.
    pub created_at: DateTime<Utc>,
    /// When the session ends unless extended.
    pub expires_at: DateTime<Utc>,
}
