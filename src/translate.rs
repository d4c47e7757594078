//! translate: THROWAWAY stub for the api branch until the lead's version merges (take theirs).
//!
//! Renders a minimal pod straight from the create body so the server can be exercised end to end.

use std::collections::BTreeMap;

use crate::{labels, model, render};

pub struct CreateRequest<'a> {
    pub body: &'a [u8],
    pub name: Option<&'a str>,
    pub image: Option<&'a model::ImageConfig>,
    pub identity: render::Identity,
}

pub struct Translation {
    pub objects: render::RenderedObjects,
    pub warnings: Vec<String>,
    pub explain: String,
}

#[derive(Debug, thiserror::Error)]
pub enum TranslateError {
    #[error("{0}")]
    Decode(String),
    #[error("{message}")]
    Denied { message: String },
    #[error("{0}")]
    Render(String),
}

pub struct Translator {
    pub instance: String,
    pub namespace: String,
}

impl Translator {
    pub fn translate(&self, request: &CreateRequest<'_>) -> Result<Translation, TranslateError> {
        let body: serde_json::Value = serde_json::from_slice(request.body)
            .map_err(|e| TranslateError::Decode(format!("invalid JSON: {e}")))?;
        let image = body["Image"]
            .as_str()
            .ok_or_else(|| TranslateError::Decode("Image is required".into()))?;
        let id = &request.identity.id;
        let pod_name = format!("pb-{}", id.short());
        let mut labels_map = BTreeMap::new();
        labels_map.insert(
            labels::MANAGED_BY.to_string(),
            labels::MANAGED_BY_VALUE.to_string(),
        );
        labels_map.insert(labels::INSTANCE.to_string(), self.instance.clone());
        labels_map.insert(labels::CONTAINER_ID.to_string(), id.short().to_string());
        labels_map.insert(labels::ROLE.to_string(), "container".to_string());
        let mut ann = BTreeMap::new();
        ann.insert(labels::ANNOTATION_CONTAINER_ID.to_string(), id.to_string());
        ann.insert(
            labels::ANNOTATION_NAME.to_string(),
            request.name.unwrap_or("").to_string(),
        );
        ann.insert(
            labels::ANNOTATION_CREATE_REQUEST.to_string(),
            body.to_string(),
        );
        ann.insert(
            labels::ANNOTATION_CREATED.to_string(),
            request.identity.created.clone(),
        );
        ann.insert(labels::ANNOTATION_IMAGE.to_string(), image.to_string());
        let env: Vec<serde_json::Value> = body["Env"]
            .as_array()
            .map(|a| {
                a.iter()
                    .filter_map(|e| e.as_str())
                    .filter_map(|e| e.split_once('='))
                    .map(|(k, v)| serde_json::json!({"name": k, "value": v}))
                    .collect()
            })
            .unwrap_or_default();
        let mut container = serde_json::json!({
            "name": "main", "image": image, "imagePullPolicy": "IfNotPresent", "env": env,
            "tty": body["Tty"].as_bool().unwrap_or(false),
            "stdin": body["OpenStdin"].as_bool().unwrap_or(false),
            "stdinOnce": body["StdinOnce"].as_bool().unwrap_or(false),
        });
        if let Some(ep) = body.get("Entrypoint").filter(|v| !v.is_null()) {
            container["command"] = if ep.is_string() {
                serde_json::json!([ep])
            } else {
                ep.clone()
            };
        }
        if let Some(cmd) = body.get("Cmd").filter(|v| !v.is_null()) {
            container["args"] = if cmd.is_string() {
                serde_json::json!([cmd])
            } else {
                cmd.clone()
            };
        }
        if let Some(wd) = body["WorkingDir"].as_str().filter(|s| !s.is_empty()) {
            container["workingDir"] = wd.into();
        }
        let pod = serde_json::json!({
            "apiVersion": "v1", "kind": "Pod",
            "metadata": {"name": pod_name, "namespace": self.namespace, "labels": labels_map, "annotations": ann},
            "spec": {"restartPolicy": "Never", "terminationGracePeriodSeconds": 1,
                     "automountServiceAccountToken": false, "containers": [container]}
        });
        let pod = serde_json::from_value(pod).map_err(|e| TranslateError::Render(e.to_string()))?;
        Ok(Translation {
            objects: render::RenderedObjects {
                pod,
                services: vec![],
                config_maps: vec![],
            },
            warnings: vec![],
            explain: String::new(),
        })
    }
}
