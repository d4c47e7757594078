//! Where a container's record ([`ContainerRecord`]) lives in the cluster: one JSON value under
//! [`RECORD_DATA_KEY`] in the data of its spec ConfigMap. Read once per view, written whole.
//!
//! Earlier versions spread the same state over annotations of the spec ConfigMap (and the pod);
//! such a ConfigMap is read from them, and its first record write moves them here.

use std::collections::BTreeMap;
use std::time::Duration;

use k8s_openapi::api::core::v1::ConfigMap;
use kube::api::{Patch, PatchParams};

use super::{ContainerView, Result, Runtime, RuntimeError};
use crate::labels::legacy;
use crate::model::{ContainerRecord, LastExit};

/// Key of the spec ConfigMap's data holding the container's record.
pub const RECORD_DATA_KEY: &str = "container.json";
/// How often a record write is tried again when the ConfigMap changed in between.
const WRITE_ATTEMPTS: usize = 5;
/// How long one read or write of the record may take.
const CALL_TIMEOUT: Duration = Duration::from_secs(10);

/// The record of a spec ConfigMap: its data's [`RECORD_DATA_KEY`], or for a ConfigMap an earlier
/// version wrote, the annotations it kept the same state in. An unreadable record reads as an
/// empty request (the container still lists, and can be removed).
pub fn read_record(spec: &ConfigMap) -> ContainerRecord {
    let stored = spec
        .data
        .as_ref()
        .and_then(|data| data.get(RECORD_DATA_KEY))
        .and_then(|raw| serde_json::from_str::<ContainerRecord>(raw).ok());
    match stored {
        Some(record) => record,
        None => legacy_record(spec.metadata.annotations.as_ref()),
    }
}

/// The record as earlier versions kept it, in annotations. They kept no decoded settings: such a
/// container reads Docker's defaults for them (no published ports, links or restart policy), which
/// only matters to a podbridge upgraded while its containers run.
fn legacy_record(annotations: Option<&BTreeMap<String, String>>) -> ContainerRecord {
    let get = |key: &str| annotations.and_then(|a| a.get(key)).map(String::as_str);
    ContainerRecord {
        request: get(legacy::CREATE_REQUEST)
            .and_then(|raw| serde_json::from_str(raw).ok())
            .unwrap_or_else(|| serde_json::json!({})),
        mounts: get(legacy::MOUNTS)
            .and_then(|raw| serde_json::from_str(raw).ok())
            .unwrap_or_default(),
        max_stop_timeout: get(legacy::MAX_STOP_TIMEOUT).and_then(|raw| raw.parse().ok()),
        last_exit: get(legacy::LAST_EXIT).and_then(|raw| serde_json::from_str(raw).ok()),
        settings: Default::default(),
    }
}

/// `spec` with `record` written in its place (and the annotations of the old place gone).
pub fn with_record(spec: &ConfigMap, record: &ContainerRecord) -> ConfigMap {
    let mut written = spec.clone();
    written
        .data
        .get_or_insert_with(Default::default)
        .insert(RECORD_DATA_KEY.into(), encode(record));
    if let Some(annotations) = written.metadata.annotations.as_mut() {
        for key in legacy::ALL {
            annotations.remove(key);
        }
    }
    written
}

/// The record's stored form.
pub fn encode(record: &ContainerRecord) -> String {
    serde_json::to_string(record).unwrap_or_default()
}

/// A merge patch writing `record` over `spec` (removing the annotations of the old place it
/// has), with `spec`'s uid and resourceVersion as preconditions: a write over a ConfigMap that
/// changed since `spec` was read fails with 409 and is made again from the new one.
fn record_patch(spec: &ConfigMap, record: &ContainerRecord) -> serde_json::Value {
    let mut metadata = serde_json::Map::new();
    if let Some(uid) = &spec.metadata.uid {
        metadata.insert("uid".into(), uid.clone().into());
    }
    if let Some(version) = &spec.metadata.resource_version {
        metadata.insert("resourceVersion".into(), version.clone().into());
    }
    let removed: serde_json::Map<String, serde_json::Value> = spec
        .metadata
        .annotations
        .iter()
        .flatten()
        .filter(|(key, _)| legacy::ALL.contains(&key.as_str()))
        .map(|(key, _)| (key.clone(), serde_json::Value::Null))
        .collect();
    if !removed.is_empty() {
        metadata.insert("annotations".into(), removed.into());
    }
    serde_json::json!({
        "metadata": metadata,
        "data": { RECORD_DATA_KEY: encode(record) },
    })
}

impl Runtime {
    /// Changes the record of `view`'s container: `change` is applied to the record the view
    /// holds and written with the view's version as a precondition; when the ConfigMap changed
    /// since (a published port, kept output), it is read again and `change` applied anew.
    /// Within `max_stored_bytes`, and only over this container's own spec (its uid).
    pub(crate) async fn update_record(
        &self,
        view: &ContainerView,
        change: impl Fn(&mut ContainerRecord),
    ) -> Result<()> {
        let api = self.applier.config_maps();
        let mut spec = (*view.spec).clone();
        let mut record = (*view.record).clone();
        for _ in 0..WRITE_ATTEMPTS {
            change(&mut record);
            let written = with_record(&spec, &record);
            let _bytes = self.reserve_bytes(
                super::limits::stored_size(&written),
                super::limits::stored_size(&spec),
            )?;
            let patch = record_patch(&spec, &record);
            let (params, patch) = (PatchParams::default(), Patch::Merge(&patch));
            match tokio::time::timeout(CALL_TIMEOUT, api.patch(&view.pod_name, &params, &patch))
                .await
            {
                Ok(Ok(_)) => return Ok(()),
                Ok(Err(kube::Error::Api(status))) if status.code == 409 => {}
                Ok(Err(source)) => {
                    return Err(RuntimeError::Kube {
                        operation: "write the container's record",
                        pod: view.pod_name.clone(),
                        source,
                    })
                }
                Err(_) => return Err(self.record_timeout(view)),
            }
            let read = tokio::time::timeout(CALL_TIMEOUT, api.get_opt(&view.pod_name))
                .await
                .map_err(|_| self.record_timeout(view))?
                .map_err(|source| RuntimeError::Kube {
                    operation: "read the container's record",
                    pod: view.pod_name.clone(),
                    source,
                })?;
            match read {
                Some(current) if current.metadata.uid == view.spec.metadata.uid => {
                    record = read_record(&current);
                    spec = current;
                }
                _ => return Err(RuntimeError::NoSuchContainer(view.id.clone())),
            }
        }
        Err(RuntimeError::Conflict(format!(
            "the record of container {} kept changing while it was written; try again",
            view.short_id()
        )))
    }

    /// Records `exit` as the container's last exit (`None` clears it, as a start does).
    pub(crate) async fn write_last_exit(
        &self,
        view: &ContainerView,
        exit: Option<&LastExit>,
    ) -> Result<()> {
        self.update_record(view, |record| record.last_exit = exit.cloned())
            .await
    }

    fn record_timeout(&self, view: &ContainerView) -> RuntimeError {
        RuntimeError::Timeout {
            operation: "write the container's record",
            pod: view.pod_name.clone(),
            seconds: CALL_TIMEOUT.as_secs(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::MountKind;

    fn config_map(value: serde_json::Value) -> ConfigMap {
        serde_json::from_value(value).unwrap()
    }

    #[test]
    fn a_record_is_read_from_its_data_key() {
        let record = ContainerRecord {
            max_stop_timeout: Some(20),
            request: serde_json::json!({"Image": "redis"}),
            settings: crate::model::RuntimeSettings {
                tty: true,
                ..Default::default()
            },
            ..ContainerRecord::default()
        };
        let spec = config_map(serde_json::json!({
            "metadata": {"name": "p", "annotations": {
                // a leftover of the old place never wins over the record
                legacy::CREATE_REQUEST: r#"{"Image":"old"}"#,
            }},
            "data": {RECORD_DATA_KEY: encode(&record)},
        }));
        assert_eq!(read_record(&spec), record);
    }

    /// A spec ConfigMap as the previous version wrote it: the record in annotations.
    #[test]
    fn a_record_of_the_previous_version_is_read_from_annotations() {
        let spec = config_map(serde_json::json!({
            "metadata": {"name": "podbridge-web-93af45dff323", "uid": "u1",
                         "resourceVersion": "7", "annotations": {
                "podbridge.io/container-id": "93af45dff3238529a2a17c84877a0472440d74a1e059cb65076b59cdec2fa433",
                "podbridge.io/name": "web",
                "podbridge.io/create-request": r#"{"Image":"nginx","Tty":true,"HostConfig":{"AutoRemove":true}}"#,
                "podbridge.io/mounts": r#"[{"type":"bind","source":"/src","volume":"bind-0","target":"/dst","readOnly":false},{"type":"volume","name":"data","claim":"podbridge-volume-data-1","volume":"volume-1","target":"/data","readOnly":true},{"type":"docker-socket","source":"/var/run/docker.sock","target":"/var/run/docker.sock"}]"#,
                "podbridge.io/networks": r#"{"bridge":[]}"#,
                "podbridge.io/port-bindings": r#"{"80/tcp":[{"HostIp":"","HostPort":"8080"}]}"#,
                "podbridge.io/auto-remove": "true",
                "podbridge.io/max-stop-timeout": "30",
                "podbridge.io/last-exit": r#"{"ExitCode":3,"StartedAt":"2025-01-01T00:00:00Z","FinishedAt":"2025-01-01T00:00:05Z","OOMKilled":false}"#,
            }},
            "data": {"objects.json": "{}"},
        }));
        let record = read_record(&spec);
        assert_eq!(record.request["Image"], "nginx");
        // the settings were not kept then: Docker's defaults
        assert_eq!(record.settings, crate::model::RuntimeSettings::default());
        assert_eq!(record.mounts.len(), 3);
        assert_eq!(record.mounts[2].kind, MountKind::DockerSocket);
        assert_eq!(record.named_volumes(), ["data"]);
        assert_eq!(record.bind_copies()[0].volume, "bind-0");
        assert_eq!(record.max_stop_timeout, Some(30));
        assert_eq!(record.last_exit.as_ref().map(|e| e.exit_code), Some(3));

        // Written in the new place: the record moves to the data, the old annotations go,
        // identity annotations stay.
        let moved = with_record(&spec, &record);
        assert_eq!(read_record(&moved), record);
        let annotations = moved.metadata.annotations.as_ref().unwrap();
        assert_eq!(
            annotations.keys().collect::<Vec<_>>(),
            ["podbridge.io/container-id", "podbridge.io/name"]
        );
        assert!(moved.data.as_ref().unwrap().contains_key("objects.json"));
        let patch = record_patch(&spec, &record);
        assert_eq!(patch["metadata"]["uid"], "u1");
        assert_eq!(patch["metadata"]["resourceVersion"], "7");
        assert_eq!(
            patch["metadata"]["annotations"]
                .as_object()
                .unwrap()
                .values()
                .filter(|value| value.is_null())
                .count(),
            legacy::ALL.len()
        );
        assert_eq!(patch["data"][RECORD_DATA_KEY], encode(&record));
    }

    #[test]
    fn a_spec_without_any_record_reads_as_an_empty_request() {
        let record = read_record(&config_map(serde_json::json!({"metadata": {"name": "p"}})));
        assert_eq!(
            record,
            ContainerRecord {
                request: serde_json::json!({}),
                ..ContainerRecord::default()
            }
        );
        let patch = record_patch(
            &config_map(serde_json::json!({"metadata": {"name": "p"}})),
            &record,
        );
        assert!(patch["metadata"].get("annotations").is_none());
    }
}
