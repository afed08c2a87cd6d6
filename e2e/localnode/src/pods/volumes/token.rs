//! Bound service account tokens (TokenRequest API), cached and refreshed at
//! 80% of their lifetime.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use k8s_openapi::api::authentication::v1::{BoundObjectReference, TokenRequest, TokenRequestSpec};
use k8s_openapi::api::core::v1::{Pod, ServiceAccount};
use kube::api::{Api, PostParams};

use super::projection::TokenKey;

#[derive(Debug, Clone)]
struct Entry {
    token: String,
    fetched: Instant,
    lifetime: Duration,
}

/// Tokens of one Pod by (audience, expirationSeconds).
#[derive(Debug, Default)]
pub struct TokenCache {
    entries: HashMap<TokenKey, Entry>,
}

/// True once 80% of a token's lifetime has passed.
pub fn needs_refresh(age: Duration, lifetime: Duration) -> bool {
    age >= lifetime.mul_f64(0.8)
}

impl TokenCache {
    /// The token for `key`, requesting a new one when missing or due.
    pub async fn get(
        &mut self,
        client: &kube::Client,
        pod: &Pod,
        key: &TokenKey,
    ) -> Result<String, String> {
        if let Some(e) = self.entries.get(key)
            && !needs_refresh(e.fetched.elapsed(), e.lifetime)
        {
            return Ok(e.token.clone());
        }
        let entry = request(client, pod, key).await?;
        let token = entry.token.clone();
        self.entries.insert(key.clone(), entry);
        Ok(token)
    }
}

async fn request(client: &kube::Client, pod: &Pod, key: &TokenKey) -> Result<Entry, String> {
    let ns = pod.metadata.namespace.as_deref().unwrap_or("default");
    let spec = pod.spec.as_ref();
    let sa = spec
        .and_then(|s| s.service_account_name.clone())
        .filter(|s| !s.is_empty())
        .unwrap_or_else(|| "default".to_string());
    let (audience, expiration) = key;
    let req = TokenRequest {
        spec: TokenRequestSpec {
            audiences: if audience.is_empty() {
                vec![]
            } else {
                vec![audience.clone()]
            },
            expiration_seconds: Some(*expiration),
            bound_object_ref: Some(BoundObjectReference {
                api_version: Some("v1".into()),
                kind: Some("Pod".into()),
                name: pod.metadata.name.clone(),
                uid: pod.metadata.uid.clone(),
            }),
        },
        ..Default::default()
    };
    let api: Api<ServiceAccount> = Api::namespaced(client.clone(), ns);
    let fetched = Instant::now();
    let resp = api
        .create_token_request(&sa, &PostParams::default(), &req)
        .await
        .map_err(|e| format!("requesting a token for serviceaccount \"{sa}\": {e}"))?;
    let status = resp.status.ok_or("token request returned no status")?;
    let now = k8s_openapi::jiff::Timestamp::now();
    let secs = (status.expiration_timestamp.0.as_second() - now.as_second()).max(60);
    Ok(Entry {
        token: status.token,
        fetched,
        lifetime: Duration::from_secs(secs as u64),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn refreshes_at_eighty_percent() {
        let hour = Duration::from_secs(3600);
        assert!(!needs_refresh(Duration::from_secs(2879), hour));
        assert!(needs_refresh(Duration::from_secs(2880), hour));
    }
}
