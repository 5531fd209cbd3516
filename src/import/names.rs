//! Resource names for imported objects: a DNS-1123 label derived from the display name,
//! and, where two objects would get the same one, a suffix derived from each one's
//! upstream id. Both depend only on the object itself, so a re-import names every
//! object as before, whatever else changed upstream.

use std::collections::HashMap;

use sha2::{Digest, Sha256};

/// Longest name: a DNS-1123 label (63), so the name also fits in a label value.
const MAX_LEN: usize = 63;
/// Hex digits of the id's digest in a collision suffix.
const SUFFIX_LEN: usize = 6;

/// A DNS-1123 label from `display`: lower case, every run of other characters one `-`,
/// no `-` at either end, at most 63 characters; `fallback` when nothing is left.
pub fn label_of(display: &str, fallback: &str) -> String {
    let mut label = String::new();
    for c in display.chars().flat_map(char::to_lowercase) {
        if c.is_ascii_lowercase() || c.is_ascii_digit() {
            label.push(c);
        } else if !label.is_empty() && !label.ends_with('-') {
            label.push('-');
        }
    }
    label.truncate(MAX_LEN);
    let label = label.trim_end_matches('-');
    if label.is_empty() {
        fallback.to_string()
    } else {
        label.to_string()
    }
}

/// `label` with a suffix from `id`'s digest, still at most 63 characters.
fn suffixed(label: &str, id: &str) -> String {
    let digest = hex::encode(Sha256::digest(id.as_bytes()));
    let keep = MAX_LEN - SUFFIX_LEN - 1;
    let base = label[..label.len().min(keep)].trim_end_matches('-');
    format!("{base}-{}", &digest[..SUFFIX_LEN])
}

/// A unique name for each `(label, upstream id)`, in the same order. A label that only
/// one object has is its name; every object of a shared label gets the suffix of its
/// id (all of them, not "the second one": which one comes second may change).
pub fn unique_names(labelled: &[(String, String)]) -> Vec<String> {
    let mut count: HashMap<&str, usize> = HashMap::new();
    for (label, _) in labelled {
        *count.entry(label).or_default() += 1;
    }
    labelled
        .iter()
        .map(|(label, id)| match count[label.as_str()] {
            1 => label.clone(),
            _ => suffixed(label, id),
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn labels_are_dns_1123() {
        assert_eq!(label_of("Payments on-call", "x"), "payments-on-call");
        assert_eq!(label_of("  GitHub / Readers!! ", "x"), "github-readers");
        assert_eq!(label_of("Ünïcode ☃", "x"), "n-code");
        assert_eq!(label_of("☃", "accessprofile"), "accessprofile");
        let long = label_of(&"a-".repeat(60), "x");
        assert!(long.len() <= 63 && !long.ends_with('-'), "{long}");
    }

    #[test]
    fn shared_labels_get_a_suffix_from_the_id_in_any_order() {
        let one = [
            ("oncall".to_string(), "ap-1".to_string()),
            ("oncall".to_string(), "ap-2".to_string()),
            ("other".to_string(), "ap-3".to_string()),
        ];
        let names = unique_names(&one);
        assert_eq!(names[2], "other");
        assert_ne!(names[0], names[1]);
        assert!(names[0].starts_with("oncall-") && names[0].len() == "oncall-".len() + 6);
        let reversed = [one[1].clone(), one[0].clone()];
        assert_eq!(
            unique_names(&reversed),
            [names[1].clone(), names[0].clone()]
        );
        let long = suffixed(&"a".repeat(63), "id");
        assert_eq!(long.len(), 63);
    }
}
