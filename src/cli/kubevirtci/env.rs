//! kubevirtci's `KUBEVIRT_*` variables read as its `cluster-up` reads them: the defaults of
//! `hack/common.sh`, turned into gocli `run` flags the way `_add_common_params` builds them.
//! Pure, so each variable's effect is a unit test.

use std::collections::BTreeMap;

/// The environment, by name.
pub type Env = BTreeMap<String, String>;

/// A variable cluster-up needs and does not have.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum EnvError {
    /// Neither a tag nor a suffix: gocli would not know which image to run.
    #[error("KUBEVIRTCI_TAG is not set: kvci pulls quay.io/kubevirtci/<provider>:<KUBEVIRTCI_TAG> (kubevirt's hack/config-kubevirtci.sh sets it)")]
    NoTag,
    /// A provider kvci does not run.
    #[error("KUBEVIRT_PROVIDER={0}: kvci runs kubevirtci's VM providers (k8s-1.NN); kind, k3d and external clusters are not VMs it can start")]
    Provider(String),
    /// NFS asked for without its directory (kubevirtci refuses it the same way).
    #[error("KUBEVIRT_DEPLOY_NFS_CSI=true needs KUBEVIRT_NFS_DIR")]
    NfsDir,
}

/// `hack/common.sh`'s defaults, applied where the variable is unset.
const DEFAULTS: &[(&str, &str)] = &[
    ("KUBEVIRT_PROVIDER", "k8s-1.36"),
    ("KUBEVIRT_NUM_NODES", "1"),
    ("KUBEVIRT_NUM_NUMA_NODES", "1"),
    ("KUBEVIRT_NUM_VCPU", "6"),
    ("KUBEVIRT_MEMORY_SIZE", "5120M"),
    ("KUBEVIRT_NUM_SECONDARY_NICS", "0"),
    ("KUBEVIRT_DNS_HOST_PORT", "31111"),
    ("KUBEVIRT_FLANNEL", "true"),
    ("KUBEVIRT_CGROUPV2", "true"),
];

/// The value of `name`, or its cluster-up default.
pub fn get<'a>(env: &'a Env, name: &str) -> Option<&'a str> {
    env.get(name).map(String::as_str).or_else(|| DEFAULTS.iter().find(|(n, _)| *n == name).map(|(_, v)| *v))
}

/// Appends `words` when `cond` holds.
fn push_if(args: &mut Vec<String>, cond: bool, words: &[&str]) {
    if cond {
        args.extend(words.iter().map(|w| w.to_string()));
    }
}

fn is_true(env: &Env, name: &str) -> bool {
    get(env, name) == Some("true")
}

fn non_empty<'a>(env: &'a Env, name: &str) -> Option<&'a str> {
    get(env, name).filter(|v| !v.is_empty())
}

/// The provider, checked to be one kvci can run.
pub fn provider(env: &Env) -> Result<String, EnvError> {
    let p = get(env, "KUBEVIRT_PROVIDER").unwrap_or_default().to_string();
    if p.starts_with("k8s-") {
        Ok(p)
    } else {
        Err(EnvError::Provider(p))
    }
}

/// gocli `run` arguments for this environment, in the order `_add_common_params` puts them
/// (flags it prepends come first), ending with the provider and `KUBEVIRT_PROVIDER_EXTRA_ARGS`
/// split as the shell would.
pub fn gocli_run_args(env: &Env) -> Result<Vec<String>, EnvError> {
    let provider = provider(env)?;
    if non_empty(env, "KUBEVIRTCI_TAG").is_none() && non_empty(env, "KUBEVIRTCI_CONTAINER_SUFFIX").is_none() {
        return Err(EnvError::NoTag);
    }
    let mut pre: Vec<String> = Vec::new();
    push_if(&mut pre, true, &["--dns-port", get(env, "KUBEVIRT_DNS_HOST_PORT").unwrap_or("31111")]);
    push_if(&mut pre, is_true(env, "KUBEVIRT_SECONDARY_NIC_BRIDGES"), &["--enable-secondary-nic-bridges"]);
    if let Some(r) = non_empty(env, "KUBEVIRTCI_CONTAINER_REGISTRY") {
        pre.push(format!("--container-registry={r}"));
    }
    if let Some(o) = non_empty(env, "KUBEVIRTCI_CONTAINER_ORG") {
        pre.push(format!("--container-org={o}"));
    }
    let suffix = non_empty(env, "KUBEVIRTCI_CONTAINER_SUFFIX").map(str::to_string).or_else(|| non_empty(env, "KUBEVIRTCI_TAG").map(str::to_string));
    if let Some(s) = suffix {
        pre.push(format!("--container-suffix=:{s}"));
    }
    push_if(&mut pre, is_true(env, "KUBEVIRT_SLIM"), &["--slim"]);
    push_if(&mut pre, is_true(env, "KUBEVIRT_WITH_ETC_IN_MEMORY"), &["--run-etcd-on-memory"]);
    push_if(&mut pre, is_true(env, "KUBEVIRT_DEPLOY_ISTIO"), &["--enable-istio"]);
    push_if(&mut pre, is_true(env, "KUBEVIRT_PSA"), &["--enable-psa"]);
    push_if(&mut pre, is_true(env, "KUBEVIRT_SINGLE_STACK"), &["--single-stack"]);
    push_if(&mut pre, is_true(env, "KUBEVIRT_FLANNEL"), &["--flannel"]);
    push_if(&mut pre, is_true(env, "KUBEVIRT_NO_ETCD_FSYNC"), &["--no-etcd-fsync"]);
    push_if(&mut pre, is_true(env, "KUBEVIRT_ENABLE_AUDIT"), &["--enable-audit"]);
    push_if(&mut pre, is_true(env, "KUBVIRT_WITH_CNAO_SKIP_CONFIG"), &["--skip-cnao-cr"]);
    if is_true(env, "KUBEVIRT_DEPLOY_NFS_CSI") {
        let dir = non_empty(env, "KUBEVIRT_NFS_DIR").ok_or(EnvError::NfsDir)?;
        pre.extend(["--enable-nfs-csi".to_string(), "--nfs-data".to_string(), dir.to_string()]);
    }
    let extra = get(env, "KUBEVIRT_PROVIDER_EXTRA_ARGS").unwrap_or_default();
    push_if(&mut pre, get(env, "KUBEVIRT_STORAGE") == Some("rook-ceph-default") && !extra.contains("--enable-ceph"), &["--enable-ceph"]);
    if is_true(env, "KUBEVIRT_DEPLOY_PROMETHEUS") && !extra.contains("--enable-prometheus") {
        push_if(&mut pre, true, &["--enable-prometheus"]);
        push_if(&mut pre, is_true(env, "KUBEVIRT_DEPLOY_PROMETHEUS_ALERTMANAGER"), &["--enable-prometheus-alertmanager"]);
        push_if(&mut pre, is_true(env, "KUBEVIRT_DEPLOY_GRAFANA"), &["--enable-grafana"]);
    }
    for (var, gocli) in [("KUBEVIRT_HUGEPAGES_2M", "--hugepages-2m"), ("KUBEVIRT_HUGEPAGES_1G", "--hugepages-1g")] {
        if let Some(v) = non_empty(env, var) {
            push_if(&mut pre, true, &[gocli, v]);
        }
    }
    push_if(&mut pre, non_empty(env, "KUBEVIRT_REALTIME_SCHEDULER").is_some(), &["--enable-realtime-scheduler"]);
    push_if(&mut pre, non_empty(env, "KUBEVIRT_FIPS").is_some(), &["--enable-fips"]);
    push_if(&mut pre, is_true(env, "KUBEVIRT_WITH_MULTUS_V3") || is_true(env, "KUBEVIRT_WITH_MULTUS"), &["--deploy-multus"]);
    push_if(&mut pre, is_true(env, "KUBEVIRT_WITH_CNAO"), &["--enable-cnao"]);
    push_if(&mut pre, is_true(env, "KUBEVIRT_WITH_DYN_NET_CTRL"), &["--deploy-dnc"]);
    push_if(&mut pre, is_true(env, "KUBEVIRT_DEPLOY_CDI"), &["--deploy-cdi"]);
    push_if(&mut pre, is_true(env, "KUBEVIRT_DEPLOY_AAQ"), &["--deploy-aaq"]);
    push_if(&mut pre, is_true(env, "KUBEVIRT_KSM_ON"), &["--enable-ksm"]);
    push_if(&mut pre, is_true(env, "KUBEVIRT_SWAP_ON"), &["--enable-swap"]);
    push_if(&mut pre, is_true(env, "KUBEVIRT_DEPLOY_NETWORK_RESOURCES_INJECTOR"), &["--deploy-network-resources-injector"]);
    for (var, gocli) in [
        ("KUBEVIRT_CUSTOM_CDI_VERSION", "--cdi-version"),
        ("KUBEVIRT_CUSTOM_AAQ_VERSION", "--aaq-version"),
        ("KUBEVIRT_KSM_SLEEP_BETWEEN_SCANS_MS", "--ksm-scan-interval"),
        ("KUBEVIRT_KSM_PAGES_TO_SCAN", "--ksm-page-count"),
        ("KUBEVIRT_SWAP_SIZE_IN_GB", "--swap-size"),
        ("KUBEVIRT_SWAPPINESS", "--swapiness"),
        ("KUBEVIRT_SWAP_BEHAVIOR", "--swap-behavior"),
        ("KUBEVIRT_VSOCK_CHILD_NS_MODE", "--vsock-child-ns-mode"),
        ("KUBEVIRTCI_PROXY", "--docker-proxy"),
        ("KUBEVIRT_TOPOLOGY_MANAGER_POLICY", "--topology-manager-policy"),
        ("KUBEVIRT_RESERVED_SYSTEM_CPUS", "--reserved-system-cpus"),
    ] {
        if let Some(v) = non_empty(env, var) {
            pre.push(format!("{gocli}={v}"));
        }
    }
    // The provider script adds the cgroup v1 kernel argument when asked (k8s-1.NN/provider.sh).
    let mut extra_words = shlex::split(extra).unwrap_or_else(|| extra.split_whitespace().map(str::to_string).collect());
    if get(env, "KUBEVIRT_CGROUPV2") == Some("false") {
        extra_words.push("--kernel-args=systemd.unified_cgroup_hierarchy=0".into());
    }
    let words = |name: &str| get(env, name).unwrap_or_default().to_string();
    pre.extend([
        "--nodes".into(),
        words("KUBEVIRT_NUM_NODES"),
        "--memory".into(),
        words("KUBEVIRT_MEMORY_SIZE"),
        "--numa".into(),
        words("KUBEVIRT_NUM_NUMA_NODES"),
        "--cpu".into(),
        words("KUBEVIRT_NUM_VCPU"),
        "--secondary-nics".into(),
        words("KUBEVIRT_NUM_SECONDARY_NICS"),
        "--random-ports".into(),
        "--background".into(),
        "--prefix".into(),
        provider.clone(),
        provider,
    ]);
    pre.extend(extra_words);
    Ok(pre)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn env(pairs: &[(&str, &str)]) -> Env {
        pairs.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect()
    }

    #[test]
    fn defaults_are_cluster_ups() {
        let args = gocli_run_args(&env(&[("KUBEVIRTCI_TAG", "2512010712-abc")])).unwrap().join(" ");
        assert_eq!(
            args,
            "--dns-port 31111 --container-suffix=:2512010712-abc --flannel --nodes 1 --memory 5120M --numa 1 --cpu 6 \
             --secondary-nics 0 --random-ports --background --prefix k8s-1.36 k8s-1.36"
        );
    }

    #[test]
    fn shape_variables_become_gocli_flags() {
        let e = env(&[
            ("KUBEVIRTCI_TAG", "t"),
            ("KUBEVIRT_PROVIDER", "k8s-1.34"),
            ("KUBEVIRT_NUM_NODES", "2"),
            ("KUBEVIRT_MEMORY_SIZE", "1G"),
            ("KUBEVIRT_NUM_VCPU", "2"),
            ("KUBEVIRT_NUM_NUMA_NODES", "2"),
            ("KUBEVIRT_NUM_SECONDARY_NICS", "1"),
            ("KUBEVIRT_HUGEPAGES_2M", "16"),
            ("KUBEVIRT_HUGEPAGES_1G", "1"),
            ("KUBEVIRT_SINGLE_STACK", "true"),
            ("KUBEVIRT_PROVIDER_EXTRA_ARGS", "--nvme 1G --qemu-args '-device virtio-balloon' --ocp-port 8443"),
            ("KUBEVIRT_DNS_HOST_PORT", "40000"),
            ("KUBEVIRTCI_CONTAINER_REGISTRY", "127.0.0.1:5000"),
        ]);
        let args = gocli_run_args(&e).unwrap();
        let joined = args.join(" ");
        assert!(joined.starts_with("--dns-port 40000 --container-registry=127.0.0.1:5000 --container-suffix=:t --single-stack --flannel"), "{joined}");
        assert!(joined.contains("--hugepages-2m 16 --hugepages-1g 1"), "{joined}");
        assert!(joined.contains("--nodes 2 --memory 1G --numa 2 --cpu 2 --secondary-nics 1"), "{joined}");
        assert_eq!(args[args.len() - 7..], ["k8s-1.34", "--nvme", "1G", "--qemu-args", "-device virtio-balloon", "--ocp-port", "8443"]);
    }

    #[test]
    fn add_on_variables_become_their_flags() {
        let e = env(&[
            ("KUBEVIRTCI_TAG", "t"),
            ("KUBEVIRT_DEPLOY_CDI", "true"),
            ("KUBEVIRT_WITH_MULTUS", "true"),
            ("KUBEVIRT_DEPLOY_PROMETHEUS", "true"),
            ("KUBEVIRT_DEPLOY_GRAFANA", "true"),
            ("KUBEVIRT_CUSTOM_CDI_VERSION", "v1.60.0"),
            ("KUBEVIRT_CGROUPV2", "false"),
        ]);
        let joined = gocli_run_args(&e).unwrap().join(" ");
        for f in ["--deploy-cdi", "--deploy-multus", "--enable-prometheus", "--enable-grafana", "--cdi-version=v1.60.0"] {
            assert!(joined.contains(f), "{f} missing: {joined}");
        }
        assert!(joined.ends_with("--kernel-args=systemd.unified_cgroup_hierarchy=0"), "{joined}");
    }

    #[test]
    fn missing_tag_and_foreign_providers_are_refused_with_what_to_set() {
        assert_eq!(gocli_run_args(&env(&[])), Err(EnvError::NoTag));
        assert!(EnvError::NoTag.to_string().contains("KUBEVIRTCI_TAG"));
        let kind = env(&[("KUBEVIRTCI_TAG", "t"), ("KUBEVIRT_PROVIDER", "kind-1.34")]);
        assert_eq!(gocli_run_args(&kind), Err(EnvError::Provider("kind-1.34".into())));
        let nfs = env(&[("KUBEVIRTCI_TAG", "t"), ("KUBEVIRT_DEPLOY_NFS_CSI", "true")]);
        assert_eq!(gocli_run_args(&nfs), Err(EnvError::NfsDir));
    }
}
