//! A user-space Service proxy.
//!
//! Every TCP port of every ClusterIP/NodePort/LoadBalancer Service with a cluster IP
//! gets a listener on `clusterIP:port` (the cluster IPs are in a loopback range, which
//! Linux routes to `lo` without configuration). Each accepted connection is forwarded
//! to a ready endpoint chosen by [`endpoints`], since the apiserver refuses to store
//! our loopback pod IPs in EndpointSlices. Listeners follow Services and Pods live.

pub mod endpoints;
pub mod proxy;
pub mod watch;

use std::sync::Arc;
use std::time::Duration;

use k8s_openapi::api::core::v1::{Pod, Service};
use k8s_openapi::api::discovery::v1::EndpointSlice;
use kube::api::Api;
use tokio::sync::Notify;

use crate::Ctx;

/// Quiet time after a watch event before listeners are recomputed.
const DEBOUNCE: Duration = Duration::from_millis(100);

/// Runs the proxy forever.
pub async fn run(ctx: Arc<Ctx>) -> anyhow::Result<()> {
    let changed = Arc::new(Notify::new());
    let client = &ctx.client;
    let (services, _s) = watch::reflect(Api::<Service>::all(client.clone()), changed.clone());
    let (pods, _p) = watch::reflect(Api::<Pod>::all(client.clone()), changed.clone());
    let (slices, _e) = watch::reflect(Api::<EndpointSlice>::all(client.clone()), changed.clone());
    watch::ready(&services).await?;
    watch::ready(&pods).await?;
    watch::ready(&slices).await?;
    tracing::info!("service proxy started");

    let mut proxies = proxy::Proxies::default();
    loop {
        let (services, pods, slices) = (services.state(), pods.state(), slices.state());
        let world = endpoints::World {
            services: &services,
            pods: &pods,
            slices: &slices,
            apiserver: &ctx.args.apiserver,
        };
        proxies.apply(endpoints::desired(&world));
        changed.notified().await;
        tokio::time::sleep(DEBOUNCE).await;
    }
}
