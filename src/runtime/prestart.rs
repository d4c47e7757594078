//! Files copied into a container before it starts (`PUT /archive` on a created container, as
//! testcontainers does). Each tar is kept in a ConfigMap (role `archive`) so it survives a
//! restart of podbridge and is applied again on every start, like a file written into a
//! container's filesystem. At start they are rendered with the request (`render::StartInputs`):
//! an init container extracts the tars into an emptyDir and `main` mounts each top-level entry
//! at its destination with `subPath`, all before the policy chain runs.

use std::collections::BTreeMap;

use bytes::Bytes;
use k8s_openapi::api::core::v1::ConfigMap;
use k8s_openapi::ByteString;

use super::{ContainerView, Result, Runtime, RuntimeError};
use crate::labels;
use crate::render::{PrestartArchive, ARCHIVE_DATA_KEY};

/// ConfigMaps hold at most 1 MiB; leave room for metadata.
const MAX_ARCHIVE_BYTES: usize = 900 * 1024;

/// Top-level names in a tar stream (ustar, GNU long names and PAX paths).
pub fn top_level_entries(tar: &[u8]) -> Vec<String> {
    let mut names = Vec::new();
    let mut offset = 0;
    let mut long_name: Option<String> = None;
    while offset + 512 <= tar.len() {
        let header = &tar[offset..offset + 512];
        if header.iter().all(|b| *b == 0) {
            break;
        }
        let field = |range: std::ops::Range<usize>| -> String {
            let raw = &header[range];
            let end = raw.iter().position(|b| *b == 0).unwrap_or(raw.len());
            String::from_utf8_lossy(&raw[..end]).into_owned()
        };
        let size = usize::from_str_radix(field(124..136).trim(), 8).unwrap_or(0);
        let kind = header[156];
        let data_start = offset + 512;
        let data = &tar[data_start.min(tar.len())..(data_start + size).min(tar.len())];
        offset = data_start + size.div_ceil(512) * 512;
        match kind {
            b'L' => {
                long_name = Some(
                    String::from_utf8_lossy(data)
                        .trim_end_matches('\0')
                        .to_string(),
                )
            }
            b'x' => {
                let text = String::from_utf8_lossy(data);
                long_name = text
                    .lines()
                    .find_map(|record| record.split_once(" path=").map(|(_, p)| p.to_string()));
            }
            b'g' => {}
            _ => {
                let name = long_name.take().unwrap_or_else(|| {
                    let prefix = field(345..500);
                    let name = field(0..100);
                    if prefix.is_empty() {
                        name
                    } else {
                        format!("{prefix}/{name}")
                    }
                });
                let name = name.trim_start_matches("./").trim_start_matches('/');
                if let Some(first) = name
                    .split('/')
                    .next()
                    .filter(|f| !f.is_empty() && *f != ".")
                {
                    if !names.iter().any(|n| n == first) {
                        names.push(first.to_string());
                    }
                }
            }
        }
    }
    names
}

/// A pre-start archive as stored.
struct Stored {
    config_map: String,
    path: String,
    entries: Vec<String>,
}

impl Runtime {
    fn stored_archives(&self, short_id: &str) -> Vec<Stored> {
        let mut archives: Vec<Stored> = self
            .objects_with_role(labels::ROLE_ARCHIVE)
            .iter()
            .filter(|cm| {
                cm.metadata
                    .labels
                    .as_ref()
                    .and_then(|l| l.get(labels::CONTAINER_ID))
                    .map(String::as_str)
                    == Some(short_id)
            })
            .filter_map(|cm| {
                let tar = cm.binary_data.as_ref()?.get(ARCHIVE_DATA_KEY)?;
                Some(Stored {
                    config_map: cm.metadata.name.clone()?,
                    path: cm
                        .metadata
                        .annotations
                        .as_ref()?
                        .get(labels::ANNOTATION_ARCHIVE_PATH)?
                        .clone(),
                    entries: top_level_entries(&tar.0),
                })
            })
            .collect();
        archives.sort_by(|a, b| a.config_map.cmp(&b.config_map));
        archives
    }

    /// Keeps a tar for a container that is not running; it is unpacked at every start.
    pub async fn store_prestart_archive(
        &self,
        view: &ContainerView,
        path: &str,
        tar: Bytes,
    ) -> Result<()> {
        if tar.len() > MAX_ARCHIVE_BYTES {
            return Err(RuntimeError::BadRequest(format!(
                "podbridge keeps files copied before start in a ConfigMap; {} bytes exceed the {MAX_ARCHIVE_BYTES}-byte limit (copy after start instead)",
                tar.len()
            )));
        }
        if !path.starts_with('/') {
            return Err(RuntimeError::BadRequest(format!(
                "archive path must be absolute: {path}"
            )));
        }
        let sequence = self.stored_archives(view.short_id()).len();
        let name = format!("{}-archive-{sequence}", view.pod_name);
        let config_map = ConfigMap {
            metadata: kube::api::ObjectMeta {
                name: Some(name),
                namespace: Some(self.namespace.clone()),
                labels: Some(BTreeMap::from([
                    (
                        labels::MANAGED_BY.to_string(),
                        labels::MANAGED_BY_VALUE.to_string(),
                    ),
                    (labels::INSTANCE.to_string(), self.instance.clone()),
                    (
                        labels::CONTAINER_ID.to_string(),
                        view.short_id().to_string(),
                    ),
                    (labels::ROLE.to_string(), labels::ROLE_ARCHIVE.to_string()),
                ])),
                annotations: Some(BTreeMap::from([(
                    labels::ANNOTATION_ARCHIVE_PATH.to_string(),
                    path.to_string(),
                )])),
                ..Default::default()
            },
            binary_data: Some(BTreeMap::from([(
                ARCHIVE_DATA_KEY.to_string(),
                ByteString(tar.to_vec()),
            )])),
            ..Default::default()
        };
        self.applier
            .apply_owned(&self.applier.config_maps(), &config_map)
            .await?;
        let (short, count) = (view.short_id().to_string(), sequence + 1);
        self.wait_until(std::time::Duration::from_secs(10), |rt| {
            rt.stored_archives(&short).len() >= count
        })
        .await;
        Ok(())
    }

    /// The archives copied into a created container, for the start's translation: the init
    /// container that unpacks them and the mounts are rendered before the policy chain.
    pub fn prestart_archives(&self, short_id: &str) -> Vec<PrestartArchive> {
        self.stored_archives(short_id)
            .into_iter()
            .map(|stored| PrestartArchive {
                config_map: stored.config_map,
                path: stored.path,
                entries: stored.entries,
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn header(name: &str, size: usize, kind: u8) -> Vec<u8> {
        let mut block = vec![0u8; 512];
        block[..name.len()].copy_from_slice(name.as_bytes());
        let size = format!("{size:011o}");
        block[124..135].copy_from_slice(size.as_bytes());
        block[156] = kind;
        block
    }

    #[test]
    fn top_level_names_of_a_tar() {
        let mut tar = header("dd/", 0, b'5');
        tar.extend(header("dd/f", 3, b'0'));
        tar.extend(b"abc".iter().copied().chain(std::iter::repeat_n(0, 509)));
        tar.extend(header("./top.txt", 0, b'0'));
        let pax = b"30 path=longdir/inside/file.txt\n";
        tar.extend(header("PaxHeaders/x", pax.len(), b'x'));
        tar.extend(
            pax.iter()
                .copied()
                .chain(std::iter::repeat_n(0, 512 - pax.len())),
        );
        tar.extend(header("truncated", 0, b'0'));
        tar.extend(vec![0u8; 1024]);
        assert_eq!(top_level_entries(&tar), vec!["dd", "top.txt", "longdir"]);
    }
}
