//! Docker images, networks and volumes. Images are the references podbridge has seen (the
//! cluster pulls them itself); networks and volumes are labelled ConfigMaps so they survive a
//! restart of podbridge.

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::ConfigMap;
use sha2::{Digest, Sha256};

use super::{Result, Runtime, RuntimeError};
use crate::labels;

/// An image reference podbridge has been asked about.
#[derive(Debug, Clone, PartialEq)]
pub struct ImageRecord {
    pub reference: String,
    pub id: String,
    pub created: i64,
}

/// `alpine` → `alpine:latest`; `docker.io/library/x:1` → `x:1`; digests are kept.
pub fn normalise_image(reference: &str) -> String {
    let mut name = reference.trim().to_string();
    for prefix in [
        "docker.io/library/",
        "index.docker.io/library/",
        "docker.io/",
        "index.docker.io/",
    ] {
        if let Some(rest) = name.strip_prefix(prefix) {
            name = rest.to_string();
            break;
        }
    }
    if name.contains('@') {
        return name;
    }
    let last = name.rsplit('/').next().unwrap_or(&name);
    if !last.contains(':') {
        name.push_str(":latest");
    }
    name
}

/// A stable image ID for a reference (compose stores it in a label and compares it later).
pub fn image_id(reference: &str) -> String {
    format!(
        "sha256:{}",
        hex::encode(Sha256::digest(normalise_image(reference).as_bytes()))
    )
}

/// A stable 64-hex ID for a named network or volume.
pub fn object_id(kind: &str, name: &str) -> String {
    hex::encode(Sha256::digest(format!("{kind}/{name}").as_bytes()))
}

/// Keeps the image table below [`super::limits::MAX_IMAGE_RECORDS`] before `adding` is noted:
/// a loop of pulls of ever new names must not grow memory. The oldest records go first (those
/// of existing containers are noted again whenever images are listed).
fn forget_oldest_images(images: &mut BTreeMap<String, ImageRecord>, adding: &str) {
    while images.len() >= super::limits::MAX_IMAGE_RECORDS && !images.contains_key(adding) {
        let oldest = images
            .values()
            .min_by_key(|record| record.created)
            .map(|record| record.reference.clone());
        match oldest {
            Some(reference) => images.remove(&reference),
            None => return,
        };
    }
}

/// The ConfigMap that stores the network or volume `id` (a hex digest podbridge made).
fn object_config_map_name(role: &str, id: &str) -> String {
    format!("podbridge-{role}-{}", id.get(..12).unwrap_or(id))
}

/// Networks every Docker host has.
pub const PREDEFINED_NETWORKS: [&str; 3] = ["bridge", "host", "none"];

impl Runtime {
    /// Records an image reference (pull, create) and returns it.
    pub fn note_image(&self, reference: &str) -> ImageRecord {
        let normalised = normalise_image(reference);
        let mut images = self.images.lock();
        forget_oldest_images(&mut images, &normalised);
        images
            .entry(normalised.clone())
            .or_insert_with(|| ImageRecord {
                id: image_id(&normalised),
                reference: normalised,
                created: jiff::Timestamp::now().as_second(),
            })
            .clone()
    }

    /// Records an image reference whose config podbridge read from its registry: the ID becomes
    /// the config digest, as in Docker.
    pub fn note_image_with_id(&self, reference: &str, id: &str) -> ImageRecord {
        let normalised = normalise_image(reference);
        let mut images = self.images.lock();
        forget_oldest_images(&mut images, &normalised);
        let record = images
            .entry(normalised.clone())
            .or_insert_with(|| ImageRecord {
                id: id.to_owned(),
                reference: normalised,
                created: jiff::Timestamp::now().as_second(),
            });
        record.id = id.to_owned();
        record.clone()
    }

    /// Every image seen: pulled ones and those of existing containers (built images are
    /// listed from their records, `built_images`).
    pub fn images(&self) -> Vec<ImageRecord> {
        let built = self.built_images();
        for container in self.containers() {
            if !built.iter().any(|image| image.matches(&container.image)) {
                self.note_image(&container.image);
            }
        }
        self.images.lock().values().cloned().collect()
    }

    /// Finds an image by reference or (prefix of) ID; images built here first.
    pub fn find_image(&self, reference: &str) -> Option<ImageRecord> {
        if let Some(built) = self.find_built_image(reference) {
            let tag = built
                .tags
                .iter()
                .find(|tag| normalise_image(tag) == normalise_image(reference))
                .or(built.tags.first())
                .map(|tag| normalise_image(tag))
                .unwrap_or_else(|| built.image_id.clone());
            return Some(ImageRecord {
                reference: tag,
                id: built.image_id,
                created: built
                    .created
                    .parse::<jiff::Timestamp>()
                    .map(|t| t.as_second())
                    .unwrap_or_default(),
            });
        }
        let normalised = normalise_image(reference);
        let wanted = reference
            .strip_prefix("sha256:")
            .unwrap_or(reference)
            .to_ascii_lowercase();
        self.images().into_iter().find(|image| {
            image.reference == normalised
                || (wanted.len() >= 4
                    && image.id.trim_start_matches("sha256:").starts_with(&wanted))
        })
    }

    pub fn forget_image(&self, reference: &str) -> Option<ImageRecord> {
        let found = self.find_image(reference)?;
        self.images.lock().remove(&found.reference);
        Some(found)
    }

    /// Docker objects (network or volume JSON) stored in ConfigMaps with `role`.
    pub fn stored_objects(&self, role: &str) -> Vec<serde_json::Value> {
        self.objects_with_role(role)
            .iter()
            .filter_map(|cm| {
                cm.metadata
                    .annotations
                    .as_ref()?
                    .get(labels::ANNOTATION_OBJECT)
            })
            .filter_map(|raw| serde_json::from_str(raw).ok())
            .collect()
    }

    /// Stores a Docker network or volume object under a name derived from its ID (which callers
    /// derive from this instance, so two instances never share a record), never over an object
    /// this instance does not own.
    pub async fn store_object(
        &self,
        role: &str,
        id: &str,
        object: &serde_json::Value,
    ) -> Result<()> {
        let config_map = ConfigMap {
            metadata: kube::api::ObjectMeta {
                name: Some(object_config_map_name(role, id)),
                namespace: Some(self.namespace.clone()),
                labels: Some(BTreeMap::from([
                    (
                        labels::MANAGED_BY.to_string(),
                        labels::MANAGED_BY_VALUE.to_string(),
                    ),
                    (labels::INSTANCE.to_string(), self.instance.clone()),
                    (labels::ROLE.to_string(), role.to_string()),
                ])),
                annotations: Some(BTreeMap::from([(
                    labels::ANNOTATION_OBJECT.to_string(),
                    object.to_string(),
                )])),
                ..Default::default()
            },
            ..Default::default()
        };
        let replaced = self
            .objects_with_role(role)
            .iter()
            .find(|cm| cm.metadata.name == config_map.metadata.name)
            .map_or(0, |cm| super::limits::stored_size(cm));
        let _bytes = self.reserve_bytes(super::limits::stored_size(&config_map), replaced)?;
        self.applier
            .apply_owned(&self.applier.config_maps(), &config_map)
            .await?;
        let (role, id) = (role.to_string(), id.to_string());
        self.wait_until(std::time::Duration::from_secs(10), |rt| {
            rt.stored_objects(&role).iter().any(|o| {
                o["Id"].as_str() == Some(&id)
                    || o["Name"].as_str() == object["Name"].as_str() && role == labels::ROLE_VOLUME
            })
        })
        .await;
        Ok(())
    }

    /// Deletes the record of the network or volume whose Docker object has `Id` (or, for volumes
    /// from before records were per instance, `Name`) equal to `key`: the ConfigMap this
    /// instance's watch holds, and only that very object (uid precondition).
    pub async fn delete_object(&self, role: &str, key: &str) -> Result<()> {
        let record = self.objects_with_role(role).into_iter().find(|cm| {
            cm.metadata
                .annotations
                .as_ref()
                .and_then(|a| a.get(labels::ANNOTATION_OBJECT))
                .and_then(|raw| serde_json::from_str::<serde_json::Value>(raw).ok())
                .is_some_and(|o| o["Id"].as_str() == Some(key) || o["Name"].as_str() == Some(key))
        });
        let Some(record) = record else {
            return Ok(());
        };
        let name = record.metadata.name.clone().unwrap_or_default();
        self.applier
            .delete_exact(
                &self.applier.config_maps(),
                &name,
                record.metadata.uid.as_deref(),
                None,
            )
            .await?;
        let role = role.to_string();
        self.wait_until(std::time::Duration::from_secs(10), |rt| {
            !rt.objects_with_role(&role)
                .iter()
                .any(|cm| cm.metadata.name.as_deref() == Some(name.as_str()))
        })
        .await;
        Ok(())
    }

    /// Finds a stored network/volume by ID, ID prefix or name.
    pub fn find_object(&self, role: &str, reference: &str) -> Result<serde_json::Value> {
        let objects = self.stored_objects(role);
        objects
            .iter()
            .find(|o| o["Id"].as_str() == Some(reference) || o["Name"].as_str() == Some(reference))
            .or_else(|| {
                objects.iter().find(|o| {
                    reference.len() >= 3
                        && o["Id"].as_str().is_some_and(|id| id.starts_with(reference))
                })
            })
            .cloned()
            .ok_or_else(|| {
                RuntimeError::NotFound(if role == labels::ROLE_VOLUME {
                    format!("get {reference}: no such volume")
                } else {
                    format!("network {reference} not found")
                })
            })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_image_table_is_bounded() {
        let mut images = BTreeMap::new();
        for index in 0..super::super::limits::MAX_IMAGE_RECORDS + 5 {
            let reference = format!("image-{index}:latest");
            forget_oldest_images(&mut images, &reference);
            images.insert(
                reference.clone(),
                ImageRecord {
                    id: image_id(&reference),
                    reference,
                    created: index as i64,
                },
            );
        }
        assert_eq!(images.len(), super::super::limits::MAX_IMAGE_RECORDS);
        assert!(!images.contains_key("image-0:latest"));
    }

    #[test]
    fn image_references_normalise() {
        assert_eq!(normalise_image("alpine"), "alpine:latest");
        assert_eq!(normalise_image("docker.io/library/redis:7"), "redis:7");
        assert_eq!(
            normalise_image("localhost:5000/x"),
            "localhost:5000/x:latest"
        );
        assert_eq!(
            normalise_image("testcontainers/ryuk:0.14.0"),
            "testcontainers/ryuk:0.14.0"
        );
        assert_eq!(
            image_id("alpine"),
            image_id("docker.io/library/alpine:latest")
        );
    }
}
