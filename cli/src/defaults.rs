//! Client defaults from a config file: `$DLOG_CONFIG`, else
//! `$XDG_CONFIG_HOME/dlog/config.toml`, else `~/.config/dlog/config.toml`.
//!
//! ```toml
//! cluster = "~/clusters/prod/client.toml"   # as --cluster / DLOG_CLUSTER
//! trust = "~/clusters/prod/trust.toml"      # as --trust / DLOG_TRUST
//! dir = "/var/lib/dlog"                     # as --dir / DLOG_DIR
//! ```
//!
//! Flags override the environment, which overrides the file: the file's
//! values are handed to clap as the environment variables it already reads,
//! and only where the environment does not set them. Relative paths are
//! relative to the file's directory; `~/` is the home directory.

use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};
use serde::Deserialize;

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct Defaults {
    cluster: Option<PathBuf>,
    trust: Option<PathBuf>,
    dir: Option<PathBuf>,
}

/// Where the defaults file is looked for (it need not exist), and whether
/// it was named explicitly (`DLOG_CONFIG`: then it must exist).
pub fn location() -> Option<(PathBuf, bool)> {
    if let Some(p) = std::env::var_os("DLOG_CONFIG") {
        return Some((PathBuf::from(p), true));
    }
    let base = std::env::var_os("XDG_CONFIG_HOME")
        .map(PathBuf::from)
        .filter(|p| p.is_absolute())
        .or_else(|| home().map(|h| h.join(".config")))?;
    Some((base.join("dlog").join("config.toml"), false))
}

fn home() -> Option<PathBuf> {
    std::env::var_os("HOME")
        .map(PathBuf::from)
        .filter(|p| p.is_absolute())
}

fn expand(base: &Path, p: &Path) -> PathBuf {
    if let (Ok(rest), Some(h)) = (p.strip_prefix("~"), home()) {
        return h.join(rest);
    }
    if p.is_absolute() {
        p.to_path_buf()
    } else {
        base.join(p)
    }
}

/// Reads the defaults file, if there is one, and sets `DLOG_CLUSTER`,
/// `DLOG_TRUST` and `DLOG_DIR` from it where the environment does not.
/// Must run before any thread is started (it sets environment variables).
pub fn apply() -> Result<()> {
    let Some((file, explicit)) = location() else {
        return Ok(());
    };
    let text = match std::fs::read_to_string(&file) {
        Ok(t) => t,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound && !explicit => return Ok(()),
        Err(e) => bail!("defaults file {}: {e}", file.display()),
    };
    let d: Defaults =
        toml::from_str(&text).with_context(|| format!("defaults file {}", file.display()))?;
    let base = file.parent().unwrap_or(Path::new("."));
    for (var, value) in [
        ("DLOG_CLUSTER", d.cluster),
        ("DLOG_TRUST", d.trust),
        ("DLOG_DIR", d.dir),
    ] {
        if let Some(v) = value {
            if std::env::var_os(var).is_none() {
                std::env::set_var(var, expand(base, &v));
            }
        }
    }
    Ok(())
}
