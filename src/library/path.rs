//! Where a `Cachetta` keeps an entry: a fixed path or a function of the call's arguments, and
//! the seed's automatic cache keys. A path whose name ends in `.json` is one entry; any other
//! path is a folder of entries, one per argument list.

use std::ffi::OsString;
use std::fmt;
use std::os::unix::ffi::{OsStrExt as _, OsStringExt as _};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use serde::Serialize;
use serde_json::Value;

use super::error::Result;
use crate::hash::try_hash;

/// A path computed from the call's positional arguments.
pub(crate) type PathFn = Arc<dyn Fn(&[Value]) -> PathBuf + Send + Sync>;

#[derive(Clone)]
pub(crate) enum PathSpec {
    Fixed(PathBuf),
    Dynamic(PathFn),
}

impl fmt::Debug for PathSpec {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            PathSpec::Fixed(path) => path.fmt(f),
            PathSpec::Dynamic(_) => f.write_str("<path function>"),
        }
    }
}

/// The positional argument list, as `cachetta::hash` reads it: a sequence is the list, `()`
/// is no arguments, anything else is one argument.
pub(crate) fn arg_list<A: Serialize + ?Sized>(args: &A) -> Result<Vec<Value>> {
    Ok(match serde_json::to_value(args)? {
        Value::Array(items) => items,
        Value::Null => Vec::new(),
        single => vec![single],
    })
}

/// Whether `path` names a folder of entries rather than one entry.
pub(crate) fn is_folder(path: &Path) -> bool {
    path.file_name()
        .is_none_or(|name| !name.as_bytes().ends_with(b".json"))
}

/// `dir/name.json` → `dir/name-<digest>.json`.
fn auto_key(entry: &Path, digest: &str) -> PathBuf {
    let name = entry.file_name().unwrap_or_default().as_bytes();
    let stem = &name[..name.len() - ".json".len()];
    let mut keyed = stem.to_vec();
    keyed.extend_from_slice(format!("-{digest}.json").as_bytes());
    entry.with_file_name(OsString::from_vec(keyed))
}

/// Whether `name` is one of the automatic keys of the entry named `base` (`base-<16 hex>.json`).
pub(crate) fn is_auto_key_of(name: &[u8], base: &[u8]) -> bool {
    let Some(stem) = base.strip_suffix(b".json") else {
        return false;
    };
    let Some(rest) = name.strip_prefix(stem) else {
        return false;
    };
    let Some(digest) = rest
        .strip_prefix(b"-")
        .and_then(|r| r.strip_suffix(b".json"))
    else {
        return false;
    };
    digest.len() == 16
        && digest
            .iter()
            .all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'))
}

/// Lexically absolute (no symlink resolution), relative to the current directory now.
pub(crate) fn absolute(path: PathBuf) -> PathBuf {
    std::path::absolute(&path).unwrap_or(path)
}

impl PathSpec {
    pub(crate) fn join(&self, sub: PathBuf) -> PathSpec {
        match self {
            PathSpec::Fixed(base) => PathSpec::Fixed(base.join(sub)),
            PathSpec::Dynamic(f) => {
                let f = f.clone();
                PathSpec::Dynamic(Arc::new(move |args| f(args).join(&sub)))
            }
        }
    }

    pub(crate) fn join_fn(&self, sub: PathFn) -> PathSpec {
        match self {
            PathSpec::Fixed(base) => {
                let base = base.clone();
                PathSpec::Dynamic(Arc::new(move |args| base.join(sub(args))))
            }
            PathSpec::Dynamic(f) => {
                let f = f.clone();
                PathSpec::Dynamic(Arc::new(move |args| f(args).join(sub(args))))
            }
        }
    }

    /// The configured path itself (a folder stays a folder), for `args`.
    pub(crate) fn base<A: Serialize + ?Sized>(&self, args: &A) -> Result<PathBuf> {
        Ok(match self {
            PathSpec::Fixed(path) => path.clone(),
            PathSpec::Dynamic(f) => f(&arg_list(args)?),
        })
    }

    /// The entry file a call with `args` reads and writes, absolute.
    ///
    /// A folder gets `<hash>.json` inside it; a fixed entry path called with arguments gets
    /// the sibling `<stem>-<hash>.json` (the seed's automatic keys); otherwise the path is
    /// used as given.
    pub(crate) fn resolve<A: Serialize + ?Sized>(&self, args: &A) -> Result<PathBuf> {
        let list = arg_list(args)?;
        let base = match self {
            PathSpec::Fixed(path) => path.clone(),
            PathSpec::Dynamic(f) => f(&list),
        };
        let entry = if is_folder(&base) {
            base.join(format!("{}.json", try_hash(args)?))
        } else if matches!(self, PathSpec::Fixed(_)) && !list.is_empty() {
            auto_key(&base, &try_hash(args)?)
        } else {
            base
        };
        Ok(absolute(entry))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::hash::hash;

    fn fixed(p: &str) -> PathSpec {
        PathSpec::Fixed(PathBuf::from(p))
    }

    #[test]
    fn entry_path_without_arguments_is_used_as_given() {
        assert_eq!(
            fixed("/c/x.json").resolve(&()).unwrap(),
            Path::new("/c/x.json")
        );
    }

    #[test]
    fn entry_path_with_arguments_gets_a_hashed_sibling() {
        let digest = hash(&("paris", 3));
        assert_eq!(
            fixed("/c/weather.json").resolve(&("paris", 3)).unwrap(),
            PathBuf::from(format!("/c/weather-{digest}.json"))
        );
    }

    #[test]
    fn folder_path_gets_one_hashed_entry_per_argument_list() {
        let digest = hash(&("paris",));
        assert_eq!(
            fixed("/c/llm").resolve(&("paris",)).unwrap(),
            PathBuf::from(format!("/c/llm/{digest}.json"))
        );
        assert_eq!(
            fixed("/c/llm").resolve(&()).unwrap(),
            PathBuf::from(format!("/c/llm/{}.json", hash(&())))
        );
    }

    #[test]
    fn dynamic_path_sees_the_positional_arguments() {
        let spec = PathSpec::Dynamic(Arc::new(|args: &[Value]| {
            PathBuf::from(format!("/c/{}/{}.json", args[0].as_str().unwrap(), args[1]))
        }));
        assert_eq!(
            spec.resolve(&("fr", 75)).unwrap(),
            Path::new("/c/fr/75.json")
        );
        let single = PathSpec::Dynamic(Arc::new(|args: &[Value]| {
            PathBuf::from(format!("/c/{}.json", args.len()))
        }));
        assert_eq!(single.resolve(&"x").unwrap(), Path::new("/c/1.json"));
        assert_eq!(single.resolve(&()).unwrap(), Path::new("/c/0.json"));
    }

    #[test]
    fn join_composes_with_a_dynamic_path() {
        let spec = PathSpec::Dynamic(Arc::new(|args: &[Value]| {
            PathBuf::from(format!("/c/{}", args[0].as_str().unwrap()))
        }))
        .join(PathBuf::from("x.json"));
        assert_eq!(spec.resolve(&("u",)).unwrap(), Path::new("/c/u/x.json"));
        let by_fn = fixed("/c").join_fn(Arc::new(|args: &[Value]| {
            PathBuf::from(format!("{}.json", args[0].as_str().unwrap()))
        }));
        assert_eq!(by_fn.resolve(&("k",)).unwrap(), Path::new("/c/k.json"));
    }

    #[test]
    fn relative_paths_become_absolute() {
        let resolved = fixed("rel/x.json").resolve(&()).unwrap();
        assert!(resolved.is_absolute());
        assert!(resolved.ends_with("rel/x.json"));
    }

    #[test]
    fn auto_key_names_are_recognised() {
        assert!(is_auto_key_of(b"w-0123456789abcdef.json", b"w.json"));
        assert!(!is_auto_key_of(b"w-0123456789abcdeg.json", b"w.json"));
        assert!(!is_auto_key_of(b"w-x-0123456789abcdef.json", b"w.json"));
        assert!(!is_auto_key_of(b"w.json", b"w.json"));
    }
}
