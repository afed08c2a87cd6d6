//! Flags of `ringmaster operator`.

use std::net::SocketAddr;
use std::time::Duration;

use crate::runtime::telemetry::LogFormat;

/// Flags of `ringmaster operator`.
#[derive(clap::Args, Debug, Clone)]
pub struct OperatorArgs {
    /// Namespaces to watch, comma-separated; every namespace when empty.
    #[arg(
        long,
        env = "RINGMASTER_NAMESPACES",
        value_delimiter = ',',
        default_value = ""
    )]
    pub namespaces: Vec<String>,
    /// Address of the HTTP server (`/metrics`, `/healthz`, `/readyz`).
    #[arg(long, env = "RINGMASTER_HTTP_ADDR", default_value = "0.0.0.0:8080")]
    pub http_addr: SocketAddr,
    /// Log level or filter directives (`info`, `info,ringmaster=debug`); `RUST_LOG` wins when set.
    #[arg(long, env = "RINGMASTER_LOG_LEVEL", default_value = "info")]
    pub log_level: String,
    /// Log format.
    #[arg(
        long,
        env = "RINGMASTER_LOG_FORMAT",
        value_enum,
        default_value = "json"
    )]
    pub log_format: LogFormat,
    /// Run the controllers only while holding the Lease `ringmaster-operator` in
    /// `$POD_NAMESPACE` (identity `$POD_NAME`).
    #[arg(
        long,
        env = "RINGMASTER_LEADER_ELECTION",
        default_value_t = true,
        action = clap::ArgAction::Set,
        num_args = 0..=1,
        default_missing_value = "true"
    )]
    pub leader_election: bool,
    /// Image of the init container that installs the agent into database Pods
    /// (the image the operator runs as).
    #[arg(long, env = "RINGMASTER_IMAGE", default_value_t = super::default_image())]
    pub image: String,
    /// Seconds between two reconciliations of an unchanged object (status refresh).
    #[arg(long, env = "RINGMASTER_RESYNC_SECONDS", default_value_t = 60)]
    pub resync_seconds: u64,
    /// How often a Shard with replicas is reconciled at least: its agents are asked
    /// for their status and an unhealthy primary is detected (`500ms`, `1s`, `2m`).
    #[arg(long, env = "RINGMASTER_HEALTH_INTERVAL", default_value = "1s", value_parser = parse_interval)]
    pub health_interval: Duration,
}

fn parse_interval(text: &str) -> Result<Duration, String> {
    crate::operator::shard::replication::parse_duration(text)
        .filter(|d| !d.is_zero())
        .ok_or_else(|| format!("{text:?} is not a positive duration such as 500ms, 1s or 2m"))
}

#[cfg(test)]
mod tests {
    use clap::Parser;

    use super::*;

    #[derive(Parser, Debug)]
    struct Cli {
        #[command(flatten)]
        args: OperatorArgs,
    }

    fn parse(args: &[&str]) -> OperatorArgs {
        Cli::try_parse_from(std::iter::once("operator").chain(args.iter().copied()))
            .unwrap()
            .args
    }

    #[test]
    fn defaults() {
        let args = parse(&[]);
        assert!(args.namespaces.iter().all(String::is_empty));
        assert_eq!(args.http_addr.to_string(), "0.0.0.0:8080");
        assert!(args.leader_election);
        assert_eq!(args.health_interval, Duration::from_secs(1));
        assert_eq!(
            args.image,
            format!(
                "ghcr.io/ringmaster/ringmaster:{}",
                env!("CARGO_PKG_VERSION")
            )
        );
    }

    #[test]
    fn flags() {
        let args = parse(&[
            "--namespaces",
            "a,b",
            "--leader-election=false",
            "--log-format",
            "text",
            "--image",
            "example/ringmaster:dev",
            "--health-interval",
            "500ms",
        ]);
        assert_eq!(args.health_interval, Duration::from_millis(500));
        assert_eq!(args.namespaces, vec!["a", "b"]);
        assert!(!args.leader_election);
        assert_eq!(args.log_format, LogFormat::Text);
        assert_eq!(args.image, "example/ringmaster:dev");
        assert!(parse(&["--leader-election"]).leader_election);
    }
}
