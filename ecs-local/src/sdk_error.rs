//! One-line messages for AWS SDK errors.

/// The error's messages and its sources' (the SDK's Debug forms carry whole responses).
pub fn chain(e: &dyn std::error::Error) -> String {
    let mut parts = vec![e.to_string()];
    let mut cur = e.source();
    while let Some(s) = cur {
        let m = s.to_string();
        if !parts.iter().any(|p| p.contains(&m)) {
            parts.push(m);
        }
        cur = s.source();
    }
    parts.join(": ").replace('\n', " ")
}
