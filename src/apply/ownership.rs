//! Who owns an object of a given name: the rule every write of podbridge goes through, so no
//! route can overwrite, adopt or delete an object another tool or another podbridge instance made.
//!
//! The watch stores only see objects labelled with this instance, so a name that is free in the
//! store may still be taken in the cluster; callers look the name up (or write create-only) and
//! ask [`foreign_owner`] before touching it.

use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;

use crate::labels;

/// Why an existing object is not ours, in words for a Docker user; `None` when it is ours.
///
/// Ours means: `app.kubernetes.io/managed-by=podbridge` and the same `podbridge.io/instance`
/// label as the object podbridge is about to write (`wanted`). Anything else (no labels, another
/// manager, another instance) is foreign.
pub fn foreign_owner(existing: &ObjectMeta, wanted: &ObjectMeta) -> Option<String> {
    let label = |meta: &ObjectMeta, key: &str| {
        meta.labels
            .as_ref()
            .and_then(|labels| labels.get(key))
            .cloned()
    };
    match label(existing, labels::MANAGED_BY) {
        Some(manager) if manager == labels::MANAGED_BY_VALUE => {}
        Some(manager) => return Some(format!("managed by {manager}")),
        None => return Some("not managed by podbridge".to_owned()),
    }
    let theirs = label(existing, labels::INSTANCE);
    if theirs.is_some() && theirs == label(wanted, labels::INSTANCE) {
        return None;
    }
    Some(match theirs {
        Some(instance) => format!("owned by podbridge instance {instance}"),
        None => "podbridge object without an instance".to_owned(),
    })
}

/// True when the foreign owner is another podbridge instance (as opposed to another tool or a
/// person): such names are shared DNS that the first instance keeps, not infrastructure.
pub fn is_other_instance(existing: &ObjectMeta) -> bool {
    existing.labels.as_ref().is_some_and(|labels| {
        labels.get(labels::MANAGED_BY).map(String::as_str) == Some(labels::MANAGED_BY_VALUE)
            && labels.contains_key(labels::INSTANCE)
    })
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use super::*;

    fn meta(entries: &[(&str, &str)]) -> ObjectMeta {
        ObjectMeta {
            labels: Some(
                entries
                    .iter()
                    .map(|(k, v)| (k.to_string(), v.to_string()))
                    .collect::<BTreeMap<_, _>>(),
            ),
            ..ObjectMeta::default()
        }
    }

    #[test]
    fn only_same_manager_and_instance_is_ours() {
        let wanted = meta(&[(labels::MANAGED_BY, "podbridge"), (labels::INSTANCE, "a")]);
        assert_eq!(foreign_owner(&wanted, &wanted), None);
        assert_eq!(
            foreign_owner(&ObjectMeta::default(), &wanted).as_deref(),
            Some("not managed by podbridge")
        );
        assert_eq!(
            foreign_owner(&meta(&[("app", "web")]), &wanted).as_deref(),
            Some("not managed by podbridge")
        );
        assert_eq!(
            foreign_owner(&meta(&[(labels::MANAGED_BY, "helm")]), &wanted).as_deref(),
            Some("managed by helm")
        );
        let other = meta(&[(labels::MANAGED_BY, "podbridge"), (labels::INSTANCE, "b")]);
        assert_eq!(
            foreign_owner(&other, &wanted).as_deref(),
            Some("owned by podbridge instance b")
        );
        assert!(is_other_instance(&other));
        // An instance label alone (someone copying it onto their Service) is not ownership.
        let spoof = meta(&[(labels::INSTANCE, "a")]);
        assert!(foreign_owner(&spoof, &wanted).is_some());
        assert!(!is_other_instance(&spoof));
        let no_instance = meta(&[(labels::MANAGED_BY, "podbridge")]);
        assert!(foreign_owner(&no_instance, &wanted).is_some());
        assert!(foreign_owner(&no_instance, &no_instance).is_some());
    }
}
