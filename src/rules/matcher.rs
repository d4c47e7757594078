//! `match`/`exclude` selectors: which requests a rule applies to, decided from the normalised
//! image, the Docker name and labels, and the project podbridge was configured with.

use std::collections::BTreeMap;

use super::file::{FilterSpec, SelectorSpec};
use super::glob::Glob;

/// What selectors look at. The project comes from podbridge's configuration, never from the client.
#[derive(Debug, Clone, Copy)]
pub struct Subject<'a> {
    pub image: &'a str,
    pub name: Option<&'a str>,
    pub labels: &'a BTreeMap<String, String>,
    pub project: Option<&'a str>,
    /// Set by podbridge (a container, or the builder pod of `docker build`).
    pub purpose: crate::model::Purpose,
}

#[derive(Debug, Clone)]
pub struct Filter {
    images: Option<Vec<Glob>>,
    names: Option<Vec<Glob>>,
    projects: Option<Vec<Glob>>,
    purposes: Option<Vec<String>>,
    labels: Vec<(String, Glob)>,
}

#[derive(Debug, Clone)]
pub enum Selector {
    Any(Vec<Filter>),
    All(Vec<Filter>),
}

fn globs(list: &Option<Vec<String>>) -> Option<Vec<Glob>> {
    list.as_ref()
        .map(|l| l.iter().map(|g| Glob::new(g)).collect())
}

impl Filter {
    pub fn compile(spec: &FilterSpec) -> Self {
        Filter {
            images: globs(&spec.images),
            names: globs(&spec.names),
            projects: globs(&spec.projects),
            purposes: spec.purposes.clone(),
            labels: spec
                .labels
                .iter()
                .flatten()
                .map(|(k, v)| (k.clone(), Glob::new(v)))
                .collect(),
        }
    }

    pub fn matches(&self, subject: &Subject<'_>) -> bool {
        fn any(globs: &Option<Vec<Glob>>, value: Option<&str>) -> bool {
            match globs {
                None => true,
                Some(globs) => value.is_some_and(|v| globs.iter().any(|g| g.matches(v))),
            }
        }
        any(&self.images, Some(subject.image))
            && any(&self.names, subject.name)
            && any(&self.projects, subject.project)
            && self
                .purposes
                .as_ref()
                .is_none_or(|purposes| purposes.iter().any(|p| p == subject.purpose.as_str()))
            && self
                .labels
                .iter()
                .all(|(key, glob)| subject.labels.get(key).is_some_and(|v| glob.matches(v)))
    }
}

impl Selector {
    pub fn compile(spec: &SelectorSpec) -> Self {
        let compile = |filters: &Vec<FilterSpec>| filters.iter().map(Filter::compile).collect();
        match (&spec.any, &spec.all) {
            (Some(any), _) => Selector::Any(compile(any)),
            (None, Some(all)) => Selector::All(compile(all)),
            (None, None) => Selector::All(Vec::new()),
        }
    }

    pub fn matches(&self, subject: &Subject<'_>) -> bool {
        match self {
            Selector::Any(filters) => filters.iter().any(|f| f.matches(subject)),
            Selector::All(filters) => filters.iter().all(|f| f.matches(subject)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn filters_combine_fields_with_and_and_globs_with_or() {
        let spec: SelectorSpec = serde_json::from_value(serde_json::json!({
            "any": [{"images": ["docker.io/library/redis:*", "*/postgres:*"], "projects": ["team-a/*"]},
                    {"labels": {"tier": "db*"}}]
        }))
        .unwrap();
        let selector = Selector::compile(&spec);
        let labels = BTreeMap::new();
        let subject = |image, project| Subject {
            image,
            name: None,
            labels: &labels,
            project,
            purpose: crate::model::Purpose::Container,
        };
        assert!(selector.matches(&subject("docker.io/library/redis:7", Some("team-a/app"))));
        assert!(!selector.matches(&subject("docker.io/library/redis:7", Some("team-b/app"))));
        assert!(!selector.matches(&subject("docker.io/library/redis:7", None)));
        let mut tiers = BTreeMap::new();
        tiers.insert("tier".to_string(), "dbmain".to_string());
        assert!(selector.matches(&Subject {
            image: "x",
            name: None,
            labels: &tiers,
            project: None,
            purpose: crate::model::Purpose::Container,
        }));
    }
}
