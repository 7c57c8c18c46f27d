//! The user directory: who a username is, and since when their tokens are
//! valid ("log out everywhere"). Two sources sit behind one trait:
//! PostgreSQL (a deadpool pool running the configured, parameterized query)
//! and a TOML file for small deployments.

use std::collections::HashMap;
use std::path::Path;
use std::time::Duration;

use async_trait::async_trait;
use deadpool_postgres::{Manager, ManagerConfig, Pool, RecyclingMethod, Runtime};

use super::database::Database;
use tokio_postgres::types::Type;
use uuid::Uuid;

use crate::config::{ConfigError, UsersConfig};

/// Why the directory could not answer.
#[derive(Debug, thiserror::Error)]
pub enum DirectoryError {
    #[error("user directory timed out after {0:?}")]
    Timeout(Duration),
    #[error("user directory pool: {0}")]
    Pool(#[from] deadpool_postgres::PoolError),
    #[error("user directory query: {0}")]
    Query(#[from] tokio_postgres::Error),
    #[error("user directory returned a value that is not a UUID: {0}")]
    NotUuid(String),
    #[error(
        "user directory query's second column is {0}, not a timestamptz (the user's tokens_valid_after)"
    )]
    NotTimestamp(String),
}

/// What the directory knows of a user.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DirectoryUser {
    pub id: Uuid,
    /// Tokens issued (`iat`) before this instant, in Unix seconds, are
    /// refused: the user logged out everywhere.
    pub tokens_valid_after: Option<u64>,
}

impl DirectoryUser {
    pub fn new(id: Uuid) -> Self {
        Self {
            id,
            tokens_valid_after: None,
        }
    }
}

/// A source of username -> UUID answers.
#[async_trait]
pub trait UserDirectory: Send + Sync {
    /// `Ok(None)` means the user does not exist.
    async fn find_user(&self, username: &str) -> Result<Option<DirectoryUser>, DirectoryError>;

    /// Whether the directory answers now (the dependency probe).
    async fn ping(&self) -> Result<(), DirectoryError> {
        Ok(())
    }

    /// The service behind the directory, for `gateway_dependency_up`
    /// (`None`: it is in this process).
    fn dependency(&self) -> Option<&'static str> {
        None
    }

    /// Connection-pool figures, for sources that have a pool.
    fn pool_status(&self) -> Option<deadpool_postgres::Status> {
        None
    }
}

/// PostgreSQL-backed directory.
pub struct PostgresDirectory {
    pool: Pool,
    query: String,
    timeout: Duration,
}

impl PostgresDirectory {
    /// Builds the pool; no connection is made until the first lookup, so the
    /// connections (and their I/O tasks) live in the server's runtime.
    pub fn new(users: &UsersConfig, database_url: &str) -> Result<Self, ConfigError> {
        let key = "users.database_url_env";
        let database = Database::parse(database_url).map_err(|m| ConfigError::invalid(key, m))?;
        let manager_config = || ManagerConfig {
            recycling_method: RecyclingMethod::Fast,
        };
        let manager = match database.tls {
            Some(tls) => Manager::from_config(database.config, tls, manager_config()),
            None => Manager::from_config(database.config, tokio_postgres::NoTls, manager_config()),
        };
        let timeout = Duration::from_millis(users.query_timeout_ms);
        let pool = Pool::builder(manager)
            .max_size(users.pool_size)
            .runtime(Runtime::Tokio1)
            .wait_timeout(Some(timeout))
            .create_timeout(Some(timeout))
            .recycle_timeout(Some(timeout))
            .build()
            .map_err(|e| ConfigError::invalid("users.pool_size", e.to_string()))?;
        Ok(Self {
            pool,
            query: users.query.clone(),
            timeout,
        })
    }

    /// A pooled connection and the deadline of the whole operation; the
    /// wait for the connection counts against it.
    async fn checkout(
        &self,
    ) -> Result<(deadpool_postgres::Object, tokio::time::Instant), DirectoryError> {
        let deadline = tokio::time::Instant::now() + self.timeout;
        let client = tokio::time::timeout_at(deadline, self.pool.get())
            .await
            .map_err(|_| DirectoryError::Timeout(self.timeout))??;
        Ok((client, deadline))
    }

    /// The result of an operation on `client`. A connection whose operation
    /// timed out is dropped, not pooled: the server behind it may be hung,
    /// and the next lookup would wait on it again.
    fn settle<T>(
        &self,
        client: deadpool_postgres::Object,
        outcome: Result<Result<T, DirectoryError>, tokio::time::error::Elapsed>,
    ) -> Result<T, DirectoryError> {
        outcome.unwrap_or_else(|_| {
            drop(deadpool_postgres::Object::take(client));
            Err(DirectoryError::Timeout(self.timeout))
        })
    }

    /// The user's id (a `uuid` or text column) and, when the query returns
    /// a second column, their `tokens_valid_after` (`timestamptz`; NULL:
    /// none).
    async fn query_user(
        client: &deadpool_postgres::Client,
        query: &str,
        username: &str,
    ) -> Result<Option<DirectoryUser>, DirectoryError> {
        let statement = client.prepare_cached(query).await?;
        let Some(row) = client.query_opt(&statement, &[&username]).await? else {
            return Ok(None);
        };
        let columns = statement.columns();
        let id = if columns.first().map(|c| c.type_()) == Some(&Type::UUID) {
            row.try_get::<_, Uuid>(0)?
        } else {
            let text: String = row.try_get(0)?;
            Uuid::parse_str(text.trim()).map_err(|_| DirectoryError::NotUuid(text))?
        };
        let tokens_valid_after = match columns.get(1).map(|c| c.type_()) {
            None => None,
            Some(&Type::TIMESTAMPTZ | &Type::TIMESTAMP) => row
                .try_get::<_, Option<std::time::SystemTime>>(1)?
                .map(crate::text::unix_seconds),
            Some(other) => return Err(DirectoryError::NotTimestamp(other.name().to_owned())),
        };
        Ok(Some(DirectoryUser {
            id,
            tokens_valid_after,
        }))
    }
}

#[async_trait]
impl UserDirectory for PostgresDirectory {
    /// One lookup, bounded as a whole (pool wait, connect, query) by the
    /// query timeout.
    async fn find_user(&self, username: &str) -> Result<Option<DirectoryUser>, DirectoryError> {
        let (client, deadline) = self.checkout().await?;
        let lookup = Self::query_user(&client, &self.query, username);
        let outcome = tokio::time::timeout_at(deadline, lookup).await;
        self.settle(client, outcome)
    }

    async fn ping(&self) -> Result<(), DirectoryError> {
        let (client, deadline) = self.checkout().await?;
        let check = async { Ok(client.simple_query("SELECT 1").await.map(drop)?) };
        let outcome = tokio::time::timeout_at(deadline, check).await;
        self.settle(client, outcome)
    }

    fn pool_status(&self) -> Option<deadpool_postgres::Status> {
        Some(self.pool.status())
    }

    fn dependency(&self) -> Option<&'static str> {
        Some("postgres")
    }
}

/// File-backed directory: a TOML table of `username = "uuid"`, or
/// `username = { id = "uuid", tokens_valid_after = "RFC 3339" }`.
pub struct FileDirectory {
    users: HashMap<String, DirectoryUser>,
}

/// One user of the file, in either form.
#[derive(serde::Deserialize)]
#[serde(untagged)]
enum FileUser {
    Id(String),
    Entry(FileEntry),
}

#[derive(serde::Deserialize)]
#[serde(deny_unknown_fields)]
struct FileEntry {
    id: String,
    tokens_valid_after: Option<String>,
}

impl FileDirectory {
    pub fn load(path: &Path) -> Result<Self, ConfigError> {
        let key = "users.users";
        let text = std::fs::read_to_string(path).map_err(|e| {
            ConfigError::invalid(key, format!("cannot read {}: {e}", path.display()))
        })?;
        let table: HashMap<String, FileUser> = toml::from_str(&text).map_err(|e| {
            ConfigError::invalid(
                key,
                format!(
                    "{}: {e} (each user is \"uuid\" or {{ id = \"uuid\", tokens_valid_after = \"RFC 3339\" }})",
                    path.display()
                ),
            )
        })?;
        let bad =
            |message: String| ConfigError::invalid(key, format!("{}: {message}", path.display()));
        let mut users = HashMap::with_capacity(table.len());
        for (name, user) in table {
            let (id, valid_after) = match user {
                FileUser::Id(id) => (id, None),
                FileUser::Entry(entry) => (entry.id, entry.tokens_valid_after),
            };
            let uuid = Uuid::parse_str(&id)
                .map_err(|_| bad(format!("user '{name}' has '{id}', not a UUID")))?;
            let tokens_valid_after = valid_after
                .map(|text| {
                    crate::text::parse_rfc3339_seconds(&text)
                        .map_err(|e| bad(format!("user '{name}': tokens_valid_after '{text}' {e}")))
                })
                .transpose()?;
            users.insert(
                name,
                DirectoryUser {
                    id: uuid,
                    tokens_valid_after,
                },
            );
        }
        Ok(Self { users })
    }
}

#[async_trait]
impl UserDirectory for FileDirectory {
    async fn find_user(&self, username: &str) -> Result<Option<DirectoryUser>, DirectoryError> {
        Ok(self.users.get(username).copied())
    }
}
