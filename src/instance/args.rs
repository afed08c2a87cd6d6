//! Command-line flags of `ringmaster instance`.
//!
//! Every flag overrides the environment variable named in its help; the
//! environment is what the operator sets in the Pod (see
//! `docs/architecture.md`). Secrets (password, agent token) are read from the
//! environment only: a flag would show them in every process listing.

/// Flags of `ringmaster instance`; each overrides its environment variable.
#[derive(clap::Args, Debug, Default, Clone)]
#[command(
    after_help = "Secrets are read from the environment only: RINGMASTER_PASSWORD (the database \
                  superuser's password) and RINGMASTER_AGENT_TOKEN (bearer token of GET /status)."
)]
pub struct InstanceArgs {
    /// The flags (boxed: they are many, and the subcommand enum stays small).
    #[command(flatten)]
    pub flags: Box<Flags>,
}

/// The individual flags of `ringmaster instance`.
#[derive(clap::Args, Debug, Default, Clone)]
pub struct Flags {
    /// Database engine: `redis` or `postgres` [env: RINGMASTER_ENGINE].
    #[arg(long)]
    pub engine: Option<String>,
    /// Role at creation: `primary` or `replica` [env: RINGMASTER_ROLE].
    #[arg(long)]
    pub role: Option<String>,
    /// Name of the ShardedCluster [env: RINGMASTER_CLUSTER].
    #[arg(long)]
    pub cluster: Option<String>,
    /// Index of the shard [env: RINGMASTER_SHARD].
    #[arg(long)]
    pub shard: Option<String>,
    /// Data directory [env: RINGMASTER_DATA_DIR; default /var/lib/ringmaster/data].
    #[arg(long)]
    pub data_dir: Option<String>,
    /// Run directory: sockets and temporary files [env: RINGMASTER_RUN_DIR; default /run/ringmaster].
    #[arg(long)]
    pub run_dir: Option<String>,
    /// Database superuser [env: RINGMASTER_USERNAME].
    #[arg(long)]
    pub username: Option<String>,
    /// Name of the Pod [env: POD_NAME; default: the host name].
    #[arg(long)]
    pub pod_name: Option<String>,
    /// IP address of the Pod [env: POD_IP].
    #[arg(long)]
    pub pod_ip: Option<String>,
    /// Address the server and the agent listen on [env: RINGMASTER_BIND; default: POD_IP, else 127.0.0.1].
    #[arg(long)]
    pub bind: Option<String>,
    /// Port of the database server [env: RINGMASTER_DB_PORT; default 6379 or 5432].
    #[arg(long)]
    pub db_port: Option<String>,
    /// Port of the agent's HTTP API [env: RINGMASTER_AGENT_PORT; default 8000].
    #[arg(long)]
    pub agent_port: Option<String>,
    /// Seconds a server gets to stop cleanly before it is stopped harder [env: RINGMASTER_STOP_TIMEOUT; default 20].
    #[arg(long)]
    pub stop_timeout: Option<String>,
    /// Deadline in seconds of one health probe of the server [env: RINGMASTER_PROBE_TIMEOUT; default 2].
    #[arg(long)]
    pub probe_timeout: Option<String>,
    /// Quick crashes in a row after which the server is no longer restarted [env: RINGMASTER_MAX_RESTARTS; default 5].
    #[arg(long)]
    pub max_restarts: Option<String>,
    /// Log level or filter directives [env: RINGMASTER_LOG_LEVEL; default info; RUST_LOG wins when set].
    #[arg(long)]
    pub log_level: Option<String>,
    /// Log format of the agent: `json` or `text` [env: RINGMASTER_LOG_FORMAT; default json].
    #[arg(long)]
    pub log_format: Option<String>,
}
