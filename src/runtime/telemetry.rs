//! Logging: one `tracing` subscriber per process, text or JSON, filtered by level.
//!
//! The level is an [`EnvFilter`] directive string: a plain level (`info`, `debug`) or
//! per-target directives (`info,ringmaster=debug,kube=warn`). `RUST_LOG`, when set and
//! non-empty, takes precedence so a developer can turn up one module without new flags.

use tracing_subscriber::{EnvFilter, fmt, layer::SubscriberExt, util::SubscriberInitExt};

/// Errors of [`init_tracing`].
#[derive(Debug, thiserror::Error)]
pub enum TelemetryError {
    /// The level or `RUST_LOG` is not a valid filter directive.
    #[error("invalid log filter {directives:?}: {source}")]
    Filter {
        /// The directives that failed to parse.
        directives: String,
        /// Why they failed.
        #[source]
        source: tracing_subscriber::filter::ParseError,
    },
    /// A global subscriber is already installed.
    #[error("a tracing subscriber is already installed: {0}")]
    AlreadyInstalled(#[from] tracing_subscriber::util::TryInitError),
}

/// Output format of the logs (`--log-format`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, clap::ValueEnum)]
pub enum LogFormat {
    /// One JSON object per line (for log collectors).
    #[default]
    Json,
    /// Human-readable lines.
    Text,
}

impl LogFormat {
    /// Whether this format is JSON (the `json` argument of [`init_tracing`]).
    pub fn is_json(self) -> bool {
        self == LogFormat::Json
    }
}

/// Installs the global subscriber: `level` filters (unless `RUST_LOG` is set), `json`
/// selects one JSON object per line instead of text. Logs go to stderr.
pub fn init_tracing(level: &str, json: bool) -> Result<(), TelemetryError> {
    let filter = build_filter(level, std::env::var("RUST_LOG").ok().as_deref())?;
    let registry = tracing_subscriber::registry().with(filter);
    if json {
        let layer = fmt::layer()
            .json()
            .flatten_event(true)
            .with_current_span(true)
            .with_span_list(false)
            .with_writer(std::io::stderr);
        registry.with(layer).try_init()?;
    } else {
        let layer = fmt::layer().with_target(true).with_writer(std::io::stderr);
        registry.with(layer).try_init()?;
    }
    Ok(())
}

/// The filter from `level`, or from `rust_log` when that is set and non-empty.
fn build_filter(level: &str, rust_log: Option<&str>) -> Result<EnvFilter, TelemetryError> {
    let directives = match rust_log.map(str::trim) {
        Some(env) if !env.is_empty() => env,
        _ => level.trim(),
    };
    EnvFilter::try_new(directives).map_err(|source| TelemetryError::Filter {
        directives: directives.to_owned(),
        source,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn plain_level_is_a_valid_filter() {
        let filter = build_filter("info", None).unwrap();
        assert_eq!(filter.to_string(), "info");
    }

    #[test]
    fn per_target_directives_are_accepted() {
        let filter = build_filter("warn,ringmaster=debug", None).unwrap();
        assert!(filter.to_string().contains("ringmaster=debug"));
    }

    #[test]
    fn rust_log_takes_precedence_unless_empty() {
        assert_eq!(
            build_filter("info", Some("trace")).unwrap().to_string(),
            "trace"
        );
        assert_eq!(
            build_filter("info", Some("  ")).unwrap().to_string(),
            "info"
        );
    }

    #[test]
    fn invalid_level_is_an_error_naming_it() {
        let err = build_filter("ringmaster=loud", None).unwrap_err();
        assert!(err.to_string().contains("ringmaster=loud"), "{err}");
    }

    #[test]
    fn log_format_json_flag() {
        assert!(LogFormat::Json.is_json());
        assert!(!LogFormat::Text.is_json());
    }
}
