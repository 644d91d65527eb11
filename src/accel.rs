//! Choosing the accelerator: KVM only where it can really run guests, TCG otherwise, and why.
//!
//! `/dev/kvm` answering is not enough: on nested or emulated hosts it can be a software backend
//! that crashes real guests, so `-accel kvm -accel tcg` would not fall back. kvci also requires
//! the CPU to advertise hardware virtualisation (vmx or svm).

use std::fmt;

use serde::{Deserialize, Serialize};

/// What the user asked for (`--accel`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, clap::ValueEnum, Default)]
#[serde(rename_all = "lowercase")]
pub enum AccelChoice {
    /// KVM when usable, else TCG.
    #[default]
    Auto,
    /// KVM or an error.
    Kvm,
    /// Software emulation.
    Tcg,
}

/// The accelerator a node runs on.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Accel {
    /// Hardware virtualisation.
    Kvm,
    /// QEMU's tiny code generator.
    Tcg,
}

impl fmt::Display for Accel {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Accel::Kvm => "kvm",
            Accel::Tcg => "tcg",
        })
    }
}

/// The accelerator picked and the reason, shown to the user.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Decision {
    /// Picked accelerator.
    pub accel: Accel,
    /// Why, in words.
    pub reason: String,
}

/// What the host tells about KVM.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KvmFacts {
    /// `Ok` when `/dev/kvm` opens read-write, else the reason it does not.
    pub dev_kvm: Result<(), String>,
    /// The CPU flags include `vmx` or `svm`.
    pub cpu_has_virt: bool,
}

/// `--accel kvm` where KVM cannot run guests.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[error("--accel kvm was asked for, but KVM cannot run guests here: {0}. Use --accel tcg (slow) or --accel auto")]
pub struct KvmUnusable(pub String);

impl KvmFacts {
    /// Looks at `/dev/kvm` and `/proc/cpuinfo`.
    pub fn probe() -> KvmFacts {
        let dev_kvm = std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .open("/dev/kvm")
            .map(drop)
            .map_err(|e| match e.kind() {
                std::io::ErrorKind::NotFound => "/dev/kvm does not exist (no KVM module loaded)".to_string(),
                std::io::ErrorKind::PermissionDenied => {
                    "/dev/kvm is not accessible to this user (add yourself to the `kvm` group)".to_string()
                }
                _ => format!("/dev/kvm cannot be opened: {e}"),
            });
        let cpuinfo = std::fs::read_to_string("/proc/cpuinfo").unwrap_or_default();
        KvmFacts { dev_kvm, cpu_has_virt: cpu_flags_have_virt(&cpuinfo) }
    }

    /// Why KVM cannot be used, or `None` when it can.
    fn obstacle(&self) -> Option<String> {
        match (&self.dev_kvm, self.cpu_has_virt) {
            (Err(e), _) => Some(e.clone()),
            (Ok(()), false) => Some(
                "/dev/kvm answers but the CPU has no vmx/svm flag, so it is a software KVM backend \
                 that cannot run real guests"
                    .to_string(),
            ),
            (Ok(()), true) => None,
        }
    }
}

fn cpu_flags_have_virt(cpuinfo: &str) -> bool {
    cpuinfo
        .lines()
        .filter(|l| l.starts_with("flags"))
        .flat_map(|l| l.split_whitespace())
        .any(|f| f == "vmx" || f == "svm")
}

/// Applies the user's choice to the host's facts.
pub fn decide(choice: AccelChoice, facts: &KvmFacts) -> Result<Decision, KvmUnusable> {
    match (choice, facts.obstacle()) {
        (AccelChoice::Tcg, _) => Ok(Decision { accel: Accel::Tcg, reason: "--accel tcg was asked for".into() }),
        (AccelChoice::Kvm, Some(why)) => Err(KvmUnusable(why)),
        (AccelChoice::Kvm, None) => Ok(Decision { accel: Accel::Kvm, reason: "--accel kvm was asked for".into() }),
        (AccelChoice::Auto, None) => Ok(Decision {
            accel: Accel::Kvm,
            reason: "/dev/kvm is usable and the CPU has hardware virtualisation".into(),
        }),
        (AccelChoice::Auto, Some(why)) => Ok(Decision { accel: Accel::Tcg, reason: format!("{why}; using TCG") }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const GOOD: KvmFacts = KvmFacts { dev_kvm: Ok(()), cpu_has_virt: true };

    #[test]
    fn auto_takes_kvm_only_with_virt_flags() {
        assert_eq!(decide(AccelChoice::Auto, &GOOD).unwrap().accel, Accel::Kvm);
        let software = KvmFacts { cpu_has_virt: false, ..GOOD };
        let d = decide(AccelChoice::Auto, &software).unwrap();
        assert_eq!(d.accel, Accel::Tcg);
        assert!(d.reason.contains("vmx/svm"), "{}", d.reason);
    }

    #[test]
    fn kvm_on_unusable_host_is_an_error() {
        let denied = KvmFacts { dev_kvm: Err("/dev/kvm is not accessible".into()), cpu_has_virt: true };
        let err = decide(AccelChoice::Kvm, &denied).unwrap_err();
        assert!(err.to_string().contains("--accel tcg"));
    }

    #[test]
    fn tcg_is_always_allowed() {
        let none = KvmFacts { dev_kvm: Err("missing".into()), cpu_has_virt: false };
        assert_eq!(decide(AccelChoice::Tcg, &none).unwrap().accel, Accel::Tcg);
    }

    #[test]
    fn cpu_flags_are_matched_as_words() {
        assert!(cpu_flags_have_virt("flags\t\t: fpu vme vmx sse\n"));
        assert!(cpu_flags_have_virt("flags : svm\n"));
        assert!(!cpu_flags_have_virt("flags : fpu vmxx sse\nmodel name : vmx\n"));
    }
}
