//! The image map: which local executables stand in for a container image.
//!
//! Loaded once at start from a YAML file (see `e2e/images.yaml`). Rules are
//! tried in order and the first whose glob matches the image reference wins.
//! `${NAME}` in any value is replaced by the node agent's environment variable
//! `NAME` at load time; a rule that references an unset variable is kept but
//! marked unusable, so only the Pods that need it fail (with a clear message).

use std::cmp::Ordering;
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use anyhow::Context;
use serde::Deserialize;

/// The host's default `PATH`, appended after an image's own directories.
pub const DEFAULT_PATH: &str = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";

/// One rule as written in the YAML file.
#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct RawRule {
    #[serde(rename = "match")]
    pattern: String,
    #[serde(default)]
    path: Vec<String>,
    #[serde(default)]
    files: BTreeMap<String, String>,
    #[serde(default)]
    entrypoint: Vec<String>,
    #[serde(default)]
    cmd: Vec<String>,
    working_dir: Option<String>,
    #[serde(default)]
    env: BTreeMap<String, String>,
}

/// The YAML document.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawMap {
    #[serde(default)]
    images: Vec<RawRule>,
}

/// The parsed image map: an ordered list of rules.
#[derive(Debug, Clone, Default)]
pub struct ImageMap {
    rules: Vec<ImageRule>,
}

/// A resolved image rule: what a matching container image stands for.
#[derive(Debug, Clone)]
pub struct ImageRule {
    /// The glob as written (for messages).
    pub pattern: String,
    matcher: glob::Pattern,
    /// Directories put in front of the container's `PATH`.
    pub path: Vec<PathBuf>,
    /// Files bind-mounted into the container: path in the container → path on the host.
    pub files: BTreeMap<PathBuf, PathBuf>,
    /// The image's ENTRYPOINT.
    pub entrypoint: Vec<String>,
    /// The image's CMD.
    pub cmd: Vec<String>,
    /// The image's WORKDIR.
    pub working_dir: Option<String>,
    /// The image's own environment (overridden by the container's `env`).
    pub env: BTreeMap<String, String>,
    /// Why the rule cannot be used (e.g. it references an unset variable).
    pub unusable: Option<String>,
}

/// Why an image cannot be run.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ImageError {
    /// No rule matches the image.
    #[error("image {0:?} is not in the node's image map (no rule matches it)")]
    NotMapped(String),
    /// The matching rule cannot be used.
    #[error("image {image:?} matches image-map rule {pattern:?}, which is unusable: {reason}")]
    Unusable {
        /// The image reference.
        image: String,
        /// The rule's glob.
        pattern: String,
        /// Why.
        reason: String,
    },
}

impl ImageMap {
    /// Loads the image map from a YAML file, expanding `${NAME}` from this process's environment.
    pub fn load(path: &Path) -> anyhow::Result<ImageMap> {
        let text = std::fs::read_to_string(path)
            .with_context(|| format!("reading image map {}", path.display()))?;
        Self::parse(&text, |name| std::env::var(name).ok())
            .with_context(|| format!("parsing image map {}", path.display()))
    }

    /// Parses an image map, looking variables up with `env`.
    pub fn parse(yaml: &str, env: impl Fn(&str) -> Option<String>) -> anyhow::Result<ImageMap> {
        let raw: RawMap = serde_yaml::from_str(yaml)?;
        let rules = raw
            .images
            .into_iter()
            .map(|r| ImageRule::from_raw(r, &env))
            .collect::<anyhow::Result<Vec<_>>>()?;
        Ok(ImageMap { rules })
    }

    /// The rule for an image: the first whose glob matches one of the image's spellings.
    pub fn resolve(&self, image: &str) -> Result<&ImageRule, ImageError> {
        let names = image_spellings(image);
        let rule = self
            .rules
            .iter()
            .find(|r| names.iter().any(|n| r.matcher.matches(n)))
            .ok_or_else(|| ImageError::NotMapped(image.to_string()))?;
        match &rule.unusable {
            None => Ok(rule),
            Some(reason) => Err(ImageError::Unusable {
                image: image.to_string(),
                pattern: rule.pattern.clone(),
                reason: reason.clone(),
            }),
        }
    }
}

impl ImageRule {
    fn from_raw(raw: RawRule, env: &impl Fn(&str) -> Option<String>) -> anyhow::Result<ImageRule> {
        let matcher = glob::Pattern::new(&raw.pattern)
            .with_context(|| format!("invalid glob {:?}", raw.pattern))?;
        let mut missing = Vec::new();
        let mut x = |s: &str| expand_env(s, env, &mut missing);
        let path_globs: Vec<String> = raw.path.iter().map(|p| x(p)).collect();
        let files = raw
            .files
            .iter()
            .map(|(k, v)| (PathBuf::from(x(k)), PathBuf::from(x(v))))
            .collect();
        let entrypoint = raw.entrypoint.iter().map(|s| x(s)).collect();
        let cmd = raw.cmd.iter().map(|s| x(s)).collect();
        let working_dir = raw.working_dir.as_deref().map(&mut x);
        let img_env = raw.env.iter().map(|(k, v)| (k.clone(), x(v))).collect();
        missing.sort();
        missing.dedup();
        let unusable = (!missing.is_empty()).then(|| {
            format!(
                "environment variable(s) {} not set on the node agent",
                missing.join(", ")
            )
        });
        Ok(ImageRule {
            pattern: raw.pattern,
            matcher,
            path: path_globs
                .iter()
                .filter_map(|g| resolve_path_glob(g))
                .collect(),
            files,
            entrypoint,
            cmd,
            working_dir,
            env: img_env,
            unusable,
        })
    }

    /// The container's `PATH`: the image's directories, then the host default.
    pub fn search_path(&self) -> String {
        let mut parts: Vec<String> = self.path.iter().map(|p| p.display().to_string()).collect();
        parts.push(DEFAULT_PATH.to_string());
        parts.join(":")
    }
}

/// Expands `${NAME}` references; unset names are collected in `missing` and expand to "".
fn expand_env(s: &str, env: &impl Fn(&str) -> Option<String>, missing: &mut Vec<String>) -> String {
    let mut out = String::with_capacity(s.len());
    let mut rest = s;
    while let Some(start) = rest.find("${") {
        out.push_str(&rest[..start]);
        let after = &rest[start + 2..];
        let Some(end) = after.find('}') else {
            out.push_str(&rest[start..]);
            return out;
        };
        let name = &after[..end];
        match env(name) {
            Some(v) => out.push_str(&v),
            None => missing.push(name.to_string()),
        }
        rest = &after[end + 1..];
    }
    out.push_str(rest);
    out
}

/// Resolves a directory glob to its highest match in version order; a plain
/// path is kept as is. `None` if the glob matches nothing.
fn resolve_path_glob(pattern: &str) -> Option<PathBuf> {
    if !pattern.contains(['*', '?', '[']) {
        return Some(PathBuf::from(pattern));
    }
    let matches: Vec<PathBuf> = glob::glob(pattern).ok()?.filter_map(Result::ok).collect();
    let best = pick_highest(matches);
    if best.is_none() {
        tracing::warn!(pattern, "image map: path glob matches nothing");
    }
    best
}

/// The path that sorts last in version order.
fn pick_highest(paths: Vec<PathBuf>) -> Option<PathBuf> {
    paths
        .into_iter()
        .max_by(|a, b| version_cmp(&a.to_string_lossy(), &b.to_string_lossy()))
}

/// Compares strings in "version order": runs of digits compare numerically.
pub fn version_cmp(a: &str, b: &str) -> Ordering {
    let (mut a, mut b) = (a.as_bytes(), b.as_bytes());
    loop {
        match (a.first(), b.first()) {
            (None, None) => return Ordering::Equal,
            (None, Some(_)) => return Ordering::Less,
            (Some(_), None) => return Ordering::Greater,
            (Some(x), Some(y)) if x.is_ascii_digit() && y.is_ascii_digit() => {
                let (na, ra) = split_digits(a);
                let (nb, rb) = split_digits(b);
                let ord = cmp_numeric(na, nb);
                if ord != Ordering::Equal {
                    return ord;
                }
                (a, b) = (ra, rb);
            }
            (Some(x), Some(y)) => {
                if x != y {
                    return x.cmp(y);
                }
                (a, b) = (&a[1..], &b[1..]);
            }
        }
    }
}

fn split_digits(s: &[u8]) -> (&[u8], &[u8]) {
    let n = s.iter().take_while(|c| c.is_ascii_digit()).count();
    s.split_at(n)
}

fn cmp_numeric(a: &[u8], b: &[u8]) -> Ordering {
    let trim = |s: &[u8]| -> usize { s.iter().take_while(|c| **c == b'0').count() };
    let (a, b) = (&a[trim(a)..], &b[trim(b)..]);
    a.len().cmp(&b.len()).then_with(|| a.cmp(b))
}

/// The spellings an image reference is matched under: as written, without a
/// Docker Hub prefix, and with an implied `:latest` tag.
fn image_spellings(image: &str) -> Vec<String> {
    let mut names = vec![image.to_string()];
    let short = [
        "docker.io/library/",
        "index.docker.io/library/",
        "docker.io/",
        "index.docker.io/",
    ]
    .iter()
    .find_map(|p| image.strip_prefix(p))
    .unwrap_or(image)
    .to_string();
    if short != image {
        names.push(short.clone());
    }
    let last = short.rsplit('/').next().unwrap_or(&short);
    if !last.contains(':') && !last.contains('@') {
        names.push(format!("{short}:latest"));
    }
    names
}

#[cfg(test)]
mod tests {
    use super::*;

    const YAML: &str = r#"
images:
  - match: "*ringmaster*"
    files:
      /usr/local/bin/ringmaster: ${RINGMASTER_BIN}
    entrypoint: ["/usr/local/bin/ringmaster"]
  - match: "postgres:*"
    path: ["/usr/lib/postgresql/*/bin"]
    entrypoint: ["postgres"]
  - match: "needs-var"
    cmd: ["${NOPE}"]
  - match: "busybox*"
    cmd: ["sh"]
    workingDir: /tmp
"#;

    fn env(name: &str) -> Option<String> {
        (name == "RINGMASTER_BIN").then(|| "/opt/rm/ringmaster".to_string())
    }

    #[test]
    fn first_match_wins_and_env_is_expanded() {
        let map = ImageMap::parse(YAML, env).unwrap();
        let r = map.resolve("ghcr.io/ringmaster/ringmaster:0.1.0").unwrap();
        assert_eq!(r.entrypoint, vec!["/usr/local/bin/ringmaster"]);
        assert_eq!(
            r.files.get(Path::new("/usr/local/bin/ringmaster")).unwrap(),
            Path::new("/opt/rm/ringmaster")
        );
        let b = map.resolve("busybox:1.36").unwrap();
        assert_eq!(b.cmd, vec!["sh"]);
        assert_eq!(b.working_dir.as_deref(), Some("/tmp"));
    }

    #[test]
    fn docker_hub_spellings_match() {
        let map = ImageMap::parse(YAML, env).unwrap();
        assert_eq!(
            map.resolve("docker.io/library/postgres:17")
                .unwrap()
                .pattern,
            "postgres:*"
        );
        assert_eq!(map.resolve("busybox").unwrap().pattern, "busybox*");
        assert!(map.resolve("postgres").is_ok(), "implied :latest");
    }

    #[test]
    fn unmapped_and_unusable() {
        let map = ImageMap::parse(YAML, env).unwrap();
        assert_eq!(
            map.resolve("redis:7").unwrap_err(),
            ImageError::NotMapped("redis:7".into())
        );
        let err = map.resolve("needs-var").unwrap_err().to_string();
        assert!(err.contains("NOPE"), "{err}");
    }

    #[test]
    fn unknown_fields_are_rejected() {
        assert!(ImageMap::parse("images:\n  - match: x\n    bogus: 1\n", env).is_err());
    }

    #[test]
    fn env_expansion() {
        let mut missing = vec![];
        let e = |n: &str| (n == "A").then(|| "1".to_string());
        assert_eq!(expand_env("x${A}y${B}z$C${", &e, &mut missing), "x1yz$C${");
        assert_eq!(missing, vec!["B"]);
    }

    #[test]
    fn version_order() {
        assert_eq!(version_cmp("9", "10"), Ordering::Less);
        assert_eq!(
            version_cmp("/usr/lib/postgresql/17/bin", "/usr/lib/postgresql/9.6/bin"),
            Ordering::Greater
        );
        assert_eq!(version_cmp("a1b", "a01b"), Ordering::Equal);
        let best = pick_highest(vec![
            "/p/9/bin".into(),
            "/p/17/bin".into(),
            "/p/15/bin".into(),
        ]);
        assert_eq!(best, Some(PathBuf::from("/p/17/bin")));
    }

    #[test]
    fn path_glob_resolution() {
        let dir = std::env::temp_dir().join(format!("lnpath-{}", std::process::id()));
        for v in ["9", "15", "17"] {
            std::fs::create_dir_all(dir.join(v).join("bin")).unwrap();
        }
        let got = resolve_path_glob(&format!("{}/*/bin", dir.display()));
        assert_eq!(got, Some(dir.join("17/bin")));
        assert_eq!(resolve_path_glob("/no/such/*/dir"), None);
        assert_eq!(resolve_path_glob("/plain"), Some(PathBuf::from("/plain")));
        std::fs::remove_dir_all(dir).unwrap();
    }
}
