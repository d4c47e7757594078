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

/// Top-level names in a tar stream (ustar, GNU long names and PAX paths), each a plain path
/// component: an entry whose path starts with `..` is left out (tar refuses to write it outside
/// the directory, so there is nothing to mount), and `.`, empty and absolute prefixes are
/// skipped the way tar strips them. A header whose size field is unreadable, or whose data runs
/// past the end, ends the listing.
pub fn top_level_entries(tar: &[u8]) -> Vec<String> {
    const BLOCK: usize = 512;
    let mut names = Vec::new();
    let mut offset = 0usize;
    let mut long_name: Option<String> = None;
    while let Some(header) = offset
        .checked_add(BLOCK)
        .and_then(|end| tar.get(offset..end))
    {
        if header.iter().all(|b| *b == 0) {
            break;
        }
        let field = |range: std::ops::Range<usize>| -> String {
            let raw = &header[range];
            let end = raw.iter().position(|b| *b == 0).unwrap_or(raw.len());
            String::from_utf8_lossy(&raw[..end]).into_owned()
        };
        let Some(size) = entry_size(&header[124..136]) else {
            break;
        };
        let kind = header[156];
        let data_start = offset + BLOCK;
        let data_end = data_start.saturating_add(size);
        let data = &tar[data_start..data_end.min(tar.len())];
        match size
            .div_ceil(BLOCK)
            .checked_mul(BLOCK)
            .and_then(|padded| data_start.checked_add(padded))
        {
            Some(next) => offset = next,
            None => break,
        }
        match kind {
            b'L' => {
                long_name = Some(
                    String::from_utf8_lossy(data)
                        .trim_end_matches('\0')
                        .to_string(),
                )
            }
            b'x' => long_name = pax_path(data),
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
                if let Some(first) = first_component(&name) {
                    if !names.iter().any(|n| n == first) {
                        names.push(first.to_string());
                    }
                }
            }
        }
    }
    names
}

/// A header's size: octal text, or GNU's base-256 (high bit set) for large files.
fn entry_size(field: &[u8]) -> Option<usize> {
    if field[0] & 0x80 != 0 {
        if field[0] & 0x40 != 0 {
            return None; // negative
        }
        let mut size = u64::from(field[0] & 0x3f);
        for byte in &field[1..] {
            size = size.checked_mul(256)?.checked_add(u64::from(*byte))?;
        }
        return usize::try_from(size).ok();
    }
    let end = field.iter().position(|b| *b == 0).unwrap_or(field.len());
    let text = std::str::from_utf8(&field[..end]).ok()?.trim();
    if text.is_empty() {
        return Some(0);
    }
    if !text.bytes().all(|b| (b'0'..=b'7').contains(&b)) {
        return None;
    }
    usize::from_str_radix(text, 8).ok()
}

/// The `path` of a PAX extended header: records are `LENGTH key=value\n`, LENGTH counting the
/// whole record, so values may hold newlines.
fn pax_path(mut data: &[u8]) -> Option<String> {
    let mut path = None;
    while let Some(space) = data.iter().position(|b| *b == b' ') {
        let length = std::str::from_utf8(&data[..space])
            .ok()
            .and_then(|digits| digits.parse::<usize>().ok())
            .filter(|length| *length > space + 1 && *length <= data.len());
        let Some(length) = length else {
            break;
        };
        let record = &data[space + 1..length];
        let record = record.strip_suffix(b"\n").unwrap_or(record);
        if let Some(value) = record.strip_prefix(b"path=") {
            path = Some(String::from_utf8_lossy(value).into_owned());
        }
        data = &data[length..];
    }
    path
}

/// The first component an entry name creates under the extraction directory; `None` for names
/// that create nothing there or would climb out of it.
fn first_component(name: &str) -> Option<&str> {
    let first = name
        .split('/')
        .find(|part| !part.is_empty() && *part != ".")?;
    (first != "..").then_some(first)
}

/// A `PUT /archive` destination as an absolute path with `.` and `..` resolved the way the
/// container's root resolves them (`..` at `/` stays at `/`), so every mount target built from
/// it lies under it. `None` for relative paths and paths with NUL.
pub fn archive_destination(path: &str) -> Option<String> {
    if !path.starts_with('/') || path.contains('\0') {
        return None;
    }
    let mut parts: Vec<&str> = Vec::new();
    for part in path.split('/') {
        match part {
            "" | "." => {}
            ".." => {
                parts.pop();
            }
            other => parts.push(other),
        }
    }
    Some(format!("/{}", parts.join("/")))
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
        let Some(path) = archive_destination(path) else {
            return Err(RuntimeError::BadRequest(format!(
                "archive path must be absolute: {path}"
            )));
        };
        let sequence = self.stored_archives(view.short_id()).len();
        let limit = self.limits().max_archives_per_container;
        if sequence >= limit {
            return Err(RuntimeError::LimitReached {
                message: format!(
                    "archive limit reached: container {} already keeps {sequence} archives copied before start, the most podbridge keeps per container (config max_archives_per_container); copy one tar of everything, or copy after start",
                    view.short_id()
                ),
            });
        }
        // Named by arrival time (and a random tail), not by count: two copies into the same
        // created container at once must not write one ConfigMap; the names sort in order.
        let arrival = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos());
        let name = format!(
            "{}-archive-{arrival:020}{:04x}",
            view.pod_name,
            rand::random::<u16>()
        );
        let config_map = ConfigMap {
            metadata: kube::api::ObjectMeta {
                name: Some(name.clone()),
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
                    path,
                )])),
                ..Default::default()
            },
            binary_data: Some(BTreeMap::from([(
                ARCHIVE_DATA_KEY.to_string(),
                ByteString(tar.to_vec()),
            )])),
            ..Default::default()
        };
        let _bytes = self.reserve_bytes(super::limits::stored_size(&config_map), 0)?;
        self.applier
            .apply_owned(&self.applier.config_maps(), &config_map)
            .await?;
        let short = view.short_id().to_string();
        self.wait_until(std::time::Duration::from_secs(10), |rt| {
            rt.stored_archives(&short)
                .iter()
                .any(|stored| stored.config_map == name)
        })
        .await;
        Ok(())
    }

    /// The archives copied into a created container, for the start's translation: the init
    /// container that unpacks them and the mounts are rendered before the policy chain.
    pub fn prestart_archives(&self, short_id: &str) -> Vec<PrestartArchive> {
        self.stored_archives(short_id)
            .into_iter()
            .filter_map(|stored| {
                Some(PrestartArchive {
                    path: archive_destination(&stored.path)?,
                    config_map: stored.config_map,
                    entries: stored.entries,
                })
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
        let pax = b"32 path=longdir/inside/file.txt\n";
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

    #[test]
    fn names_outside_the_destination_are_left_out() {
        let mut tar = Vec::new();
        for name in [
            "../etc/passwd",
            "/abs/file",
            "./../x",
            "",
            ".",
            "/",
            "ok/../..",
        ] {
            tar.extend(header(name, 0, b'0'));
        }
        tar.extend(vec![0u8; 1024]);
        assert_eq!(top_level_entries(&tar), vec!["abs", "ok"]);
    }

    #[test]
    fn huge_sizes_end_the_listing() {
        let mut tar = header("a", 0, b'0');
        let mut huge = header("b", 0, b'0');
        huge[124..136].copy_from_slice(&[
            0xbf, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff,
        ]);
        tar.extend(huge);
        tar.extend(header("c", 0, b'0'));
        assert_eq!(top_level_entries(&tar), vec!["a"], "a size beyond 64 bits");
        let mut tar = header("a", 0, b'0');
        let mut large = header("b", 0, b'0');
        large[124..136].copy_from_slice(&[0x80, 0, 0, 0, 1, 0, 0, 0, 0, 0, 0, 0]);
        tar.extend(large);
        tar.extend(header("c", 0, b'0'));
        assert_eq!(top_level_entries(&tar), vec!["a", "b"], "data past the end");
        let mut octal = header("d", 0, b'0');
        octal[124..136].copy_from_slice(b"77777777777\0");
        assert_eq!(top_level_entries(&octal), vec!["d"]);
    }

    #[test]
    fn destinations_resolve_inside_the_root() {
        assert_eq!(archive_destination("/app/../etc/").as_deref(), Some("/etc"));
        assert_eq!(archive_destination("/../../..").as_deref(), Some("/"));
        assert_eq!(archive_destination("/a/./b//c").as_deref(), Some("/a/b/c"));
        assert_eq!(archive_destination("relative"), None);
        assert_eq!(archive_destination("/a\0b"), None);
    }

    mod properties {
        use super::*;
        use proptest::prelude::*;

        /// Entry names as a hostile archive spells them.
        fn entry_name() -> impl Strategy<Value = String> {
            prop::collection::vec(
                prop::sample::select(vec!["..", ".", "", "a", "b c", "é", "x.txt", "-rf"]),
                0..5,
            )
            .prop_flat_map(|parts| {
                (
                    Just(parts.join("/")),
                    prop::sample::select(vec!["", "/", "./", "//"]),
                )
                    .prop_map(|(name, lead)| format!("{lead}{name}"))
            })
        }

        fn block_padded(data: &[u8]) -> Vec<u8> {
            let mut out = data.to_vec();
            out.resize(data.len().div_ceil(512) * 512, 0);
            out
        }

        /// One member: a plain header, a GNU long name, or a PAX path; sometimes with a size
        /// field that lies.
        fn member() -> impl Strategy<Value = Vec<u8>> {
            (entry_name(), 0u8..3, prop::option::of(any::<[u8; 12]>())).prop_map(
                |(name, form, lying_size)| {
                    let mut out = Vec::new();
                    match form {
                        0 if name.len() <= 100 => out.extend(header(&name, 0, b'0')),
                        1 | 0 => {
                            out.extend(header("././@LongLink", name.len() + 1, b'L'));
                            out.extend(block_padded(format!("{name}\0").as_bytes()));
                            out.extend(header("short", 0, b'0'));
                        }
                        _ => {
                            let body = format!(" path={name}\n");
                            // The length counts its own digits.
                            let mut total = body.len() + 1;
                            while body.len() + total.to_string().len() != total {
                                total = body.len() + total.to_string().len();
                            }
                            let record = format!("{total}{body}");
                            out.extend(header("PaxHeaders/x", record.len(), b'x'));
                            out.extend(block_padded(record.as_bytes()));
                            out.extend(header("short", 0, b'0'));
                        }
                    }
                    if let Some(size) = lying_size {
                        let last = out.len() - 512;
                        out[last + 124..last + 136].copy_from_slice(&size);
                    }
                    out
                },
            )
        }

        fn plain(entry: &str) -> bool {
            !entry.is_empty() && entry != "." && entry != ".." && !entry.contains(['/', '\0'])
        }

        proptest! {
            #![proptest_config(crate::proptest_cases::config(512))]

            #[test]
            fn arbitrary_bytes_never_panic(
                bytes in prop::collection::vec(any::<u8>(), 0..2048),
                header_like in any::<[u8; 512]>(),
            ) {
                for input in [&bytes[..], &header_like[..]] {
                    for entry in top_level_entries(input) {
                        prop_assert!(plain(&entry), "{:?}", entry);
                    }
                }
            }

            #[test]
            fn entries_are_plain_names_under_the_destination(
                members in prop::collection::vec(member(), 0..6),
                destination in "(/[a-z.]{0,3}){0,4}/?",
            ) {
                let tar = members.concat();
                let destination = archive_destination(&format!("/{destination}")).unwrap();
                for entry in top_level_entries(&tar) {
                    prop_assert!(plain(&entry), "{:?}", entry);
                    let target = format!("{}/{entry}", destination.trim_end_matches('/'));
                    let resolved = archive_destination(&target).unwrap();
                    let inside = if destination == "/" {
                        resolved.len() > 1
                    } else {
                        resolved.starts_with(&format!("{destination}/"))
                    };
                    prop_assert!(inside, "{} escapes {}", target, destination);
                }
            }

            #[test]
            fn destinations_are_clean_absolute_paths(path in any::<String>(), shaped in "(/(\\.\\.|\\.|[a-z]{0,2})){0,6}/?") {
                for path in [path, shaped] {
                    if let Some(clean) = archive_destination(&path) {
                        prop_assert!(clean.starts_with('/'));
                        prop_assert!(clean == "/" || !clean.ends_with('/'));
                        prop_assert!(!clean.split('/').skip(1).any(|part| matches!(part, "" | "." | "..")) || clean == "/");
                    }
                }
            }
        }
    }
}
