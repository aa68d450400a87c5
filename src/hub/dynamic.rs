//! Dynamic namespaces: names matching a pattern (`/tenant-{id}`, or a predicate), each made
//! on its first connection, with the pattern's handler table shared by all of them, and
//! removed when its last connection has left.
//!
//! A connection holds a [`Lease`] on its namespace for as long as it lives (from the lookup at
//! its handshake or `CONNECT` to its end): a namespace is removed only once no lease is left,
//! and the count of leases is taken and dropped under the map's lock for that name, so a
//! connect racing the last disconnect either keeps the namespace or makes a new one, never
//! joins one that is gone.

use std::{
    any::Any,
    fmt,
    ops::Deref,
    sync::{
        atomic::{AtomicUsize, Ordering},
        Arc, Weak,
    },
};

use dashmap::{mapref::entry::Entry, DashMap};

use super::NsInner;

/// Longest name of a dynamic namespace, in bytes (the slash included).
pub(crate) const MAX_NAME_LEN: usize = 256;

/// Which names a dynamic namespace pattern takes.
#[derive(Clone)]
pub(crate) enum Matcher {
    /// A template: literal text and `{name}` parameters.
    Template(Vec<Part>),
    /// Any name the app's predicate accepts.
    Predicate(Arc<dyn Fn(&str) -> bool + Send + Sync>),
}

/// A piece of a template.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) enum Part {
    Literal(Box<str>),
    /// A parameter: a non-empty run of characters without `/`.
    Param(Arc<str>),
}

impl Matcher {
    /// Parses a template such as `/tenant-{id}`; `Err` says what is wrong with it.
    pub(crate) fn template(template: &str) -> Result<Self, String> {
        if !template.starts_with('/') {
            return Err(format!("`{template}` does not start with `/`"));
        }
        let mut parts = Vec::new();
        let mut rest = template;
        while !rest.is_empty() {
            match rest.find(['{', '}']) {
                Some(0) if rest.starts_with('{') => {
                    let end = rest
                        .find('}')
                        .ok_or_else(|| format!("`{template}` has an unclosed `{{`"))?;
                    let name = &rest[1..end];
                    if name.is_empty() || name.contains(['{', '/']) {
                        return Err(format!("`{template}` has a parameter without a valid name"));
                    }
                    if matches!(parts.last(), Some(Part::Param(_))) {
                        return Err(format!("`{template}` has two parameters with nothing between them"));
                    }
                    parts.push(Part::Param(Arc::from(name)));
                    rest = &rest[end + 1..];
                }
                Some(0) => return Err(format!("`{template}` has a `}}` without its `{{`")),
                found => {
                    let end = found.unwrap_or(rest.len());
                    parts.push(Part::Literal(Box::from(&rest[..end])));
                    rest = &rest[end..];
                }
            }
        }
        if !parts.iter().any(|p| matches!(p, Part::Param(_))) {
            return Err(format!(
                "`{template}` has no `{{parameter}}`: use `namespace` for a fixed name"
            ));
        }
        Ok(Self::Template(parts))
    }

    /// The parameters when `name` matches (empty for a predicate), `None` otherwise.
    fn matches(&self, name: &str) -> Option<Vec<(Arc<str>, Box<str>)>> {
        match self {
            Self::Predicate(accepts) => accepts(name).then(Vec::new),
            Self::Template(parts) => {
                let mut params = Vec::new();
                match_parts(parts, name, &mut params).then_some(params)
            }
        }
    }
}

/// Matches `name` against `parts`, collecting the parameters; each parameter takes the
/// shortest run that lets the rest match.
fn match_parts(parts: &[Part], name: &str, params: &mut Vec<(Arc<str>, Box<str>)>) -> bool {
    match parts.split_first() {
        None => name.is_empty(),
        Some((Part::Literal(text), rest)) => name
            .strip_prefix(&**text)
            .is_some_and(|name| match_parts(rest, name, params)),
        Some((Part::Param(param), rest)) => {
            let run = name.find('/').unwrap_or(name.len());
            let ends = name[..run].char_indices().skip(1).map(|(end, _)| end).chain([run]);
            for end in ends.filter(|&end| end > 0) {
                if match_parts(rest, &name[end..], params) {
                    params.insert(0, (param.clone(), Box::from(&name[..end])));
                    return true;
                }
            }
            false
        }
    }
}

/// One pattern and the handler table its namespaces share.
pub(crate) struct Pattern {
    pub(crate) matcher: Matcher,
    pub(crate) routes: Arc<dyn Any + Send + Sync>,
}

/// What a dynamic namespace has that a fixed one has not.
pub(crate) struct Origin {
    /// The template's parameters, as matched by the name.
    pub(crate) params: Vec<(Arc<str>, Box<str>)>,
    /// Connections (and connects under way) holding the namespace.
    leases: AtomicUsize,
    /// Where the namespace is kept, to remove it once no lease is left.
    home: Weak<Dynamic>,
}

/// The patterns, and the namespaces made from them so far.
pub(crate) struct Dynamic {
    patterns: Vec<Pattern>,
    live: DashMap<Arc<str>, Arc<NsInner>>,
    /// How many namespaces `live` holds, counted as they are made and removed.
    count: AtomicUsize,
    limit: usize,
}

/// Why no namespace was found for a name.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Unknown {
    /// No namespace has this name, and no pattern takes it.
    NoSuchName,
    /// A pattern takes it, but [`Config::max_dynamic_namespaces`](crate::Config::max_dynamic_namespaces)
    /// are already there.
    TooMany,
}

impl fmt::Display for Unknown {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::NoSuchName => "no such namespace",
            Self::TooMany => "too many dynamic namespaces",
        })
    }
}

impl Dynamic {
    pub(crate) fn new(patterns: Vec<Pattern>, limit: usize) -> Arc<Self> {
        Arc::new(Self {
            patterns,
            live: DashMap::new(),
            count: AtomicUsize::new(0),
            limit,
        })
    }

    /// A namespace made from a pattern, if it exists now.
    pub(crate) fn get(&self, name: &str) -> Option<Arc<NsInner>> {
        self.live.get(name).map(|ns| ns.clone())
    }

    /// The namespaces made from patterns, as they are now.
    pub(crate) fn all(&self) -> Vec<Arc<NsInner>> {
        if self.patterns.is_empty() {
            return Vec::new();
        }
        self.live.iter().map(|ns| ns.value().clone()).collect()
    }

    /// The namespace `name` for a connection: the existing one, or one made from the first
    /// pattern that takes the name (within the limit).
    pub(crate) fn lease(self: &Arc<Self>, name: &str) -> Result<Lease, Unknown> {
        if self.patterns.is_empty() {
            return Err(Unknown::NoSuchName);
        }
        // The lease is taken while the entry is locked: the namespace cannot go meanwhile.
        if let Some(ns) = self.live.get(name) {
            return Ok(Lease::take(&ns));
        }
        let valid = name.len() <= MAX_NAME_LEN && name.starts_with('/') && !name.contains(',');
        if !valid || name.chars().any(char::is_control) {
            return Err(Unknown::NoSuchName);
        }
        let (pattern, params) = (self.patterns.iter())
            .find_map(|p| Some((p, p.matcher.matches(name)?)))
            .ok_or(Unknown::NoSuchName)?;
        match self.live.entry(Arc::from(name)) {
            Entry::Occupied(ns) => Ok(Lease::take(ns.get())),
            Entry::Vacant(slot) => {
                if self.count.fetch_add(1, Ordering::AcqRel) >= self.limit {
                    self.count.fetch_sub(1, Ordering::AcqRel);
                    return Err(Unknown::TooMany);
                }
                let origin = Origin {
                    params,
                    leases: AtomicUsize::new(0),
                    home: Arc::downgrade(self),
                };
                let ns = Arc::new(NsInner::made(name, pattern.routes.clone(), origin));
                tracing::debug!(namespace = %name, "dynamic namespace made");
                Ok(Lease::take(&slot.insert(ns)))
            }
        }
    }

    /// Removes `ns` if no lease is left on it (and it is still the one under its name).
    fn release(&self, ns: &Arc<NsInner>) {
        let idle = |_: &Arc<str>, kept: &Arc<NsInner>| {
            Arc::ptr_eq(kept, ns)
                && kept
                    .origin
                    .as_ref()
                    .is_some_and(|o| o.leases.load(Ordering::Acquire) == 0)
        };
        if self.live.remove_if(&ns.name, idle).is_some() {
            self.count.fetch_sub(1, Ordering::AcqRel);
            tracing::debug!(namespace = %ns.name, "dynamic namespace removed: its last connection left");
        }
    }
}

/// A connection's hold on its namespace: a dynamic namespace stays while one is held. For a
/// fixed namespace it is the namespace and nothing more.
pub(crate) struct Lease(Arc<NsInner>);

impl Lease {
    /// A fixed namespace.
    pub(crate) fn fixed(ns: Arc<NsInner>) -> Self {
        Self(ns)
    }

    /// Takes a lease on a dynamic namespace; the caller holds its entry in the map.
    fn take(ns: &Arc<NsInner>) -> Self {
        if let Some(origin) = &ns.origin {
            origin.leases.fetch_add(1, Ordering::AcqRel);
        }
        Self(ns.clone())
    }
}

impl Deref for Lease {
    type Target = Arc<NsInner>;

    fn deref(&self) -> &Arc<NsInner> {
        &self.0
    }
}

impl Drop for Lease {
    fn drop(&mut self) {
        let Some(origin) = &self.0.origin else { return };
        if origin.leases.fetch_sub(1, Ordering::AcqRel) == 1 {
            if let Some(home) = origin.home.upgrade() {
                home.release(&self.0);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn params(template: &str, name: &str) -> Option<Vec<(String, String)>> {
        let matcher = Matcher::template(template).expect("a valid template");
        let found = matcher.matches(name)?;
        Some(found.into_iter().map(|(k, v)| (k.to_string(), v.into())).collect())
    }

    #[test]
    fn templates_match_non_empty_runs_without_slashes() {
        assert_eq!(
            params("/tenant-{id}", "/tenant-7"),
            Some(vec![("id".into(), "7".into())])
        );
        assert_eq!(params("/tenant-{id}", "/tenant-"), None);
        assert_eq!(params("/{a}-x", "/-x"), None);
        assert_eq!(params("/tenant-{id}", "/tenant-7/x"), None);
        assert_eq!(params("/tenant-{id}", "/other-7"), None);
        assert_eq!(
            params("/org/{org}/team-{team}", "/org/acme/team-é9"),
            Some(vec![("org".into(), "acme".into()), ("team".into(), "é9".into())])
        );
        assert_eq!(
            params("/{a}-{b}", "/x-y-z"),
            Some(vec![("a".into(), "x".into()), ("b".into(), "y-z".into())])
        );
    }

    #[test]
    fn bad_templates_are_refused() {
        for bad in ["tenant-{id}", "/tenant-{id", "/tenant-{}", "/{a}{b}", "/x}", "/fixed"] {
            assert!(Matcher::template(bad).is_err(), "{bad}");
        }
    }
}
