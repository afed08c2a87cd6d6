//! The command line a container runs, resolved like Docker and Kubernetes do.

use std::path::{Path, PathBuf};

use k8s_openapi::api::core::v1::Container;

use super::{env::EnvList, expand::expand};
use crate::config::ImageRule;

/// `command` overrides the image's ENTRYPOINT and `args` its CMD; a `command`
/// without `args` drops the CMD. `$(VAR)` in command and args is expanded from
/// the container's environment.
pub fn resolve(c: &Container, image: &ImageRule, env: &EnvList) -> Result<Vec<String>, String> {
    let x = |v: &Vec<String>| -> Vec<String> {
        v.iter()
            .map(|s| expand(s, |n| env.get(n).map(str::to_string)))
            .collect()
    };
    let command = c.command.as_ref().filter(|v| !v.is_empty()).map(x);
    let args = c.args.as_ref().filter(|v| !v.is_empty()).map(x);
    let argv = combine(command, args, &image.entrypoint, &image.cmd);
    if argv.is_empty() {
        return Err(format!(
            "no command specified: the container has no command and image rule {:?} no entrypoint or cmd",
            image.pattern
        ));
    }
    Ok(argv)
}

/// Best-effort host path of the program `argv0` runs (for the container's imageID).
pub fn host_executable(argv0: &str, image: &ImageRule) -> PathBuf {
    let mapped = |p: &Path| image.files.get(p).cloned();
    if argv0.contains('/') {
        return mapped(Path::new(argv0)).unwrap_or_else(|| PathBuf::from(argv0));
    }
    for dir in image.search_path().split(':') {
        let candidate = Path::new(dir).join(argv0);
        if let Some(host) = mapped(&candidate) {
            return host;
        }
        if candidate.is_file() {
            return candidate;
        }
    }
    PathBuf::from(argv0)
}

fn combine(
    command: Option<Vec<String>>,
    args: Option<Vec<String>>,
    entrypoint: &[String],
    cmd: &[String],
) -> Vec<String> {
    match (command, args) {
        (Some(mut command), args) => {
            command.extend(args.unwrap_or_default());
            command
        }
        (None, Some(args)) => entrypoint.iter().cloned().chain(args).collect(),
        (None, None) => entrypoint.iter().chain(cmd).cloned().collect(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn v(s: &[&str]) -> Vec<String> {
        s.iter().map(|x| x.to_string()).collect()
    }

    #[test]
    fn docker_override_rules() {
        let (ep, cmd) = (v(&["/ep"]), v(&["default"]));
        assert_eq!(combine(None, None, &ep, &cmd), v(&["/ep", "default"]));
        assert_eq!(combine(None, Some(v(&["a"])), &ep, &cmd), v(&["/ep", "a"]));
        assert_eq!(combine(Some(v(&["sh"])), None, &ep, &cmd), v(&["sh"]));
        assert_eq!(
            combine(Some(v(&["sh"])), Some(v(&["-c", "x"])), &ep, &cmd),
            v(&["sh", "-c", "x"])
        );
        assert_eq!(combine(None, None, &[], &v(&["bash"])), v(&["bash"]));
    }

    #[test]
    fn expands_variables_in_command_and_args() {
        let rule = crate::config::ImageMap::parse(
            "images: [{match: x, entrypoint: [\"$(NOT)\"]}]",
            |_| None,
        )
        .unwrap();
        let rule = rule.resolve("x").unwrap();
        let env = EnvList(vec![("PORT".into(), "5432".into())]);
        let c: Container = serde_json::from_value(serde_json::json!(
            {"name": "c", "args": ["--port=$(PORT)", "$$(PORT)"]}))
        .unwrap();
        assert_eq!(
            resolve(&c, rule, &env).unwrap(),
            v(&["$(NOT)", "--port=5432", "$(PORT)"])
        );
        let empty = crate::config::ImageMap::parse("images: [{match: y}]", |_| None).unwrap();
        let c: Container = serde_json::from_value(serde_json::json!({"name": "c"})).unwrap();
        assert!(resolve(&c, empty.resolve("y").unwrap(), &env).is_err());
    }

    #[test]
    fn host_executables() {
        let map = crate::config::ImageMap::parse(
            "images: [{match: x, files: {/usr/local/bin/rm: /opt/rm}}]",
            |_| None,
        )
        .unwrap();
        let rule = map.resolve("x").unwrap();
        assert_eq!(host_executable("rm", rule), PathBuf::from("/opt/rm"));
        assert_eq!(
            host_executable("/usr/local/bin/rm", rule),
            PathBuf::from("/opt/rm")
        );
        assert_eq!(host_executable("sh", rule), PathBuf::from("/usr/bin/sh"));
        assert_eq!(
            host_executable("no-such-tool", rule),
            PathBuf::from("no-such-tool")
        );
    }
}
