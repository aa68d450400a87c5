//! Checks on the TypeScript a hub writes: the committed file is current, and no type is loose.

/// Fails when the committed `path` is not `written`, naming the first line that differs;
/// with `UPDATE_TYPES` set, writes `written` there first (to regenerate it).
pub fn assert_committed(path: &str, written: &str, test: &str) {
    if std::env::var_os("UPDATE_TYPES").is_some() {
        std::fs::write(path, written).unwrap();
    }
    let committed = std::fs::read_to_string(path).unwrap_or_default();
    if committed != written {
        let line = (committed.lines().zip(written.lines()))
            .position(|(a, b)| a != b)
            .map_or_else(|| "the end".to_owned(), |n| format!("line {}", n + 1));
        panic!("{path} differs from what the hub writes, from {line}: run `UPDATE_TYPES=1 cargo test --test {test}` and commit it");
    }
}

/// The words `any` and `unknown` outside comments: a type left loose.
pub fn loose_types(ts: &str) -> Vec<String> {
    let mut code = String::new();
    let mut rest = ts;
    while let Some(start) = rest.find("/*") {
        code.push_str(&rest[..start]);
        rest = rest[start..].split_once("*/").map_or("", |(_, after)| after);
    }
    code.push_str(rest);
    let code: String = (code.lines())
        .map(|l| l.split("//").next().unwrap_or_default())
        .collect::<Vec<_>>()
        .join("\n");
    (code.split(|c: char| !c.is_alphanumeric() && c != '_'))
        .filter(|w| *w == "any" || *w == "unknown")
        .map(str::to_owned)
        .collect()
}
