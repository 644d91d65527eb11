//! The files kubevirtci's `up.sh` leaves in `$KUBEVIRTCI_CONFIG_PATH/<provider>/` for kubevirt's
//! scripts: `.kubeconfig` (node01's admin.conf aimed at the forwarded API port),
//! `.kubectl` (node01's own kubectl) and `config-provider-<provider>.sh`.

use std::io::Write;
use std::os::unix::fs::PermissionsExt;
use std::path::Path;

use anyhow::{bail, Context, Result};

use crate::paths::Dirs;

use super::super::{run_words, status};

/// node01's admin.conf as `up.sh` leaves it after `kubectl config set-cluster kubernetes
/// --server=https://127.0.0.1:PORT --insecure-skip-tls-verify=true`: the server rewritten, TLS
/// verification off, and the certificate authority dropped (kubectl clears it when insecure is
/// set; the API certificate does not name 127.0.0.1).
pub fn gocli_kubeconfig(admin: &str, port: u16) -> String {
    let mut out = String::with_capacity(admin.len());
    for line in admin.lines() {
        let trimmed = line.trim_start();
        let indent = &line[..line.len() - trimmed.len()];
        if trimmed.starts_with("certificate-authority-data:")
            || trimmed.starts_with("certificate-authority:")
            || trimmed.starts_with("insecure-skip-tls-verify:")
        {
            continue;
        }
        if trimmed.starts_with("server:") {
            out.push_str(&format!("{indent}insecure-skip-tls-verify: true\n{indent}server: https://127.0.0.1:{port}\n"));
            continue;
        }
        out.push_str(line);
        out.push('\n');
    }
    out
}

/// `config-provider-<provider>.sh`, with the keys and spelling of kubevirtci's `prepare_config`.
pub fn provider_config(base: &Path, provider: &str, registry_port: u16) -> String {
    let base = base.display();
    format!(
        "master_ip=127.0.0.1\n\
         kubeconfig={base}/{provider}/.kubeconfig\n\
         kubectl={base}/{provider}/.kubectl\n\
         gocli={base}/../cluster-up/cli.sh\n\
         docker_prefix=${{DOCKER_PREFIX:-localhost:{registry_port}/kubevirt}}\n\
         manifest_docker_prefix=${{DOCKER_PREFIX:-registry:5000/kubevirt}}\n"
    )
}

/// Writes `bytes` to `path` through a temporary file beside it (mode `mode`), so a reader never
/// sees half a file.
fn write_atomic(path: &Path, bytes: &[u8], mode: u32) -> Result<()> {
    let dir = path.parent().context("a config file has a directory")?;
    let mut tmp = tempfile::Builder::new().prefix(".kvci-").tempfile_in(dir).with_context(|| format!("writing in {}", dir.display()))?;
    tmp.write_all(bytes)?;
    tmp.as_file().set_permissions(std::fs::Permissions::from_mode(mode))?;
    tmp.persist(path).with_context(|| format!("writing {}", path.display()))?;
    Ok(())
}

/// Copies `remote` from node01 of `cluster` and returns its bytes.
fn fetch(dirs: &Dirs, cluster: &str, remote: &str, scratch: &Path) -> Result<Vec<u8>> {
    let local = scratch.join(remote.rsplit('/').next().unwrap_or("file"));
    let words: Vec<String> = ["vm", "scp", "--name", cluster, &format!("node01:{remote}"), &local.to_string_lossy()].map(String::from).to_vec();
    if run_words(dirs, &words)? != std::process::ExitCode::SUCCESS {
        bail!("copying node01:{remote} failed");
    }
    Ok(std::fs::read(&local)?)
}

/// Writes the three files for `provider` (cluster `cluster`) under `base/<provider>/`.
pub fn write(dirs: &Dirs, cluster: &str, base: &Path, provider: &str) -> Result<()> {
    let dir = base.join(provider);
    std::fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
    let s = status::query(dirs, cluster)?;
    let port = |name: &str| s.ports.iter().find(|p| p.name == name).map(|p| p.host_port).with_context(|| format!("cluster {cluster:?} has no {name} port"));
    let (k8s, registry) = (port("k8s")?, port("registry")?);
    let scratch = tempfile::tempdir()?;
    let admin = fetch(dirs, cluster, "/etc/kubernetes/admin.conf", scratch.path()).context("node01 has no admin kubeconfig yet")?;
    let admin = String::from_utf8(admin).context("node01's admin.conf is not UTF-8")?;
    write_atomic(&dir.join(".kubeconfig"), gocli_kubeconfig(&admin, k8s).as_bytes(), 0o600)?;
    let kubectl = fetch(dirs, cluster, "/usr/bin/kubectl", scratch.path())?;
    write_atomic(&dir.join(".kubectl"), &kubectl, 0o755)?;
    let config = dir.join(format!("config-provider-{provider}.sh"));
    write_atomic(&config, provider_config(base, provider, registry).as_bytes(), 0o644)?;
    eprintln!("kvci: wrote {0}/.kubeconfig, {0}/.kubectl and {1}", dir.display(), config.display());
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kubeconfig_is_aimed_at_the_host_port_without_tls_checks() {
        let admin = "apiVersion: v1\nclusters:\n- cluster:\n    certificate-authority-data: AAAA\n    server: https://192.168.66.101:6443\n  name: kubernetes\n\
                     users:\n- name: kubernetes-admin\n  user:\n    client-certificate-data: BBBB\n";
        let out = gocli_kubeconfig(admin, 40123);
        assert_eq!(
            out,
            "apiVersion: v1\nclusters:\n- cluster:\n    insecure-skip-tls-verify: true\n    server: https://127.0.0.1:40123\n  name: kubernetes\n\
             users:\n- name: kubernetes-admin\n  user:\n    client-certificate-data: BBBB\n"
        );
        assert_eq!(gocli_kubeconfig(&out, 40123), out, "rewriting twice changes nothing");
    }

    #[test]
    fn provider_config_has_kubevirtcis_keys() {
        let text = provider_config(Path::new("/src/kubevirt/kubevirtci/_ci-configs"), "k8s-1.34", 33001);
        assert_eq!(
            text,
            "master_ip=127.0.0.1\n\
             kubeconfig=/src/kubevirt/kubevirtci/_ci-configs/k8s-1.34/.kubeconfig\n\
             kubectl=/src/kubevirt/kubevirtci/_ci-configs/k8s-1.34/.kubectl\n\
             gocli=/src/kubevirt/kubevirtci/_ci-configs/../cluster-up/cli.sh\n\
             docker_prefix=${DOCKER_PREFIX:-localhost:33001/kubevirt}\n\
             manifest_docker_prefix=${DOCKER_PREFIX:-registry:5000/kubevirt}\n"
        );
    }
}
