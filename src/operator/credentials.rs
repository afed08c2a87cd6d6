//! The credentials Secret `<cluster>-credentials`: created once, never regenerated.
//!
//! Planning is pure ([`plan`]); values are generated only when a key is missing
//! ([`generate`]), from the thread-local CSPRNG. Values never leave the Secret: no
//! log line, Event or status holds them.

use std::collections::BTreeMap;

use k8s_openapi::ByteString;
use k8s_openapi::api::core::v1::Secret;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use rand::RngExt;
use rand::distr::Alphanumeric;

use super::names::{self, secret_key};
use crate::api::{Engine, ShardedCluster};

/// Length of generated passwords and tokens.
pub const SECRET_LENGTH: usize = 32;

/// What to do about the credentials Secret.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum SecretPlan {
    /// It exists with every key: leave it alone.
    Keep,
    /// It does not exist: create it with every key.
    Create,
    /// It exists but lacks these keys: add only them.
    AddKeys(Vec<&'static str>),
}

/// The plan for a Secret whose present keys are `existing` (`None` when absent).
pub fn plan(existing: Option<&Secret>) -> SecretPlan {
    let Some(secret) = existing else {
        return SecretPlan::Create;
    };
    let has = |key: &str| {
        secret.data.as_ref().is_some_and(|d| d.contains_key(key))
            || secret
                .string_data
                .as_ref()
                .is_some_and(|d| d.contains_key(key))
    };
    let missing: Vec<&'static str> = secret_key::ALL
        .into_iter()
        .filter(|key| !has(key))
        .collect();
    if missing.is_empty() {
        SecretPlan::Keep
    } else {
        SecretPlan::AddKeys(missing)
    }
}

/// Values for `keys`: the engine's superuser for `username`, fresh random strings
/// for the others.
pub fn generate(engine: Engine, keys: &[&str]) -> BTreeMap<String, ByteString> {
    keys.iter()
        .map(|&key| {
            let value = if key == secret_key::USERNAME {
                names::superuser(engine).to_owned()
            } else {
                random_alphanumeric(SECRET_LENGTH)
            };
            (key.to_owned(), ByteString(value.into_bytes()))
        })
        .collect()
}

/// `len` random ASCII letters and digits from the thread-local CSPRNG.
pub fn random_alphanumeric(len: usize) -> String {
    rand::rng()
        .sample_iter(Alphanumeric)
        .take(len)
        .map(char::from)
        .collect()
}

/// The Secret of `cluster` holding `data`, owned by the cluster.
pub fn secret(cluster: &ShardedCluster, data: BTreeMap<String, ByteString>) -> Secret {
    let name = cluster.metadata.name.clone().unwrap_or_default();
    Secret {
        metadata: ObjectMeta {
            name: Some(names::secret_name(&name)),
            namespace: cluster.metadata.namespace.clone(),
            labels: Some(names::cluster_labels(cluster.spec.engine, &name)),
            owner_references: names::cluster_ref(cluster).map(|r| vec![r]),
            ..ObjectMeta::default()
        },
        type_: Some("Opaque".to_owned()),
        data: Some(data),
        ..Secret::default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn secret_with(keys: &[&str]) -> Secret {
        Secret {
            data: Some(
                keys.iter()
                    .map(|k| (k.to_string(), ByteString(b"x".to_vec())))
                    .collect(),
            ),
            ..Secret::default()
        }
    }

    #[test]
    fn absent_secret_is_created() {
        assert_eq!(plan(None), SecretPlan::Create);
    }

    #[test]
    fn complete_secret_is_never_regenerated() {
        let all = [
            "username",
            "password",
            "agent-token",
            "replication-password",
        ];
        let existing = secret_with(&all);
        assert_eq!(plan(Some(&existing)), SecretPlan::Keep);
        // Extra keys (added by later versions or users) do not matter.
        let extra = secret_with(&[&all[..], &["router"]].concat());
        assert_eq!(plan(Some(&extra)), SecretPlan::Keep);
    }

    #[test]
    fn only_deleted_keys_are_re_added() {
        let existing = secret_with(&["username", "agent-token", "replication-password"]);
        assert_eq!(plan(Some(&existing)), SecretPlan::AddKeys(vec!["password"]));
        // A Secret of an older version gets the replication password, nothing else.
        let older = secret_with(&["username", "password", "agent-token"]);
        assert_eq!(
            plan(Some(&older)),
            SecretPlan::AddKeys(vec!["replication-password"])
        );
        let empty = Secret::default();
        assert_eq!(
            plan(Some(&empty)),
            SecretPlan::AddKeys(vec![
                "username",
                "password",
                "agent-token",
                "replication-password"
            ])
        );
    }

    #[test]
    fn generated_values_are_random_alphanumerics_and_the_superuser() {
        let values = generate(Engine::Postgres, &secret_key::ALL);
        assert_eq!(values["username"].0, b"postgres");
        for key in ["password", "agent-token", "replication-password"] {
            let v = &values[key].0;
            assert_eq!(v.len(), SECRET_LENGTH);
            assert!(v.iter().all(u8::is_ascii_alphanumeric));
        }
        assert_ne!(values["password"], values["agent-token"]);
        assert_eq!(
            generate(Engine::Redis, &["username"])["username"].0,
            b"default"
        );
    }
}
