//! Pure decisions of the provisioner: which claims need a volume, the volume for a
//! claim, which volumes to reclaim and which to expand.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::path::Path;
use std::sync::Arc;

use k8s_openapi::api::core::v1::{
    HostPathVolumeSource, ObjectReference, PersistentVolume, PersistentVolumeClaim,
    PersistentVolumeSpec,
};
use k8s_openapi::api::storage::v1::StorageClass;
use k8s_openapi::apimachinery::pkg::api::resource::Quantity;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;

/// Name of the provisioner (the StorageClass `provisioner` field).
pub const PROVISIONER: &str = "ringmaster.dev/localnode";
/// Name of the StorageClass this node creates.
pub const CLASS_NAME: &str = "local";
/// Annotation recording who provisioned a PersistentVolume.
pub const PROVISIONED_BY: &str = "pv.kubernetes.io/provisioned-by";
/// Annotation marking the default StorageClass.
pub const DEFAULT_CLASS: &str = "storageclass.kubernetes.io/is-default-class";

/// The StorageClass this node serves.
pub fn storage_class() -> StorageClass {
    StorageClass {
        metadata: ObjectMeta {
            name: Some(CLASS_NAME.into()),
            annotations: Some(BTreeMap::from([(DEFAULT_CLASS.into(), "true".into())])),
            ..ObjectMeta::default()
        },
        provisioner: PROVISIONER.into(),
        reclaim_policy: Some("Delete".into()),
        volume_binding_mode: Some("Immediate".into()),
        allow_volume_expansion: Some(true),
        ..StorageClass::default()
    }
}

/// Whether the class object exists with our provisioner, is default and expandable.
pub fn class_is_current(classes: &[Arc<StorageClass>]) -> bool {
    classes.iter().any(|c| {
        c.metadata.name.as_deref() == Some(CLASS_NAME)
            && c.provisioner == PROVISIONER
            && c.allow_volume_expansion == Some(true)
            && c.metadata
                .annotations
                .as_ref()
                .and_then(|a| a.get(DEFAULT_CLASS))
                .map(String::as_str)
                == Some("true")
    })
}

/// Names of the StorageClasses whose provisioner is ours.
pub fn our_classes(classes: &[Arc<StorageClass>]) -> HashSet<String> {
    classes
        .iter()
        .filter(|c| c.provisioner == PROVISIONER)
        .filter_map(|c| c.metadata.name.clone())
        .chain([CLASS_NAME.to_owned()])
        .collect()
}

/// Whether we must provision a volume for the claim: unbound, not being deleted, a
/// Filesystem claim of one of our classes.
pub fn wants_volume(claim: &PersistentVolumeClaim, ours: &HashSet<String>) -> bool {
    let Some(spec) = &claim.spec else {
        return false;
    };
    let unbound = spec.volume_name.as_deref().is_none_or(str::is_empty);
    let ours = spec
        .storage_class_name
        .as_ref()
        .is_some_and(|c| ours.contains(c));
    let filesystem = spec
        .volume_mode
        .as_deref()
        .is_none_or(|m| m == "Filesystem");
    unbound && ours && filesystem && claim.metadata.deletion_timestamp.is_none()
}

/// Name of the volume provisioned for a claim: `pvc-<claim uid>`.
pub fn volume_name(claim: &PersistentVolumeClaim) -> Option<String> {
    claim.metadata.uid.as_ref().map(|uid| format!("pvc-{uid}"))
}

/// The requested storage of a claim.
pub fn requested(claim: &PersistentVolumeClaim) -> Option<&Quantity> {
    claim
        .spec
        .as_ref()?
        .resources
        .as_ref()?
        .requests
        .as_ref()?
        .get("storage")
}

/// The PersistentVolume for a claim, pre-bound to it, backed by `dir`.
pub fn build_volume(claim: &PersistentVolumeClaim, dir: &Path) -> Option<PersistentVolume> {
    let spec = claim.spec.as_ref()?;
    let name = volume_name(claim)?;
    let size = requested(claim)?.clone();
    let claim_ref = ObjectReference {
        api_version: Some("v1".into()),
        kind: Some("PersistentVolumeClaim".into()),
        namespace: claim.metadata.namespace.clone(),
        name: claim.metadata.name.clone(),
        uid: claim.metadata.uid.clone(),
        ..ObjectReference::default()
    };
    Some(PersistentVolume {
        metadata: ObjectMeta {
            name: Some(name),
            annotations: Some(BTreeMap::from([(
                PROVISIONED_BY.into(),
                PROVISIONER.into(),
            )])),
            ..ObjectMeta::default()
        },
        spec: Some(PersistentVolumeSpec {
            access_modes: spec.access_modes.clone(),
            capacity: Some(BTreeMap::from([("storage".into(), size)])),
            claim_ref: Some(claim_ref),
            host_path: Some(HostPathVolumeSource {
                path: dir.to_string_lossy().into_owned(),
                type_: Some("DirectoryOrCreate".into()),
            }),
            persistent_volume_reclaim_policy: Some("Delete".into()),
            storage_class_name: spec.storage_class_name.clone(),
            volume_mode: Some("Filesystem".into()),
            ..PersistentVolumeSpec::default()
        }),
        status: None,
    })
}

/// Whether we provisioned the volume.
pub fn is_ours(pv: &PersistentVolume) -> bool {
    pv.metadata
        .annotations
        .as_ref()
        .and_then(|a| a.get(PROVISIONED_BY))
        .map(String::as_str)
        == Some(PROVISIONER)
}

/// `(namespace, name)` → uid of every claim.
pub type ClaimIndex = HashMap<(String, String), String>;

/// Indexes claims by namespace and name.
pub fn claim_index(claims: &[Arc<PersistentVolumeClaim>]) -> ClaimIndex {
    claims
        .iter()
        .filter_map(|c| {
            let m = &c.metadata;
            Some(((m.namespace.clone()?, m.name.clone()?), m.uid.clone()?))
        })
        .collect()
}

/// Why one of our volumes must be deleted, if it must: it was Released, or the claim
/// it was provisioned for is gone (the index has no claim of that name and uid).
pub fn reclaim_reason(pv: &PersistentVolume, claims: &ClaimIndex) -> Option<&'static str> {
    if !is_ours(pv) || pv.metadata.deletion_timestamp.is_some() {
        return None;
    }
    if pv.status.as_ref().and_then(|s| s.phase.as_deref()) == Some("Released") {
        return Some("released");
    }
    let claim = pv.spec.as_ref()?.claim_ref.as_ref()?;
    let key = (claim.namespace.clone()?, claim.name.clone()?);
    (claims.get(&key) != claim.uid.as_ref()).then_some("claim gone")
}

/// A pending expansion: the new size, and which objects still need it.
#[derive(Debug, Clone, PartialEq)]
pub struct Resize {
    /// The size the claim requests.
    pub size: Quantity,
    /// The volume's capacity is smaller.
    pub volume: bool,
    /// The claim's `status.capacity` is smaller.
    pub claim_status: bool,
}

/// The expansion a claim bound to one of our volumes needs, if any.
pub fn resize(claim: &PersistentVolumeClaim, pv: &PersistentVolume) -> Option<Resize> {
    if !is_ours(pv) || claim.spec.as_ref()?.volume_name.as_ref() != pv.metadata.name.as_ref() {
        return None;
    }
    let size = requested(claim)?;
    let want = parse_quantity(&size.0)?;
    let smaller = |q: Option<&Quantity>| {
        q.and_then(|q| parse_quantity(&q.0))
            .is_none_or(|have| have < want)
    };
    let volume = smaller(pv.spec.as_ref()?.capacity.as_ref()?.get("storage"));
    let bound = claim.status.as_ref().and_then(|s| s.phase.as_deref()) == Some("Bound");
    let status_capacity = claim
        .status
        .as_ref()
        .and_then(|s| s.capacity.as_ref())
        .and_then(|c| c.get("storage"));
    let claim_status = bound && smaller(status_capacity);
    (volume || claim_status).then(|| Resize {
        size: size.clone(),
        volume,
        claim_status,
    })
}

/// Parses a Kubernetes quantity into whole units (bytes for storage), rounding up.
pub fn parse_quantity(s: &str) -> Option<u128> {
    let s = s.trim();
    let split = s
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .unwrap_or(s.len());
    let (number, suffix) = s.split_at(split);
    let (int, frac) = number.split_once('.').unwrap_or((number, ""));
    if int.is_empty() && frac.is_empty() {
        return None;
    }
    let digits = format!("{int}{frac}");
    let mantissa: u128 = digits.parse().ok()?;
    let mut den = 10u128.checked_pow(u32::try_from(frac.len()).ok()?)?;
    let mut num = mantissa;
    let (mul, div) = suffix_scale(suffix)?;
    num = num.checked_mul(mul)?;
    den = den.checked_mul(div)?;
    Some(num.div_ceil(den))
}

/// Multiplier and divisor of a quantity suffix.
fn suffix_scale(suffix: &str) -> Option<(u128, u128)> {
    let binary = |p: u32| Some((1u128 << (10 * p), 1));
    let decimal = |p: u32| Some((10u128.pow(p), 1));
    match suffix {
        "" => decimal(0),
        "m" => Some((1, 1000)),
        "u" => Some((1, 1_000_000)),
        "n" => Some((1, 1_000_000_000)),
        "k" => decimal(3),
        "M" => decimal(6),
        "G" => decimal(9),
        "T" => decimal(12),
        "P" => decimal(15),
        "E" => decimal(18),
        "Ki" => binary(1),
        "Mi" => binary(2),
        "Gi" => binary(3),
        "Ti" => binary(4),
        "Pi" => binary(5),
        "Ei" => binary(6),
        exp => {
            let e: i32 = exp.strip_prefix(['e', 'E'])?.parse().ok()?;
            let p = 10u128.checked_pow(e.unsigned_abs())?;
            Some(if e >= 0 { (p, 1) } else { (1, p) })
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn claim(v: serde_json::Value) -> PersistentVolumeClaim {
        serde_json::from_value(v).unwrap()
    }

    fn data_claim() -> PersistentVolumeClaim {
        claim(json!({
            "metadata": {"name": "data", "namespace": "ns", "uid": "u-1"},
            "spec": {"storageClassName": "local", "accessModes": ["ReadWriteOnce"],
                     "resources": {"requests": {"storage": "1Gi"}}},
            "status": {"phase": "Pending"},
        }))
    }

    fn ours() -> HashSet<String> {
        our_classes(&[])
    }

    #[test]
    fn quantities() {
        assert_eq!(parse_quantity("1Gi"), Some(1 << 30));
        assert_eq!(parse_quantity("1.5Gi"), Some(3 << 29));
        assert_eq!(parse_quantity("10G"), Some(10_000_000_000));
        assert_eq!(parse_quantity("500M"), Some(500_000_000));
        assert_eq!(parse_quantity("1e3"), Some(1000));
        assert_eq!(parse_quantity("1500m"), Some(2));
        assert_eq!(parse_quantity("1024"), Some(1024));
        assert_eq!(parse_quantity("0.5Ki"), Some(512));
        assert_eq!(parse_quantity(""), None);
        assert_eq!(parse_quantity("1Zi"), None);
        assert_eq!(parse_quantity("Gi"), None);
    }

    #[test]
    fn which_claims_need_a_volume() {
        assert!(wants_volume(&data_claim(), &ours()));
        let mut bound = data_claim();
        bound.spec.as_mut().unwrap().volume_name = Some("pv".into());
        assert!(!wants_volume(&bound, &ours()));
        let mut foreign = data_claim();
        foreign.spec.as_mut().unwrap().storage_class_name = Some("fast".into());
        assert!(!wants_volume(&foreign, &ours()));
        let mut classless = data_claim();
        classless.spec.as_mut().unwrap().storage_class_name = None;
        assert!(!wants_volume(&classless, &ours()));
        let mut block = data_claim();
        block.spec.as_mut().unwrap().volume_mode = Some("Block".into());
        assert!(!wants_volume(&block, &ours()));
        let mut other: StorageClass = storage_class();
        other.metadata.name = Some("fast".into());
        assert!(wants_volume(&foreign, &our_classes(&[Arc::new(other)])));
    }

    #[test]
    fn builds_a_prebound_hostpath_volume() {
        let pv = build_volume(&data_claim(), Path::new("/state/volumes/pvc-u-1")).unwrap();
        assert_eq!(pv.metadata.name.as_deref(), Some("pvc-u-1"));
        assert!(is_ours(&pv));
        let spec = pv.spec.unwrap();
        assert_eq!(spec.capacity.unwrap()["storage"].0, "1Gi");
        assert_eq!(spec.access_modes.unwrap(), ["ReadWriteOnce"]);
        assert_eq!(spec.storage_class_name.as_deref(), Some("local"));
        assert_eq!(
            spec.persistent_volume_reclaim_policy.as_deref(),
            Some("Delete")
        );
        let host = spec.host_path.unwrap();
        assert_eq!(
            (host.path.as_str(), host.type_.as_deref()),
            ("/state/volumes/pvc-u-1", Some("DirectoryOrCreate"))
        );
        let r = spec.claim_ref.unwrap();
        assert_eq!(r.namespace.as_deref(), Some("ns"));
        assert_eq!(r.name.as_deref(), Some("data"));
        assert_eq!(r.uid.as_deref(), Some("u-1"));
        assert_eq!(r.kind.as_deref(), Some("PersistentVolumeClaim"));
        assert_eq!(r.api_version.as_deref(), Some("v1"));
    }

    #[test]
    fn reclaims_released_and_orphaned_volumes() {
        let claim = Arc::new(data_claim());
        let mut pv = build_volume(&claim, Path::new("/v")).unwrap();
        let index = claim_index(std::slice::from_ref(&claim));
        assert_eq!(reclaim_reason(&pv, &index), None);
        assert_eq!(reclaim_reason(&pv, &ClaimIndex::new()), Some("claim gone"));
        let mut recreated = (*claim).clone();
        recreated.metadata.uid = Some("u-2".into());
        assert_eq!(
            reclaim_reason(&pv, &claim_index(&[Arc::new(recreated)])),
            Some("claim gone")
        );
        pv.status = Some(k8s_openapi::api::core::v1::PersistentVolumeStatus {
            phase: Some("Released".into()),
            ..Default::default()
        });
        assert_eq!(reclaim_reason(&pv, &index), Some("released"));
        pv.metadata.annotations = None;
        assert_eq!(reclaim_reason(&pv, &ClaimIndex::new()), None, "not ours");
    }

    #[test]
    fn expansion_updates_volume_then_claim_status() {
        let mut claim = data_claim();
        let pv = build_volume(&claim, Path::new("/v")).unwrap();
        claim.spec.as_mut().unwrap().volume_name = pv.metadata.name.clone();
        let status = claim.status.as_mut().unwrap();
        status.phase = Some("Bound".into());
        status.capacity = Some(BTreeMap::from([("storage".into(), Quantity("1Gi".into()))]));
        assert_eq!(resize(&claim, &pv), None);

        let requests = claim
            .spec
            .as_mut()
            .unwrap()
            .resources
            .as_mut()
            .unwrap()
            .requests
            .as_mut()
            .unwrap();
        requests.insert("storage".into(), Quantity("2Gi".into()));
        let want = Resize {
            size: Quantity("2Gi".into()),
            volume: true,
            claim_status: true,
        };
        assert_eq!(resize(&claim, &pv), Some(want));

        let mut grown = pv.clone();
        grown
            .spec
            .as_mut()
            .unwrap()
            .capacity
            .as_mut()
            .unwrap()
            .insert("storage".into(), Quantity("2048Mi".into()));
        let want = Resize {
            size: Quantity("2Gi".into()),
            volume: false,
            claim_status: true,
        };
        assert_eq!(resize(&claim, &grown), Some(want));
        claim.spec.as_mut().unwrap().volume_name = Some("other".into());
        assert_eq!(resize(&claim, &pv), None);
    }

    #[test]
    fn class_check() {
        assert!(class_is_current(&[Arc::new(storage_class())]));
        let mut plain = storage_class();
        plain.metadata.annotations = None;
        assert!(!class_is_current(&[Arc::new(plain)]));
        assert!(!class_is_current(&[]));
    }
}
