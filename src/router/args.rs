//! Command-line flags of `ringmaster router`.
//!
//! Every flag can also be set through the environment variable named in its help.
//! Prefer `RINGMASTER_ROUTER_PASSWORD` over `--password`: a flag shows in every
//! process listing.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use crate::runtime::telemetry::LogFormat;

/// Flags of `ringmaster router`.
#[derive(clap::Args, Clone)]
#[command(group(
    clap::ArgGroup::new("source")
        .required(true)
        .args(["routing_file", "routing_configmap"])
))]
pub struct RouterArgs {
    /// Address of the RESP listener.
    #[arg(long, env = "RINGMASTER_ROUTER_LISTEN", default_value = "0.0.0.0:6379")]
    pub listen: SocketAddr,
    /// Address of /metrics, /healthz, /readyz and /status.
    #[arg(
        long,
        env = "RINGMASTER_ROUTER_HTTP_ADDR",
        default_value = "0.0.0.0:9090"
    )]
    pub http_addr: SocketAddr,
    /// Read the routing table from this file (polled every 200 ms; for tests).
    #[arg(long, env = "RINGMASTER_ROUTING_FILE")]
    pub routing_file: Option<PathBuf>,
    /// Watch the routing table in this ConfigMap (key `routing.json`).
    #[arg(long, env = "RINGMASTER_ROUTING_CONFIGMAP")]
    pub routing_configmap: Option<String>,
    /// Namespace of the ConfigMap.
    #[arg(long, env = "POD_NAMESPACE", default_value = "default")]
    pub namespace: String,
    /// Username clients authenticate as (and the router uses on the shards).
    #[arg(long, env = "RINGMASTER_ROUTER_USERNAME", default_value = "default")]
    pub username: String,
    /// Password clients authenticate with (and the router uses on the shards); none
    /// means clients need no AUTH.
    #[arg(long, env = "RINGMASTER_ROUTER_PASSWORD", hide_env_values = true)]
    pub password: Option<String>,
    /// Deadline of every call to a shard (e.g. `2s`, `500ms`).
    #[arg(long, env = "RINGMASTER_ROUTER_BACKEND_TIMEOUT", default_value = "2s", value_parser = parse_duration)]
    pub backend_timeout: Duration,
    /// How long a write into a frozen range waits for the next routing version.
    #[arg(long, env = "RINGMASTER_ROUTER_HOLD_TIMEOUT", default_value = "5s", value_parser = parse_duration)]
    pub hold_timeout: Duration,
    /// Most client connections at once; more are refused.
    #[arg(long, env = "RINGMASTER_ROUTER_MAX_CLIENTS", default_value_t = 10_000)]
    pub max_clients: u32,
    /// Pipelined connections per shard address.
    #[arg(
        long,
        env = "RINGMASTER_ROUTER_BACKEND_CONNECTIONS",
        default_value_t = 2
    )]
    pub backend_connections: usize,
    /// Allow FLUSHDB (on every shard; still refused during a migration).
    #[arg(long, env = "RINGMASTER_ROUTER_ALLOW_FLUSH")]
    pub allow_flush: bool,
    /// Log level or filter directives (`RUST_LOG` wins when set).
    #[arg(long, env = "RINGMASTER_LOG_LEVEL", default_value = "info")]
    pub log_level: String,
    /// Log format.
    #[arg(long, env = "RINGMASTER_LOG_FORMAT", value_enum, default_value_t = LogFormat::Json)]
    pub log_format: LogFormat,
}

impl std::fmt::Debug for RouterArgs {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RouterArgs")
            .field("listen", &self.listen)
            .field("http_addr", &self.http_addr)
            .field("routing_file", &self.routing_file)
            .field("routing_configmap", &self.routing_configmap)
            .field("namespace", &self.namespace)
            .field("username", &self.username)
            .field("password", &self.password.as_ref().map(|_| "<redacted>"))
            .field("backend_timeout", &self.backend_timeout)
            .field("hold_timeout", &self.hold_timeout)
            .field("max_clients", &self.max_clients)
            .field("backend_connections", &self.backend_connections)
            .field("allow_flush", &self.allow_flush)
            .finish_non_exhaustive()
    }
}

/// Parses `2s`, `500ms`, `1.5s`, `1m`, or plain seconds.
pub fn parse_duration(text: &str) -> Result<Duration, String> {
    let text = text.trim();
    let split = text
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .unwrap_or(text.len());
    let (number, unit) = text.split_at(split);
    let number: f64 = number
        .parse()
        .map_err(|_| format!("invalid duration {text:?} (e.g. 2s, 500ms)"))?;
    let seconds = match unit {
        "" | "s" => number,
        "ms" => number / 1000.0,
        "m" => number * 60.0,
        _ => return Err(format!("invalid duration unit in {text:?} (ms, s or m)")),
    };
    Duration::try_from_secs_f64(seconds).map_err(|e| format!("invalid duration {text:?}: {e}"))
}

#[cfg(test)]
mod tests {
    use clap::Parser;

    use super::*;

    #[derive(Parser)]
    struct Cli {
        #[command(flatten)]
        args: RouterArgs,
    }

    #[test]
    fn durations_parse() {
        assert_eq!(parse_duration("2s"), Ok(Duration::from_secs(2)));
        assert_eq!(parse_duration("500ms"), Ok(Duration::from_millis(500)));
        assert_eq!(parse_duration("1.5"), Ok(Duration::from_millis(1500)));
        assert_eq!(parse_duration("1m"), Ok(Duration::from_secs(60)));
        assert!(parse_duration("fast").is_err());
        assert!(parse_duration("3h").is_err());
    }

    #[test]
    fn defaults_and_source_group() {
        let cli = Cli::try_parse_from(["router", "--routing-file", "/tmp/r.json"]).unwrap();
        assert_eq!(cli.args.listen, "0.0.0.0:6379".parse().unwrap());
        assert_eq!(cli.args.http_addr, "0.0.0.0:9090".parse().unwrap());
        assert_eq!(cli.args.backend_timeout, Duration::from_secs(2));
        assert_eq!(cli.args.hold_timeout, Duration::from_secs(5));
        assert_eq!(cli.args.max_clients, 10_000);
        assert!(!cli.args.allow_flush);
        assert!(
            Cli::try_parse_from(["router"]).is_err(),
            "a source is required"
        );
        assert!(
            Cli::try_parse_from(["router", "--routing-file", "a", "--routing-configmap", "b"])
                .is_err(),
            "sources are exclusive"
        );
    }

    #[test]
    fn debug_hides_the_password() {
        let cli =
            Cli::try_parse_from(["router", "--routing-file", "f", "--password", "s3cret"]).unwrap();
        assert!(!format!("{:?}", cli.args).contains("s3cret"));
    }
}
