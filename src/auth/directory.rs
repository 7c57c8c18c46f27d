//! The user directory: who a username is. Two sources sit behind one
//! trait: PostgreSQL (a deadpool pool running the configured, parameterized
//! query) and a TOML file for small deployments.

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
}

/// A source of username -> UUID answers.
#[async_trait]
pub trait UserDirectory: Send + Sync {
    /// `Ok(None)` means the user does not exist.
    async fn find_user_id(&self, username: &str) -> Result<Option<Uuid>, DirectoryError>;

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

    async fn query_user_id(
        client: &deadpool_postgres::Client,
        query: &str,
        username: &str,
    ) -> Result<Option<Uuid>, DirectoryError> {
        let statement = client.prepare_cached(query).await?;
        let Some(row) = client.query_opt(&statement, &[&username]).await? else {
            return Ok(None);
        };
        let column_type = statement.columns().first().map(|c| c.type_().clone());
        if column_type == Some(Type::UUID) {
            return Ok(Some(row.try_get::<_, Uuid>(0)?));
        }
        let text: String = row.try_get(0)?;
        Uuid::parse_str(text.trim())
            .map(Some)
            .map_err(|_| DirectoryError::NotUuid(text))
    }
}

#[async_trait]
impl UserDirectory for PostgresDirectory {
    /// One lookup, bounded as a whole (pool wait, connect, query) by the
    /// query timeout.
    async fn find_user_id(&self, username: &str) -> Result<Option<Uuid>, DirectoryError> {
        let (client, deadline) = self.checkout().await?;
        let lookup = Self::query_user_id(&client, &self.query, username);
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

/// File-backed directory: a TOML table of `username = "uuid"`.
pub struct FileDirectory {
    users: HashMap<String, Uuid>,
}

impl FileDirectory {
    pub fn load(path: &Path) -> Result<Self, ConfigError> {
        let key = "users.users";
        let text = std::fs::read_to_string(path).map_err(|e| {
            ConfigError::invalid(key, format!("cannot read {}: {e}", path.display()))
        })?;
        let table: HashMap<String, String> = toml::from_str(&text)
            .map_err(|e| ConfigError::invalid(key, format!("{}: {e}", path.display())))?;
        let mut users = HashMap::with_capacity(table.len());
        for (name, id) in table {
            let uuid = Uuid::parse_str(&id).map_err(|_| {
                ConfigError::invalid(
                    key,
                    format!("{}: user '{name}' has '{id}', not a UUID", path.display()),
                )
            })?;
            users.insert(name, uuid);
        }
        Ok(Self { users })
    }
}

#[async_trait]
impl UserDirectory for FileDirectory {
    async fn find_user_id(&self, username: &str) -> Result<Option<Uuid>, DirectoryError> {
        Ok(self.users.get(username).copied())
    }
}
