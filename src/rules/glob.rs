//! Shell-style glob patterns for rule matchers (`docker.io/library/*`, `ci-*`).
//!
//! Only `*` (any run, including `/`, so `registry/*` matches nested repositories) and `?` are
//! special; that is what policy authors know from Kyverno and what image references need.

/// A compiled glob: literal segments split on `*`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Glob {
    pattern: String,
}

impl Glob {
    pub fn new(pattern: &str) -> Self {
        Glob {
            pattern: pattern.to_string(),
        }
    }

    pub fn as_str(&self) -> &str {
        &self.pattern
    }

    pub fn matches(&self, text: &str) -> bool {
        matches_bytes(self.pattern.as_bytes(), text.as_bytes())
    }
}

/// Iterative wildcard matching with single backtrack point: linear in practice, no recursion.
fn matches_bytes(pattern: &[u8], text: &[u8]) -> bool {
    let (mut p, mut t) = (0, 0);
    let mut star: Option<(usize, usize)> = None;
    while t < text.len() {
        if p < pattern.len() && (pattern[p] == b'?' || pattern[p] == text[t]) {
            p += 1;
            t += 1;
        } else if p < pattern.len() && pattern[p] == b'*' {
            star = Some((p, t));
            p += 1;
        } else if let Some((star_p, star_t)) = star {
            p = star_p + 1;
            t = star_t + 1;
            star = Some((star_p, star_t + 1));
        } else {
            return false;
        }
    }
    pattern[p..].iter().all(|&c| c == b'*')
}

#[cfg(test)]
mod tests {
    use super::Glob;

    #[test]
    fn stars_and_question_marks() {
        let cases = [
            ("*", "anything/at:all", true),
            ("docker.io/library/*", "docker.io/library/redis:7", true),
            ("docker.io/library/*", "quay.io/library/redis:7", false),
            ("*redis*", "docker.io/library/redis:latest", true),
            ("ci-?", "ci-1", true),
            ("ci-?", "ci-12", false),
            ("a*b*c", "aXXbYYc", true),
            ("a*b*c", "aXXbYY", false),
            ("exact", "exact", true),
            ("", "", true),
        ];
        for (pattern, text, expected) in cases {
            assert_eq!(
                Glob::new(pattern).matches(text),
                expected,
                "{pattern} ~ {text}"
            );
        }
    }
}
