//! The recipe of the `tiny` image (`images/tiny/recipe.toml`).

use std::collections::BTreeMap;

use serde::Deserialize;

/// What `images/tiny/recipe.toml` says.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TinyRecipe {
    /// Kernel metapackage whose dependency is the real kernel package.
    pub kernel_package: String,
    /// Packages unpacked into the root disk.
    pub packages: Vec<String>,
    /// Single files taken from packages that are otherwise left out: package → paths inside it
    /// (relative), copied to the same paths in the root disk.
    #[serde(default)]
    pub files_from: BTreeMap<String, Vec<String>>,
    /// ext4 root disk size, MiB.
    pub disk_size_mib: u64,
    /// Kernel command line.
    pub append: String,
    /// Default memory per node, MiB.
    pub memory_mib: u64,
    /// Default vCPUs per node.
    pub cpus: u32,
}

/// A recipe that does not parse, with the file and field concerned.
#[derive(Debug, thiserror::Error)]
#[error("{file}: {message}")]
pub struct RecipeError {
    file: String,
    message: String,
}

impl TinyRecipe {
    /// Parses the recipe text; `file` names it in errors.
    pub fn parse(file: &str, text: &str) -> Result<TinyRecipe, RecipeError> {
        let r: TinyRecipe = toml::from_str(text).map_err(|e| RecipeError { file: file.into(), message: e.to_string() })?;
        let err = |message: String| Err(RecipeError { file: file.into(), message });
        if r.packages.is_empty() || r.disk_size_mib < 16 {
            return err("packages must not be empty and disk_size_mib ≥ 16".into());
        }
        for (package, paths) in &r.files_from {
            let debian_name = |c: char| c.is_ascii_lowercase() || c.is_ascii_digit() || "+-.".contains(c);
            if !package.starts_with(|c: char| c.is_ascii_alphanumeric()) || !package.chars().all(debian_name) {
                return err(format!("files_from.{package}: not a Debian package name"));
            }
            if r.packages.contains(package) {
                return err(format!("files_from.{package}: the package is already unpacked whole (it is in `packages`)"));
            }
            if paths.is_empty() {
                return err(format!("files_from.{package}: no paths given"));
            }
            if let Some(bad) = paths.iter().find(|p| !is_plain_relative(p)) {
                return err(format!("files_from.{package}: {bad:?} must be a relative path without `..` or `.` components"));
            }
        }
        Ok(r)
    }
}

/// `usr/bin/scp`: relative, and every component a plain name.
fn is_plain_relative(path: &str) -> bool {
    !path.is_empty() && path.split('/').all(|c| !c.is_empty() && c != "." && c != "..")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shipped_recipe_parses() {
        let r = TinyRecipe::parse("recipe.toml", include_str!("../../images/tiny/recipe.toml")).unwrap();
        assert!(r.packages.iter().any(|p| p == "busybox-static"));
        assert!(r.append.contains("console=ttyS0"));
        // What OpenSSH's scp needs on the remote side: sftp-server (SFTP) and scp (`scp -O`).
        assert!(r.packages.iter().any(|p| p == "openssh-sftp-server"));
        assert_eq!(r.files_from["openssh-client"], ["usr/bin/scp"]);
    }

    #[test]
    fn files_from_refuses_bad_package_names_and_paths() {
        let base = "kernel_package='k'\npackages=['a']\ndisk_size_mib=64\nappend=''\nmemory_mib=1\ncpus=1\n";
        for bad in ["'/usr/bin/scp'", "'usr/../etc/shadow'", "'usr//bin'", "''"] {
            let text = format!("{base}files_from = {{ b = [{bad}] }}\n");
            let err = TinyRecipe::parse("recipe.toml", &text).unwrap_err().to_string();
            assert!(err.contains("files_from.b"), "{bad}: {err}");
        }
        let err = TinyRecipe::parse("recipe.toml", &format!("{base}files_from = {{ a = ['x'] }}\n")).unwrap_err().to_string();
        assert!(err.contains("already unpacked whole"), "{err}");
        let err = TinyRecipe::parse("recipe.toml", &format!("{base}files_from = {{ \"../b\" = ['x'] }}\n")).unwrap_err().to_string();
        assert!(err.contains("not a Debian package name"), "{err}");
        let err = TinyRecipe::parse("recipe.toml", &format!("{base}files_from = {{ b = [] }}\n")).unwrap_err().to_string();
        assert!(err.contains("no paths"), "{err}");
        let ok = TinyRecipe::parse("recipe.toml", &format!("{base}files_from = {{ b = ['usr/bin/x'] }}\n")).unwrap();
        assert_eq!(ok.files_from["b"], ["usr/bin/x"]);
        assert!(TinyRecipe::parse("recipe.toml", base).unwrap().files_from.is_empty());
    }

    #[test]
    fn unknown_field_is_named() {
        let text = "kernel_package='k'\npackages=['a']\ndisk_size_mib=64\nappend=''\nmemory_mib=1\ncpus=1\nsurprise=1\n";
        let err = TinyRecipe::parse("images/tiny/recipe.toml", text).unwrap_err().to_string();
        assert!(err.contains("images/tiny/recipe.toml") && err.contains("surprise"), "{err}");
    }
}
