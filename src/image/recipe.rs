//! The recipe of the `tiny` image (`images/tiny/recipe.toml`).

use serde::Deserialize;

/// What `images/tiny/recipe.toml` says.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TinyRecipe {
    /// Kernel metapackage whose dependency is the real kernel package.
    pub kernel_package: String,
    /// Packages unpacked into the root disk.
    pub packages: Vec<String>,
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
        if r.packages.is_empty() || r.disk_size_mib < 16 {
            return Err(RecipeError { file: file.into(), message: "packages must not be empty and disk_size_mib ≥ 16".into() });
        }
        Ok(r)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shipped_recipe_parses() {
        let r = TinyRecipe::parse("recipe.toml", include_str!("../../images/tiny/recipe.toml")).unwrap();
        assert!(r.packages.iter().any(|p| p == "busybox-static"));
        assert!(r.append.contains("console=ttyS0"));
    }

    #[test]
    fn unknown_field_is_named() {
        let text = "kernel_package='k'\npackages=['a']\ndisk_size_mib=64\nappend=''\nmemory_mib=1\ncpus=1\nsurprise=1\n";
        let err = TinyRecipe::parse("images/tiny/recipe.toml", text).unwrap_err().to_string();
        assert!(err.contains("images/tiny/recipe.toml") && err.contains("surprise"), "{err}");
    }
}
