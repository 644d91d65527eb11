//! The admin kubeconfig of a Kubernetes provider, rewritten to reach the API server through the
//! cluster's forwarded `k8s` port on the host.

/// Points every `server:` line at `https://127.0.0.1:<port>`, keeping the rest byte for byte.
/// The API certificate names 127.0.0.1 (the k8s provider's `init.sh` adds it).
pub fn rewrite_server(kubeconfig: &str, port: u16) -> String {
    kubeconfig
        .lines()
        .map(|line| {
            let trimmed = line.trim_start();
            if trimmed.starts_with("server:") {
                let indent = &line[..line.len() - trimmed.len()];
                format!("{indent}server: https://127.0.0.1:{port}")
            } else {
                line.to_string()
            }
        })
        .collect::<Vec<_>>()
        .join("\n")
        + if kubeconfig.ends_with('\n') { "\n" } else { "" }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn server_points_at_the_forwarded_port() {
        let admin = "apiVersion: v1\nclusters:\n- cluster:\n    certificate-authority-data: AAA\n    server: https://192.168.66.101:6443\n  name: kubernetes\n";
        let out = rewrite_server(admin, 40123);
        assert_eq!(out, admin.replace("https://192.168.66.101:6443", "https://127.0.0.1:40123"));
    }
}
