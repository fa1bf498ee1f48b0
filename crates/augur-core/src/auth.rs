//! Who may do what: API roles, the actions they allow, and the stored form of an
//! API token. Pure values; hashing, lookup and the etcd side live elsewhere.
//!
//! Roles are ordered: `viewer` reads, `submitter` also submits and cancels its
//! own jobs and manages its own schedules, `admin` does everything, including
//! other callers' jobs, draining workers, placement configuration and tokens.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

/// Schema version of [`TokenRecord`].
pub const TOKEN_RECORD_VERSION: u32 = 1;

/// Longest token name.
pub const MAX_TOKEN_NAME: usize = 64;

/// A secret value (a token) whose `Debug` never shows it, so a configuration
/// printed for debugging cannot leak it.
#[derive(Clone, PartialEq, Eq)]
pub struct Secret(String);

impl Secret {
    pub fn new(value: String) -> Self {
        Secret(value)
    }

    /// The value itself, for the one place that sends or compares it.
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Secret(<redacted>)")
    }
}

/// An API role.
#[derive(Copy, Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Role {
    Viewer,
    Submitter,
    Admin,
}

impl Role {
    pub fn as_str(self) -> &'static str {
        match self {
            Role::Viewer => "viewer",
            Role::Submitter => "submitter",
            Role::Admin => "admin",
        }
    }

    /// Whether this role may perform `action` at all (ownership is checked
    /// separately, see [`Action::OperateOwn`]).
    pub fn allows(self, action: Action) -> bool {
        self >= action.least_role()
    }
}

impl fmt::Display for Role {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for Role {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "viewer" => Ok(Role::Viewer),
            "submitter" => Ok(Role::Submitter),
            "admin" => Ok(Role::Admin),
            other => Err(format!(
                "{other:?} is not a role; use admin, submitter or viewer"
            )),
        }
    }
}

/// What an API call does, for authorisation.
#[derive(Copy, Clone, Debug, PartialEq, Eq, Hash)]
pub enum Action {
    /// Read jobs, workers, schedules, cluster status, runs, the model, the
    /// placement configuration.
    Read,
    /// Submit a job or create a schedule.
    Submit,
    /// Cancel a job or change a schedule: the caller must own it unless admin.
    OperateOwn,
    /// Drain workers, change placement configuration.
    Operate,
    /// Create, list and revoke tokens.
    ManageTokens,
}

impl Action {
    /// The least role that may perform this action.
    pub fn least_role(self) -> Role {
        match self {
            Action::Read => Role::Viewer,
            Action::Submit | Action::OperateOwn => Role::Submitter,
            Action::Operate | Action::ManageTokens => Role::Admin,
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Action::Read => "read",
            Action::Submit => "submit",
            Action::OperateOwn => "operate-own",
            Action::Operate => "operate",
            Action::ManageTokens => "manage-tokens",
        }
    }
}

/// An API token as stored: never the secret, only its SHA-256 (hex). Tokens
/// are 256-bit random values, so an unsalted hash is enough: there is nothing
/// to guess from it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TokenRecord {
    pub v: u32,
    pub name: String,
    pub role: Role,
    /// Lowercase hex SHA-256 of the secret.
    pub hash: String,
    pub created_at_ms: i64,
    /// Refused from this instant on; `None`: never expires.
    pub expires_at_ms: Option<i64>,
    /// Name of the token that created it.
    pub created_by: String,
}

impl TokenRecord {
    /// Whether the token is expired at `now_ms`.
    pub fn expired(&self, now_ms: i64) -> bool {
        self.expires_at_ms.is_some_and(|t| now_ms >= t)
    }
}

/// Checks a token name: 1..=64 characters of `[A-Za-z0-9._-]`.
pub fn validate_token_name(name: &str) -> Result<(), String> {
    if name.is_empty() || name.len() > MAX_TOKEN_NAME {
        return Err(format!(
            "name: must be 1 to {MAX_TOKEN_NAME} characters, got {}",
            name.len()
        ));
    }
    if let Some(c) = name
        .chars()
        .find(|c| !(c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-')))
    {
        return Err(format!(
            "name: {c:?} is not allowed; use letters, digits, '.', '_' and '-'"
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn roles_are_ordered_and_allow_what_they_should() {
        assert!(Role::Admin.allows(Action::ManageTokens));
        assert!(Role::Admin.allows(Action::Read));
        assert!(Role::Submitter.allows(Action::Submit));
        assert!(Role::Submitter.allows(Action::OperateOwn));
        assert!(!Role::Submitter.allows(Action::Operate));
        assert!(!Role::Submitter.allows(Action::ManageTokens));
        assert!(Role::Viewer.allows(Action::Read));
        assert!(!Role::Viewer.allows(Action::Submit));
        assert!(!Role::Viewer.allows(Action::OperateOwn));
    }

    #[test]
    fn roles_parse_and_print() {
        for role in [Role::Viewer, Role::Submitter, Role::Admin] {
            assert_eq!(role.as_str().parse::<Role>(), Ok(role));
        }
        assert!("root".parse::<Role>().is_err());
    }

    #[test]
    fn secrets_do_not_debug_print() {
        let s = Secret::new("hunter2".into());
        assert_eq!(s.expose(), "hunter2");
        assert!(!format!("{s:?}").contains("hunter2"));
    }

    #[test]
    fn token_names_are_checked() {
        assert!(validate_token_name("ci-bot_1.prod").is_ok());
        assert!(validate_token_name("").is_err());
        assert!(validate_token_name("a/b").is_err());
        assert!(validate_token_name(&"x".repeat(65)).is_err());
    }

    #[test]
    fn expiry_is_inclusive() {
        let mut t = TokenRecord {
            v: TOKEN_RECORD_VERSION,
            name: "t".into(),
            role: Role::Viewer,
            hash: String::new(),
            created_at_ms: 0,
            expires_at_ms: None,
            created_by: "admin".into(),
        };
        assert!(!t.expired(i64::MAX));
        t.expires_at_ms = Some(10);
        assert!(!t.expired(9));
        assert!(t.expired(10));
    }
}
